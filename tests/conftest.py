"""Shared pytest fixtures (helper functions live in ``tests/helpers.py``)."""

from __future__ import annotations

import pytest
import torch
from helpers import random_enat

from adanat.models.enat import ENAT
from adanat.models.vqgan import MaskGITVQGAN
from adanat.presets import model_preset


@pytest.fixture
def tiny_preset():
    return model_preset("tiny")


@pytest.fixture
def tiny_enat(tiny_preset) -> ENAT:
    return random_enat(tiny_preset.generator)


@pytest.fixture
def tiny_vqgan(tiny_preset) -> MaskGITVQGAN:
    torch.manual_seed(0)
    return MaskGITVQGAN(tiny_preset.tokenizer).eval()
