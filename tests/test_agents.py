"""The agent: features extractor, PPO glue (std schedule, guards, resume), export and sampling."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from helpers import random_enat, write_tiny_weights
from safetensors.torch import save_file

from adanat.agents import sb3
from adanat.agents.callbacks import NonFiniteError, std_at
from adanat.agents.config import PolicyTraining, parse_std_schedule
from adanat.agents.export import PolicyController, load_policy
from adanat.agents.extractor import AdaNATExtractor, ExtractorConfig
from adanat.agents.trainer import PolicyTrainer
from adanat.envs.spec import EnvConfig
from adanat.presets import model_preset, world_preset
from adanat.rewards.registry import _REGISTRY, register
from adanat.rng import row_rngs
from adanat.sampling import ScheduleController

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> tuple[Path, Path]:
    return write_tiny_weights(tmp_path_factory.mktemp("tiny-weights"))


def tiny_training(weights: tuple[Path, Path], reward: str = "adversarial", **kw) -> PolicyTraining:
    env = EnvConfig(
        world="shapes", preset="tiny", generator=weights[0], tokenizer=weights[1], steps=2, reward=reward
    )
    base = dict(episodes=8, num_envs=4, episodes_per_update=4, eval_every=100, eval_episodes=4, save_every=1)
    return PolicyTraining(env=env, **{**base, **kw})


@pytest.mark.parametrize("grid", [4, 5, 8, 16])
def test_extractor_takes_any_grid_and_starts_as_plain_layer_norm(grid):
    space = spaces.Dict(
        {"features": spaces.Box(-1e4, 1e4, (grid * grid, 24), np.float32), "step": spaces.Discrete(8)}
    )
    torch.manual_seed(0)
    ext = AdaNATExtractor(space, ExtractorConfig(hidden=16, conv_channels=8, mlp=32, features_dim=12))
    feats = torch.randn(3, grid * grid, 24)
    one_hot = torch.nn.functional.one_hot(torch.tensor([0, 3, 7]), 8).float()
    out = ext({"features": feats, "step": one_hot})
    assert out.shape == (3, 12) and torch.isfinite(out).all()
    torch.testing.assert_close(out, ext({"features": feats, "step": one_hot[:, None]}))  # SB3 buffer form
    # zero-initialised modulation: the step does not matter yet
    torch.testing.assert_close(
        out, ext({"features": feats, "step": torch.zeros(3, 8).index_fill_(1, torch.tensor([2]), 1)})
    )


def test_std_schedule():
    sched = ((0, 0.6), (500, 0.3))
    assert std_at(sched, 0) == 0.6 and std_at(sched, 499) == 0.6 and std_at(sched, 500) == 0.3
    # a share of the run resolves against its length (rounded down)
    assert parse_std_schedule("0:0.6,25%:0.3", 128) == ((0, 0.6), (32, 0.3))
    assert parse_std_schedule("0:0.6,50%:0.3,90%:0.1", 15) == ((0, 0.6), (7, 0.3), (13, 0.1))
    assert parse_std_schedule("0:0.6,500:0.3", 128) == sched
    with pytest.raises(ValueError, match=re.escape("0:0.6,50%:0.3, got '0:0.6,a%:1'")):
        parse_std_schedule("0:0.6,a%:1", 128)


def test_std_schedule_shares_in_a_short_run_move_to_the_next_free_update():
    # the shapes default in runs of under 4 updates: 25% rounds down to update 0, already taken
    assert parse_std_schedule("0:0.6,25%:0.3", 3) == ((0, 0.6), (1, 0.3))
    assert parse_std_schedule("0:0.6,25%:0.3", 1) == ((0, 0.6), (1, 0.3))  # never reached: 0.6 throughout
    assert parse_std_schedule("0:0.6,10%:0.3,20%:0.2", 4) == ((0, 0.6), (1, 0.3), (2, 0.2))
    assert parse_std_schedule("0%:0.6,50%:0.3", 2) == ((0, 0.6), (1, 0.3))  # a share at 0 stays first
    # plain updates never move, and the error quotes the schedule as given
    with pytest.raises(ValueError, match=re.escape("have stds > 0: '0:0.6,25%:0.3,1:0.2'")):
        parse_std_schedule("0:0.6,25%:0.3,1:0.2", 2)
    with pytest.raises(ValueError, match=re.escape("0%..100%, got 150% in '0:0.6,150%:0.3'")):
        parse_std_schedule("0:0.6,150%:0.3", 10)
    from adanat.cli import train

    short = train.config_from_args(train.parse(["--episodes", "256"]))  # 2 updates, the shapes default
    assert short.updates == 2 and short.std_schedule == ((0, 0.6), (1, 0.3))


def test_untrained_policy_is_the_base_schedule_and_std_follows_its_schedule(tiny_weights, tmp_path):
    cfg = tiny_training(tiny_weights, std_schedule=((0, 0.6), (1, 0.3)))
    trainer = PolicyTrainer(cfg, tmp_path / "run")
    core = trainer.core
    labels = torch.arange(6) % 10
    policy = core.sampler.generate(
        labels, PolicyController(trainer.actor(), trainer.meta()), 2, row_rngs(1, 6)
    )
    base = core.sampler.generate(labels, ScheduleController(core.mapping.base), 2, row_rngs(1, 6))
    assert torch.equal(policy.trace, base.trace) and torch.equal(policy.ids, base.ids)
    trainer.train()
    log_std = sb3.exploration_log_std(trainer.model)
    assert log_std.detach().exp().allclose(torch.tensor(0.3)) and not log_std.requires_grad
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["rollouts"] == 2 and state["episodes"] == 8


def test_non_finite_reward_stops_and_keeps_the_last_good_checkpoint(tiny_weights, tmp_path):
    calls = {"n": 0}

    class FlakyReward:
        name = "flaky-test"

        def __call__(self, images, labels):
            calls["n"] += 1
            value = float("nan") if calls["n"] >= 3 else 0.5
            return torch.full((images.shape[0],), value)

    register("flaky-test")(lambda world, options, device, prompts: FlakyReward())
    try:
        trainer = PolicyTrainer(
            tiny_training(tiny_weights, reward="flaky-test", episodes=40), tmp_path / "run"
        )
        with pytest.raises(NonFiniteError, match=r"non-finite reward.*last good checkpoint"):
            trainer.train()
    finally:
        del _REGISTRY["flaky-test"]
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["rollouts"] == 2


def test_resume_from_another_kind_of_device_reseeds_the_row_streams(tiny_weights, tmp_path):
    cfg = tiny_training(tiny_weights)
    run = tmp_path / "run"
    PolicyTrainer(cfg, run).train()
    same = PolicyTrainer(replace(cfg, episodes=16), run)
    same.restore()
    assert not same.rows_reseeded  # same kind of device: the streams load as saved
    rng_file = run / "checkpoint" / "rng.pt"
    rng = torch.load(rng_file, weights_only=True)
    assert all(r.numel() == torch.Generator().get_state().numel() for r in rng["rows"])
    rng["rows"] = [torch.zeros(16, dtype=torch.uint8) for _ in rng["rows"]]  # a CUDA generator's size
    torch.save(rng, rng_file)
    states = []
    for _ in range(2):
        trainer = PolicyTrainer(replace(cfg, episodes=16), run)
        trainer.restore()
        assert trainer.rows_reseeded
        states.append([g.get_state() for g in trainer.core.rngs])
    assert all(torch.equal(a, b) for a, b in zip(*states, strict=True))  # the same seeds each time
    fresh = PolicyTrainer(cfg, tmp_path / "fresh")
    fresh.venv.seed(cfg.seed)
    fresh.venv.reset()
    assert len(fresh.core.rngs) == len(states[0])  # not the run's first streams again:
    assert not torch.equal(states[0][0], fresh.core.rngs[0].get_state())
    trainer.train()
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["rollouts"] == 4 and state["episodes"] == 16


def test_train_policy_defaults_per_world():
    from adanat.cli import train as script

    shapes = script.config_from_args(script.parse([]))
    assert shapes.updates == 128 and shapes.std_schedule == ((0, 0.6), (32, 0.3))
    assert shapes.action_cost == 0.2 and shapes.env.reward_options.minibatch_std == 4
    assert shapes.env.reward_options.discriminator.updates_per_round == 20 and shapes.select_fid == 2000
    assert shapes.learning_rate == 1e-4
    imagenet = script.config_from_args(script.parse(["--env", "in256", "--episodes", "128000"]))
    assert imagenet.std_schedule == ((0, 0.6), (500, 0.3)) and imagenet.learning_rate == 3e-4
    assert imagenet.action_cost == 0.0 and imagenet.env.reward_options.minibatch_std == 0
    assert imagenet.env.reward_options.discriminator.updates_per_round == 5
    assert imagenet.select_fid == 0  # no shipped FID reference: selection needs --fid-reference
    with_reference = script.parse(["--world", "in512", "--fid-reference", "stats.npz"])
    assert with_reference.world == "in512" and script.config_from_args(with_reference).select_fid == 5000
    chosen = ["--action-std", "0:0.5", "--action-cost", "0", "--minibatch-std", "0"]
    own = script.config_from_args(script.parse(chosen))
    assert own.std_schedule == ((0, 0.5),) and own.action_cost == 0.0
    assert own.env.reward_options.minibatch_std == 0


def test_imagenet_worlds_default_to_adanat_settings():
    """The ImageNet worlds' policy-training presets are PolicyTraining's (AdaNAT's) defaults."""
    adanat = PolicyTraining()
    for name in ("in256", "in512"):
        preset = world_preset(name).policy_training
        assert parse_std_schedule(preset.action_std, adanat.updates) == adanat.std_schedule
        assert preset.action_cost == adanat.action_cost and preset.minibatch_std == 0


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(folder.rglob("events.out.tfevents.*")):
        ea = EventAccumulator(str(f), size_guidance={"scalars": 0, "images": 0})
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in ea.Scalars(tag))
        for tag in ea.Tags()["images"]:
            out.setdefault(tag, []).extend((e.step, 0.0) for e in ea.Images(tag))
    return out


