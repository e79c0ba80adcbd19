"""Fine-tuning from AdaNAT's policy (``adanat train --init-policy DIR``): the SB3 policy starts as
the imported actor and critic, the environment acts with AdaNAT's mapping, and the run exports a
policy in AdaNAT's folder format that ``adanat sample --policy`` runs. Tiny random models (the
``uvit-tiny`` preset) and a random checkpoint in the release's form, sized for them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import adanat_policy_checkpoint
from safetensors.torch import load_file, save_file

from adanat.agents.adanat_policy import (
    RELEASE_FORMAT,
    load_release_policy,
    read_release_meta,
    saved_release_critic,
)
from adanat.agents.config import PolicyTraining
from adanat.envs.actions import RELEASE_ACTION_BOUND, ReleaseActionMapping, release_controls
from adanat.envs.spec import EnvConfig, action_mapping
from adanat.schedules import cosine_schedule

STEPS = 2


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """``uvit-tiny`` weights (64 features on an 8x8 grid) and two imported AdaNAT policies for
    them: ``plain`` (actor and critic) and ``heu`` (``--heuristic``, actor only), both T=2."""
    from adanat.cli import main
    from adanat.models.uvit import UViTNAT
    from adanat.models.vqgan import MaskGITVQGAN
    from adanat.presets import model_preset

    d = tmp_path_factory.mktemp("finetune")
    preset = model_preset("uvit-tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_file(UViTNAT(preset.generator).state_dict(), str(d / "gen.safetensors"))
        save_file(MaskGITVQGAN(preset.tokenizer).state_dict(), str(d / "tok.safetensors"))
        torch.manual_seed(1)
        save_file(UViTNAT(preset.generator).state_dict(), str(d / "other_gen.safetensors"))
    adanat_policy_checkpoint(d / "ckpt.pth", in_channels=64, hidden=32, grid=8, seed=0)
    adanat_policy_checkpoint(d / "actor_only.pth", in_channels=64, hidden=32, grid=8, seed=1, critic=False)
    imports = [("ckpt.pth", "plain", []), ("actor_only.pth", "heu", ["--heuristic"])]
    for ckpt, name, extra in imports:
        args = ["import-policy", str(d / ckpt), "--out", str(d / name), "--steps", str(STEPS), "--grid", "8"]
        assert main([*args, *extra]) == 0
    return d


def _model_args(d: Path) -> list[str]:
    return [
        "--preset",
        "uvit-tiny",
        "--generator",
        str(d / "gen.safetensors"),
        "--tokenizer",
        str(d / "tok.safetensors"),
    ]


def test_import_policy_writes_the_critic_beside_the_actor(files):
    ckpt = torch.load(files / "ckpt.pth", weights_only=True)["model"]
    meta = json.loads((files / "plain" / "policy.json").read_text())
    assert meta["format"] == RELEASE_FORMAT and meta["critic"] is True and meta["hidden"] == 32
    critic = load_file(str(files / "plain" / "critic.safetensors"))
    assert critic.keys() == {
        k[len("policy_old.critic.") :] for k in ckpt if k.startswith("policy_old.critic.")
    }
    assert torch.equal(critic["linear3.weight"], ckpt["policy_old.critic.linear3.weight"])  # (1, 512)
    assert critic["linear3.weight"].shape == (1, 512)
    heu = json.loads((files / "heu" / "policy.json").read_text())
    assert (
        heu["critic"] is False
        and heu["heuristic"] is True
        and not (files / "heu" / "critic.safetensors").exists()
    )


def test_release_action_mapping_is_adanats():
    """Raw actions through sigmoid / softplus (release order), clipped to the +-10 box, with the
    hand-made residual for ``adanat-heuristic``; chosen by ``EnvConfig.actions``."""
    base = cosine_schedule(4)
    mapping = ReleaseActionMapping(base, heuristic=False)
    space = mapping.action_space()
    assert space.shape == (4,) and float(space.low[0]) == -10.0 and float(space.high[3]) == 10.0
    raw = torch.tensor([[0.5, -1.0, 2.0, 0.3], [12.0, -30.0, 0.0, 11.0]])  # (2, 4)
    got = mapping.controls(raw, 1)
    want = release_controls(raw.clamp(-RELEASE_ACTION_BOUND, RELEASE_ACTION_BOUND), 1, 4, False)
    assert torch.equal(got.stack(), want.stack()) and got.rule == "adanat"
    assert got.mask_ratio[1].item() == pytest.approx(1 / (1 + math.exp(-10)), abs=1e-7)  # clipped at 10
    assert got.guidance[1].item() == pytest.approx(math.log1p(math.exp(10)), abs=1e-5)
    assert mapping.steps == 4 and mapping.to_dict()["kind"] == "adanat-release"
    env = EnvConfig(steps=4, actions="adanat-heuristic")
    heu = action_mapping(env)
    assert isinstance(heu, ReleaseActionMapping) and heu.heuristic and heu.steps == 4
    zero = heu.controls(torch.zeros(1, 4), 0).stack()[0].tolist()  # the hand-made schedule
    assert zero == pytest.approx(
        [math.cos(math.pi / 2 * (1 - 1e-3) / 4), 1.0, 1 - (1 - 1e-3) / 4, 1e-3 / 4], abs=1e-5
    )
    with pytest.raises(ValueError, match="unknown actions 'raw'"):
        EnvConfig(actions="raw")


def test_settings_that_do_not_fit_adanats_actions_are_refused():
    with pytest.raises(ValueError, match="are an AdaNAT policy's: give init-policy"):
        PolicyTraining(env=EnvConfig(steps=STEPS, actions="adanat"))
    with pytest.raises(ValueError, match="on the full observation"):
        PolicyTraining(env=EnvConfig(steps=STEPS, actions="adanat"), init_policy="p")
    with pytest.raises(ValueError, match="AdaNAT's actions have none"):
        env = EnvConfig(steps=STEPS, actions="adanat", observation="full")
        PolicyTraining(env=env, init_policy="p", action_cost=0.05)


def _training(files: Path, name: str, heuristic: bool) -> PolicyTraining:
    env = EnvConfig(
        world="shapes",
        preset="uvit-tiny",
        generator=files / "gen.safetensors",
        tokenizer=files / "tok.safetensors",
        steps=STEPS,
        observation="full",
        actions="adanat-heuristic" if heuristic else "adanat",
    )
    return PolicyTraining(
        env=env, episodes=4, num_envs=4, episodes_per_update=4, eval_episodes=4, init_policy=str(files / name)
    )


@pytest.mark.parametrize(("name", "heuristic"), [("plain", False), ("heu", True)])
def test_the_untrained_ppo_policy_is_the_imported_one(files, name, heuristic):
    """Before any update, at both steps: SB3's mean action is the imported actor's raw output
    (<= 1e-6) and its value the imported critic's (when the folder has one); std 0.6; the env's
    box is +-10 and its controls are AdaNAT's mapping of the actions."""
    from stable_baselines3.common.utils import obs_as_tensor

    from adanat.agents import sb3
    from adanat.agents.finetune import ReleaseExtractor, release_actor_of
    from adanat.agents.ppo import make_ppo
    from adanat.envs.spec import build_core
    from adanat.envs.vec_env import NATVecEnv

    cfg = _training(files, name, heuristic)
    core = build_core(cfg.env, cfg.num_envs)
    venv = NATVecEnv(core, seed=0)
    model = make_ppo(venv, cfg, "cpu")
    assert isinstance(sb3.actor_extractor(model), ReleaseExtractor)
    assert float(venv.action_space.high[0]) == RELEASE_ACTION_BOUND
    actor, _ = load_release_policy(files / name)
    critic = saved_release_critic(files / name, read_release_meta(files / name))
    assert (critic is not None) == (name == "plain")
    obs = venv.reset()
    for step in range(STEPS):
        assert obs["step"].tolist() == [step] * 4 and obs["features"].shape == (4, 64, 64)
        obs_t = obs_as_tensor(obs, model.device)
        feats, steps = torch.from_numpy(obs["features"]), torch.from_numpy(obs["step"])  # (4, 64, 64), (4,)
        with torch.no_grad():
            dist = model.policy.get_distribution(obs_t).distribution
            raw = actor(feats, steps)  # (4, 4)
            assert raw.abs().max() > 0.1  # a real policy, not a zero head
            assert (dist.mean - raw).abs().max() <= 1e-6
            torch.testing.assert_close(dist.stddev, torch.full((4, 4), 0.6))
            if critic is not None:
                assert (model.policy.predict_values(obs_t) - critic(feats, steps)).abs().max() <= 1e-6
        controls = core.mapping.controls(raw, step)
        assert torch.equal(controls.stack(), release_controls(raw, step, STEPS, heuristic).stack())
        obs, _, _, _ = venv.step(raw.numpy())
    exported = release_actor_of(model)  # what the trainer exports: the same network, same weights
    assert all(torch.equal(v, actor.state_dict()[k]) for k, v in exported.state_dict().items())


