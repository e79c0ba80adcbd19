"""The adversarial reward: ``sigmoid(mean logit)`` of a class-conditional discriminator that is
trained between PPO rollouts on the policy's fresh samples against real images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from adanat.rewards.real_images import RealImages
from torch import Tensor, nn


@dataclass(frozen=True)
class DiscriminatorTraining:
    """AdaNAT's settings: non-saturating loss, Adam(1e-4, betas (0.5, 0.999)), 5 updates a round."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    updates_per_round: int = 5
    batch_size: int = 64
    seed: int = 0


class AdversarialReward:
    """Reward = sigmoid of the discriminator's mean logit on the final image (eval mode)."""

    name = "adversarial"

    def __init__(self, discriminator: nn.Module, real: RealImages, training: DiscriminatorTraining) -> None:
        self.discriminator, self.real, self.training = discriminator.eval(), real, training
        params = [p for p in discriminator.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=training.lr, betas=training.betas)
        self.generator = torch.Generator().manual_seed(training.seed)
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
            pick = torch.randint(0, len(fake), (min(cfg.batch_size, len(fake)),), generator=self.generator)
            f_img, f_lab = fake[pick].to(dev), labels[pick].to(dev)  # (b, 3, H, W), (b,)
            r_img, r_lab = self.real.sample(len(pick), self.generator)
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
        return {
            "discriminator": self.discriminator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "rounds": self.rounds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.rounds = int(state["rounds"])
