"""The NAT sampler: one step as pure functions of per-sample tensors, and the generation loop.

A step has two halves:

1. :func:`guided_forward` runs the conditional and the unconditional branch in ONE batched ENAT
   forward, each branch with its own reuse state. Its features are what a controller observes.
2. :func:`select_tokens` applies the four per-sample controls (all ``(B,)``): guidance
   ``logits = cond + w (cond - uncond)``; sampling of masked tokens from
   ``softmax(log_softmax(logits) / sampling_temp)``; confidence = log-prob of the sampled token
   + ``remask_temp`` x Gumbel noise (``+inf`` for visible tokens, never re-masked); the
   ``floor(L * mask_ratio)`` least confident tokens stay masked, clamped per row to at most
   (masked before - 1) so every step reveals at least one token.

:func:`generate` alternates them for ``T`` steps, asking a :class:`Controller` for the controls
of each step after the forward, so a learned policy can read that step's features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from adanat.models.enat import ENAT, ReuseState
from adanat.models.vqgan import MaskGITVQGAN
from adanat.precision import autocast
from adanat.rng import Generators, gumbel, gumbel_packed
from adanat.schedules import CONTROL_NAMES, Schedule


@dataclass(frozen=True)
class Controls:
    """The four per-sample controls of one step, each ``(B,)``."""

    mask_ratio: Tensor  # (B,)
    sampling_temp: Tensor  # (B,)
    remask_temp: Tensor  # (B,)
    guidance: Tensor  # (B,)

    def stack(self) -> Tensor:
        """``(B, 4)`` in ``CONTROL_NAMES`` order."""
        return torch.stack([getattr(self, f) for f in CONTROL_NAMES], dim=1)

    @staticmethod
    def from_tensor(values: Tensor) -> Controls:
        """From ``(B, 4)`` values in ``CONTROL_NAMES`` order."""
        return Controls(*values.unbind(dim=1))


@dataclass
class GuidedForward:
    """Both branches of one step (logits are computed at masked positions only, 0 elsewhere)."""

    cond_logits: Tensor  # (B, L, K)
    uncond_logits: Tensor  # (B, L, K)
    cond_state: ReuseState
    uncond_state: ReuseState

    @property
    def features(self) -> Tensor:
        """``(B, L, D)`` conditional-branch features (what a policy observes), float32."""
        return self.cond_state.feat.float()


@dataclass
class StepOutput:
    """Result of one full NAT step."""

    ids: Tensor  # (B, L) next ids, mask id where still masked
    sampled_ids: Tensor  # (B, L) every position filled
    cond_state: ReuseState
    uncond_state: ReuseState
    features: Tensor  # (B, L, D)


def guided_forward(
    model: ENAT,
    ids: Tensor,
    labels: Tensor,
    cond_state: ReuseState | None = None,
    uncond_state: ReuseState | None = None,
    precision: str = "float32",
) -> GuidedForward:
    """One batched forward of the conditional and the unconditional branch.

    :param ids: ``(B, L)`` current ids.
    :param labels: ``(B,)`` class labels.
    :param cond_state: reuse state of the conditional branch (None at the first step).
    :param uncond_state: reuse state of the unconditional branch (None at the first step).
    :param precision: ``float32`` or ``bfloat16`` (autocast; :mod:`adanat.precision`).
    """
    if (cond_state is None) != (uncond_state is None):
        raise ValueError("both branches need a reuse state, or neither")
    b = ids.shape[0]
    null = torch.full_like(labels, model.config.null_class)  # (B,)
    prev = None if cond_state is None else ReuseState.cat([cond_state, uncond_state])
    with autocast(ids.device, precision):
        out = model(torch.cat([ids, ids]), torch.cat([labels, null]), prev, masked_logits_only=True)
    return GuidedForward(
        cond_logits=out.logits[:b],
        uncond_logits=out.logits[b:],
        cond_state=out.state.select(slice(0, b)),
        uncond_state=out.state.select(slice(b, 2 * b)),
    )


def select_tokens(
    ids: Tensor,
    cond_logits: Tensor,
    uncond_logits: Tensor,
    controls: Controls,
    generators: Generators,
    mask_id: int,
) -> tuple[Tensor, Tensor]:
    """Sample the masked tokens and choose which stay masked; returns ``(next_ids, sampled_ids)``.

    Works on the masked positions only. Draws, in order, Gumbel noise ``(masked, K)`` for
    sampling and ``(L,)`` for re-masking, per row (or for the batch with one generator).
    """
    b, length = ids.shape
    is_mask = ids == mask_id  # (B, L)
    masked_before = is_mask.sum(dim=1)  # (B,)
    row = is_mask.nonzero()[:, 0]  # (M,) row of each masked token, row after row
    cond, uncond = cond_logits[is_mask].float(), uncond_logits[is_mask].float()  # (M, K)
    w = controls.guidance.float()[row, None]  # (M, 1)
    logp = F.log_softmax(cond + w * (cond - uncond), dim=-1)  # (M, K)

    temp = controls.sampling_temp.float().clamp_min(1e-6)[row, None]  # (M, 1)
    noise = gumbel_packed(masked_before.tolist(), logp.shape[1:], generators, ids.device)  # (M, K)
    drawn = (logp / temp + noise).argmax(dim=-1)  # (M,) Gumbel-max = categorical sample
    sampled = ids.masked_scatter(is_mask, drawn)  # (B, L)

    confidence = torch.full((b, length), torch.inf, device=ids.device)  # (B, L)
    confidence[is_mask] = logp.gather(-1, drawn[:, None]).squeeze(-1)
    remask_noise = gumbel(b, (length,), generators, ids.device)  # (B, L)
    confidence = confidence + controls.remask_temp.float()[:, None] * remask_noise  # (B, L)

    n_mask = torch.floor(length * controls.mask_ratio.double()).long()  # (B,)
    n_mask = torch.minimum(n_mask, masked_before - 1).clamp_min(0)  # (B,)
    order = confidence.argsort(dim=1, stable=True)  # (B, L) least confident first
    positions = torch.arange(length, device=ids.device).expand(b, -1)  # (B, L)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # (B, L)
    new_mask = rank < n_mask[:, None]  # (B, L)
    return torch.where(new_mask, mask_id, sampled), sampled


def nat_step(
    model: ENAT,
    ids: Tensor,
    labels: Tensor,
    cond_state: ReuseState | None,
    uncond_state: ReuseState | None,
    controls: Controls,
    generators: Generators,
    precision: str = "float32",
) -> StepOutput:
    """One NAT step with given controls: :func:`guided_forward` then :func:`select_tokens`."""
    fwd = guided_forward(model, ids, labels, cond_state, uncond_state, precision)
    next_ids, sampled = select_tokens(
        ids, fwd.cond_logits, fwd.uncond_logits, controls, generators, model.config.mask_id
    )
    return StepOutput(next_ids, sampled, fwd.cond_state, fwd.uncond_state, fwd.features)


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
    labels: Tensor  # (B,)
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
        return Controls.from_tensor(self._table[state.step].expand(state.ids.shape[0], -1))


@dataclass
class Generation:
    """Result of :func:`generate`."""

    images: Tensor | None  # (B, 3, H, W) in [0, 1], None without a tokenizer
    ids: Tensor  # (B, L) final token ids
    trace: Tensor  # (B, T, 4) controls used per sample and step, CONTROL_NAMES order
    num_masked: Tensor  # (B, T + 1) masked tokens before the first and after each step


def decode_images(tokenizer: MaskGITVQGAN, ids: Tensor, precision: str = "float32") -> Tensor:
    """Images ``(B, 3, H, W)`` in [0, 1], float32, of token grids ``ids`` ``(B, h, w)``, decoded in
    ``precision``."""
    with autocast(ids.device, precision):
        return tokenizer.decode(ids).float()


@torch.no_grad()
def generate(
    model: ENAT,
    labels: Tensor,
    controller: Controller,
    steps: int,
    generators: Generators,
    tokenizer: MaskGITVQGAN | None = None,
    on_step: Callable[[int], None] | None = None,
    reuse: bool = True,
    precision: str = "float32",
) -> Generation:
    """Generate one image per label in ``steps`` NAT steps.

    The controller is asked for the controls of step ``k`` after that step's forward. The last
    step reveals every token whatever the controller's mask ratio (the trace shows 0 there).

    :param labels: ``(B,)`` class labels.
    :param generators: one generator for the batch, or one per row (reproducible per row).
    :param tokenizer: decodes the final ids into images when given.
    :param on_step: called with the step index after each step (progress bars).
    :param reuse: hand each branch's features to its next step (ENAT's computation reuse);
        False re-encodes every visible token at every step.
    :param precision: ``float32`` or ``bfloat16`` autocast of the generator and the decoder
        (:mod:`adanat.precision`); token choices are made in float32 either way.
    """
    cfg = model.config
    b = labels.shape[0]
    ids = torch.full((b, cfg.seq_len), cfg.mask_id, dtype=torch.long, device=labels.device)
    cond_state = uncond_state = None
    trace, counts = [], [(ids == cfg.mask_id).sum(dim=1)]
    for k in range(steps):
        fwd = guided_forward(model, ids, labels, cond_state, uncond_state, precision)
        controls = final_step_controls(
            controller(GenerationState(k, steps, ids, labels, fwd.features)), k, steps
        )
        ids, sampled = select_tokens(
            ids, fwd.cond_logits, fwd.uncond_logits, controls, generators, cfg.mask_id
        )
        if reuse:
            cond_state, uncond_state = fwd.cond_state, fwd.uncond_state
        trace.append(controls.stack().float())
        counts.append((ids == cfg.mask_id).sum(dim=1))
        if on_step is not None:
            on_step(k)
    images = None
    if tokenizer is not None:
        images = decode_images(tokenizer, sampled.reshape(b, cfg.grid, cfg.grid), precision)  # (B, 3, H, W)
    return Generation(images, sampled, torch.stack(trace, 1), torch.stack(counts, 1))
