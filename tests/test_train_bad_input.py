"""Bad input to ``scripts/train_policy.py`` (``adanat train``), run as a user runs it: one line on
stderr, exit code 2, no traceback, nothing new left behind (no run folder, no TensorBoard file,
no ``tb/`` or ``checkpoint.tmp``), and the shipped assets unchanged. Validation fails before any
training, so each case costs about the command's start-up."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import adanat_policy_checkpoint, random_enat, tiny_model_args
from safetensors.torch import load_file, save_file

from adanat.agents.config import PolicyTraining
from adanat.agents.trainer import PolicyTrainer
from adanat.assets import asset_dir
from adanat.envs.spec import EnvConfig
from adanat.models.vqgan import MaskGITVQGAN
from adanat.presets import model_preset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_policy.py"
SHIPPED = asset_dir("shapes")


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


def _listing(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``folder``, files with their size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Tiny weights, a finished one-update run with a checkpoint, folders in the way, and two
    imported AdaNAT policies (T=2): ``adanat`` for the tiny generator (64 features on 8x8),
    ``adanat-w32`` for one of width 32."""
    from adanat.cli import main

    d = tmp_path_factory.mktemp("inputs")
    preset = model_preset("tiny")
    save_file(random_enat(preset.generator).state_dict(), str(d / "gen.safetensors"))
    torch.manual_seed(0)
    save_file(MaskGITVQGAN(preset.tokenizer).state_dict(), str(d / "tok.safetensors"))
    env = EnvConfig(preset="tiny", generator=d / "gen.safetensors", tokenizer=d / "tok.safetensors", steps=2)
    cfg = PolicyTraining(
        env=env, episodes=4, num_envs=4, episodes_per_update=4, eval_episodes=4, save_every=1
    )
    PolicyTrainer(cfg, d / "run").train()
    (d / "afile").write_text("x")
    (d / "busy").mkdir()
    (d / "busy" / "notes.txt").write_text("mine")
    for name, width in (("adanat", 64), ("adanat-w32", 32)):
        adanat_policy_checkpoint(d / f"{name}.pth", in_channels=width, hidden=32, grid=8)
        args = [
            "import-policy",
            str(d / f"{name}.pth"),
            "--out",
            str(d / name),
            "--steps",
            "2",
            "--grid",
            "8",
        ]
        assert main(args) == 0
    return d


def _truncate(name: str) -> Callable[[Path], None]:
    def go(run: Path) -> None:
        path = run / "checkpoint" / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return go


def _drop_state_key(run: Path) -> None:
    path = run / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    del state["rollouts"]
    path.write_text(json.dumps(state))


def _unknown_config_key(run: Path) -> None:
    path = run / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    state["config"]["env"]["colour"] = "red"
    path.write_text(json.dumps(state))


def _drop_rng_key(run: Path) -> None:
    path = run / "checkpoint" / "rng.pt"
    rng = torch.load(path, weights_only=True)
    del rng["labels"]
    torch.save(rng, path)


def _drop_policy_tensor(run: Path) -> None:
    path = run / "checkpoint" / "policy.safetensors"
    tensors = load_file(str(path))
    del tensors["log_std"]
    save_file(tensors, str(path))


def _unwritable(tmp: Path) -> Path:
    """A folder this process cannot write in (as root, chmod does not stop writes: /sys does)."""
    if os.geteuid() != 0:
        folder = tmp / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        fd, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        return Path("/sys")
    os.close(fd)
    os.unlink(probe)
    pytest.skip("no unwritable folder for root here")


