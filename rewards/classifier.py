"""A fixed pretrained reward: log-probability of the requested class under the metric network."""

from __future__ import annotations

import torch
from torch import Tensor

from adanat.models.classifier import ShapesClassifier


class ClassifierReward:
    """``log p(label | image)`` under a frozen classifier (``shapes``: the metric network)."""

    name = "classifier"

    def __init__(self, classifier: ShapesClassifier) -> None:
        self.classifier = classifier.eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        dev = next(self.classifier.parameters()).device
        logp = torch.log_softmax(self.classifier(images.to(dev)).float(), dim=-1)  # (B, C)
        return logp.gather(1, labels.to(dev)[:, None]).squeeze(1).to(images.device)  # (B,)
