"""Behaviour pins: fixed-seed runs of the real commands give the outputs of main release after release.

The expected values in ``tests/data/behaviour.json`` were recorded on ``main`` before the round-2
restructuring (commit 527add3: this file run there with ``--write``; ``python
tests/test_behaviour.py --write`` records them again, which only a change meant to alter outputs
may do, saying so in its commit). Each case runs the command as a
user would, on the shipped ``shapes`` world, and digests what it wrote: image pixels, the
controls used, metrics, a one-update schedule search, the trained policy's tensors, the printed
numbers, and the controls of the exported policy (mean and sampled actions) through ``adanat sample``.

What generation alone decides (pixels, controls of a schedule, the base schedule's numbers) is
pinned bit for bit. What training decides is pinned within a tolerance: float32 matrix products
round differently on different CPUs (the same commit gave an exported policy 1e-4 apart, at most,
on two x86 machines, and an FID selection 0.03 apart after two updates), so the trained tensors are
pinned by fingerprints (sum, norm and a fixed signed projection) to 2e-4 x sqrt(size), the printed
rewards to 0.01 and the policies' FIDs to 0.05; metrics of a network other than the generator
(Inception's score) to a relative 1e-6.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = Path(__file__).parent / "data" / "behaviour.json"

# The commands; they are what main accepted before the restructuring and must keep working.
SAMPLE = ["-m", "adanat", "sample", "--preset", "shapes", "--policy", "enat", "--n", "6", "--steps", "8"]
SAMPLE += ["--seed", "5", "--batch-size", "4", "--device", "cpu"]
EVAL = ["-m", "adanat", "eval", "--preset", "shapes", "--policy", "autonat-shapes-t8", "-n", "200"]
EVAL += ["--seed", "0", "--batch-size", "100", "--device", "cpu"]
SEARCH = ["-m", "adanat", "search", "--preset", "shapes", "--steps", "2", "--updates", "1", "--samples", "40"]
SEARCH += ["--batch-size", "40", "--seed", "1", "--device", "cpu"]
TRAIN = [str(ROOT / "scripts" / "train_policy.py"), "--episodes", "128", "--num-envs", "32"]
TRAIN += ["--episodes-per-update", "64", "--eval-episodes", "32", "--select-fid", "64", "--eval-every", "2"]
TRAIN += ["--action-std", "0:0.6,50%:0.3", "--seed", "0", "--device", "cpu"]
# the shapes defaults of the time (since then: action cost 0.2, lr 1e-4), so that the pins still hold
TRAIN += ["--action-cost", "0.05", "--lr", "3e-4"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensor_fingerprints(path: Path) -> dict[str, dict[str, Any]]:
    """Shape, dtype, sum, norm and a projection on fixed random signs, per tensor."""
    out = {}
    for k, v in sorted(load_file(str(path)).items()):
        flat = v.double().flatten()  # (N,)
        signs = torch.randint(0, 2, flat.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (N,)
        stats = [float(flat.sum()), float(flat.norm()), float((flat * signs).sum())]
        out[k] = {"shape": list(v.shape), "dtype": str(v.dtype), "stats": stats}
    return out


def _samples(out: Path) -> dict[str, Any]:
    meta = json.loads((out / "samples.json").read_text())
    pixels = {p.name: _sha(np.asarray(Image.open(p)).tobytes()) for p in sorted(out.glob("0*.png"))}
    return {"pixels": pixels, "labels": meta["labels"], "controls": meta["controls"]}


def sample_digest(cwd: Path) -> dict[str, Any]:
    _run([*SAMPLE, "--out", str(cwd / "samples")], cwd)
    return _samples(cwd / "samples")


def sample_no_reuse_digest(cwd: Path) -> dict[str, Any]:
    _run([*SAMPLE, "--no-reuse", "--out", str(cwd / "samples")], cwd)
    return _samples(cwd / "samples")


def search_digest(cwd: Path) -> dict[str, Any]:
    out = cwd / "search"
    _run([*SEARCH, "--out", str(out)], cwd)
    schedule = json.loads((out / "schedule.json").read_text())
    log = json.loads((out / "log.json").read_text())
    keep = ("mask_ratio", "remask_temp", "sampling_temp", "guidance", "search")
    return {"schedule": {k: schedule[k] for k in keep}, "fids": [e["fid"] for e in log["updates"]]}


def eval_digest(cwd: Path) -> dict[str, Any]:
    out = cwd / "eval.json"
    _run([*EVAL, "--out", str(out)], cwd)
    report = json.loads(out.read_text())
    keep = ("metrics", "schedule_mean", "schedule_std")
    return {k: report[k] for k in keep}


def train_digest(cwd: Path) -> dict[str, Any]:
    run = cwd / "run"
    res = _run([*TRAIN, "--run-dir", str(run)], cwd)
    printed = re.findall(r"(base schedule|learned policy|final policy|best policy)\s+([-0-9.]+)", res.stdout)
    best = json.loads((run / "best.json").read_text())
    return {
        "printed": [list(p) for p in printed],
        "policy": _tensor_fingerprints(run / "policy" / "policy.safetensors"),
        "best_policy": _tensor_fingerprints(run / "best" / "policy.safetensors"),
        "checkpoint": _tensor_fingerprints(run / "checkpoint" / "policy.safetensors"),
        "best": {k: best[k] for k in ("fid", "base_fid", "updates", "episodes")},
        "policy_samples": _policy_samples(run / "policy", cwd),
    }


def _policy_samples(policy: Path, cwd: Path) -> dict[str, Any]:
    """The exported policy drives ``adanat sample``, its mean action and sampled actions."""
    out = {}
    for name, extra in (("mean", []), ("stochastic", ["--stochastic"])):
        args = ["-m", "adanat", "sample", "--preset", "shapes", "--policy", str(policy), "--n", "4"]
        _run([*args, "--seed", "2", "--device", "cpu", *extra, "--out", str(cwd / name)], cwd)
        meta = json.loads((cwd / name / "samples.json").read_text())
        out[name] = {"labels": meta["labels"], "controls": meta["controls"]}
    return out


CASES = {
    "sample": sample_digest,
    "sample_no_reuse": sample_no_reuse_digest,
    "eval": eval_digest,
    "search": search_digest,
    "train": train_digest,
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", sorted(CASES))
def test_fixed_seed_outputs_are_those_of_main(case, tmp_path):
    expected = json.loads(EXPECTED.read_text())[case]
    got = CASES[case](tmp_path)
    if case == "train":
        _same_training(got, expected)
    elif case in ("eval", "search"):
        assert got == _approx(expected, rel=1e-6)
    else:
        assert got == expected


def _approx(value: Any, rel: float = 0.0, abs: float = 0.0) -> Any:
    """``value`` with every float compared within the tolerances, everything else exactly."""
    if isinstance(value, float):
        return pytest.approx(value, rel=rel, abs=abs)
    if isinstance(value, list):
        return [_approx(v, rel, abs) for v in value]
    if isinstance(value, dict):
        return {k: _approx(v, rel, abs) for k, v in value.items()}
    return value


def _same_training(got: dict[str, Any], expected: dict[str, Any]) -> None:
    for key in ("policy", "best_policy", "checkpoint"):
        assert got[key].keys() == expected[key].keys(), key
        for name, want in expected[key].items():
            have = got[key][name]
            assert (have["shape"], have["dtype"]) == (want["shape"], want["dtype"]), name
            size = float(np.prod(want["shape"]))
            assert have["stats"] == pytest.approx(want["stats"], abs=2e-4 * size**0.5), (key, name)
    # held-out rewards of the base and the policy, then the FIDs of the base, the final and the best
    tolerances = (0.01, 0.01, 1e-3, 0.05, 0.05)
    pairs = zip(got["printed"], expected["printed"], tolerances, strict=True)
    for (label, have), (want_label, want), tol in pairs:
        assert label == want_label
        assert float(have) == pytest.approx(float(want), abs=tol), label
    best, want = got["best"], expected["best"]
    assert (best["updates"], best["episodes"]) == (want["updates"], want["episodes"])
    assert best["base_fid"] == pytest.approx(want["base_fid"], rel=1e-6)
    assert best["fid"] == pytest.approx(want["fid"], abs=0.05)
    for mode in ("mean", "stochastic"):
        assert got["policy_samples"][mode]["labels"] == expected["policy_samples"][mode]["labels"]
        controls = expected["policy_samples"][mode]["controls"]
        assert got["policy_samples"][mode]["controls"] == _approx(controls, abs=2e-3), mode


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_behaviour.py --write  (records tests/data/behaviour.json)")
    record = {}
    for name, digest in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            record[name] = digest(Path(tmp))
    EXPECTED.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {EXPECTED}")
