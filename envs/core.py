"""The batched core of the generation environment: N episodes that run in lockstep on one batch.

An episode generates one image in ``T`` NAT steps with the frozen generator. Row ``i`` has its
own random stream (seed ``seeds[i]``), which draws the episode's class label (unless labels are
given) and all sampling noise, so a row's episode does not depend on the other rows.

Per :meth:`NATCore.step`: the actions ``(N, 4)`` become step controls through the
:class:`~adanat.envs.actions.ActionMapping`; tokens are sampled and re-masked; then ONE guided
(conditional + unconditional) batched forward prepares the next observation, which is the next
step's forward or, after the last step, the first forward of the next episodes. At the last step
every image is decoded and scored at once, and the rows start new episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from adanat.envs.actions import ActionMapping
from adanat.envs.observation import ObservationForm
from adanat.rewards.base import Reward
from torch import Tensor

from adanat.models.enat import ENAT
from adanat.models.vqgan import MaskGITVQGAN
from adanat.precision import check_precision
from adanat.rng import row_generators
from adanat.sampling import (
    GuidedForward,
    decode_images,
    final_step_controls,
    guided_forward,
    select_tokens,
)


@dataclass
class Finished:
    """Episodes that ended at one step: everything the training glue and the reward need."""

    images: Tensor  # (N, 3, H, W) in [0, 1]
    labels: Tensor  # (N,)
    rewards: Tensor  # (N,)
    controls: Tensor  # (N, T, 4) controls used, CONTROL_NAMES order


@dataclass
class StepResult:
    observation: dict[str, np.ndarray]  # batched, the next observation of every row
    rewards: np.ndarray  # (N,) float32, 0 before the last step
    done: bool  # the episodes ended at this step (all rows at once)
    terminal_observation: dict[str, np.ndarray] | None  # (N, ...) when done: the last observation
    finished: Finished | None  # when done


class NATCore:
    """``num_rows`` generation episodes in lockstep.

    :param generator: the frozen ENAT.
    :param tokenizer: decodes final token grids to images.
    :param reward: scores final images.
    :param mapping: actions -> controls (with the base schedule; ``T`` = its steps).
    :param observation: the observation form (``compact`` or ``full``).
    :param num_rows: number of rows (episodes per batch).
    :param labels: fixed class label per row; drawn uniformly per episode when None.
    :param precision: ``float32`` or ``bfloat16`` autocast of the generator and the decoder
        (:mod:`adanat.precision`).
    """

    def __init__(
        self,
        generator: ENAT,
        tokenizer: MaskGITVQGAN,
        reward: Reward,
        mapping: ActionMapping,
        observation: str,
        num_rows: int,
        labels: Tensor | None = None,
        precision: str = "float32",
    ) -> None:
        cfg = generator.config
        self.precision = check_precision(precision)
        self.generator, self.tokenizer, self.reward, self.mapping = (
            generator.eval(),
            tokenizer.eval(),
            reward,
            mapping,
        )
        self.form = ObservationForm(observation, cfg.grid, cfg.width, mapping.steps)
        self.num_rows, self.steps = num_rows, mapping.steps
        self.device = next(generator.parameters()).device
        if labels is not None and labels.shape != (num_rows,):
            raise ValueError(f"labels must have shape ({num_rows},), got {tuple(labels.shape)}")
        self.fixed_labels = None if labels is None else labels.to(self.device)
        self.generators: list[torch.Generator] = []
        self.step_index = 0
        self._fwd: GuidedForward | None = None

    def seed(self, seeds: list[int]) -> None:
        """One seed per row: row ``i`` draws from ``row_generators(seeds[i], 1)`` only."""
        if len(seeds) != self.num_rows:
            raise ValueError(f"{len(seeds)} seeds for {self.num_rows} rows")
        self.generators = [row_generators(int(s), 1, self.device)[0] for s in seeds]

    @torch.no_grad()
    def reset(self) -> dict[str, np.ndarray]:
        """Start new episodes on every row; returns the first observation."""
        if not self.generators:
            raise RuntimeError("seed the core before the first reset")
        self._start()
        return self.observation()

    def observation(self) -> dict[str, np.ndarray]:
        assert self._fwd is not None
        return self.form.numpy(self._fwd.features, self.step_index)

    def _start(self) -> None:
        cfg = self.generator.config
        # every episode draws its label, so fixed labels leave the random streams as they are
        drawn = [
            torch.randint(0, cfg.num_classes, (1,), generator=g, device=self.device) for g in self.generators
        ]
        self.labels = torch.cat(drawn) if self.fixed_labels is None else self.fixed_labels.clone()  # (N,)
        self.ids = torch.full((self.num_rows, cfg.seq_len), cfg.mask_id, dtype=torch.long, device=self.device)
        self.controls = torch.zeros(self.num_rows, self.steps, 4, device=self.device)  # (N, T, 4)
        self.step_index = 0
        self._fwd = guided_forward(self.generator, self.ids, self.labels, precision=self.precision)

    @torch.no_grad()
    def set_labels(self, labels: Tensor) -> dict[str, np.ndarray]:
        """Replace the labels ``(N,)`` of episodes that have not taken a step yet."""
        if self.step_index != 0 or self._fwd is None:
            raise RuntimeError("labels can only change before an episode's first step")
        self.labels = labels.to(self.device).long()
        self._fwd = guided_forward(self.generator, self.ids, self.labels, precision=self.precision)
        return self.observation()

    @torch.no_grad()
    def step(self, actions: np.ndarray | Tensor) -> StepResult:
        """Apply ``actions`` ``(N, 4)`` at the current step of every row."""
        assert self._fwd is not None, "reset the core first"
        a = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=self.device).reshape(
            self.num_rows, 4
        )
        k, cfg = self.step_index, self.generator.config
        controls = final_step_controls(self.mapping.controls(a, k), k, self.steps)
        fwd = self._fwd
        self.ids, sampled = select_tokens(
            self.ids, fwd.cond_logits, fwd.uncond_logits, controls, self.generators, cfg.mask_id
        )  # (N, L), (N, L)
        self.controls[:, k] = controls.stack()
        if k < self.steps - 1:
            self._fwd = guided_forward(
                self.generator, self.ids, self.labels, fwd.cond_state, fwd.uncond_state, self.precision
            )
            self.step_index = k + 1
            return StepResult(self.observation(), np.zeros(self.num_rows, np.float32), False, None, None)
        terminal = self.observation()
        grids = sampled.reshape(self.num_rows, cfg.grid, cfg.grid)  # (N, h, w)
        images = decode_images(self.tokenizer, grids, self.precision)  # (N, 3, H, W)
        rewards = self.reward(images, self.labels).float()  # (N,)
        finished = Finished(images, self.labels, rewards, self.controls)
        self._start()
        return StepResult(
            self.observation(), rewards.cpu().numpy().astype(np.float32), True, terminal, finished
        )
