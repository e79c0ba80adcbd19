"""The NAT sampler: the generation episode as methods, its steps as pure functions of ``(B,)`` tensors.

:class:`NATSampler` owns what travels together: the generator (any
:class:`~adanat.generator.NATGenerator`), the tokenizer, the precision and whether features are
reused between steps. An episode of ``T`` steps is :meth:`NATSampler.start` (the first guided
forward), then per step :meth:`NATSampler.advance` with that step's controls (sample, re-mask,
then the next step's forward), then :meth:`NATSampler.finish` (decode). A loop
(:meth:`NATSampler.generate`, evaluation, the schedule search) and the RL environment
(:class:`adanat.envs.core.NATCore`) both drive it, so there is one episode in the code base.

A step has two halves:

1. the generator's guided forward runs the conditional and the unconditional branch in ONE
   batched forward; its features are what a controller observes;
2. :func:`select_tokens` applies the four per-sample controls (all ``(B,)``): guidance
   ``logits = cond + w (cond - uncond)``; sampling of masked tokens from
   ``softmax(log_softmax(logits) / sampling_temp)``; confidence = log-prob of the sampled token
   + ``remask_temp`` x Gumbel noise (``+inf`` for visible tokens, never re-masked); the
   ``floor(L * mask_ratio)`` least confident tokens stay masked, clamped per row to at most
   (masked before - 1) so every step reveals at least one token.

Controls are asked for *after* the forward, so a learned policy reads the features of the step
it controls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from adanat.generator import GuidedOutput, NATGenerator
from adanat.models.vqgan import MaskGITVQGAN
from adanat.precision import autocast, check_precision
from adanat.rng import Rngs, gumbel, gumbel_packed
from adanat.schedules import CONTROL_NAMES, Schedule


@dataclass(frozen=True)
class Controls:
    """The four per-sample controls of one step, each ``(B,)``, and the token-selection rule of
    the schedule or policy that chose them (:data:`adanat.schedules.SELECTION_RULES`)."""

    mask_ratio: Tensor  # (B,)
    sampling_temp: Tensor  # (B,)
    remask_temp: Tensor  # (B,)
    guidance: Tensor  # (B,)
    rule: str = "enat"

    def stack(self) -> Tensor:
        """``(B, 4)`` in ``CONTROL_NAMES`` order."""
        return torch.stack([getattr(self, f) for f in CONTROL_NAMES], dim=1)

    @staticmethod
    def from_tensor(values: Tensor, rule: str = "enat") -> Controls:
        """From ``(B, 4)`` values in ``CONTROL_NAMES`` order."""
        return Controls(*values.unbind(dim=1), rule=rule)


def select_tokens(
    ids: Tensor,
    cond_logits: Tensor,
    uncond_logits: Tensor,
    controls: Controls,
    rngs: Rngs,
    mask_id: int,
) -> tuple[Tensor, Tensor]:
    """Sample the masked tokens and choose which stay masked; returns ``(next_ids, sampled_ids)``.

    Works on the masked positions only. Draws, in order, Gumbel noise ``(masked, K)`` for
    sampling and ``(L,)`` for re-masking, per row (or for the batch with one generator) from ``rngs``.
    How many tokens stay masked, and which, follows ``controls.rule``
    (:data:`adanat.schedules.SELECTION_RULES`).
    """
    b, length = ids.shape
    is_mask = ids == mask_id  # (B, L)
    masked_before = is_mask.sum(dim=1)  # (B,)
    row = is_mask.nonzero()[:, 0]  # (M,) row of each masked token, row after row
    cond, uncond = cond_logits[is_mask].float(), uncond_logits[is_mask].float()  # (M, K)
    w = controls.guidance.float()[row, None]  # (M, 1)
    logp = F.log_softmax(cond + w * (cond - uncond), dim=-1)  # (M, K)

    floor = 1e-6 if controls.rule == "enat" else 1e-4  # the releases' samplers floor at 1e-4
    temp = controls.sampling_temp.float().clamp_min(floor)[row, None]  # (M, 1)
    noise = gumbel_packed(masked_before.tolist(), logp.shape[1:], rngs, ids.device)  # (M, K)
    drawn = (logp / temp + noise).argmax(dim=-1)  # (M,) Gumbel-max = categorical sample
    sampled = ids.masked_scatter(is_mask, drawn)  # (B, L)

    confidence = torch.full((b, length), torch.inf, device=ids.device)  # (B, L)
    confidence[is_mask] = logp.gather(-1, drawn[:, None]).squeeze(-1)
    remask_noise = gumbel(b, (length,), rngs, ids.device)  # (B, L)
    confidence = confidence + controls.remask_temp.float()[:, None] * remask_noise  # (B, L)

    n_mask = torch.floor(length * controls.mask_ratio.double()).long()  # (B,)
    if controls.rule != "enat":
        return torch.where(
            _release_mask(confidence, n_mask, masked_before, controls.rule), mask_id, sampled
        ), sampled
    n_mask = torch.minimum(n_mask, masked_before - 1).clamp_min(0)  # (B,)
    order = confidence.argsort(dim=1, stable=True)  # (B, L) least confident first
    positions = torch.arange(length, device=ids.device).expand(b, -1)  # (B, L)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # (B, L)
    new_mask = rank < n_mask[:, None]  # (B, L)
    return torch.where(new_mask, mask_id, sampled), sampled


def _release_mask(confidence: Tensor, n_mask: Tensor, masked_before: Tensor, rule: str) -> Tensor:
    """``(B, L)`` True where a token stays masked under the AutoNAT or AdaNAT release's rule.

    AutoNAT keeps ``max(1, min(masked - 1, floor(L r)))`` masked and re-masks every token whose
    confidence is <= that count's cut-off; AdaNAT keeps ``min(floor(L r), L - 1)`` and re-masks the
    tokens strictly below the cut-off one place further (ties re-mask more, or fewer).
    """
    length = confidence.shape[1]
    ordered = confidence.sort(dim=1).values  # (B, L)
    if rule == "autonat":
        n = torch.maximum(torch.minimum(n_mask, masked_before - 1), torch.ones_like(n_mask))  # (B,)
        return confidence <= ordered.gather(1, (n - 1)[:, None])  # (B, L)
    if rule == "adanat":
        n = n_mask.clamp_max(length - 1)  # (B,)
        return confidence < ordered.gather(1, n[:, None])  # (B, L)
    raise ValueError(f"unknown token-selection rule {rule!r}")


def final_step_controls(controls: Controls, step: int, steps: int) -> Controls:
    """The controls actually applied at ``step``: the last step reveals every token (mask ratio 0)."""
    if step == steps - 1:
        return replace(controls, mask_ratio=torch.zeros_like(controls.mask_ratio))
    return controls


@dataclass
class GenerationState:
    """What a controller sees before choosing the controls of ``step``."""

    step: int
    steps: int
    ids: Tensor  # (B, L) ids entering this step
    cond: Tensor  # (B,) class ids, or (B, tokens, width) text states
    features: Tensor  # (B, L, D) conditional features of this step's forward


class Controller(Protocol):
    """Chooses the per-sample controls of each step."""

    def __call__(self, state: GenerationState) -> Controls: ...


class ScheduleController:
    """A fixed schedule as a controller: every row gets the schedule's values."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self._table: Tensor | None = None

    def __call__(self, state: GenerationState) -> Controls:
        if state.steps != self.schedule.steps:
            raise ValueError(
                f"schedule {self.schedule.name!r} has {self.schedule.steps} steps, "
                f"generation asks for {state.steps}"
            )
        device = state.ids.device
        if self._table is None or self._table.device != device:
            self._table = self.schedule.tensor(device)  # (T, 4)
        return Controls.from_tensor(
            self._table[state.step].expand(state.ids.shape[0], -1), self.schedule.rule
        )


