"""Training the metric network (a small CNN classifier) on labelled images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from adanat.models.classifier import ShapesClassifier
from adanat.pretrain.run import TrainingRun, warmup_cosine


@dataclass(frozen=True)
class ClassifierTraining:
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0


def train_classifier(
    model: ShapesClassifier, images: Tensor, labels: Tensor, run: TrainingRun, cfg: ClassifierTraining
) -> ShapesClassifier:
    """Train on uint8 ``images`` ``(N, 3, H, W)`` with ``labels`` ``(N,)``; random flips as augmentation
    would change some classes' look, so none is used (the data set is procedural and large)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    parts = {"model": model, "optimizer": opt, "generator": gen}
    run.restore(parts)
    model.train()
    with run.progress("metric") as progress:
        while run.step < cfg.steps:
            for group in opt.param_groups:
                group["lr"] = warmup_cosine(run.step, cfg.lr, 0, cfg.steps)
            idx = torch.randint(0, len(images), (cfg.batch_size,), generator=gen)  # (B,)
            logits = model(images[idx].float() / 255)  # (B, C)
            loss = F.cross_entropy(logits, labels[idx])
            run.watch(loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run.step += 1
            info: dict[str, float] = {}
            if run.logging_due():
                acc = (logits.argmax(1) == labels[idx]).float().mean()
                info = {"loss": loss.item(), "train_acc": acc.item()}
                run.log({"metric/loss": info["loss"], "metric/train_acc": info["train_acc"]})
            progress.advance(1, **info)
            run.checkpoint(parts)
    return model.eval()