def test_train_policy_script_smoke_resume_export_and_sample(tiny_weights, tmp_path):
    gen, tok = tiny_weights
    script = str(ROOT / "scripts" / "train_policy.py")
    common = ["--preset", "tiny", "--generator", str(gen), "--tokenizer", str(tok), "--steps", "2"]
    run = tmp_path / "run"
    args = [*common, "--num-envs", "4", "--episodes-per-update", "8", "--episodes", "16", "--eval-every", "2"]
    args += ["--select-fid", "12", "--action-std", "0:0.5,50%:0.25", "--action-cost", "0.1"]
    args += ["--minibatch-std", "4"]
    res = _run(script, *args, "--eval-episodes", "10", "--run-dir", str(run), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "base schedule" in res.stdout and "learned policy" in res.stdout
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["rollouts"] == 2 and state["num_timesteps"] == 32
    assert state["config"]["std_schedule"] == [[0, 0.5], [1, 0.25]] and state["config"]["action_cost"] == 0.1
    assert state["config"]["env"]["reward_options"]["minibatch_std"] == 4
    assert state["config"]["env"]["precision"] == "float32"
    tags = _events(run / "tb")
    expected = (
        "rollout/ep_rew_mean train/loss train/exploration_std reward/mean reward/std disc/loss disc/accuracy "
        "disc/real_score disc/fake_score schedule/mask_ratio/step0 schedule/guidance/step1_std "
        "eval/reward_policy eval/reward_base eval/samples eval/fid_policy eval/fid_best eval/fid_base"
    )
    for tag in expected.split():
        assert tag in tags, tag
    # model selection by FID: the lowest FID so far is exported with its record
    best = json.loads((run / "best.json").read_text())
    assert best["images"] == 12 and best["feature_space"] == "adanat-shapes" and best["updates"] == 2
    assert math.isclose(best["fid"], min(v for _, v in tags["eval/fid_policy"]), rel_tol=1e-5)
    assert best["fid"] > 0 and best["base_fid"] > 0
    assert load_policy(run / "best")[1].steps == 2
    assert "best policy" in res.stdout
    # off a terminal: one plain progress line per PPO update and one per evaluation
    assert "PPO episodes 8/16 elapsed" in res.stdout and "update 1/2 reward" in res.stdout
    assert "PPO episodes 16/16" in res.stdout and "update 2/2" in res.stdout and "disc_acc" in res.stdout
    assert re.search(r"eval at update 2: reward [0-9.]+ \(base [0-9.]+\), FID [0-9.]+", res.stdout)
    # the same command again would overwrite the run: refused
    again = _run(script, *args, "--run-dir", str(run), cwd=tmp_path)
    assert (
        again.returncode == 2 and "--resume" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    )
    # resume: counters and TensorBoard curves continue; the compute precision may change
    res = _run(script, "--resume", str(run), "--episodes", "32", "--precision", "bfloat16", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["rollouts"] == 4 and state["num_timesteps"] == 64
    assert state["config"]["env"]["precision"] == "bfloat16"
    steps = sorted({s for s, _ in _events(run / "tb")["reward/mean"]})
    assert steps[-1] == 64 and steps[0] <= 32 and len(steps) == 4
    fids = _events(run / "tb")["eval/fid_policy"]
    assert len(fids) == 2
    assert math.isclose(
        json.loads((run / "best.json").read_text())["fid"], min(v for _, v in fids), rel_tol=1e-5
    )

    # export -> sample: same images for the same seed, no pickle, refuses other models
    _, meta = load_policy(run / "policy")
    assert meta.steps == 2 and meta.preset == "tiny" and meta.mapping.base.steps == 2
    sample = ["-m", "adanat.cli", "sample", *common[:6], "--policy", str(run / "policy"), "--n", "6"]
    outs = []
    for name in ("a", "b"):
        res = _run(*sample, "--out", str(tmp_path / name), "--device", "cpu", cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        outs.append((tmp_path / name / "grid.png").read_bytes())
    assert outs[0] == outs[1]
    res = _run(*sample, "--out", str(tmp_path / "c"), "--stochastic", "--device", "cpu", cwd=tmp_path)
    assert res.returncode == 0 and json.loads((tmp_path / "c" / "samples.json").read_text())["stochastic"]
    other = tmp_path / "other.safetensors"
    save_file(random_enat(model_preset("tiny").generator, seed=3).state_dict(), str(other))
    bad = [
        "-m",
        "adanat.cli",
        "sample",
        "--preset",
        "tiny",
        "--generator",
        str(other),
        "--tokenizer",
        str(tok),
    ]
    res = _run(
        *bad, "--policy", str(run / "policy"), "--out", str(tmp_path / "d"), "--device", "cpu", cwd=tmp_path
    )
    assert res.returncode == 2 and "another generator" in res.stderr and "Traceback" not in res.stderr
    res = _run(*sample, "--steps", "4", "--out", str(tmp_path / "e"), "--device", "cpu", cwd=tmp_path)
    assert res.returncode == 2 and "--steps 2" in res.stderr


def test_imagenet_world_without_weights_is_one_clear_line(tmp_path):
    res = _run(
        str(ROOT / "scripts" / "train_policy.py"),
        "--env",
        "in256",
        "--run-dir",
        str(tmp_path / "r"),
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert (
        res.stderr.strip().count("\n") == 0 and "--generator" in res.stderr and "Traceback" not in res.stderr
    )
    assert not (tmp_path / "r").exists()


def test_log_std_value_is_applied():
    """The std the policy actually samples with follows the schedule, rollout by rollout."""
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList
    from stable_baselines3.common.utils import obs_as_tensor
    from test_sb3_internals import PER_ROLLOUT, toy_ppo

    from adanat.agents.callbacks import ExplorationStd

    seen = []

    class Sampled(BaseCallback):  # the distribution the rollout's actions are drawn from
        def _on_rollout_start(self) -> None:
            obs = obs_as_tensor(sb3.next_observation(self.model), self.model.device)
            seen.append(self.model.policy.get_distribution(obs).distribution.stddev)

        def _on_step(self) -> bool:
            return True

    model = toy_ppo(std_schedule=((0, 0.6), (2, 0.3)))
    model.learn(3 * PER_ROLLOUT, callback=CallbackList([ExplorationStd(((0, 0.6), (2, 0.3))), Sampled()]))
    stds = [float(s.unique()) for s in seen]
    assert [round(v, 6) for v in stds] == [0.6, 0.6, 0.3]
    assert torch.equal(sb3.exploration_log_std(model).detach(), torch.full((4,), math.log(0.3)))


def test_bad_fid_selection_is_one_clear_line(tiny_weights, tmp_path):
    gen, tok = tiny_weights
    args = ["--preset", "tiny", "--generator", str(gen), "--tokenizer", str(tok), "--select-fid", "1"]
    res = _run(
        str(ROOT / "scripts" / "train_policy.py"), *args, "--run-dir", str(tmp_path / "r"), cwd=tmp_path
    )
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "select-fid must be 0 (off) or >= 2" in res.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--action-std", "0:0.6,500", "such as 0:0.6,500:0.3 or 0:0.6,50%:0.3, got '0:0.6,500'"),
        ("--action-std", "10:0.6", "action std schedule must start at update 0"),
        ("--action-std", "0:0.6,0:0.3", "action std schedule must start at update 0, rise in updates"),
        ("--action-std", "0:0", "have stds > 0"),
        ("--action-cost", "-0.5", "action-cost must be >= 0, got -0.5"),
        ("--minibatch-std", "1", "minibatch-std must be 0 (off) or >= 2 images, got 1"),
    ],
)
def test_bad_exploration_settings_are_one_clear_line(tiny_weights, tmp_path, flag, value, message):
    gen, tok = tiny_weights
    args = ["--preset", "tiny", "--generator", str(gen), "--tokenizer", str(tok), flag, value]
    res = _run(
        str(ROOT / "scripts" / "train_policy.py"), *args, "--run-dir", str(tmp_path / "r"), cwd=tmp_path
    )
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert message in res.stderr
    assert not (tmp_path / "r").exists()


# -- non-finite guards on the path actually taken -------------------------------------------


def test_non_finite_gradient_stops_before_the_step():
    from test_sb3_internals import toy_ppo

    model = toy_ppo()
    opt = sb3.optimizer(model)
    before = [p.detach().clone() for p in model.policy.parameters()]
    for p in model.policy.parameters():
        p.grad = torch.zeros_like(p)
    next(iter(model.policy.parameters())).grad.fill_(float("nan"))  # what a NaN loss gives
    with pytest.raises(NonFiniteError, match="non-finite PPO loss"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))


def test_infinite_learning_rate_stops_after_the_first_step_with_one_line():
    """Without the guard, the next minibatch's forward fails in torch's distribution check."""
    from test_sb3_internals import PER_ROLLOUT, toy_ppo

    model = toy_ppo()
    model.lr_schedule = lambda _progress: float("inf")
    with pytest.raises(
        NonFiniteError, match=r"non-finite policy parameter .* after a PPO step \(learning rate inf\)"
    ):
        model.learn(PER_ROLLOUT)


def test_non_finite_reward_after_the_action_cost_stops_at_that_step():
    from test_sb3_internals import PER_ROLLOUT, toy_ppo, toy_venv

    from adanat.agents.callbacks import FiniteGuard
    from adanat.envs.action_cost import ActionCost

    venv = ActionCost(toy_venv(reward=1.0), 0.1)
    venv.cost = float("inf")  # past the constructor's check: the reward itself stays finite
    model = toy_ppo(venv)
    with pytest.raises(NonFiniteError, match=r"non-finite reward \(after the action cost\) in 2 of 2 rows"):
        model.learn(PER_ROLLOUT, callback=FiniteGuard())
    with pytest.raises(ValueError, match="action cost must be a finite number, got inf"):
        ActionCost(toy_venv(), float("inf"))


@pytest.mark.parametrize("inject", ["learning_rate", "action_cost"])
def test_non_finite_update_or_reward_keeps_the_last_good_checkpoint(tiny_weights, tmp_path, inject):
    cfg = tiny_training(tiny_weights, episodes=4, action_cost=0.1)
    run = tmp_path / "run"
    PolicyTrainer(cfg, run).train()
    saved = {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()}
    exported = (run / "policy" / "policy.safetensors").read_bytes()
    trainer = PolicyTrainer(replace(cfg, episodes=12), run)
    trainer.restore()
    if inject == "learning_rate":
        trainer.model.lr_schedule = lambda _progress: float("inf")
        expected = "non-finite policy parameter"
    else:
        trainer.monitor.venv.cost = float("inf")  # VecMonitor(ActionCost(NATVecEnv))
        expected = "non-finite reward"
    with pytest.raises(
        NonFiniteError, match=f"{expected}.*; the last good checkpoint is in {re.escape(str(run))}"
    ):
        trainer.train()
    assert {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()} == saved
    assert (run / "policy" / "policy.safetensors").read_bytes() == exported
    assert not (run / "checkpoint.tmp").exists()


# -- checkpoints ------------------------------------------------------------------------------


def test_resume_falls_back_to_the_old_checkpoint_when_the_new_one_is_damaged(tiny_weights, tmp_path):
    import shutil

    from adanat.agents.checkpoint import CheckpointError, find_checkpoint

    cfg = tiny_training(tiny_weights, episodes=4)
    run = tmp_path / "run"
    PolicyTrainer(cfg, run).train()
    shutil.copytree(run / "checkpoint", run / "checkpoint.old")  # as a crash mid-swap leaves it
    policy = run / "checkpoint" / "policy.safetensors"
    policy.write_bytes(policy.read_bytes()[:100])
    assert find_checkpoint(run).folder == run / "checkpoint.old"
    trainer = PolicyTrainer(replace(cfg, episodes=8), run)
    assert trainer.restore()["rollouts"] == 1
    trainer.train()  # the next save replaces the damaged checkpoint and removes the old one
    assert find_checkpoint(run).folder == run / "checkpoint" and not (run / "checkpoint.old").exists()
    assert json.loads((run / "checkpoint" / "state.json").read_text())["rollouts"] == 2
    # both damaged: one line naming checkpoint/'s file
    shutil.copytree(run / "checkpoint", run / "checkpoint.old")
    for folder in ("checkpoint", "checkpoint.old"):
        (run / folder / "optimizer.pt").write_bytes(b"garbage")
    with pytest.raises(
        CheckpointError, match=re.escape(f"{run / 'checkpoint' / 'optimizer.pt'} is unreadable")
    ):
        find_checkpoint(run)


def test_checkpoint_swap_keeps_one_complete_checkpoint(tmp_path):
    from adanat.agents.checkpoint import write_checkpoint

    write_checkpoint(tmp_path, {"a.txt": lambda p: p.write_text("1")})
    assert (tmp_path / "checkpoint" / "a.txt").read_text() == "1"

    def fail(_path: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path, {"a.txt": lambda p: p.write_text("2"), "b.txt": fail})
    assert (tmp_path / "checkpoint" / "a.txt").read_text() == "1"  # the complete one stands
    write_checkpoint(tmp_path, {"a.txt": lambda p: p.write_text("3")})
    assert (tmp_path / "checkpoint" / "a.txt").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no .tmp or .old left


def test_train_is_an_adanat_command():
    from adanat.cli import build_parser
    from adanat.cli import train as train_command

    args = build_parser().parse_args(["train", "--world", "in512", "--episodes", "5"])
    assert args.run is train_command.run and args.world == "in512" and args.episodes == 5