# (id, arguments, expected text in the one line, preparation of a copy of the run)
CASES: list[tuple[str, list[str], str, Callable[[Path], None] | None]] = [
    ("episodes-0", ["--episodes", "0"], "argument --episodes: expected an integer >= 1, got 0", None),
    (
        "disc-updates-0",
        ["--disc-updates", "0"],
        "argument --disc-updates: expected an integer >= 1, got 0",
        None,
    ),
    ("seed-negative", ["--seed", "-1"], "argument --seed: seeds are integers >= 0, got -1", None),
    ("device-mps", ["--device", "mps"], "device 'mps' is not supported", None),
    ("device-meta", ["--device", "meta"], "device 'meta' is not supported", None),
    ("device-foo", ["--device", "foo"], "unknown device 'foo'", None),
    ("device-cuda", ["--device", "cuda"], "no CUDA device is available", None),
    ("lr-inf", ["--lr", "inf"], "argument --lr: expected a finite number, got inf", None),
    ("lr-negative", ["--lr", "-1"], "lr must be > 0, got -1.0", None),
    (
        "action-cost-inf",
        ["--action-cost", "inf"],
        "argument --action-cost: expected a finite number, got inf",
        None,
    ),
    (
        "action-cost-nan",
        ["--action-cost", "nan"],
        "argument --action-cost: expected a finite number, got nan",
        None,
    ),
    ("lr-nan", ["--lr", "nan"], "argument --lr: expected a finite number, got nan", None),
    ("select-fid-1", ["--select-fid", "1"], "select-fid must be 0 (off) or >= 2 images, got 1", None),
    ("episodes-resume-0", ["--resume", "{run}", "--episodes", "0"], "expected an integer >= 1, got 0", None),
    ("action-cost-negative", ["--action-cost", "-1"], "action-cost must be >= 0, got -1.0", None),
    (
        "action-std-collision",
        [
            "--action-std",
            "0:0.6,25%:0.3,1:0.2",
            "--episodes",
            "8",
            "--num-envs",
            "4",
            "--episodes-per-update",
            "4",
        ],
        "rise in updates, have stds > 0: '0:0.6,25%:0.3,1:0.2'",
        None,
    ),
    ("action-std-share", ["--action-std", "0:0.6,150%:0.3"], "a share of the run must lie in 0%..100%", None),
    (
        "not-a-multiple",
        ["--num-envs", "4", "--episodes-per-update", "6"],
        "must be a multiple of num-envs",
        None,
    ),
    ("run-dir-is-a-file", ["--run-dir", "{d}/afile"], "--run-dir {d}/afile is a file, not a folder", None),
    ("run-dir-under-a-file", ["--run-dir", "{d}/afile/run"], "{d}/afile is a file, not a folder", None),
    (
        "log-dir-under-a-file",
        ["--log-dir", "{d}/afile/tb"],
        "--log-dir {d}/afile/tb: {d}/afile is a file",
        None,
    ),
    ("run-dir-unrelated", ["--run-dir", "{d}/busy"], "holds files but no adanat run", None),
    ("run-dir-unwritable", ["--run-dir", "{locked}/run"], "cannot write in {locked}", None),
    ("run-dir-holds-a-run", ["--run-dir", "{run}"], "already holds a run; pass --resume {run}", None),
    ("resume-no-checkpoint", ["--resume", "{d}/busy"], "holds no checkpoint to resume", None),
    (
        "resume-changes-a-setting",
        ["--resume", "{run}", "--steps", "4"],
        "--resume continues with the run's saved settings; --steps cannot change with it",
        None,
    ),
    ("resume-missing-folder", ["--resume", "{d}/nowhere"], "--resume {d}/nowhere: no such run folder", None),
    ("resume-state-key", ["--resume", "{run}"], "state.json is missing key(s) rollouts", _drop_state_key),
    (
        "resume-config-key",
        ["--resume", "{run}"],
        "unknown key(s) 'colour' for EnvConfig",
        _unknown_config_key,
    ),
    (
        "resume-policy",
        ["--resume", "{run}"],
        "checkpoint/policy.safetensors is unreadable",
        _truncate("policy.safetensors"),
    ),
    (
        "resume-policy-key",
        ["--resume", "{run}"],
        "policy.safetensors is missing tensor(s) log_std",
        _drop_policy_tensor,
    ),
    (
        "resume-optimizer",
        ["--resume", "{run}"],
        "checkpoint/optimizer.pt is unreadable",
        _truncate("optimizer.pt"),
    ),
    ("resume-rng", ["--resume", "{run}"], "checkpoint/rng.pt is unreadable", _truncate("rng.pt")),
    ("resume-rng-key", ["--resume", "{run}"], "checkpoint/rng.pt is missing key(s) labels", _drop_rng_key),
    ("resume-reward", ["--resume", "{run}"], "checkpoint/reward.pt is unreadable", _truncate("reward.pt")),
    (
        "init-policy-compact",
        ["--init-policy", "{d}/adanat", "--steps", "2", "--observation", "compact"],
        "--init-policy {d}/adanat reads the generator's full features (AdaNAT's observation); "
        "--observation compact does not give them",
        None,
    ),
    (
        "init-policy-steps",
        ["--init-policy", "{d}/adanat", "--steps", "4"],
        "--init-policy {d}/adanat acts for T=2; pass --steps 2 (not 4)",
        None,
    ),
    (
        "init-policy-width",
        ["--init-policy", "{d}/adanat-w32", "--steps", "2"],
        "--init-policy {d}/adanat-w32 reads 32 features on a 8x8 grid; preset tiny gives 64 on 8x8",
        None,
    ),
    (
        "init-policy-ours",
        ["--init-policy", "{run}/policy", "--steps", "2"],
        "--init-policy {run}/policy holds a policy of format 'adanat-policy/1'; it takes AdaNAT's format",
        None,
    ),
    (
        "init-policy-missing",
        ["--init-policy", "{d}/nowhere"],
        "--init-policy {d}/nowhere is not a policy folder (no policy.json; make one with adanat "
        "import-policy)",
        None,
    ),
    (
        "init-policy-action-cost",
        ["--init-policy", "{d}/adanat", "--steps", "2", "--action-cost", "0.1"],
        "--action-cost is a distance from the base schedule; --init-policy {d}/adanat acts with none",
        None,
    ),
    (
        "init-policy-action-scale",
        ["--init-policy", "{d}/adanat", "--steps", "2", "--action-scale", "2"],
        "--action-scale scales the residual actions; --init-policy {d}/adanat acts with AdaNAT's raw ones",
        None,
    ),
    (
        "init-policy-resume",
        ["--resume", "{run}", "--init-policy", "{d}/adanat"],
        "--resume continues with the run's saved settings; --init-policy cannot change with it",
        None,
    ),
]


