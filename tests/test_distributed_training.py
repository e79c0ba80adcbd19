"""Policy training under torchrun: one learner fed by every process's rows, a data-parallel
discriminator, sharded evaluation and FID selection; 2 gloo processes equal 1 process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import write_tiny_weights
from safetensors.torch import load_file

from adanat.agents.config import PolicyTraining
from adanat.agents.trainer import PolicyTrainer
from adanat.distributed import Shard
from adanat.envs.spec import EnvConfig
from adanat.rewards.registry import RewardOptions
from adanat.team import Team, TeamRows


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    return write_tiny_weights(tmp_path_factory.mktemp("tiny-weights"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train(args: list[str], processes: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable]
    if processes > 1:
        cmd += [
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={processes}",
            f"--master_port={_free_port()}",
        ]
    cmd += ["-m", "adanat", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(folder.rglob("events.out.tfevents.*")):
        ea = EventAccumulator(str(f), size_guidance={"scalars": 0})
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            if not tag.startswith("time/"):  # wall-clock rates differ by nature
                out.setdefault(tag, []).extend((e.step, e.value) for e in ea.Scalars(tag))
    return {k: sorted(v) for k, v in out.items()}


# Scalars the discriminator decides. Its Adam updates (20 a round) carry forward the summation-order
# differences of two processes' gathered batches against one process's: on an AMX Xeon its scores
# and the rewards read from them were up to 1.5e-4 apart (3e-3 relative) after three rounds, and its
# accuracy once counted one image of 640 otherwise (1.6e-3), while every scalar the policy decides
# stayed within 1e-6 relative (on an earlier machine, all of them). Within 5e-3: three images of 640.
DISCRIMINATOR_TAGS = ("disc/", "reward/", "eval/reward_", "rollout/ep_rew_mean")


def _same_run(one: Path, two: Path, tol: float) -> None:
    a, b = (
        load_file(str(one / "policy" / "policy.safetensors")),
        load_file(str(two / "policy" / "policy.safetensors")),
    )
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= tol, worst
    sa, sb = _scalars(one / "tb"), _scalars(two / "tb")
    assert sa.keys() == sb.keys() and "disc/loss" in sa and "eval/fid_policy" in sa
    for tag, values in sa.items():
        assert [s for s, _ in values] == [s for s, _ in sb[tag]], tag
        close = {"abs": 5e-3} if tag.startswith(DISCRIMINATOR_TAGS) else {"rel": 10 * tol, "abs": tol}
        assert [v for _, v in values] == pytest.approx([v for _, v in sb[tag]], **close), tag
    best_a, best_b = json.loads((one / "best.json").read_text()), json.loads((two / "best.json").read_text())
    assert best_a["updates"] == best_b["updates"] and best_a["fid"] == pytest.approx(best_b["fid"], rel=1e-6)
    assert (
        json.loads((one / "checkpoint" / "state.json").read_text())["rollouts"]
        == json.loads((two / "checkpoint" / "state.json").read_text())["rollouts"]
    )


def _train_one_and_two(weights: tuple[Path, Path], tmp_path: Path, device: str, tol: float) -> None:
    gen, tok = weights
    args = ["--preset", "tiny", "--generator", str(gen), "--tokenizer", str(tok), "--steps", "2"]
    args += ["--num-envs", "8", "--episodes-per-update", "16", "--episodes", "32", "--eval-every", "1"]
    args += ["--eval-episodes", "16", "--select-fid", "16", "--device", device]
    one, two = tmp_path / "one", tmp_path / "two"
    for processes, run in ((1, one), (2, two)):
        done = _train([*args, "--run-dir", str(run)], processes, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("held-out mean reward") == 1  # only the leader prints
    assert not (tmp_path / "runs").exists()
    _same_run(one, two, tol)
    for processes, run in ((1, one), (2, two)):
        done = _train(["--resume", str(run), "--episodes", "48"], processes, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "resuming" in done.stdout
    _same_run(one, two, tol)


@pytest.mark.e2e
def test_two_gloo_processes_train_as_one_and_resume(weights, tmp_path):
    """Same seed and total rows: the exported policy (<= 1e-5), every TensorBoard scalar (the
    discriminator's, the evaluation's and the FID selection's included) and the best policy equal
    those of one process, after a run and after resuming it with the same number of processes."""
    _train_one_and_two(weights, tmp_path, "cpu", 1e-5)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_gpus_train_as_one(weights, tmp_path):
    """The same on 2 GPUs under NCCL (one process per GPU) against 1 GPU."""
    _train_one_and_two(weights, tmp_path, "cuda", 1e-4)


def _config(weights: tuple[Path, Path], num_envs: int, minibatch_std: int = 0, **kw) -> PolicyTraining:
    env = EnvConfig(
        world="shapes",
        preset="tiny",
        generator=weights[0],
        tokenizer=weights[1],
        steps=2,
        reward_options=RewardOptions(minibatch_std=minibatch_std),
    )
    base = dict(episodes=8, num_envs=num_envs, episodes_per_update=num_envs, eval_episodes=num_envs)
    return PolicyTraining(env=env, **{**base, **kw})


@pytest.mark.parametrize(
    ("num_envs", "extra", "message"),
    [
        (6, {}, "num-envs (6) must be a multiple of the 4 processes"),
        (8, {"minibatch_std": 4}, "minibatch-std groups of 4 need rows per process (2)"),
        (8, {"eval_episodes": 4}, "--eval-episodes 4 gives fewer batches of 2 rows than the 4 processes"),
    ],
)
def test_a_team_that_cannot_split_the_run_is_refused(weights, tmp_path, num_envs, extra, message):
    """Checked when the trainer is built, before any collective runs (so every process refuses
    alike, with one line)."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PolicyTrainer(_config(weights, num_envs, **extra), tmp_path / "run", team=Team(Shard(1, 4)))


def test_team_rows_place_run_wide_episodes_as_one_process_orders_them():
    """Episode ``g`` of a rollout (round after round, row after row of all 8 rows) lies on
    process ``row // 4`` at index ``round * 4 + row % 4`` of its own record."""
    rows = TeamRows(Team(Shard(0, 2)), 4)
    owner, local = rows.locate(torch.tensor([0, 3, 4, 7, 8, 13]))
    assert owner.tolist() == [0, 0, 1, 1, 0, 1]
    assert local.tolist() == [0, 3, 0, 3, 4, 5]


def test_a_team_of_one_runs_operations_in_place():
    team = Team(Shard())
    team.register("double", lambda: 2 * 21)
    assert team.call("double") == 42 and not team.broken
    x = torch.arange(6.0).reshape(2, 3)
    assert team.broadcast(x) is x and torch.equal(team.gather(x), x) and torch.equal(team.sum(x), x)
    with pytest.raises(ValueError, match="registered twice"):
        team.register("double", lambda: 0)


@pytest.mark.e2e
def test_ctrl_c_under_torchrun_saves_and_the_run_resumes(weights, tmp_path):
    """Ctrl-C reaches torchrun and every process: the leader saves at the end of the PPO update,
    every process ends within torchrun's grace period, and ``--resume`` with the same 2 processes
    continues the counters."""
    import signal
    import time

    gen, tok = weights
    run = tmp_path / "run"
    args = ["--preset", "tiny", "--generator", str(gen), "--tokenizer", str(tok), "--steps", "2"]
    args += ["--num-envs", "8", "--episodes-per-update", "16", "--episodes", "16000", "--eval-every", "500"]
    args += ["--eval-episodes", "16", "--select-fid", "0", "--save-every", "500", "--device", "cpu"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
    ]
    cmd += ["-m", "adanat", "train", *args, "--run-dir", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # wait until training runs
        lines.append(line)
        if "update 2/" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    start = time.monotonic()
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=60) != 0 and time.monotonic() - start < 40
    assert "interrupted: saved in" in out, out[-3000:]
    rollouts = json.loads((run / "checkpoint" / "state.json").read_text())["rollouts"]
    assert rollouts >= 2
    done = _train(["--resume", str(run), "--episodes", str(16 * (rollouts + 1))], 2, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming {run} at episode {16 * rollouts} (update {rollouts})" in done.stdout
    assert json.loads((run / "checkpoint" / "state.json").read_text())["rollouts"] == rollouts + 1
