"""Bad input to ``adanat sample``, ``eval`` and ``search``, run as a user runs them: one line on
stderr, exit code 2, no traceback, nothing new left behind, and the shipped assets unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_enat, tiny_model_args
from safetensors.torch import save_file

from adanat.assets import asset_dir
from adanat.models.vqgan import MaskGITVQGAN
from adanat.presets import model_preset

SHIPPED = asset_dir("shapes")


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Tiny weights, bad schedules, bad reference statistics and a corrupt search folder."""
    d = tmp_path_factory.mktemp("inputs")
    preset = model_preset("tiny")
    save_file(random_enat(preset.generator).state_dict(), str(d / "gen.safetensors"))
    save_file(MaskGITVQGAN(preset.tokenizer).state_dict(), str(d / "tok.safetensors"))
    (d / "garbage.pth").write_bytes(b"not a checkpoint")
    good = {"kind": "fixed", "steps": 2, "mask_ratio": [0.5], "remask_temp": [1.0]}
    good |= {"sampling_temp": [1.0, 1.0], "guidance": [0.0, 2.0]}
    for name, change in {
        "nonnumber": {"guidance": [0, "x"]},
        "null": {"sampling_temp": [1.0, None]},
        "unknown": {"colour": "red"},
        "fractional": {"steps": 2.7},
        "guidance": {"guidance": [0, -50]},
        "hot": {"sampling_temp": [1e38, 1.0]},
    }.items():
        (d / f"{name}.json").write_text(json.dumps({**good, **change}))
    np.savez(d / "empty.npz", mu=np.zeros(0), sigma=np.zeros((0, 0)))
    np.savez(d / "narrow.npz", mu=np.zeros(7), sigma=np.eye(7))
    np.savez(d / "nomu.npz", sigma=np.eye(7))
    (d / "notnpz.npz").write_bytes(b"nope")
    (d / "afile").write_text("x")
    (d / "exists.json").write_text("{}")
    (d / "busy").mkdir()
    (d / "busy" / "mine.txt").write_text("keep")
    (d / "corrupt").mkdir()
    (d / "corrupt" / "state.json").write_text('{"config": {"steps": 4}, "theta": [1')
    (d / "notapolicy").mkdir()
    from adanat.search import SearchConfig, start_state

    (d / "earlier").mkdir()  # a search of another setting (20 samples per FID) stopped at its start
    start_state(SearchConfig(steps=2, samples=20), d / "earlier").save(d / "earlier")
    return d


TINY = ["--preset", "tiny", "--generator", "{d}/gen.safetensors", "--tokenizer", "{d}/tok.safetensors"]

SAMPLE = [
    (["--n", "0"], "expected an integer >= 1, got 0"),
    (["--steps", "0"], "expected an integer >= 1"),
    (["--device", "mps"], "device 'mps' is not supported"),
    (["--device", "foo"], "unknown device 'foo'"),
    (["--device", "cuda"], "no CUDA device is available"),
    (["--policy", "no-such-schedule"], "no built-in schedule or file"),
    (["--policy", "{d}/nonnumber.json", "--steps", "2"], "guidance must be a number, got 'x'"),
    (["--policy", "{d}/unknown.json", "--steps", "2"], "unknown key 'colour'"),
    (["--policy", "{d}/fractional.json"], "steps must be a whole number >= 1, got 2.7"),
    (["--policy", "{d}/guidance.json", "--steps", "2"], r"guidance must lie in \[0, 100\]"),
    (["--policy", "{d}/hot.json", "--steps", "2"], r"sampling_temp must lie in \(0, 1000\]"),
    (["--policy", "{d}/notapolicy"], "policy"),
    (["--classes", "3,99"], "class 99 is outside"),
    (["--out", "{d}/afile"], "already exists and is not an empty folder"),
    (["--out", "{d}/afile/under"], "is a file, not a folder"),
    (["--out", "/sys/adanat-out"], "cannot write in /sys"),
    (["--generator", "{d}/garbage.pth"], "cannot read checkpoint"),
]

