"""torch-fidelity glue: FID, IS, precision and recall in a chosen feature space.

For ``shapes`` the feature space is the world's metric network, registered with torch-fidelity as
the feature extractor ``adanat-shapes`` (penultimate features for FID/PRC, logits for IS), so its
numbers are computed by torch-fidelity exactly as Inception-based ones are for ImageNet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_fidelity
from torch import Tensor
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from adanat.distributed import Shard, batch_bounds, gather_batches
from adanat.models.classifier import ShapesClassifier
from adanat.outputs import to_uint8

SHAPES_EXTRACTOR = "adanat-shapes"


class ImageTensorDataset(Dataset):
    """Images ``(N, 3, H, W)`` (float in [0, 1] or uint8) served as uint8, as torch-fidelity expects."""

    def __init__(self, images: Tensor) -> None:
        if images.dtype != torch.uint8:
            images = to_uint8(images)
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
    weights_path: str | Path | None = None,
    batch_size: int = 500,
    seed: int = 0,
) -> dict[str, float]:
    """FID, IS and precision/recall of ``generated`` against ``reference`` images through torch-fidelity."""
    kwargs: dict[str, Any] = {"isc_splits": 10}
    if weights_path is not None:
        kwargs["feature_extractor_weights_path"] = str(weights_path)
    out = torch_fidelity.calculate_metrics(
        input1=ImageTensorDataset(generated),
        input2=ImageTensorDataset(reference),
        feature_extractor=feature_extractor,
        isc=True,
        fid=True,
        prc=True,
        cuda=torch.cuda.is_available(),
        batch_size=batch_size,
        cache=False,
        verbose=False,
        rng_seed=seed,
        save_cpu_ram=True,
        **kwargs,
    )
    return {k: float(v) for k, v in out.items()}


# --- metrics from features -------------------------------------------------------------------
# ``adanat eval`` extracts features batch by batch (on several processes when run under torchrun),
# gathers them, and then computes every number from the gathered features with torch-fidelity's
# own feature-level functions, so sharded and single-process runs give the same numbers.

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE


class MetricsError(ValueError):
    """A reference statistics file or feature-extractor weight file that cannot be used."""


@dataclass
class FeatureSpace:
    """A torch-fidelity feature extractor and the layers it gives for FID/PRC and for IS."""

    name: str
    extractor: FeatureExtractorBase
    fid_layer: str
    isc_layer: str

    def to(self, device: torch.device | str) -> FeatureSpace:
        self.extractor = self.extractor.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 images ``(B, 3, H, W)`` -> ``(fid features (B, F), IS logits (B, C))``, float64 on CPU."""
        device = next(self.extractor.parameters()).device
        out = dict(zip(self.extractor.features_list, self.extractor(images.to(device)), strict=True))
        return out[self.fid_layer].double().cpu(), out[self.isc_layer].double().cpu()

    def feature_dim(self, image_size: int) -> int:
        """``F`` of the FID layer, measured on one black image of side ``image_size``."""
        return self(torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8))[0].shape[1]


@torch.no_grad()
def features_of_batches(
    space: FeatureSpace,
    n: int,
    images_of: Callable[[range], Tensor],
    shard: Shard,
    device: torch.device,
    batch_size: int,
) -> Tensor:
    """FID-layer features ``(n, F)`` of ``n`` uint8 images that ``images_of(rows)`` gives batch
    by batch; each process computes its own batches, every process gets all features."""
    bounds = batch_bounds(n, batch_size)
    mine = [space(images_of(bounds[j]))[0] for j in shard.batches(len(bounds))]
    return gather_batches(shard, mine, [len(b) for b in bounds], device)


def _feature_space(name: str, cls: type[FeatureExtractorBase], **kwargs: Any) -> FeatureSpace:
    fid_layer = cls.get_default_feature_layer_for_metric("fid")
    isc_layer = cls.get_default_feature_layer_for_metric("isc")
    extractor = cls(name, sorted({fid_layer, isc_layer}), **kwargs)
    return FeatureSpace(name, extractor.eval(), fid_layer, isc_layer)


def shapes_feature_space(weights_path: str | Path | None = None) -> FeatureSpace:
    """The ``shapes`` metric network (shipped weights unless ``weights_path``)."""
    kwargs = {} if weights_path is None else {"feature_extractor_weights_path": str(weights_path)}
    return _feature_space(register_shapes_extractor(), ShapesFeatureExtractor, **kwargs)


