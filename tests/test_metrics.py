"""torch-fidelity glue: the shapes metric network as a registered feature extractor."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from adanat.metrics import SHAPES_EXTRACTOR, fidelity_metrics, register_shapes_extractor
from adanat.models.classifier import ShapesClassifier
from adanat.worlds.shapes import ShapesDataset


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("metric") / "metric.safetensors"
    save_file(ShapesClassifier().state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def images():
    real = torch.stack([ShapesDataset("heldout", 60)[i][0] for i in range(60)])
    other = torch.stack([ShapesDataset("reference", 60)[i][0] for i in range(60)])
    return real, other


def test_registration_is_idempotent():
    assert register_shapes_extractor() == SHAPES_EXTRACTOR
    assert register_shapes_extractor() == SHAPES_EXTRACTOR


def test_fid_is_prc_through_torch_fidelity(weights, images):
    real, other = images
    name = register_shapes_extractor()
    same = fidelity_metrics(real, real, name, weights_path=weights)
    assert same["frechet_inception_distance"] == pytest.approx(0.0, abs=1e-3)
    assert same["precision"] == pytest.approx(1.0) and same["recall"] == pytest.approx(1.0)
    near = fidelity_metrics(other, real, name, weights_path=weights)
    noise = fidelity_metrics(torch.rand(60, 3, 32, 32), real, name, weights_path=weights)
    assert 0 < near["frechet_inception_distance"] < noise["frechet_inception_distance"]
    assert near["inception_score_mean"] >= 1.0
    assert set(near) >= {"inception_score_mean", "inception_score_std", "precision", "recall", "f_score"}


def test_precision_recall_are_left_out_below_four_images():
    """torch-fidelity's precision/recall need each image's 3 nearest neighbours."""
    from adanat.metrics import FidStatistics, metrics_from_features

    g = torch.Generator().manual_seed(0)
    feats, ref = (
        torch.randn(3, 8, generator=g, dtype=torch.float64),
        torch.randn(6, 8, generator=g, dtype=torch.float64),
    )
    logits = torch.randn(3, 5, generator=g, dtype=torch.float64)
    out = metrics_from_features(feats, logits, FidStatistics.of(ref), ref)
    assert "precision" not in out and "recall" not in out and "frechet_inception_distance" in out
    more = torch.randn(4, 8, generator=g, dtype=torch.float64)
    out = metrics_from_features(
        more, torch.randn(4, 5, generator=g, dtype=torch.float64), FidStatistics.of(ref), ref
    )
    assert 0 <= out["precision"] <= 1 and 0 <= out["recall"] <= 1