EVAL = [
    (["-n", "1"], "--n and --reference-n must be >= 2"),
    (["--reference", "{d}/missing.npz"], "is not a file"),
    (["--reference", "{d}/empty.npz"], "have 0 features, adanat-shapes gives"),
    (["--reference", "{d}/narrow.npz"], "have 7 features, adanat-shapes gives"),
    (["--reference", "{d}/nomu.npz"], "must hold arrays 'mu' and 'sigma'"),
    (["--reference", "{d}/notnpz.npz"], "not a readable .npz"),
    (["--out", "{d}/exists.json"], "already exists; choose a new file"),
    (["--out", "{d}/nofolder/r.json"], "does not exist"),
    (["--out", "{d}/same.json", "--grid", "{d}/same.json"], "--out and --grid name the same file"),
    (["--out", "/sys/r.json"], "cannot write in /sys"),
    (
        [*TINY, "--inception", "{d}/garbage.pth", "--reference", "{d}/narrow.npz"],
        "cannot read checkpoint",
    ),
    (["--preset", "in256", "--generator", "{d}/gen.safetensors"], "--reference fid_stats.npz"),
    (["--preset", "tiny"], "--reference fid_stats.npz"),
    (["--seed", "-3"], "seeds are integers >= 0"),
    (["--device", "foo"], "unknown device 'foo'"),
    (["--policy", "{d}/notapolicy"], "policy"),
]

SEARCH = [
    (["--steps", "1"], "steps must be >= 2"),
    (["--updates", "0"], "expected an integer >= 1"),
    (["--samples", "1"], "samples >= 2"),
    (["--lr-ratio", "-1"], "learning rates and momentum must be finite and >= 0"),
    (["--momentum", "inf"], "learning rates and momentum must be finite and >= 0"),
    (["--delta-ratio", "0"], "probes must be finite and > 0"),
    (["--seed", "-1"], "seeds are integers >= 0"),
    (["--out", "{d}/afile"], "is a file"),
    (["--out", "{d}/busy"], "holds files but no search"),
    (["--out", "{d}/corrupt"], "is not a search state"),
    (["--out", "{d}/earlier", "--samples", "30"], "holds a search with other settings"),
    (["--out", "/sys/adanat-search"], "cannot write in /sys"),
    (["--device", "meta"], "device 'meta' is not supported"),
    (["--preset", "in256", "--generator", "{d}/gen.safetensors"], "--reference fid_stats.npz"),
    (["--reference", "{d}/narrow.npz", "--out", "{d}/new-search"], "have 7 features"),
    (["--preset", "tiny", "--generator", "{d}/gen.safetensors"], "--reference fid_stats.npz"),
]

CASES = [("sample", *c) for c in SAMPLE] + [("eval", *c) for c in EVAL] + [("search", *c) for c in SEARCH]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("command", "extra", "match"), CASES, ids=[f"{c[0]}:{' '.join(c[1])}" for c in CASES]
)
def test_bad_input_is_one_line_and_exit_2(files, tmp_path, command, extra, match):
    import re

    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    extra = [e.format(d=files) for e in extra]
    preset = tiny_model_args(files) if command == "sample" else ["--preset", "shapes"]
    args = [command, *preset, "--device", "cpu", "--steps", "2", *extra]
    if command == "sample":
        args += [] if "--out" in extra else ["--out", str(tmp_path / "out")]
    if command == "search" and "--out" not in extra:
        args += ["--out", str(tmp_path / "search")]
    if command != "search" and "--policy" not in extra:
        args += ["--policy", "cosine"]
    shipped, inputs = _digest(SHIPPED), sorted(p.name for p in files.rglob("*"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "adanat", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert re.search(match, res.stderr), res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing new left behind
    assert sorted(p.name for p in files.rglob("*")) == inputs
    assert _digest(SHIPPED) == shipped
