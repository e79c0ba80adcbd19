"""stable-baselines3 callbacks: exploration-std schedule, reward/discriminator rounds with their
TensorBoard records, non-finite guards, periodic evaluation, checkpoints and progress.

The non-finite guards watch the path the numbers actually take: each step's reward after every
env wrapper (the action cost included), each PPO gradient step (the loss's gradients before the
step, the parameters after it, through optimiser hooks, so a bad step stops before the next
minibatch's forward), and the logged loss and the parameters before each rollout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv
from torch.utils.tensorboard import SummaryWriter

from adanat.agents import sb3
from adanat.envs.core import Finished
from adanat.errors import NonFiniteError
from adanat.progress import StepProgress
from adanat.rewards.base import LearnedReward
from adanat.schedules import CONTROL_NAMES
from adanat.team import TeamRows


def std_at(schedule: Sequence[tuple[int, float]], update: int) -> float:
    """The exploration std at PPO update ``update``: the value of the last threshold reached."""
    value = schedule[0][1]
    for start, std in schedule:
        if update >= start:
            value = std
    return value


class ExplorationStd(BaseCallback):
    """Holds the Gaussian policy's std at a fixed schedule (AdaNAT: 0.6, then 0.3 after 500
    updates); the std is not learned."""

    def __init__(self, schedule: Sequence[tuple[int, float]]) -> None:
        super().__init__()
        self.schedule = tuple(schedule)

    def _on_training_start(self) -> None:
        sb3.freeze_exploration_std(self.model)
        self._apply()

    def _on_rollout_start(self) -> None:
        self._apply()

    def _apply(self) -> None:
        std = std_at(self.schedule, sb3.rollouts_done(self.model))
        sb3.set_exploration_std(self.model, std)
        self.logger.record("train/exploration_std", std)

    def _on_step(self) -> bool:
        return True


RewardRound = Callable[[list[Finished]], dict[str, float]]
"""One update round of a learned reward on the episodes of a rollout; returns its statistics."""


def discriminator_round(reward: LearnedReward, rows: TeamRows | None = None) -> RewardRound:
    """The round of one process: ``reward.update`` on the rollout's images (this process's
    share under torchrun, with ``rows`` saying where the others are)."""

    def run(finished: list[Finished]) -> dict[str, float]:
        images = torch.cat([f.images for f in finished if f.images is not None])  # (E, 3, H, W)
        labels = torch.cat([f.labels for f in finished])  # (E,)
        return reward.update(images, labels, rows)

    return run


class RewardRounds(BaseCallback):
    """After each rollout: records the finished episodes (reward, per-step controls), stops on a
    non-finite reward, and runs one update round of a learned reward (the discriminator).

    :param venv: the environment whose finished episodes are drained.
    :param update: the learned reward's round (:func:`discriminator_round`, or a team's
        data-parallel one); None for a fixed reward.
    :param writer: where the controls' histograms go.
    """

    def __init__(self, venv: VecEnv, update: RewardRound | None, writer: SummaryWriter | None) -> None:
        super().__init__()
        self.venv, self.update, self.writer = venv, update, writer
        self.last: dict[str, float] = {}

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        finished = self.venv.drain_finished()  # type: ignore[attr-defined]
        if not finished:
            return
        rewards = torch.cat([f.rewards for f in finished]).float()  # (E,)
        controls = torch.cat([f.controls for f in finished]).float()  # (E, T, 4)
        if not torch.isfinite(rewards).all():
            raise NonFiniteError(f"non-finite reward in {int((~torch.isfinite(rewards)).sum())} episodes")
        self.last = {"reward/mean": float(rewards.mean()), "reward/std": float(rewards.std(unbiased=False))}
        for name, value in self.last.items():
            self.logger.record(name, value)
        for j, name in enumerate(CONTROL_NAMES):
            for k in range(controls.shape[1]):
                v = controls[:, k, j]  # (E,)
                self.logger.record(f"schedule/{name}/step{k}", float(v.mean()))
                self.logger.record(f"schedule/{name}/step{k}_std", float(v.std(unbiased=False)))
            if self.writer is not None:
                self.writer.add_histogram(f"controls/{name}", controls[:, :, j].flatten(), self.num_timesteps)
        if self.update is not None:
            stats = self.update(finished)
            if not all(math.isfinite(v) for v in stats.values()):
                raise NonFiniteError(f"non-finite discriminator statistics {stats}")
            for name, value in stats.items():
                self.logger.record(f"disc/{name}", value)
                self.last[f"disc/{name}"] = value


def check_finite(model: BaseAlgorithm) -> None:
    """Raise :class:`NonFiniteError` if the last PPO update left a non-finite loss or parameter."""
    loss = sb3.last_logged(model, "train/loss")
    if loss is not None and not math.isfinite(loss):
        raise NonFiniteError(f"non-finite PPO loss {loss}")
    for name, p in model.policy.named_parameters():
        if not torch.isfinite(p).all():
            raise NonFiniteError(f"non-finite policy parameter {name}")


def check_step_rewards(rewards: np.ndarray) -> None:
    """Raise :class:`NonFiniteError` unless every reward ``(N,)`` of a step is finite."""
    bad = ~np.isfinite(rewards)
    if bad.any():
        raise NonFiniteError(
            f"non-finite reward (after the action cost) in {int(bad.sum())} of {bad.size} rows"
        )


class FiniteGuard(BaseCallback):
    """Stops the run on a non-finite step reward (after every env wrapper: what PPO learns
    from), and when the last PPO update left a non-finite loss or parameter (checked before
    anything is saved at the start of the next rollout)."""

    def _on_step(self) -> bool:
        check_step_rewards(sb3.step_rewards(self))
        return True

    def _on_rollout_start(self) -> None:
        check_finite(self.model)


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    if not tensors:
        return True
    flags = torch.stack([torch.isfinite(t).all() for t in tensors])  # (len(tensors),)
    return bool(flags.all())  # one device sync


def guard_gradient_steps(model: BaseAlgorithm) -> None:
    """Hook the policy's optimiser: before each step the loss's gradients must be finite (a NaN
    or infinite loss gives non-finite gradients), after it the parameters. Either failure raises
    :class:`NonFiniteError` at once, before the next minibatch runs through a broken policy."""
    opt = sb3.optimizer(model)
    names = {id(p): name for name, p in model.policy.named_parameters()}

    def params() -> list[torch.Tensor]:
        return [p for group in opt.param_groups for p in group["params"]]

    def first_bad(tensors: list[tuple[torch.Tensor, torch.Tensor]]) -> str:
        return next((names.get(id(p), "?") for p, t in tensors if not torch.isfinite(t).all()), "?")

    def before(_opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        grads = [(p, p.grad) for p in params() if p.grad is not None]
        if not _all_finite([g for _, g in grads]):
            raise NonFiniteError(
                f"non-finite PPO loss (its gradient for {first_bad(grads)} is NaN or infinite)"
            )

    def after(_opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        ps = params()
        if not _all_finite(ps):
            lr = opt.param_groups[0]["lr"]
            bad = first_bad([(p, p) for p in ps])
            raise NonFiniteError(f"non-finite policy parameter {bad} after a PPO step (learning rate {lr:g})")

    opt.register_step_pre_hook(before)
    opt.register_step_post_hook(after)


class Every(BaseCallback):
    """Calls ``fn(updates_done)`` at the start of a rollout every ``every`` PPO updates
    (checkpoints, evaluations), after the update that completed the count."""

    def __init__(self, every: int, fn: Callable[[int], None]) -> None:
        super().__init__()
        self.every, self.fn = every, fn
        self._last = -1

    def _on_step(self) -> bool:
        return True

    def _on_training_start(self) -> None:
        self._last = sb3.rollouts_done(self.model)  # a resumed run does not redo the last one

    def _on_rollout_start(self) -> None:
        done = sb3.rollouts_done(self.model)
        if done > 0 and done % self.every == 0 and done != self._last:
            self._last = done
            self.fn(done)


class EpisodeProgress(BaseCallback):
    """Progress over episodes after each rollout, with the latest reward and discriminator
    accuracy: a rich bar on a terminal, else one plain line per PPO update
    (:class:`~adanat.progress.StepProgress`)."""

    def __init__(self, progress: StepProgress, steps: int, rounds: RewardRounds, updates: int) -> None:
        super().__init__()
        self.progress, self.steps, self.rounds, self.updates = progress, steps, rounds, updates

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        last = self.rounds.last
        info: dict[str, object] = {"update": f"{sb3.rollouts_done(self.model)}/{self.updates}"}
        if "reward/mean" in last:
            info["reward"] = last["reward/mean"]
        if "disc/accuracy" in last:
            info["disc_acc"] = last["disc/accuracy"]
        self.progress.advance(self.num_timesteps // self.steps - self.progress.completed, **info)
