"""``adanat sample``: outputs, determinism, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import random_enat
from safetensors.torch import save_file

from adanat.cli import main
from adanat.outputs import staged_dir


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from adanat.models.vqgan import MaskGITVQGAN
    from adanat.presets import model_preset

    folder = tmp_path_factory.mktemp("weights")
    preset = model_preset("tiny")
    torch.save(random_enat(preset.generator).state_dict(), folder / "gen.pth")
    torch.manual_seed(0)
    tok = MaskGITVQGAN(preset.tokenizer).state_dict()
    save_file({k: v.contiguous() for k, v in tok.items()}, folder / "tok.safetensors")
    return folder


def _args(weights: Path, out: Path, *extra: str) -> list[str]:
    return [
        "sample", "--preset", "tiny", "--generator", str(weights / "gen.pth"),
        "--tokenizer", str(weights / "tok.safetensors"), "--out", str(out), "--device", "cpu",
        *extra,
    ]  # fmt: skip


def test_sample_writes_images_grid_and_metadata(weights, tmp_path, capsys):
    out = tmp_path / "out"
    args = _args(weights, out, "--n", "5", "--classes", "3,7", "--steps", "4", "--batch-size", "2")
    assert main(args) == 0
    printed = [ln.split(" elapsed ")[0] for ln in capsys.readouterr().out.splitlines() if "elapsed" in ln]
    assert printed == ["sampling 4/12", "sampling 8/12", "sampling 12/12"]  # a line per batch off a terminal
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "00000_class3.png", "00001_class7.png", "00002_class3.png", "00003_class7.png",
        "00004_class3.png", "grid.png", "samples.json",
    ]  # fmt: skip
    meta = json.loads((out / "samples.json").read_text())
    assert meta["labels"] == [3, 7, 3, 7, 3] and meta["steps"] == 4
    assert len(meta["controls"]["mask_ratio"]) == 5 and meta["controls"]["mask_ratio"][0][-1] == 0.0
    from PIL import Image

    assert Image.open(out / "00000_class3.png").size == (32, 32)
    # same seed, other batch size: identical images (per-row random streams)
    out2 = tmp_path / "out2"
    assert main(_args(weights, out2, "--n", "5", "--classes", "3,7", "--steps", "4")) == 0
    for i in range(5):
        name = names[i]
        assert (out / name).read_bytes() == (out2 / name).read_bytes()
    out3 = tmp_path / "out3"
    assert main(_args(weights, out3, "--n", "5", "--classes", "3,7", "--steps", "4", "--seed", "1")) == 0
    assert (out / names[0]).read_bytes() != (out3 / names[0]).read_bytes()


def test_sample_without_reuse(weights, tmp_path, capsys):
    base, none = tmp_path / "a", tmp_path / "b"
    assert main(_args(weights, base, "--n", "2", "--steps", "4")) == 0
    assert main(_args(weights, none, "--n", "2", "--steps", "4", "--no-reuse")) == 0
    assert json.loads((base / "samples.json").read_text())["reuse"] is True
    assert json.loads((none / "samples.json").read_text())["reuse"] is False
    assert (base / "grid.png").read_bytes() != (none / "grid.png").read_bytes()


@pytest.mark.e2e
def test_console_script_runs(weights, tmp_path):
    exe = Path(sys.executable).parent / "adanat"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "adanat.cli"]
    out = tmp_path / "o"
    res = subprocess.run(
        [*cmd, *_args(weights, out, "--n", "2", "--policy", "autonat-l-t8")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (out / "grid.png").is_file()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"--generator": "missing.pth"}, "checkpoint not found"),
        (
            {"--generator": "{weights}/tok.safetensors"},
            "generator keys do not match the preset: .*missing",
        ),
        ({"--generator": "{weights}/garbage.pth"}, "cannot read checkpoint"),
        ({"--classes": "3,10"}, "class 10 is outside preset tiny's range 0..9"),
        ({"--classes": "a,b"}, "comma-separated integers"),
        ({"--policy": "autonat-l-t8", "--steps": "6"}, "8 steps only, not 6"),
        ({"--policy": "no-such-schedule"}, "no built-in schedule or file"),
        ({"--preset": "enat-x"}, "unknown preset .enat-x."),
        ({"--n": "0"}, "expected an integer >= 1, got 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(weights, tmp_path, capsys, change, match):
    (weights / "garbage.pth").write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    args = _args(weights, out)
    for flag, value in change.items():
        if flag in args:
            args[args.index(flag) + 1] = value.format(weights=weights)
        else:
            args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("adanat sample: error: ")
    assert re.search(match, err), err
    assert list(tmp_path.iterdir()) == []  # nothing partial left behind


def test_missing_weights_flag(weights, tmp_path, capsys):
    args = _args(weights, tmp_path / "o")
    i = args.index("--tokenizer")
    del args[i : i + 2]
    assert main(args) == 2
    assert "needs --tokenizer PATH" in capsys.readouterr().err


def test_existing_output_is_kept(weights, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(_args(weights, out)) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_argparse_errors_are_one_line(capsys):
    assert main(["sample", "--n", "x", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-n/--n: expected an integer, got 'x'" in err


def test_staged_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_dir(out) as stage:
        (stage / "a.png").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_imagenet_world_without_weights_names_flag_and_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ADANAT_IN256_GENERATOR", raising=False)
    monkeypatch.delenv("ADANAT_VQGAN", raising=False)
    assert main(["sample", "--preset", "in256", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "needs --generator PATH (or set ADANAT_IN256_GENERATOR)" in err and err.count("\n") == 1