def test_train_from_the_imported_policy_exports_it_in_adanats_format(files, tmp_path, capsys):
    """``adanat train --init-policy`` for two PPO updates with FID selection: ``policy/`` (with
    the critic) and ``best/`` are AdaNAT-format folders holding the trained actor, and ``adanat
    sample --policy RUN_DIR/policy`` runs it (its controls are that actor's), refusing another
    generator."""
    from adanat.agents.adanat_policy import ReleasePolicyController
    from adanat.cli import main
    from adanat.rng import row_rngs
    from adanat.weights import load_models

    run = tmp_path / "run"
    args = [
        "train",
        *_model_args(files),
        "--steps",
        str(STEPS),
        "--num-envs",
        "4",
        "--episodes-per-update",
        "4",
    ]
    args += ["--episodes", "8", "--eval-episodes", "4", "--eval-every", "1", "--select-fid", "4"]
    args += ["--init-policy", str(files / "heu"), "--run-dir", str(run), "--device", "cpu"]
    assert main(args) == 0, capsys.readouterr().err
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["rollouts"] == 2 and state["config"]["init_policy"] == str((files / "heu").resolve())
    assert (
        state["config"]["env"]["actions"] == "adanat-heuristic"
        and state["config"]["env"]["observation"] == "full"
    )
    assert state["config"]["action_cost"] == 0.0  # shapes' default 0.05 does not apply
    meta = json.loads((run / "policy" / "policy.json").read_text())
    assert meta["format"] == RELEASE_FORMAT and meta["heuristic"] is True and meta["critic"] is True
    assert meta["preset"] == "uvit-tiny" and meta["steps"] == STEPS and meta["exploration_std"] == 0.3
    best = json.loads((run / "best" / "policy.json").read_text())
    assert best["format"] == RELEASE_FORMAT and best["critic"] is False
    assert json.loads((run / "best.json").read_text())["images"] == 4
    # the export is the checkpoint's SB3 actor and critic, and training moved them
    actor, _ = load_release_policy(run / "policy")
    critic = saved_release_critic(run / "policy", read_release_meta(run / "policy"))
    sb3_state = load_file(str(run / "checkpoint" / "policy.safetensors"))
    for k, v in actor.state_dict().items():  # safetensors keeps SB3's actor extractor under this alias
        head = k.startswith("linear3.")
        key = "action_net." + k[len("linear3.") :] if head else "features_extractor.trunk." + k
        assert torch.equal(v, sb3_state[key]), k
    assert critic is not None
    for k, v in critic.state_dict().items():
        head = k.startswith("linear3.")
        key = "value_net." + k[len("linear3.") :] if head else "vf_features_extractor.trunk." + k
        assert torch.equal(v, sb3_state[key]), k
    start, _ = load_release_policy(files / "heu")
    assert not torch.equal(actor.linear3.weight, start.linear3.weight)
    capsys.readouterr()
    # adanat sample runs it, through the imported-policy controller
    out = tmp_path / "samples"
    sample = ["sample", *_model_args(files), "--policy", str(run / "policy"), "--n", "3", "--device", "cpu"]
    assert main([*sample, "--out", str(out)]) == 0, capsys.readouterr().err
    written = json.loads((out / "samples.json").read_text())
    assert written["policy_meta"]["format"] == RELEASE_FORMAT and written["steps"] == STEPS
    sampler = load_models("uvit-tiny", files / "gen.safetensors", files / "tok.safetensors").sampler()
    labels = torch.tensor(written["labels"])
    want = sampler.generate(labels, ReleasePolicyController(actor, STEPS, True), STEPS, row_rngs(0, 3)).trace
    got = torch.tensor(
        [written["controls"][k] for k in ("mask_ratio", "sampling_temp", "remask_temp", "guidance")]
    )
    assert (got.permute(1, 2, 0) - want).abs().max() <= 1e-6  # (3, T, 4)
    # made for these weights: another generator is refused with one line
    other = [*sample, "--out", str(tmp_path / "o2")]
    other[other.index(str(files / "gen.safetensors"))] = str(files / "other_gen.safetensors")
    capsys.readouterr()
    assert main(other) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained with another generator" in err
    # a resumed run rebuilds the same network and continues
    assert main(["train", "--resume", str(run), "--episodes", "12", "--device", "cpu"]) == 0
    assert json.loads((run / "checkpoint" / "state.json").read_text())["rollouts"] == 3
    resumed, _ = load_release_policy(run / "policy")
    assert not torch.equal(resumed.linear3.weight, actor.linear3.weight)
    # the run's policy/ can start another fine-tuning run (it holds the critic)
    again = [a if a != str(files / "heu") else str(run / "policy") for a in args]
    again[again.index(str(run))] = str(tmp_path / "run2")
    again[again.index("--episodes") + 1] = "4"
    assert main(again) == 0, capsys.readouterr().err
