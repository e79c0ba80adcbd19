"""The batched core of the generation environment: N episodes that run in lockstep on one batch.

An episode generates one image in ``T`` NAT steps with the frozen generator, driven through the
:class:`~adanat.sampling.NATSampler` (the same episode methods that plain generation uses). Row
``i`` has its own random stream (seed ``seeds[i]``), which draws the episode's class label, or
its prompt id in a text-to-image world (unless labels are given), and all sampling noise, so a
row's episode does not depend on the other rows.

Per :meth:`NATCore.step`: the actions ``(N, 4)`` become step controls through the action mapping
(:class:`~adanat.envs.actions.ActionMapping`, or AdaNAT's own); the sampler samples and re-masks,
then runs ONE guided (conditional + unconditional) batched forward that prepares the next
observation. At the last step every image is decoded and scored at once, and the rows start new
episodes (whose first forward is the next observation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from adanat.envs.actions import ActionMap
from adanat.envs.observation import ObservationForm
from adanat.prompts import prompt_bank_of
from adanat.rewards.base import Reward
from adanat.rng import row_rngs
from adanat.sampling import Episode, NATSampler


@dataclass
class Finished:
    """Episodes that ended at one step: everything the training glue and the reward need."""

    images: Tensor | None  # (N, 3, H, W) in [0, 1]; None on a leader's record of all processes' rows
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

    :param sampler: the frozen generator with its tokenizer, precision and reuse setting.
    :param reward: scores final images.
    :param mapping: actions -> controls (with the base schedule; ``T`` = its steps).
    :param observation: the observation form, or its kind (``compact`` or ``full``).
    :param num_rows: number of rows (episodes per batch).
    :param labels: fixed class label per row; drawn uniformly per episode when None.
    """

    def __init__(
        self,
        sampler: NATSampler,
        reward: Reward,
        mapping: ActionMap,
        observation: str | ObservationForm,
        num_rows: int,
        labels: Tensor | None = None,
    ) -> None:
        if sampler.tokenizer is None:
            raise ValueError("the environment's sampler needs a tokenizer (rewards score images)")
        gen = sampler.generator
        self.sampler, self.reward, self.mapping = sampler, reward, mapping
        if isinstance(observation, str):
            observation = ObservationForm(observation, gen.grid, gen.feature_dim, mapping.steps)
        self.form = observation
        self.prompts = prompt_bank_of(gen)  # text-to-image: the bank whose ids the rows hold
        if self.form.prompt_dim and self.prompts is None:
            raise ValueError("only a text-to-image generator's episodes have a prompt to observe")
        self.num_rows, self.steps = num_rows, mapping.steps
        self.device = sampler.device
        if labels is not None and labels.shape != (num_rows,):
            raise ValueError(f"labels must have shape ({num_rows},), got {tuple(labels.shape)}")
        self.fixed_labels = None if labels is None else labels.to(self.device)
        self.rngs: list[torch.Generator] = []
        self._episode: Episode | None = None

    @property
    def labels(self) -> Tensor:
        """``(N,)`` class labels of the episodes in flight."""
        assert self._episode is not None, "reset the core first"
        return self._episode.cond

    def seed(self, seeds: list[int]) -> None:
        """One seed per row: row ``i`` draws from ``row_rngs(seeds[i], 1)`` only."""
        if len(seeds) != self.num_rows:
            raise ValueError(f"{len(seeds)} seeds for {self.num_rows} rows")
        self.rngs = [row_rngs(int(s), 1, self.device)[0] for s in seeds]

    @torch.no_grad()
    def reset(self) -> dict[str, np.ndarray]:
        """Start new episodes on every row; returns the first observation."""
        if not self.rngs:
            raise RuntimeError("seed the core before the first reset")
        self._start()
        return self.observation()

    def observation(self) -> dict[str, np.ndarray]:
        assert self._episode is not None
        prompt = None
        if self.form.prompt_dim:
            assert self.prompts is not None
            prompt = self.prompts.pooled(self._episode.cond)  # (N, E)
        return self.form.numpy(self._episode.features, self._episode.step, prompt)

    def _start(self) -> None:
        num_classes = self.sampler.generator.num_classes  # classes, or a prompt bank's prompts
        assert num_classes is not None, "conditions are ids: class ids or prompt ids (PromptConditioned)"
        # every episode draws its label, so fixed labels leave the random streams as they are
        drawn = [torch.randint(0, num_classes, (1,), generator=g, device=self.device) for g in self.rngs]
        labels = torch.cat(drawn) if self.fixed_labels is None else self.fixed_labels.clone()  # (N,)
        self._episode = self.sampler.start(labels, self.steps, self.rngs)

    @torch.no_grad()
    def set_labels(self, labels: Tensor) -> dict[str, np.ndarray]:
        """Replace the labels ``(N,)`` of episodes that have not taken a step yet."""
        if self._episode is None or self._episode.step != 0:
            raise RuntimeError("labels can only change before an episode's first step")
        self._episode = self.sampler.start(labels.to(self.device).long(), self.steps, self.rngs)
        return self.observation()

    @torch.no_grad()
    def step(self, actions: np.ndarray | Tensor) -> StepResult:
        """Apply ``actions`` ``(N, 4)`` at the current step of every row."""
        episode = self._episode
        assert episode is not None, "reset the core first"
        a = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=self.device).reshape(
            self.num_rows, 4
        )  # (N, 4)
        last = episode.step == self.steps - 1
        terminal = self.observation() if last else None  # the observation the last action answered
        self.sampler.advance(episode, self.mapping.controls(a, episode.step))
        if not last:
            return StepResult(self.observation(), np.zeros(self.num_rows, np.float32), False, None, None)
        generation = self.sampler.finish(episode)
        images = generation.images  # (N, 3, H, W)
        assert images is not None
        rewards = self.reward(images, episode.cond).float()  # (N,)
        finished = Finished(images, episode.cond, rewards, generation.trace)
        self._start()
        return StepResult(
            self.observation(), rewards.cpu().numpy().astype(np.float32), True, terminal, finished
        )
