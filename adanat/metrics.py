"""torch-fidelity glue: FID, IS, precision and recall in a chosen feature space.

For ``shapes`` the feature space is the world's metric network, registered with torch-fidelity as
the feature extractor ``adanat-shapes`` (penultimate features for FID/PRC, logits for IS), so its
numbers are computed by torch-fidelity exactly as Inception-based ones are for ImageNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch_fidelity
from torch import Tensor
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from adanat.models.classifier import ShapesClassifier

SHAPES_EXTRACTOR = "adanat-shapes"


class ImageTensorDataset(Dataset):
    """Images ``(N, 3, H, W)`` (float in [0, 1] or uint8) served as uint8, as torch-fidelity expects."""

    def __init__(self, images: Tensor) -> None:
        if images.dtype != torch.uint8:
            images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        self.images = images.cpu()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


class ShapesFeatureExtractor(FeatureExtractorBase):
    """The ``shapes`` metric network as a torch-fidelity feature extractor.

    Weights come from ``feature_extractor_weights_path`` (a safetensors file) when given, else
    from the package's shipped ``shapes`` assets.
    """

    def __init__(self, name: str, features_list: list[str], **kwargs: Any) -> None:
        super().__init__(name, features_list)
        from adanat.assets import load_metric_network

        path = kwargs.get("feature_extractor_weights_path")
        self.net: ShapesClassifier = load_metric_network(Path(path) if path else None)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("penultimate", "logits_unbiased")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits_unbiased", "fid": "penultimate", "kid": "penultimate", "prc": "penultimate"}[
            metric
        ]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> Tensor:
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """uint8 images ``(B, 3, H, W)`` -> the requested features, each ``(B, F)``."""
        feats = self.net.features(x.float() / 255)  # (B, F)
        out = {"penultimate": feats, "logits_unbiased": self.net.head(feats)}
        return tuple(out[name] for name in self.features_list)


def register_shapes_extractor() -> str:
    """Register ``adanat-shapes`` with torch-fidelity (idempotent); returns its name."""
    if SHAPES_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(SHAPES_EXTRACTOR, ShapesFeatureExtractor)
    return SHAPES_EXTRACTOR


def fidelity_metrics(
    generated: Tensor,
    reference: Tensor,
    feature_extractor: str,
    isc: bool = True,
    fid: bool = True,
    prc: bool = True,
    weights_path: str | Path | None = None,
    batch_size: int = 500,
    seed: int = 0,
) -> dict[str, float]:
    """FID, IS and precision/recall of ``generated`` against ``reference`` images through torch-fidelity."""
    kwargs: dict[str, Any] = {}
    if weights_path is not None:
        kwargs["feature_extractor_weights_path"] = str(weights_path)
    if isc:
        kwargs["isc_splits"] = 10
    out = torch_fidelity.calculate_metrics(
        input1=ImageTensorDataset(generated),
        input2=ImageTensorDataset(reference),
        feature_extractor=feature_extractor,
        isc=isc,
        fid=fid,
        prc=prc,
        cuda=torch.cuda.is_available(),
        batch_size=batch_size,
        cache=False,
        verbose=False,
        rng_seed=seed,
        save_cpu_ram=True,
        **kwargs,
    )
    return {k: float(v) for k, v in out.items()}
