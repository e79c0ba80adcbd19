"""A small CNN classifier: the metric network of the ``shapes`` world.

Its penultimate features are the feature space for FID/precision/recall and its logits feed the
Inception Score, the way Inception-v3 serves ImageNet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ClassifierConfig:
    """:param widths: channels of the three stages; :param num_classes: output classes."""

    widths: tuple[int, int, int] = (32, 64, 128)
    num_classes: int = 10

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ShapesClassifier(nn.Module):
    """Three conv stages (2x2 max-pool between them), global average pool, linear head."""

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config or ClassifierConfig()
        w = self.config.widths
        self.stages = nn.Sequential(
            _stage(3, w[0]), nn.MaxPool2d(2), _stage(w[0], w[1]), nn.MaxPool2d(2), _stage(w[1], w[2])
        )
        self.head = nn.Linear(w[2], self.config.num_classes)

    def features(self, images: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] -> penultimate features ``(B, F)``."""
        return self.stages(images * 2 - 1).mean(dim=(2, 3))

    def forward(self, images: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] -> logits ``(B, C)``."""
        return self.head(self.features(images))


@torch.no_grad()
def accuracy(model: ShapesClassifier, images: Tensor, labels: Tensor, batch: int = 500) -> float:
    """Top-1 accuracy on images ``(N, 3, H, W)`` in [0, 1] (uint8 is scaled)."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        correct += int((model(x).argmax(1) == labels[i : i + batch]).sum())
    return correct / len(images)