# the kinds run as subprocesses, as a user runs them (each pays the command's start-up, ~5 s);
# the others run the same entry point in-process
E2E = {
    "episodes-0",
    "seed-negative",
    "device-mps",
    "device-cuda",
    "lr-inf",
    "action-std-collision",
    "log-dir-under-a-file",
    "run-dir-unrelated",
    "run-dir-unwritable",
    "run-dir-holds-a-run",
    "resume-policy",
    "resume-reward",
    "init-policy-compact",
}


def _setup(
    inputs: Path, tmp_path: Path, args: list[str], message: str, prepare
) -> tuple[list[str], str, Path]:
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    run = tmp_path / "run"
    shutil.copytree(inputs / "run", run)
    if prepare is not None:
        prepare(run)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    names = {"d": str(inputs), "run": str(run)}
    if any("{locked}" in a for a in args):
        names["locked"] = str(_unwritable(tmp_path))
    model = [] if "--resume" in args else tiny_model_args(inputs)  # a resumed run has its own
    return [*model, *(a.format(**names) for a in args)], message.format(**names), cwd


def _check(code: int, stderr: str, message: str) -> None:
    assert code == 2, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[0].startswith("train_policy: error: ") and message in lines[0], lines[0]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "message", "prepare"),
    [c[1:] for c in CASES if c[0] in E2E],
    ids=[c[0] for c in CASES if c[0] in E2E],
)
def test_bad_input_is_one_line_and_leaves_nothing(inputs, tmp_path, args, message, prepare):
    argv, message, cwd = _setup(inputs, tmp_path, args, message, prepare)
    before = (_listing(inputs), _listing(tmp_path), _digest(SHIPPED))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], cwd=cwd, env=env, capture_output=True, text=True
    )
    _check(res.returncode, res.stderr, message)
    assert (_listing(inputs), _listing(tmp_path), _digest(SHIPPED)) == before  # nothing new, nothing changed


@pytest.mark.parametrize(
    ("args", "message", "prepare"),
    [c[1:] for c in CASES if c[0] not in E2E],
    ids=[c[0] for c in CASES if c[0] not in E2E],
)
def test_bad_input_in_process(inputs, tmp_path, monkeypatch, capsys, args, message, prepare):
    from adanat.cli.train import main

    argv, message, cwd = _setup(inputs, tmp_path, args, message, prepare)
    monkeypatch.chdir(cwd)
    before = (_listing(inputs), _listing(tmp_path), _digest(SHIPPED))
    try:
        code = main(argv, prog="train_policy")
    except SystemExit as e:  # argparse
        code = e.code
    _check(code, capsys.readouterr().err, message)
    assert (_listing(inputs), _listing(tmp_path), _digest(SHIPPED)) == before


def test_a_run_stopped_before_its_first_checkpoint_may_start_again(tmp_path):
    from adanat.cli.common import UsageError
    from adanat.cli.train import check_new_run_dir

    (tmp_path / "tb").mkdir()  # all a run leaves before its first checkpoint
    (tmp_path / "checkpoint.tmp").mkdir()
    check_new_run_dir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="holds files but no adanat run"):
        check_new_run_dir(tmp_path)
