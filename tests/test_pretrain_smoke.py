"""Smoke test: every pretraining stage runs through the real script on a tiny config, and resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adanat.assets import verified_file
from adanat.pretrain.shapes import ShapesPretraining, world_fingerprint

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pretrain.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", *args], capture_output=True, text=True, timeout=600
    )


def test_each_stage_through_the_script(tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    for stage in ("metric", "tokenizer", "prune", "generator"):
        res = _run("--stage", stage, "--run-dir", str(run), "--out", str(out))
        assert res.returncode == 0, res.stderr[-2000:]
        if stage in ("metric", "generator"):  # stdout is no terminal here: one plain line per interval
            assert any(line.startswith(f"{stage} 4/4 elapsed 0:") for line in res.stdout.splitlines())
            assert " loss " in res.stdout
        if stage == "prune":
            continue
        folder = run / ("tokenizer-16" if stage == "tokenizer" else stage)  # the sweep picks 16 codes
        assert (folder / "checkpoint.pt").is_file()
        assert any((folder / "tb").iterdir())  # TensorBoard events
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["models"]) == {"metric", "tokenizer", "generator"}
    for name in manifest["models"]:
        assert verified_file(out, name).is_file()
    tok = manifest["models"]["tokenizer"]
    assert set(tok["codebook_sweep"]["results"]) == {"16", "32"}
    pruning = tok["codebook_pruning"]
    assert pruning["trained_codebook_size"] == 16  # tiny sweep: tied within 0.5 dB, the smaller wins
    assert set(pruning["results"]) == {"4", "8"}
    assert pruning["command"].endswith("--stage prune --run-dir " + str(run) + " --out " + str(out))
    assert tok["command"].endswith("--stage tokenizer --run-dir " + str(run) + " --out " + str(out))
    size, tiny = tok["config"]["codebook_size"], ShapesPretraining.tiny()
    passed = [
        int(k)
        for k, q in pruning["results"].items()
        if q["psnr"] >= pruning["trained_quality"]["psnr"] - tiny.prune_tolerance_db
        and q["reconstruction_class_accuracy"]
        >= pruning["trained_quality"]["reconstruction_class_accuracy"] - tiny.prune_tolerance_accuracy
    ]
    assert size == min((pruning["results"][str(k)]["codebook_size"] for k in passed), default=16)
    assert manifest["models"]["generator"]["config"]["codebook_size"] == size
    assert "psnr" in tok["quality"] and 0 < tok["quality"]["codebook_usage"] <= 1
    assert all(e["world"] == world_fingerprint("train") for e in manifest["models"].values())
    # pruning again starts from the full tokenizer kept in the run folder: the same result
    pruned = (out / "tokenizer.safetensors").read_bytes()
    assert _run("--stage", "prune", "--run-dir", str(run), "--out", str(out)).returncode == 0
    assert (out / "tokenizer.safetensors").read_bytes() == pruned
    assert "class_accuracy_enat_t8" in manifest["models"]["generator"]["quality"]
    assert manifest["models"]["generator"]["command"].startswith("python scripts/pretrain.py --tiny")

    # a finished stage resumes at its last step and leaves the weights unchanged (seeded, deterministic)
    before = (out / "metric.safetensors").read_bytes()
    state = torch.load(run / "metric" / "checkpoint.pt", weights_only=True)
    res = _run("--stage", "metric", "--run-dir", str(run), "--out", str(out))
    assert res.returncode == 0
    assert torch.load(run / "metric" / "checkpoint.pt", weights_only=True)["step"] == state["step"]
    assert (out / "metric.safetensors").read_bytes() == before

    # continued training: starts from the shipped generator, records where it started, and a
    # resume reports the same start although the file it started from was replaced by its output
    first = manifest["models"]["generator"]
    args = ("--stage", "generator", "--run-dir", str(tmp_path / "more"), "--out", str(out))
    more = ("--init-generator", str(out / "generator.safetensors"), "--generator-steps", "2")
    more += ("--generator-batch-size", "4", "--generator-precision", "bfloat16")
    for _ in range(2):
        res = _run(
            *args, *more, "--generator-lr", "1e-4", "--generator-warmup", "1", "--generator-reuse-chain", "3"
        )
        assert res.returncode == 0, res.stderr[-2000:]
        entry = json.loads((out / "manifest.json").read_text())["models"]["generator"]
        assert entry["init"]["sha256"] == first["sha256"]
        assert entry["init"]["command"] == first["command"]
        assert entry["sha256"] != first["sha256"]
        assert "--init-generator" in entry["command"]
        assert "--generator-batch-size 4 --generator-precision bfloat16" in entry["command"]
    assert torch.load(tmp_path / "more" / "generator" / "checkpoint.pt", weights_only=True)["step"] == 2


def test_generator_init_must_exist_and_fit(tmp_path):
    where = ("--run-dir", str(tmp_path / "r"), "--out", str(tmp_path / "o"))
    res = _run("--stage", "generator", *where, "--init-generator", str(tmp_path / "missing.safetensors"))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1
    res = _run("--stage", "generator", *where, "--generator-steps", "0")
    assert res.returncode == 2 and "integer >= 1" in res.stderr


def test_unknown_precision_is_one_line(tmp_path):
    res = _run("--stage", "generator", "--run-dir", str(tmp_path), "--generator-precision", "fp8")
    assert res.returncode == 2
    assert "invalid choice: 'fp8'" in res.stderr and "Traceback" not in res.stderr


def test_unknown_device_is_one_line(tmp_path):
    where = ("--run-dir", str(tmp_path / "r"), "--out", str(tmp_path / "o"))
    res = _run("--stage", "generator", *where, "--device", "nonsense")
    assert res.returncode == 2
    assert "unknown device" in res.stderr and res.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_generator_trains_on_cuda(tmp_path):
    where = ("--run-dir", str(tmp_path / "r"), "--out", str(tmp_path / "o"))
    for stage in ("metric", "tokenizer"):
        assert _run("--stage", stage, *where).returncode == 0
    res = _run("--stage", "generator", *where, "--device", "cuda")
    assert res.returncode == 0, res.stderr[-2000:]
    entry = json.loads((tmp_path / "o" / "manifest.json").read_text())["models"]["generator"]
    assert "--device cuda" in entry["command"]
    assert 0.0 <= entry["quality"]["class_accuracy_enat_t8"] <= 1.0
    assert verified_file(tmp_path / "o", "generator").is_file()


def test_generator_stage_needs_the_tokenizer(tmp_path):
    res = _run("--stage", "generator", "--run-dir", str(tmp_path / "r"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "needs the tokenizer stage first" in res.stderr
    assert res.stderr.count("\n") == 1


def test_prune_stage_needs_the_tokenizer(tmp_path):
    res = _run("--stage", "prune", "--run-dir", str(tmp_path / "r"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "needs the metric and tokenizer stages first" in res.stderr
    assert res.stderr.count("\n") == 1


@pytest.mark.e2e
def test_without_out_the_weights_go_to_the_run_folder_never_to_the_package(tmp_path):
    """The default output is RUN_DIR/out; the shipped assets are not touched."""
    import hashlib

    from adanat.assets import asset_dir

    def digest() -> dict[str, str]:
        folder = asset_dir("shapes")
        files = sorted(p for p in folder.rglob("*") if p.is_file())  # shipped policies included
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    shipped = digest()
    run = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--stage", "metric", "--run-dir", str(run)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads((run / "out" / "manifest.json").read_text())
    assert set(manifest["models"]) == {"metric"}
    assert verified_file(run / "out", "metric").is_file()
    assert digest() == shipped
