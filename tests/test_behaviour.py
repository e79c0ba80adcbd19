"""Behaviour pins: fixed-seed runs of the real commands give bit-identical outputs release after release.

The expected digests in ``tests/data/behaviour.json`` were recorded on ``main`` before the round-2
restructuring (commit 527add3: this file run there with ``--write``; ``python
tests/test_behaviour.py --write`` records them again, which only a change meant to alter outputs
may do, saying so in its commit). Each case runs the command as a
user would, on the shipped ``shapes`` world, and digests what it wrote: image pixels, the
controls used, metrics, a one-update schedule search, the trained policy's tensors, the printed
numbers, and the images of the exported policy (mean and sampled actions) through ``adanat sample``.
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


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensor_digests(path: Path) -> dict[str, str]:
    return {k: _sha(v.contiguous().numpy().tobytes()) for k, v in sorted(load_file(str(path)).items())}


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
        "policy": _tensor_digests(run / "policy" / "policy.safetensors"),
        "best_policy": _tensor_digests(run / "best" / "policy.safetensors"),
        "checkpoint": _tensor_digests(run / "checkpoint" / "policy.safetensors"),
        "best": {k: best[k] for k in ("fid", "base_fid", "updates", "episodes")},
        "policy_samples": _policy_samples(run / "policy", cwd),
    }


def _policy_samples(policy: Path, cwd: Path) -> dict[str, Any]:
    """The exported policy drives ``adanat sample``, its mean action and sampled actions."""
    out = {}
    for name, extra in (("mean", []), ("stochastic", ["--stochastic"])):
        args = ["-m", "adanat", "sample", "--preset", "shapes", "--policy", str(policy), "--n", "4"]
        _run([*args, "--seed", "2", "--device", "cpu", *extra, "--out", str(cwd / name)], cwd)
        out[name] = _samples(cwd / name)
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
    assert CASES[case](tmp_path) == expected


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
