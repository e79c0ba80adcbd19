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
