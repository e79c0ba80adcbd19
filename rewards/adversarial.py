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

    def update(self, fake: Tensor, labels: Tensor) -> dict[str, float]:
        """One round: ``updates_per_round`` steps on minibatches of ``fake`` vs fresh real images."""
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
