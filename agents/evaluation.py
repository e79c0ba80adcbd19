"""Evaluating a policy against its base schedule on held-out seeds with the current reward."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import make_grid

from adanat.agents.export import ExportedActor, ExportedMeta, mean_controller
from adanat.distributed import Shard, gather_batches
from adanat.envs.core import NATCore
from adanat.evaluation import SampleSpec, fixed, sample_batches
from adanat.sampling import Controller, ScheduleController
from adanat.schedules import CONTROL_NAMES


@dataclass
class EvalResult:
    policy_reward: float
    base_reward: float
    policy_rewards: Tensor  # (E,)
    base_rewards: Tensor  # (E,)
    grid: Tensor  # (3, H, W) policy samples, one column per class
    trace: Tensor  # (E, T, 4) the policy's controls
    base: Tensor  # (T, 4) the base schedule

    def figure(self) -> Figure:
        """Per control: the policy's mean over samples with +-1 std band, and the base schedule."""
        fig = Figure(figsize=(12, 2.8))
        steps = torch.arange(self.trace.shape[1]).numpy()
        for j, name in enumerate(CONTROL_NAMES):
            ax = fig.add_subplot(1, 4, j + 1)
            mean, std = self.trace[:, :, j].mean(0).numpy(), self.trace[:, :, j].std(0).numpy()
            ax.plot(steps, mean, label="policy (mean)")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.3, label="policy (+-1 std)")
            ax.plot(steps, self.base[:, j].numpy(), "k--", label="base")
            ax.set_title(name)
            ax.set_xlabel("step")
        fig.axes[0].legend(fontsize=7)
        fig.tight_layout()
        return fig


class PolicyEvaluator:
    """Generates ``episodes`` images (labels cycle over the classes) from fixed seeds with a
    policy's mean action and with the base schedule, and scores both with the core's reward."""

    def __init__(self, core: NATCore, episodes: int, seed: int, shard: Shard | None = None) -> None:
        self.core, self.episodes, self.seed = core, episodes, seed
        self.shard = shard or Shard()

    @torch.no_grad()
    def _run(self, controller: Controller) -> tuple[Tensor, Tensor, Tensor]:
        """Rewards ``(E,)``, images ``(E, 3, H, W)`` and controls ``(E, T, 4)``; under torchrun
        each process generates its share of the batches and every process gets them all."""
        core, shard = self.core, self.shard
        rewards, images, traces = [], [], []
        spec = SampleSpec(self.episodes, core.steps, self.seed, core.num_rows)
        bounds = spec.bounds()
        for labels, out in sample_batches(core.sampler, fixed(controller), spec, shard.batches(len(bounds))):
            assert out.images is not None
            rewards.append(core.reward(out.images, labels).float())
            images.append(out.images.float())
            traces.append(out.trace.float())
        sizes, dev = [len(b) for b in bounds], core.device
        gathered = (gather_batches(shard, x, sizes, dev).cpu() for x in (rewards, images, traces))
        return tuple(gathered)  # type: ignore[return-value]

    def run(self, actor: ExportedActor, meta: ExportedMeta) -> EvalResult:
        policy_r, images, trace = self._run(mean_controller(actor, meta, self.core.prompts))
        base_r, _, _ = self._run(ScheduleController(self.core.mapping.base))
        cols = min(self.core.sampler.generator.num_classes or 16, 16)
        shown = images[: cols * max(1, min(4, len(images) // cols))]
        return EvalResult(
            policy_reward=float(policy_r.mean()),
            base_reward=float(base_r.mean()),
            policy_rewards=policy_r,
            base_rewards=base_r,
            grid=make_grid(shown, nrow=cols, padding=1, pad_value=1.0),
            trace=trace,
            base=self.core.mapping.base.tensor("cpu"),
        )