def find_inception_weights(path: str | Path | None) -> Path:
    """The Inception weight file: ``path``, else torch-fidelity's file in the torch hub cache.
    Never downloads."""
    if path is not None:
        if not Path(path).is_file():
            raise MetricsError(f"Inception weights {path} not found")
        return Path(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if cached.is_file():
        return cached
    raise MetricsError(
        f"no Inception weights: give --inception PATH (torch-fidelity's {INCEPTION_FILE}, from "
        f"{INCEPTION_URL}) or place the file in {cached.parent}"
    )


def inception_feature_space(weights_path: str | Path | None = None) -> FeatureSpace:
    """torch-fidelity's ``inception-v3-compat`` (2048-d pool features, logits for IS).

    torch-fidelity reads its weight file with full unpickling, so the user's file (``.pth`` or
    ``.safetensors``) is first read without pickle (``weights_only``) and re-saved as plain tensors
    to a temporary file that torch-fidelity then loads.
    """
    import tempfile

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from adanat.checkpoints import CheckpointError, read_state_dict

    path = find_inception_weights(weights_path)
    try:
        state = read_state_dict(path)
    except CheckpointError as e:
        raise MetricsError(str(e)) from None
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "inception.pth"
        torch.save({k: v.contiguous() for k, v in state.items()}, clean)
        try:
            return _feature_space(
                "inception-v3-compat", FeatureExtractorInceptionV3, feature_extractor_weights_path=str(clean)
            )
        except RuntimeError as e:  # load_state_dict: missing/unexpected keys or shapes
            raise MetricsError(f"{path} is not torch-fidelity's Inception-v3 weight file: {e}") from None


@dataclass(frozen=True)
class FidStatistics:
    """Mean ``(F,)`` and covariance ``(F, F)`` of reference features (the ``fid_stats_*.npz`` form)."""

    mu: np.ndarray
    sigma: np.ndarray

    @staticmethod
    def of(features: Tensor) -> FidStatistics:
        stats = fid_features_to_statistics(features.double())
        return FidStatistics(stats["mu"], stats["sigma"])

    @staticmethod
    def load(path: str | Path) -> FidStatistics:
        """Read ``mu``/``sigma`` from an ``.npz`` (no pickle)."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
        except FileNotFoundError:
            raise MetricsError(f"reference statistics {path} not found") from None
        except KeyError:
            raise MetricsError(f"reference statistics {path} must hold arrays 'mu' and 'sigma'") from None
        except (OSError, ValueError) as e:
            raise MetricsError(f"reference statistics {path} is not a readable .npz file ({e})") from None
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise MetricsError(f"reference statistics {path}: mu {mu.shape} and sigma {sigma.shape} disagree")
        return FidStatistics(mu, sigma)

    def save(self, path: str | Path) -> None:
        np.savez(Path(path), mu=self.mu, sigma=self.sigma)


@dataclass(frozen=True)
class ReferenceRequest:
    """How to build a FID reference.

    :param n: real images to render when the world renders its reference (``shapes``).
    :param image_size: side of the generated images (the width of a statistics file is checked
        against the feature space on an image of this size before anything is generated).
    :param statistics: a ``fid_stats.npz`` to use instead (``mu``/``sigma``; real images as
        ``arr_0`` also give precision/recall).
    :param shard: this process's share of the feature extraction.
    :param batch_size: images per feature batch.
    """

    n: int
    image_size: int
    device: torch.device
    statistics: Path | None = None
    shard: Shard = field(default_factory=Shard)
    batch_size: int = 250


@dataclass
class Reference:
    """What generated features are compared with: FID statistics, and real features for
    precision/recall when available."""

    stats: FidStatistics
    features: Tensor | None  # (M, F)
    description: str

    @staticmethod
    def from_file(path: Path, space: FeatureSpace, request: ReferenceRequest) -> Reference:
        """Statistics (and real images, when the file holds them) of ``path``, checked against
        ``space``'s width first."""
        stats = FidStatistics.load(path)
        width = space.feature_dim(request.image_size)
        if len(stats.mu) != width:
            raise MetricsError(
                f"reference statistics {path} have {len(stats.mu)} features, {space.name} gives {width}"
            )
        real = reference_images(path)
        feats = None
        if real is not None:  # precision/recall need real features
            feats = features_of_batches(
                space,
                len(real),
                lambda rows: real[rows.start : rows.stop],
                request.shard,
                request.device,
                request.batch_size,
            )  # (M, F)
        extra = "" if real is None else f" with {len(real)} images"
        return Reference(stats, feats, f"statistics {path}{extra}")


def reference_images(path: str | Path) -> Tensor | None:
    """The real images an ``.npz`` reference batch may hold besides ``mu``/``sigma`` (ADM's
    reference batches keep them as ``arr_0``, ``(N, H, W, 3)`` uint8), as ``(N, 3, H, W)``; None
    when there are none. They give the real features precision/recall need."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            if "arr_0" not in data.files:
                return None
            arr = data["arr_0"]
    except (OSError, ValueError) as e:
        raise MetricsError(f"reference {path} is not a readable .npz file ({e})") from None
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise MetricsError(
            f"reference {path}: arr_0 must be uint8 images (N, H, W, 3), got {arr.dtype} {arr.shape}"
        )
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def fid_from_features(features: Tensor, reference: FidStatistics) -> float:
    """FID of features ``(N, F)`` against reference statistics."""
    if features.shape[1] != len(reference.mu):
        raise MetricsError(
            f"reference statistics have {len(reference.mu)} features, "
            f"the feature space gives {features.shape[1]}"
        )
    ref = {"mu": reference.mu, "sigma": reference.sigma}
    stats = fid_features_to_statistics(features.double())
    return float(fid_statistics_to_metric(stats, ref, False)["frechet_inception_distance"])


PRC_MIN_IMAGES = 4  # torch-fidelity's precision/recall: the 3 nearest neighbours of each image, and itself


def metrics_from_features(
    fid_features: Tensor,
    isc_logits: Tensor,
    reference: FidStatistics,
    reference_features: Tensor | None = None,
    isc_splits: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """FID, IS (and precision/recall when ``reference_features`` are given) from features.

    :param fid_features: ``(N, F)`` generated features of the FID layer.
    :param isc_logits: ``(N, C)`` generated logits of the IS layer.
    :param reference: statistics of the reference features.
    :param reference_features: ``(M, F)`` reference features for precision/recall (left out
        when either side has fewer than :data:`PRC_MIN_IMAGES` images: each image needs its
        neighbourhood).
    """
    out = {"frechet_inception_distance": fid_from_features(fid_features, reference)}
    out.update(isc_features_to_metric(isc_logits.double(), splits=isc_splits, shuffle=True, rng_seed=seed))
    if reference_features is not None and min(len(fid_features), len(reference_features)) >= PRC_MIN_IMAGES:
        out.update(prc_features_to_metric(fid_features.float(), reference_features.float(), verbose=False))
    return {k: float(v) for k, v in out.items()}
