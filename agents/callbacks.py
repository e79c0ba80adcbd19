"""stable-baselines3 callbacks: exploration-std schedule, reward/discriminator rounds with their
TensorBoard records, non-finite guards, periodic evaluation, checkpoints and progress."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from adanat.envs.vec_env import NATVecEnv
from adanat.rewards.base import LearnedReward, Reward
from rich.progress import Progress, TaskID
from stable_baselines3.common.callbacks import BaseCallback
from torch.utils.tensorboard import SummaryWriter

from adanat.schedules import CONTROL_NAMES


class NonFiniteError(RuntimeError):
    """A reward, loss or parameter became NaN or infinite."""


def std_at(schedule: Sequence[tuple[int, float]], update: int) -> float:
    """The exploration std at PPO update ``update``: the value of the last threshold reached."""
    value = schedule[0][1]
    for start, std in schedule:
        if update >= start:
            value = std
    return value


def rollouts_done(model: object) -> int:
    """PPO updates (rollouts) completed so far."""
    per_rollout = model.n_steps * model.n_envs  # type: ignore[attr-defined]
    return int(model.num_timesteps // per_rollout)  # type: ignore[attr-defined]


class ExplorationStd(BaseCallback):
    """Holds the Gaussian policy's std at a fixed schedule (AdaNAT: 0.6, then 0.3 after 500
    updates); the std is not learned."""

    def __init__(self, schedule: Sequence[tuple[int, float]]) -> None:
        super().__init__()
        self.schedule = tuple(schedule)

    def _on_training_start(self) -> None:
        self.model.policy.log_std.requires_grad_(False)
        self._apply()

    def _on_rollout_start(self) -> None:
        self._apply()

    def _apply(self) -> None:
        std = std_at(self.schedule, rollouts_done(self.model))
        with torch.no_grad():
            self.model.policy.log_std.fill_(math.log(std))
        self.logger.record("train/exploration_std", std)

    def _on_step(self) -> bool:
        return True


class RewardRounds(BaseCallback):
    """After each rollout: records the finished episodes (reward, per-step controls), stops on a
    non-finite reward, and runs one update round of a learned reward (the discriminator)."""

    def __init__(self, venv: NATVecEnv, reward: Reward, writer: SummaryWriter | None) -> None:
        super().__init__()
        self.venv, self.reward, self.writer = venv, reward, writer
        self.last: dict[str, float] = {}

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        finished = self.venv.drain_finished()
        if not finished:
            return
        images = torch.cat([f.images for f in finished])  # (E, 3, H, W)
        labels = torch.cat([f.labels for f in finished])  # (E,)
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
        if isinstance(self.reward, LearnedReward):
            stats = self.reward.update(images, labels)
            if not all(math.isfinite(v) for v in stats.values()):
                raise NonFiniteError(f"non-finite discriminator statistics {stats}")
            for name, value in stats.items():
                self.logger.record(f"disc/{name}", value)
                self.last[f"disc/{name}"] = value


def check_finite(model: object) -> None:
    """Raise :class:`NonFiniteError` if the last PPO update left a non-finite loss or parameter."""
    loss = model.logger.name_to_value.get("train/loss")  # type: ignore[attr-defined]
    if loss is not None and not math.isfinite(loss):
        raise NonFiniteError(f"non-finite PPO loss {loss}")
    for name, p in model.policy.named_parameters():  # type: ignore[attr-defined]
        if not torch.isfinite(p).all():
            raise NonFiniteError(f"non-finite policy parameter {name}")


class FiniteGuard(BaseCallback):
    """Stops the run when the last PPO update produced a non-finite loss or parameter (checked
    before anything is saved at the start of the next rollout)."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        check_finite(self.model)


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
        self._last = rollouts_done(self.model)  # a resumed run does not redo the last one

    def _on_rollout_start(self) -> None:
        done = rollouts_done(self.model)
        if done > 0 and done % self.every == 0 and done != self._last:
            self._last = done
            self.fn(done)


class RichProgress(BaseCallback):
    """A rich progress bar over episodes with the latest reward and discriminator accuracy."""

    def __init__(self, progress: Progress, task: TaskID, steps: int, rounds: RewardRounds) -> None:
        super().__init__()
        self.progress, self.task, self.steps, self.rounds = progress, task, steps, rounds

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        last = self.rounds.last
        info = f"reward {last.get('reward/mean', float('nan')):.3f}"
        if "disc/accuracy" in last:
            info += f"  D acc {last['disc/accuracy']:.2f}"
        self.progress.update(self.task, completed=self.num_timesteps // self.steps, info=info)
