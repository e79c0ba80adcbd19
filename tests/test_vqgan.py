"""MaskGIT VQGAN: official parity, strict loading of the released key list, public API."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from helpers import DATA, fixture_tensors

from adanat.checkpoints import CheckpointError, load_tokenizer
from adanat.models.vqgan import MaskGITVQGAN
from adanat.presets import tokenizer_config


@pytest.fixture(scope="module")
def parity():
    sd, t = fixture_tensors("maskgit_vqgan_tiny_parity.safetensors")
    return load_tokenizer(sd, tokenizer_config("vqgan-tiny")), t, sd


@torch.no_grad()
def test_encode_gives_the_official_ids(parity):
    model, t, _ = parity
    assert torch.equal(model.encode(t["image"]), t["ids"])


@torch.no_grad()
def test_decode_matches_the_official_output(parity):
    model, t, _ = parity
    assert (model.decode_raw(t["ids"]) - t["decoded"]).abs().max() <= 1e-4
    images = model.decode(t["ids"])
    assert images.min() >= 0 and images.max() <= 1
    assert (
        torch.equal(images, t["decoded"].clamp(0, 1))
        or (images - t["decoded"].clamp(0, 1)).abs().max() <= 1e-4
    )


def test_release_key_list_loads_strictly():
    spec = json.loads((DATA / "maskgit_vqgan_f16_state_dict.json").read_text())
    sd = {k: torch.empty(shape, device="meta") for k, shape in spec["tensors"].items()}
    model = load_tokenizer(sd, tokenizer_config("maskgit-vqgan-f16"), device="meta")
    assert sum(p.numel() for p in model.parameters()) == spec["num_parameters"]
    assert model.config.downsample_factor == 16


def test_wrapped_torch_file_loads(parity, tmp_path):
    _, t, sd = parity
    path = tmp_path / "vqgan.ckpt"
    torch.save({"state_dict": sd}, path)
    model = load_tokenizer(path, tokenizer_config("vqgan-tiny"))
    assert torch.equal(model.encode(t["image"]), t["ids"])


def test_mismatched_file_names_the_keys(parity, tmp_path):
    _, _, sd = parity
    bad = dict(sd)
    bad["extra.weight"] = torch.zeros(1)
    del bad["quantize.embedding.weight"]
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(
        CheckpointError, match=r"missing \(e\.g\. quantize\.embedding\.weight\).*extra\.weight"
    ):
        load_tokenizer(path, tokenizer_config("vqgan-tiny"))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": object()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_tokenizer(path, tokenizer_config("vqgan-tiny"))


@torch.no_grad()
def test_image_api_shapes():
    model = MaskGITVQGAN(tokenizer_config("vqgan-tiny")).eval()
    images = torch.rand(3, 3, 32, 32)
    ids = model.encode(images)
    assert ids.shape == (3, 8, 8) and ids.dtype == torch.long
    assert int(ids.max()) < model.config.codebook_size
    out = model.decode(ids)
    assert out.shape == (3, 3, 32, 32) and out.min() >= 0 and out.max() <= 1


def test_patch_local_encoder_codes_each_patch_from_its_own_pixels():
    torch.manual_seed(0)
    cfg = replace(tokenizer_config("vqgan-shapes"), num_groups=8, patch_local=True)
    model = MaskGITVQGAN(cfg).eval()
    images = torch.rand(2, 3, 32, 32)
    images[1, :, :8, :8] = images[0, :, :8, :8]  # the two images share their top-left 2 x 2 tokens only
    with torch.no_grad():
        z = model.encoder(images)  # (2, z, 8, 8)
        one = model.encoder(images[:, :, 4:8, 4:8])  # token (1, 1) alone
        whole = MaskGITVQGAN(replace(cfg, patch_local=False)).eval()
        whole.load_state_dict(model.state_dict())
        z_whole = whole.encoder(images)
    assert z.shape == (2, 64, 8, 8)
    assert torch.allclose(z[0, :, :2, :2], z[1, :, :2, :2], atol=1e-5)
    assert torch.allclose(z[:, :, 1, 1], one[:, :, 0, 0], atol=1e-5)
    assert (z[0, :, 2:, 2:] - z[1, :, 2:, 2:]).abs().amax() > 1e-2
    # the release encoder (same weights) lets the rest of the image change those tokens
    assert (z_whole[0, :, :2, :2] - z_whole[1, :, :2, :2]).abs().amax() > 1e-2
