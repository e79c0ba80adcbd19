"""The shipped ``shapes`` world: manifest, verified loading, generation quality on a small batch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adanat.assets import AssetError, asset_dir, load_metric_network, read_manifest, verified_file
from adanat.models.classifier import accuracy
from adanat.rng import row_rngs
from adanat.sampling import NATSampler, ScheduleController
from adanat.schedules import load_schedule
from adanat.weights import load_models

FOLDER = asset_dir("shapes")
SHIPPED = set(read_manifest(FOLDER)["models"])


def test_manifest_lists_verified_small_files():
    manifest = read_manifest(FOLDER)
    assert set(manifest["models"]) == {"metric", "tokenizer", "generator"}  # a missing one fails
    total = 0
    for name, entry in manifest["models"].items():
        path = verified_file(FOLDER, name)
        total += path.stat().st_size
        assert entry["command"].startswith("python scripts/pretrain.py")
        assert entry["config"] and entry["quality"]
    assert total <= 30 * 2**20
    q = {k: v["quality"] for k, v in manifest["models"].items()}
    assert q["metric"]["heldout_accuracy"] >= 0.98
    assert q["tokenizer"]["codebook_usage"] > 0.5 and q["tokenizer"]["psnr"] > 20
    if "generator" in q:
        # the target: >= 0.90 of 1,000 images at T=8 with the ENAT sampler (measured 0.919)
        assert q["generator"]["class_accuracy_enat_t8"] >= 0.90


def test_shipped_generator_was_trained_on_this_world():
    # a changed world definition without retrained weights would silently evaluate a generator on
    # images it never saw; the tokenizer and metric network may come from a superset world
    from adanat.pretrain.shapes import world_fingerprint

    models = read_manifest(FOLDER)["models"]
    assert models["generator"]["world"] == world_fingerprint("train")
    assert all("world" in entry for entry in models.values())


def test_manifest_configs_are_the_world_presets():
    from dataclasses import asdict

    from adanat.presets import world_preset

    model = world_preset("shapes").model
    models = read_manifest(FOLDER)["models"]
    tok = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model.tokenizer).items()}
    assert models["tokenizer"]["config"] == tok
    if "generator" in models:
        assert models["generator"]["config"] == asdict(model.generator)


def test_shipped_metric_network_classifies_held_out_images():
    from adanat.worlds.shapes import real_images

    images = real_images("reference", 200)
    assert accuracy(load_metric_network(), images, torch.arange(200) % 10) >= 0.98


def test_shipped_tokenizer_reconstructs(tmp_path):
    from adanat.checkpoints import load_tokenizer
    from adanat.presets import world_preset
    from adanat.pretrain.tokenizer import psnr
    from adanat.worlds.shapes import real_images

    tok = load_tokenizer(verified_file(FOLDER, "tokenizer"), world_preset("shapes").model.tokenizer)
    images = real_images("heldout", 64).float() / 255
    with torch.no_grad():
        assert float(psnr(tok.decode(tok.encode(images)), images)) > 20


def test_corrupt_or_missing_files_are_refused(tmp_path):
    copy = tmp_path / "shapes"
    shutil.copytree(FOLDER, copy)
    data = bytearray((copy / "metric.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "metric.safetensors").write_bytes(bytes(data))
    with pytest.raises(AssetError, match="corrupt"):
        verified_file(copy, "metric")
    (copy / "tokenizer.safetensors").unlink()
    with pytest.raises(AssetError, match="missing"):
        verified_file(copy, "tokenizer")


@torch.no_grad()
def test_generated_images_have_the_requested_class():
    models = load_models("shapes")
    labels = torch.arange(30) % 10
    sampler = NATSampler(models.generator, models.tokenizer)
    out = sampler.generate(
        labels, ScheduleController(load_schedule("enat", steps=8, variant="shapes")), 8, row_rngs(0, 30)
    )
    assert out.images.shape == (30, 3, 32, 32)
    assert float(out.images.min()) >= 0 and float(out.images.max()) <= 1
    # 0.867 on this batch (26 of 30; 0.919 on 1,000 images), against chance 0.10
    assert accuracy(load_metric_network(), out.images, labels) >= 0.8


@pytest.mark.e2e
def test_sample_with_no_other_argument(tmp_path):
    exe = Path(sys.executable).parent / "adanat"
    res = subprocess.run(
        [str(exe), "sample", "--preset", "shapes", "--policy", "enat", "--device", "cpu"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    out = tmp_path / "samples" / "shapes-enat-seed0"
    assert (out / "grid.png").is_file() and len(list(out.glob("*_class*.png"))) == 16


def test_registered_shapes_env_runs_an_episode_with_the_shipped_models():
    import gymnasium
    import numpy as np

    import adanat.envs  # noqa: F401  (registers the ids)

    env = gymnasium.make("adanat/NAT-shapes-v0")
    obs, info = env.reset(seed=0, options={"label": 3})
    assert obs["features"].shape == (16, 160) and obs["features"].dtype == np.float16
    total, done, steps = 0.0, False, 0
    while not done:
        obs, reward, done, _, info = env.step(np.zeros(4, np.float32))
        total += reward
        steps += 1
    assert steps == 8 and 0.0 < total < 1.0 and info["label"] == 3
