"""The adversarial reward: ``sigmoid(mean logit)`` of a class-conditional discriminator that is
trained between PPO rollouts on the policy's fresh samples against real images."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adanat.rewards.real_images import RealImages
from adanat.team import TeamRows


@dataclass(frozen=True)
class DiscriminatorTraining:
    """AdaNAT's settings: non-saturating loss, Adam(1e-4, betas (0.5, 0.999)), 5 updates a round.

    :param lr: Adam learning rate of the discriminator.
    :param betas: Adam betas.
    :param updates_per_round: discriminator updates per round (one round after each PPO rollout).
    :param batch_size: fake and real images per discriminator update.
    :param seed: seed of its initial weights and of its minibatch draws.
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    updates_per_round: int = 5
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"discriminator lr must be a finite number > 0, got {self.lr}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"discriminator betas must lie in [0, 1), got {self.betas}")
        if self.updates_per_round < 1:
            raise ValueError(f"disc-updates must be >= 1, got {self.updates_per_round}")
        if self.batch_size < 1:
            raise ValueError(f"discriminator batch size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


class AdversarialReward:
    """Reward = sigmoid of the discriminator's mean logit on the final image (eval mode)."""

    name = "adversarial"

    def __init__(self, discriminator: nn.Module, real: RealImages, training: DiscriminatorTraining) -> None:
        self.discriminator, self.real, self.training = discriminator.eval(), real, training
        params = [p for p in discriminator.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=training.lr, betas=training.betas)
        self.rng = torch.Generator().manual_seed(training.seed)  # minibatch draws
        self.rounds = 0

    @property
    def device(self) -> torch.device:
        return next(self.discriminator.parameters()).device

    @torch.no_grad()
    def logits(self, images: Tensor, labels: Tensor) -> Tensor:
        """Mean discriminator logit per image ``(B,)`` (eval mode)."""
        was_training = self.discriminator.training
        self.discriminator.eval()
        out = self.discriminator(images.to(self.device), labels.to(self.device)).mean(1)  # (B,)
        self.discriminator.train(was_training)
        return out

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(images, labels)).to(images.device)  # (B,)

    def update(self, fake: Tensor, labels: Tensor, rows: TeamRows | None = None) -> dict[str, float]:
        """One round: ``updates_per_round`` steps on minibatches of ``fake`` vs fresh real images.

        With ``rows`` (under torchrun) ``fake`` is this process's share of the rollout's images
        and the round is data-parallel: every process draws the same run-wide minibatch (the
        picked images are summed in from the processes that hold them), runs the discriminator
        on its contiguous part of it with the real images of those positions, and the gradients
        and statistics are summed over the processes, so every replica takes the step one
        process would take on the whole rollout (minibatch-std groups included, when each part
        is a whole number of groups: :meth:`check_team`).
        """
        if rows is not None and rows.team.size > 1:
            return self._update_shared(fake, labels, rows)
        cfg, dev = self.training, self.device
        self.discriminator.train()
        stats: dict[str, list[float]] = {k: [] for k in ("loss", "accuracy", "real_score", "fake_score")}
        for _ in range(cfg.updates_per_round):
            pick = torch.randint(0, len(fake), (min(cfg.batch_size, len(fake)),), generator=self.rng)
            f_img, f_lab = fake[pick].to(dev), labels[pick].to(dev)  # (b, 3, H, W), (b,)
            r_img, r_lab = self.real.sample(len(pick), self.rng)
            r_img, r_lab = r_img.to(dev), r_lab.to(dev)
            logit_real = self.discriminator(r_img, r_lab).mean(1)  # (b,)
            logit_fake = self.discriminator(f_img, f_lab).mean(1)  # (b,)
            loss = F.softplus(-logit_real).mean() + F.softplus(logit_fake).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                acc = 0.5 * ((logit_real > 0).float().mean() + (logit_fake < 0).float().mean())
                stats["loss"].append(loss.item())
                stats["accuracy"].append(float(acc))
                stats["real_score"].append(float(torch.sigmoid(logit_real).mean()))
                stats["fake_score"].append(float(torch.sigmoid(logit_fake).mean()))
        self.discriminator.eval()
        self.rounds += 1
        return {k: sum(v) / len(v) for k, v in stats.items()}

    def _update_shared(self, fake: Tensor, labels: Tensor, rows: TeamRows) -> dict[str, float]:
        cfg, dev, team = self.training, self.device, rows.team
        self.discriminator.train()
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        totals = torch.zeros(5, dtype=torch.float64)  # loss, accuracy, real, fake scores, steps
        episodes = len(fake) * team.size
        for _ in range(cfg.updates_per_round):
            b = min(cfg.batch_size, episodes)
            pick = torch.randint(0, episodes, (b,), generator=self.rng)  # (b,) run-wide episodes
            owner, local = rows.locate(pick)  # (b,) each
            held = owner == team.shard.rank  # (b,) the picked images this process holds
            # the whole minibatch on every process: each position comes from the one that holds it
            f_all = fake.new_zeros((b, *fake.shape[1:]))  # (b, 3, H, W)
            f_all[held] = fake[local[held]]
            l_all = torch.zeros(b, dtype=torch.int64)  # (b,)
            l_all[held] = labels[local[held]].cpu()
            f_all, l_all = team.sum(f_all.to(dev)), team.sum(l_all)  # (b, 3, H, W), (b,)
            part = torch.tensor_split(torch.arange(b), team.size)[team.shard.rank]  # (k,) my positions
            mine = torch.zeros(b, dtype=torch.bool)  # (b,)
            mine[part] = True
            r_img, r_lab = self.real.sample(b, self.rng, keep=mine)  # the real images of my positions
            weight = 1.0 if len(part) else 0.0  # no positions: one image at weight 0, as every
            if not len(part):  # process must step its spectral norms as often as the others
                part = torch.arange(1)
                r_img, r_lab = f_all[part], l_all[part]
            self.optimizer.zero_grad(set_to_none=False)
            logit_real = self.discriminator(r_img.to(dev), r_lab.to(dev)).mean(1)  # (k,)
            logit_fake = self.discriminator(f_all[part.to(dev)], l_all[part].to(dev)).mean(1)  # (k,)
            loss = weight * (F.softplus(-logit_real).sum() + F.softplus(logit_fake).sum()) / b
            loss.backward()
            sums = torch.zeros(4, dtype=torch.float64)  # this process's share of the statistics
            with torch.no_grad():
                right = (logit_real > 0).double().sum() + (logit_fake < 0).double().sum()
                sums[0] = loss.item()
                sums[1] = weight * 0.5 * float(right) / b
                sums[2] = weight * float(torch.sigmoid(logit_real).double().sum()) / b
                sums[3] = weight * float(torch.sigmoid(logit_fake).double().sum()) / b
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = team.sum(torch.cat([g.reshape(-1) for g in grads]))  # (P,) summed gradients
            start = 0
            for p in params:
                p.grad = flat[start : start + p.numel()].view_as(p).clone()
                start += p.numel()
            self.optimizer.step()
            totals[:4] += team.sum(sums)
            totals[4] += 1
        self.discriminator.eval()
        self.rounds += 1
        names = ("loss", "accuracy", "real_score", "fake_score")
        return {k: float(totals[i] / totals[4]) for i, k in enumerate(names)}

    def check_team(self, processes: int, rows: int, episodes: int) -> None:
        """Refuse a team whose data-parallel rounds or per-process rewards would cut the
        discriminator's minibatch-std groups (then they would not equal one process's)."""
        group = getattr(getattr(self.discriminator, "config", None), "group", 0)
        if not group or processes == 1:
            return
        if rows % group:
            raise ValueError(
                f"minibatch-std groups of {group} need rows per process ({rows}) in whole groups; "
                f"use --num-envs a multiple of {group * processes}"
            )
        b = min(self.training.batch_size, episodes)  # a round's minibatch of a rollout's episodes
        if b % (group * processes):
            raise ValueError(
                f"the discriminator batch ({b}) must split into whole minibatch-std groups of {group} "
                f"over {processes} processes"
            )

    def state_dict(self) -> dict[str, Any]:
        """Discriminator, optimiser, random stream and round count (plain tensors)."""
        return {
            "discriminator": self.discriminator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.get_state(),
            "rounds": self.rounds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back a :meth:`state_dict` (also one saved before the stream was named ``rng``)."""
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.set_state(state["rng"] if "rng" in state else state["generator"])
        self.rounds = int(state["rounds"])