@dataclass
class Generation:
    """A finished episode."""

    images: Tensor | None  # (B, 3, H, W) in [0, 1], None without a tokenizer
    ids: Tensor  # (B, L) final token ids
    trace: Tensor  # (B, T, 4) controls used per sample and step, CONTROL_NAMES order
    num_masked: Tensor  # (B, T + 1) masked tokens before the first and after each step


@dataclass
class Episode:
    """One batch of episodes in flight: ``B`` rows at step ``step`` of ``steps``.

    Made by :meth:`NATSampler.start`; :meth:`NATSampler.advance` moves it on.
    """

    cond: Tensor  # (B,) or (B, tokens, width)
    rngs: Rngs
    steps: int
    step: int
    ids: Tensor  # (B, L) ids entering the current step
    forward: GuidedOutput | None  # the current step's guided forward (None once finished)
    sampled: Tensor | None = None  # (B, L) every position filled at the last step taken
    trace: list[Tensor] = field(default_factory=list)  # per step taken: (B, 4)
    counts: list[Tensor] = field(default_factory=list)  # masked tokens before the first and after each step

    @property
    def done(self) -> bool:
        return self.step == self.steps

    @property
    def features(self) -> Tensor:
        """``(B, L, D)`` features of the current step's forward (what a policy observes)."""
        if self.forward is None:
            raise RuntimeError("the episode has finished: no step left to observe")
        return self.forward.features

    def state(self) -> GenerationState:
        """The controller's view of the current step."""
        return GenerationState(self.step, self.steps, self.ids, self.cond, self.features)


