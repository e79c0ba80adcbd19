"""``adanat eval``: metrics from gathered features, the JSON report, torchrun sharding, refusals."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from adanat.cli import main
from adanat.distributed import Shard, batch_bounds
from adanat.metrics import (
    FidStatistics,
    MetricsError,
    fidelity_metrics,
    inception_feature_space,
    metrics_from_features,
    register_shapes_extractor,
    shapes_feature_space,
)
from adanat.worlds.shapes import real_images

EVAL = ["eval", "--preset", "shapes", "--steps", "2", "--batch-size", "16", "--device", "cpu"]


def test_shards_cover_the_batches_once():
    bounds = batch_bounds(50, 16)
    assert [len(b) for b in bounds] == [16, 16, 16, 2]
    runs = [j for r in range(3) for j in Shard(r, 3).batches(len(bounds))]
    assert sorted(runs) == [0, 1, 2, 3]
    assert list(Shard(1, 3).batches(4)) == [1]


def test_metrics_from_features_equal_torch_fidelity_on_images():
    generated, reference = real_images("heldout", 60), real_images("reference", 60)
    space = shapes_feature_space()
    gen_feats, gen_logits = space(generated)
    ref_feats, _ = space(reference)
    ours = metrics_from_features(gen_feats, gen_logits, FidStatistics.of(ref_feats), ref_feats, seed=0)
    theirs = fidelity_metrics(generated, reference, register_shapes_extractor(), seed=0)
    for key in ("frechet_inception_distance", "inception_score_mean", "precision", "recall"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), key
    assert 0 < ours["frechet_inception_distance"] < 5  # two real sets: near the floor


def test_fid_statistics_round_trip_and_refusals(tmp_path):
    feats = torch.randn(50, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    stats = FidStatistics.of(feats)
    stats.save(tmp_path / "s.npz")
    back = FidStatistics.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.mu, stats.mu)
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    np.savez(tmp_path / "bad.npz", mean=stats.mu)
    with pytest.raises(MetricsError, match="'mu' and 'sigma'"):
        FidStatistics.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", mu=stats.mu, sigma=stats.sigma[:3])
    with pytest.raises(MetricsError, match="disagree"):
        FidStatistics.load(tmp_path / "shape.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(MetricsError, match="not a readable"):
        FidStatistics.load(tmp_path / "text.npz")
    with pytest.raises(MetricsError, match="features"):
        metrics_from_features(torch.randn(10, 4), torch.randn(10, 3), stats)


def test_inception_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MetricsError, match="--inception"):
        inception_feature_space(None)
    with pytest.raises(MetricsError, match="not found"):
        inception_feature_space(tmp_path / "missing.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(MetricsError, match="not torch-fidelity's Inception"):
        inception_feature_space(tmp_path / "other.pth")


def test_eval_writes_report(tmp_path, capsys):
    out, grid = tmp_path / "r.json", tmp_path / "g.png"
    assert main([*EVAL, "--policy", "cosine", "-n", "40", "--out", str(out), "--grid", str(grid)]) == 0
    table = capsys.readouterr().out
    assert "FID" in table and "class accuracy" in table
    # off a terminal, progress is one plain line per batch (rich's bar would print nothing)
    lines = [ln.split(" elapsed ")[0] for ln in table.splitlines() if ln.startswith("evaluating ")]
    assert lines == ["evaluating 16/40", "evaluating 32/40", "evaluating 40/40"]
    report = json.loads(out.read_text())
    m = report["metrics"]
    # T=2 cosine is a poor schedule: these are its numbers on 40 images (seed 0), held to 1e-6
    assert m["frechet_inception_distance"] == pytest.approx(38.27201039011294, abs=1e-6)
    assert m["inception_score_mean"] == pytest.approx(2.0382968773247425, abs=1e-6)
    assert m["precision"] == pytest.approx(0.15, abs=1e-6) and m["recall"] == pytest.approx(0.325, abs=1e-6)
    assert m["class_accuracy"] == 0.325
    # a fixed schedule: every image used the same controls, the last step reveals all
    assert report["schedule_std"]["guidance"] == [0.0, 0.0]
    assert report["schedule_mean"]["mask_ratio"][-1] == 0.0
    assert report["schedule_mean"]["guidance"] == pytest.approx([0.0, 1.25])  # cosine: 2.5 k / T
    cfg = report["config"]
    assert cfg["n"] == 40 and cfg["steps"] == 2 and cfg["processes"] == 1
    assert len(cfg["generator_sha256"]) == 64 and cfg["reference"] == "shapes heldout split, 40 images"
    assert report["gflops_per_image"] > 0 and report["seconds_per_image"] > 0
    assert grid.stat().st_size > 0


def test_eval_depends_on_the_seed_not_the_batch_size(tmp_path):
    runs = {"a": ("--seed", "0"), "b": ("--batch-size", "7"), "c": ("--seed", "1")}
    for name, extra in runs.items():
        assert main([*EVAL, "-n", "30", "--out", str(tmp_path / f"{name}.json"), *extra]) == 0
    m = {k: json.loads((tmp_path / f"{k}.json").read_text())["metrics"] for k in runs}
    for key, value in m["a"].items():
        assert m["b"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert m["a"]["frechet_inception_distance"] != m["c"]["frechet_inception_distance"]


def test_eval_without_reuse_encodes_more_and_says_so(tmp_path):
    """``--no-reuse`` re-encodes every visible token at every step: more generator FLOPs, other
    images (ENAT's reuse changes the features), and the report records it."""
    reports = {}
    for name, extra in {"reuse": (), "none": ("--no-reuse",)}.items():
        out = tmp_path / f"{name}.json"
        assert main([*EVAL, "-n", "20", "--steps", "4", "--out", str(out), *extra]) == 0
        reports[name] = json.loads(out.read_text())
    assert reports["reuse"]["config"]["reuse"] is True and reports["none"]["config"]["reuse"] is False
    assert reports["none"]["gflops_per_image"] > 1.1 * reports["reuse"]["gflops_per_image"]  # 1.135 measured
    fid = [r["metrics"]["frechet_inception_distance"] for r in reports.values()]
    assert fid[0] != fid[1]


def test_eval_refusals(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("keep me")
    assert main([*EVAL, "-n", "10", "--out", str(out)]) == 2
    assert out.read_text() == "keep me"
    assert main(["eval", "--preset", "in256", "-n", "10"]) == 2
    assert main([*EVAL, "-n", "1"]) == 2
    assert main([*EVAL, "-n", "10", "--policy", "nope"]) == 2
    assert main([*EVAL, "-n", "10", "--out", str(tmp_path / "no" / "r.json")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 5 and all(line.startswith("adanat eval: error:") for line in errors)


@pytest.mark.e2e
def test_torchrun_two_processes_equal_one(tmp_path):
    """The same command under torchrun (gloo, 2 CPU processes) gives the single-process numbers."""
    single, sharded = tmp_path / "one.json", tmp_path / "two.json"
    args = [*EVAL, "-n", "40", "--policy", "enat"]
    assert main([*args, "--out", str(single)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    cmd += ["-m", "adanat", *args, "--out", str(sharded)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = json.loads(single.read_text()), json.loads(sharded.read_text())
    assert two["config"]["processes"] == 2
    assert one["metrics"] == two["metrics"]
    assert one["schedule_mean"] == two["schedule_mean"]


@pytest.mark.e2e
def test_python_dash_m_adanat_runs():
    done = subprocess.run([sys.executable, "-m", "adanat", "eval", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "torchrun" in done.stdout


def test_npz_reference_with_images_gives_the_same_numbers(tmp_path):
    """An ADM-style reference batch (mu, sigma and arr_0 images) made from the held-out images
    reproduces the built-in held-out reference, precision/recall included; without arr_0 there is
    no precision/recall."""
    held = real_images("heldout", 30)
    feats, _ = shapes_feature_space()(held)
    stats = FidStatistics.of(feats)
    np.savez(tmp_path / "ref.npz", mu=stats.mu, sigma=stats.sigma, arr_0=held.permute(0, 2, 3, 1).numpy())
    stats.save(tmp_path / "stats.npz")
    outs = {}
    for name, extra in {"builtin": (), "npz": ("--reference", str(tmp_path / "ref.npz")),
                        "stats": ("--reference", str(tmp_path / "stats.npz"))}.items():  # fmt: skip
        assert main([*EVAL, "-n", "30", "--out", str(tmp_path / f"{name}.json"), *extra]) == 0
        outs[name] = json.loads((tmp_path / f"{name}.json").read_text())["metrics"]
    for key, value in outs["builtin"].items():
        assert outs["npz"][key] == pytest.approx(value, rel=1e-6), key
    assert "recall" not in outs["stats"]
    assert outs["stats"]["frechet_inception_distance"] == pytest.approx(
        outs["builtin"]["frechet_inception_distance"]
    )
    np.savez(tmp_path / "bad.npz", mu=stats.mu, sigma=stats.sigma, arr_0=np.zeros((2, 3), np.float32))
    assert main([*EVAL, "-n", "10", "--reference", str(tmp_path / "bad.npz")]) == 2
