"""Bad input to ``scripts/pretrain.py`` is refused with one line and exit status 2, leaving nothing
behind in the folders it was given and the package's shipped assets untouched.

Every case runs the real script (``--tiny``) in a folder of its own (also its working directory, so a
default run folder would show up there too): in a process forked from one that imported the
script's modules once (:data:`DRIVER`), and a few of them again in a fresh interpreter each.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from helpers import load_script
from safetensors.torch import save_file

from adanat.assets import asset_dir
from adanat.models.enat import ENAT
from adanat.presets import generator_config, tokenizer_config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pretrain.py"
SHIPPED = asset_dir("shapes")
ROOT = os.geteuid() == 0


def _digests(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder``: sha256 of a file, ``dir`` for a folder."""
    return {
        str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def _marker(run: Path, tiny: bool = True) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "pretrain-run.json").write_text(json.dumps({"world": "shapes", "tiny": tiny}))
    return run


def _file(path: Path, data: bytes = b"not a folder\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _truncated_checkpoint(d: Path) -> list[str]:
    path = _marker(d / "r") / "metric" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save({"step": 2, "model": {"w": torch.zeros(4096)}}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return ["--stage", "metric", "--run-dir", str(d / "r")]


def _out_with_tokenizer(d: Path) -> Path:
    """An output folder whose manifest names a 16-code tokenizer (the file is never read)."""
    out = d / "o"
    config = asdict(replace(tokenizer_config("vqgan-shapes-tiny"), codebook_size=16))
    manifest = {"world": "shapes", "models": {"tokenizer": {"config": config}}}
    _file(out / "manifest.json", json.dumps(manifest).encode())
    _file(out / "tokenizer.safetensors", b"")
    return out


def _generator_of_another_config(d: Path) -> list[str]:
    out = _out_with_tokenizer(d)
    torch.manual_seed(0)
    other = ENAT(generator_config("enat-shapes-tiny"))  # 32 codes, not the tokenizer's 16
    save_file(other.state_dict(), str(d / "other.safetensors"))
    init = ["--init-generator", str(d / "other.safetensors")]
    return ["--stage", "generator", "--run-dir", str(d / "r"), "--out", str(out), *init]


def _unwritable(d: Path, flag: str) -> list[str]:
    if ROOT:  # permissions do not stop root: a folder that cannot be made
        where = Path(f"/proc/adanat-test-{d.name}/x")
    else:
        (d / "ro").mkdir()
        (d / "ro").chmod(0o555)
        where = d / "ro" / "x"
    other = {"--out": ["--run-dir", str(d / "r")], "--run-dir": ["--out", str(d / "o")]}[flag]
    return ["--stage", "metric", flag, str(where), *other]


RD = ["--run-dir", "r"]  # relative to the case's folder
# name: (arguments after --tiny, made in the case's folder d; what the one line says)
CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "lr-inf": (lambda d: [*RD, "--generator-lr", "inf"], "finite learning rate in (0, 1], got inf"),
    "lr-nan": (lambda d: [*RD, "--generator-lr", "nan"], "finite learning rate"),
    "lr-zero": (lambda d: [*RD, "--generator-lr", "0"], "finite learning rate"),
    "lr-above-one": (lambda d: [*RD, "--generator-lr", "3"], "finite learning rate"),
    "lr-not-a-number": (lambda d: [*RD, "--generator-lr", "fast"], "expected a number"),
    "steps-zero": (lambda d: [*RD, "--generator-steps", "0"], "integer >= 1"),
    "batch-zero": (lambda d: [*RD, "--generator-batch-size", "0"], "integer >= 1"),
    "batch-above-data": (lambda d: [*RD, "--generator-batch-size", "301"], "larger than the 300 training"),
    "warmup-negative": (lambda d: [*RD, "--generator-warmup", "-1"], "integer >= 0"),
    "warmup-not-shorter": (
        lambda d: [*RD, "--generator-warmup", "4"],
        "not shorter than the training (--generator-steps 4)",
    ),
    "default-warmup-too-long": (
        lambda d: [*RD, "--generator-steps", "1"],
        "warmup 1 (the default) is not shorter",
    ),
    "reuse-chain-zero": (lambda d: [*RD, "--generator-reuse-chain", "0"], "integer >= 1"),
    "reuse-chain-too-long": (lambda d: [*RD, "--generator-reuse-chain", "65"], "longer than the 64 tokens"),
    "out-empty-string": (lambda d: [*RD, "--out", ""], "empty string"),
    "run-dir-empty-string": (lambda d: ["--run-dir", ""], "empty string"),
    "device-unknown": (lambda d: [*RD, "--device", "nonsense"], "unknown device"),
    "out-is-file": (lambda d: [*RD, "--out", str(_file(d / "o"))], "is a file, not a folder"),
    "run-dir-is-file": (lambda d: ["--run-dir", str(_file(d / "r"))], "is a file, not a folder"),
    "run-dir-below-file": (lambda d: ["--run-dir", str(_file(d / "f") / "r")], "f is a file"),
    "out-shipped": (lambda d: [*RD, "--out", str(SHIPPED)], "takes --update-shipped-assets"),
    "out-below-shipped": (lambda d: [*RD, "--out", str(SHIPPED / "new")], "takes --update-shipped-assets"),
    "run-dir-shipped": (lambda d: ["--run-dir", str(SHIPPED)], "inside the package's shipped assets"),
    "tiny-into-shipped": (lambda d: [*RD, "--update-shipped-assets"], "never go into the shipped assets"),
    "shipped-and-other-out": (
        lambda d: [*RD, "--update-shipped-assets", "--out", str(d / "o")],
        "leave out --out",
    ),
    "out-unwritable": (lambda d: _unwritable(d, "--out"), "--out"),
    "run-dir-unwritable": (lambda d: _unwritable(d, "--run-dir"), "--run-dir"),
    "out-unrelated": (
        lambda d: [*RD, "--out", str(_file(d / "o" / "notes.txt").parent)],
        "non-empty folder without a manifest.json",
    ),
    "out-bad-manifest": (
        lambda d: [*RD, "--out", str(_file(d / "o" / "manifest.json", b"{").parent)],
        "is not valid JSON",
    ),
    "run-dir-unrelated": (
        lambda d: ["--run-dir", str(_file(d / "r" / "notes.txt").parent)],
        "not a pretrain run folder",
    ),
    "run-dir-bad-marker": (
        lambda d: ["--run-dir", str(_file(d / "r" / "pretrain-run.json", b"[").parent)],
        "not a valid run marker",
    ),
    "run-dir-of-full-size-run": (
        lambda d: ["--run-dir", str(_marker(d / "r", tiny=False))],
        "holds a full-size shapes run",
    ),
    "checkpoint-corrupt": (
        lambda d: [
            "--stage",
            "metric",
            "--run-dir",
            str(_file(_marker(d / "r") / "metric" / "checkpoint.pt", b"garbage").parents[1]),
        ],
        "metric/checkpoint.pt is corrupt or truncated",
    ),
    "checkpoint-truncated": (_truncated_checkpoint, "delete the folder"),
    "init-missing": (lambda d: [*RD, "--init-generator", str(d / "none.safetensors")], "no such file"),
    "init-corrupt": (
        lambda d: [*RD, "--init-generator", str(_file(d / "bad.safetensors", b"garbage"))],
        "cannot read checkpoint",
    ),
    "init-of-another-config": (_generator_of_another_config, "--init-generator: generator tensor"),
    "generator-without-tokenizer": (lambda d: [*RD, "--stage", "generator"], "needs the tokenizer stage"),
    "prune-without-tokenizer": (lambda d: [*RD, "--stage", "prune"], "needs the metric and tokenizer"),
}


# Runs the cases of a JSON table {name: [cwd, args, stderr file]} read from stdin, each in a process
# forked from this one after the script's modules are imported (they take ~5 s of each fresh
# process), as ``python scripts/pretrain.py ARGS`` runs: the script as ``__main__``, an uncaught
# exception printed with its traceback and status 1. Prints {name: exit status}.
DRIVER = """
import json, os, runpy, sys, traceback
import adanat.cli, adanat.pretrain.shapes  # the script's imports, before the forks
script, cases = sys.argv[1], json.load(sys.stdin)
status = {}
for name, (cwd, args, err) in cases.items():
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(cwd)
            os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            sys.argv = [script, *args]
            try:
                runpy.run_path(script, run_name="__main__")
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
            except BaseException:
                traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    status[name] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(status))
"""
SUBPROCESS = ("lr-inf", "out-shipped", "checkpoint-corrupt", "init-of-another-config")  # also run alone


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[int, str, dict, dict]]:
    """Each case's ``(exit status, stderr, folder before, folder after)``; the cases of
    :data:`SUBPROCESS` once more as ``NAME-subprocess``, each in a fresh interpreter. The shipped
    assets are hashed before and after all of them."""
    base, logs = tmp_path_factory.mktemp("bad-input"), tmp_path_factory.mktemp("stderr")
    shipped = _digests(SHIPPED)
    prepared = {}
    for name in [*CASES, *(f"{n}-subprocess" for n in SUBPROCESS)]:
        folder = base / name
        folder.mkdir()
        args = CASES[name.removesuffix("-subprocess")][0](folder)
        prepared[name] = (folder, args, _digests(folder))
    forked = {
        n: [str(f), ["--tiny", *args], str(logs / n)] for n, (f, args, _) in prepared.items() if n in CASES
    }

    def forks() -> dict[str, tuple[int, str]]:
        res = subprocess.run(
            [sys.executable, "-c", DRIVER, str(SCRIPT)],
            input=json.dumps(forked),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        return {n: (code, (logs / n).read_text()) for n, code in json.loads(res.stdout).items()}

    def alone(name: str) -> dict[str, tuple[int, str]]:
        folder, args, _ = prepared[name]
        cmd = [sys.executable, str(SCRIPT), "--tiny", *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=folder)
        return {name: (res.returncode, res.stderr)}

    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = [pool.submit(forks), *(pool.submit(alone, f"{n}-subprocess") for n in SUBPROCESS)]
        done = {k: v for job in jobs for k, v in job.result().items()}
    if not ROOT:
        for folder, _, _ in prepared.values():
            if (folder / "ro").is_dir():
                (folder / "ro").chmod(0o755)
    assert _digests(SHIPPED) == shipped, "the shipped assets changed"
    return {name: (*done[name], before, _digests(folder)) for name, (folder, _, before) in prepared.items()}


@pytest.mark.e2e
@pytest.mark.parametrize("name", [*CASES, *(f"{n}-subprocess" for n in SUBPROCESS)])
def test_bad_input_is_one_line_and_leaves_nothing(outcomes, name):
    status, stderr, before, after = outcomes[name]
    assert status == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1 and stderr.startswith("pretrain: error: "), stderr
    assert CASES[name.removesuffix("-subprocess")][1] in stderr
    assert after == before  # nothing new (no folder, marker, event file) and nothing changed


def test_a_diverged_run_is_one_line_and_status_1(monkeypatch, capsys, tmp_path):
    """The script reports a non-finite training as one line with status 1 and removes what it made."""
    from adanat.pretrain import shapes
    from adanat.pretrain.run import NonFiniteError

    def diverge(self, stages, init=None, check=True):
        raise NonFiniteError("generator: the loss became non-finite by step 20")

    monkeypatch.setattr(shapes.ShapesPretrainer, "run", diverge)
    script = load_script(SCRIPT)
    assert script.main(["--tiny", "--run-dir", str(tmp_path / "r"), "--stage", "metric"]) == 1
    err = capsys.readouterr().err
    assert err == "pretrain: error: generator: the loss became non-finite by step 20\n"
    assert not (tmp_path / "r").exists()  # the run folder (and its marker) made for it are removed


def test_only_the_opt_in_writes_to_the_shipped_assets():
    """Without ``--out`` the output goes into the run folder; ``--update-shipped-assets`` (full size
    only) is the one way to the package's assets (resolved here, nothing is run)."""
    script = load_script(SCRIPT)
    parse = script._parser().parse_args
    assert script._folders(parse(["--run-dir", "r"])) == (Path("r"), Path("r/out"))
    assert script._folders(parse([])) == (Path("runs/pretrain-shapes"), Path("runs/pretrain-shapes/out"))
    assert script._folders(parse(["--tiny"]))[1] == Path("runs/pretrain-shapes-tiny/out")
    assert script._folders(parse(["--update-shipped-assets"]))[1] == SHIPPED
    assert script._folders(parse(["--update-shipped-assets", "--out", str(SHIPPED)]))[1] == SHIPPED


def test_run_and_output_folders_that_are_accepted(tmp_path):
    """A new or empty folder, a marked run folder of the same kind, a run folder from before the
    marker (it holds a stage checkpoint), and an output folder with a manifest."""
    from adanat.pretrain.shapes import check_out_dir, check_run_dir

    assert check_run_dir(tmp_path / "new", "shapes", True)  # the marker is to be written
    assert check_run_dir(_marker(tmp_path / "marked"), "shapes", True) is False
    _file(tmp_path / "old" / "generator" / "checkpoint.pt", b"")
    assert check_run_dir(tmp_path / "old", "shapes", False)
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty")
    check_out_dir(SHIPPED)  # a manifest (the script refuses this one for being the shipped assets)