@dataclass
class NATSampler:
    """A generator with its tokenizer, precision and reuse setting: runs generation episodes.

    :param generator: any :class:`~adanat.generator.NATGenerator` (ENAT today), in eval mode.
    :param tokenizer: decodes final token grids into images (None: ids only).
    :param precision: ``float32`` or ``bfloat16`` autocast of the generator and the decoder
        (:mod:`adanat.precision`); token choices are made in float32 either way.
    :param reuse: hand each branch's state to its next step (ENAT's computation reuse); False
        re-encodes every visible token at every step. Ignored by generators without reuse.
    """

    generator: NATGenerator
    tokenizer: MaskGITVQGAN | None = None
    precision: str = "float32"
    reuse: bool = True

    def __post_init__(self) -> None:
        check_precision(self.precision)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def _forward(self, ids: Tensor, cond: Tensor, state: Any | None) -> GuidedOutput:
        with autocast(ids.device, self.precision):
            return self.generator.guided_forward(ids, cond, state)

    @torch.no_grad()
    def start(self, cond: Tensor, steps: int, rngs: Rngs) -> Episode:
        """New episodes, one per row of ``cond``, with the first step's forward done.

        :param cond: ``(B,)`` class ids or ``(B, tokens, width)`` text states.
        :param rngs: one generator for the batch, or one per row (reproducible per row).
        """
        gen = self.generator
        ids = torch.full((cond.shape[0], gen.seq_len), gen.mask_id, dtype=torch.long, device=cond.device)
        episode = Episode(cond, rngs, steps, 0, ids, self._forward(ids, cond, None))
        episode.counts.append((ids == gen.mask_id).sum(dim=1))  # (B,)
        return episode

    @torch.no_grad()
    def advance(self, episode: Episode, controls: Controls) -> Controls:
        """Take the current step with ``controls`` (each ``(B,)``), then run the next step's
        forward unless this was the last; returns the controls applied (the last step reveals
        every token, so its mask ratio is 0)."""
        fwd = episode.forward
        if fwd is None:
            raise RuntimeError("the episode has finished")
        k, mask_id = episode.step, self.generator.mask_id
        controls = final_step_controls(controls, k, episode.steps)
        episode.ids, episode.sampled = select_tokens(
            episode.ids, fwd.cond_logits, fwd.uncond_logits, controls, episode.rngs, mask_id
        )  # (B, L), (B, L)
        episode.trace.append(controls.stack().float())  # (B, 4)
        episode.counts.append((episode.ids == mask_id).sum(dim=1))  # (B,)
        episode.step = k + 1
        if episode.done:
            episode.forward = None
        else:
            state = fwd.state if self.reuse else None
            episode.forward = self._forward(episode.ids, episode.cond, state)
        return controls

    def decode(self, ids: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1], float32, of final ids ``(B, L)``."""
        if self.tokenizer is None:
            raise RuntimeError("the sampler has no tokenizer to decode with")
        grid = self.generator.grid
        with autocast(ids.device, self.precision):
            return self.tokenizer.decode(ids.reshape(ids.shape[0], grid, grid)).float()  # (B, 3, H, W)

    @torch.no_grad()
    def finish(self, episode: Episode) -> Generation:
        """The finished episode's ids, controls and (with a tokenizer) decoded images."""
        if not episode.done or episode.sampled is None:
            raise RuntimeError(f"the episode is at step {episode.step} of {episode.steps}")
        images = None if self.tokenizer is None else self.decode(episode.sampled)  # (B, 3, H, W)
        return Generation(
            images, episode.sampled, torch.stack(episode.trace, 1), torch.stack(episode.counts, 1)
        )

    @torch.no_grad()
    def generate(
        self,
        cond: Tensor,
        controller: Controller,
        steps: int,
        rngs: Rngs,
        on_step: Callable[[int], None] | None = None,
    ) -> Generation:
        """One image per row of ``cond`` in ``steps`` steps, the controller asked for the
        controls of each step after that step's forward.

        :param on_step: called with the step index after each step (progress bars).
        """
        episode = self.start(cond, steps, rngs)
        while not episode.done:
            k = episode.step
            self.advance(episode, controller(episode.state()))
            if on_step is not None:
                on_step(k)
        return self.finish(episode)
