"""The stable-baselines3 internals adanat relies on (all reached through ``adanat.agents.sb3``):
each exists, has the expected type, and setting it has the intended effect, on a tiny PPO built
by ``make_ppo`` on a toy env. An SB3 release that moves or renames one fails here first."""

from __future__ import annotations

import math
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from torch.utils.tensorboard import SummaryWriter

from adanat.agents import sb3
from adanat.agents.config import PolicyTraining
from adanat.agents.extractor import AdaNATExtractor, ExtractorConfig
from adanat.agents.ppo import make_ppo
from adanat.envs.action_cost import ActionCost
from adanat.envs.spec import EnvConfig

AGENTS = Path(__file__).resolve().parents[1] / "agents"
TOKENS, WIDTH, STEPS, ENVS = 4, 3, 2, 2


class ToyEnv(gym.Env):
    """Two-step episodes with AdaNAT-shaped observations (features on a 2x2 grid, the step)."""

    def __init__(self, reward: float = 1.0) -> None:
        self.observation_space = spaces.Dict(
            {"features": spaces.Box(-10, 10, (TOKENS, WIDTH), np.float32), "step": spaces.Discrete(STEPS)}
        )
        self.action_space = spaces.Box(-1, 1, (4,), np.float32)
        self.reward, self.t = reward, 0

    def _obs(self) -> dict:
        feats = self.np_random.standard_normal((TOKENS, WIDTH)).astype(np.float32)
        return {"features": feats, "step": min(self.t, STEPS - 1)}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self.t += 1
        return self._obs(), self.reward, self.t == STEPS, False, {}


def toy_venv(reward: float = 1.0) -> VecEnv:
    venv = DummyVecEnv([lambda: ToyEnv(reward) for _ in range(ENVS)])
    venv.seed(0)
    return venv


def toy_training(**kw) -> PolicyTraining:
    small = ExtractorConfig(hidden=8, conv_channels=4, mlp=16, features_dim=8, step_dim=8)
    base = dict(env=EnvConfig(steps=STEPS), num_envs=ENVS, episodes_per_update=ENVS, minibatch=4, n_epochs=2)
    return PolicyTraining(**{**base, "extractor": small, **kw})


def toy_ppo(venv: VecEnv | None = None, **kw) -> PPO:
    """A tiny PPO as training builds it: one rollout is one episode per env (4 env steps)."""
    return make_ppo(venv or toy_venv(), toy_training(**kw), "cpu")


PER_ROLLOUT = STEPS * ENVS


def _obs(model: PPO) -> dict[str, torch.Tensor]:
    return obs_as_tensor(model.env.reset(), model.device)


def test_pinned_sb3_version():
    major, minor = (int(x) for x in re.findall(r"\d+", stable_baselines3.__version__)[:2])
    assert (2, 3) <= (major, minor) < (3, 0)


def test_only_the_sb3_module_touches_sb3_internals():
    private = re.compile(
        r"\._n_updates|\._last_obs|\._last_episode_starts|\.log_std\b|\.action_net\b|"
        r"pi_features_extractor|vf_features_extractor|\.value_net\b|name_to_value|output_formats|\.locals\["
    )
    for path in sorted(AGENTS.glob("*.py")):
        if path.name == "sb3.py":
            continue
        hits = [line for line in path.read_text().splitlines() if private.search(line)]
        assert not hits, f"{path.name} reaches SB3 internals directly: {hits}"


def test_rollout_and_epoch_counters():
    model = toy_ppo()
    assert sb3.rollouts_done(model) == 0 and sb3.gradient_epochs(model) == 0
    model.learn(PER_ROLLOUT)
    assert sb3.rollouts_done(model) == 1
    assert sb3.gradient_epochs(model) == 2  # n_epochs: SB3 counts PPO epochs in _n_updates
    sb3.set_counters(model, 5 * PER_ROLLOUT, 7)
    assert model.num_timesteps == 5 * PER_ROLLOUT and sb3.rollouts_done(model) == 5
    model.learn(PER_ROLLOUT, reset_num_timesteps=False)  # what a resumed run does
    assert sb3.rollouts_done(model) == 6
    assert sb3.gradient_epochs(model) == 9 and sb3.last_logged(model, "train/n_updates") == 9


def test_next_observation_is_where_the_next_rollout_starts():
    model = toy_ppo()
    model.learn(PER_ROLLOUT)
    sentinel = {"features": np.full((ENVS, TOKENS, WIDTH), 3.0, np.float32), "step": np.zeros(ENVS, np.int64)}
    sb3.set_next_observation(model, sentinel)
    assert sb3.next_observation(model) is sentinel
    model._last_episode_starts[:] = False  # set_next_observation marks every row as a start
    sb3.set_next_observation(model, sentinel)
    model.learn(PER_ROLLOUT, reset_num_timesteps=False)  # no env reset: starts from the sentinel
    buffer = model.rollout_buffer
    assert np.all(buffer.observations["features"][0] == 3.0)
    assert np.all(buffer.episode_starts[0] == 1.0)


def test_exploration_std_is_set_and_frozen():
    model = toy_ppo(std_schedule=((0, 0.6),))
    log_std = sb3.exploration_log_std(model)
    assert isinstance(log_std, torch.nn.Parameter) and log_std.shape == (4,)
    torch.testing.assert_close(log_std.detach().exp(), torch.full((4,), 0.6))  # log_std_init
    sb3.set_exploration_std(model, 0.3)
    dist = model.policy.get_distribution(_obs(model))
    torch.testing.assert_close(dist.distribution.stddev, torch.full((ENVS, 4), 0.3))
    sb3.freeze_exploration_std(model)
    assert not log_std.requires_grad
    model.learn(PER_ROLLOUT)
    assert torch.equal(log_std.detach(), torch.full((4,), math.log(0.3)))  # not learned


def test_action_head_and_actor_extractor_are_the_actors():
    model = toy_ppo()
    head, extractor = sb3.action_head(model), sb3.actor_extractor(model)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 4
    assert isinstance(extractor, AdaNATExtractor)
    obs = _obs(model)
    with torch.no_grad():
        assert torch.equal(model.policy.get_distribution(obs).distribution.mean, torch.zeros(ENVS, 4))
        head.bias.fill_(0.25)  # the head make_ppo zeroed is the one the actor uses
        torch.testing.assert_close(
            model.policy.get_distribution(obs).distribution.mean, torch.full((ENVS, 4), 0.25)
        )
        head.weight.fill_(0.1)
        mean, value = model.policy.get_distribution(obs).distribution.mean, model.policy.predict_values(obs)
        noise = torch.randn(extractor.fc2.weight.shape, generator=torch.Generator().manual_seed(0))
        extractor.fc2.weight.add_(noise)  # the actor's extractor, not the critic's
        assert not torch.allclose(model.policy.get_distribution(obs).distribution.mean, mean)
        assert torch.equal(model.policy.predict_values(obs), value)


def test_value_head_and_critic_extractor_are_the_critics():
    model = toy_ppo()
    head, extractor = sb3.value_head(model), sb3.critic_extractor(model)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 1
    assert isinstance(extractor, AdaNATExtractor) and extractor is not sb3.actor_extractor(model)
    obs = _obs(model)
    with torch.no_grad():
        mean = model.policy.get_distribution(obs).distribution.mean
        head.weight.zero_()
        head.bias.fill_(0.75)
        torch.testing.assert_close(model.policy.predict_values(obs), torch.full((ENVS, 1), 0.75))
        head.weight.fill_(0.1)
        value = model.policy.predict_values(obs)
        noise = torch.randn(extractor.fc2.weight.shape, generator=torch.Generator().manual_seed(0))
        extractor.fc2.weight.add_(noise)  # the critic's extractor, not the actor's
        assert not torch.allclose(model.policy.predict_values(obs), value)
        assert torch.equal(model.policy.get_distribution(obs).distribution.mean, mean)


def test_optimizer_holds_the_trainable_parameters():
    model = toy_ppo()
    opt = sb3.optimizer(model)
    assert isinstance(opt, torch.optim.Optimizer)
    held = {id(p) for group in opt.param_groups for p in group["params"]}
    assert {id(p) for p in model.policy.parameters()} <= held


def test_tensorboard_writer_and_logged_values(tmp_path):
    model = toy_ppo()
    with pytest.raises(ValueError, match="no TensorBoard output"):
        sb3.tensorboard_writer(model)
    model.set_logger(configure(str(tmp_path), ["tensorboard"]))
    writer = sb3.tensorboard_writer(model)
    assert isinstance(writer, SummaryWriter)
    model.learn(PER_ROLLOUT)
    loss = sb3.last_logged(model, "train/loss")
    assert isinstance(loss, float) and math.isfinite(loss)
    assert sb3.last_logged(model, "no/such/key") is None
    writer.add_scalar("probe", 1.0, 0)
    writer.flush()
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_step_rewards_are_after_every_wrapper():
    seen = []

    class Record(BaseCallback):
        def _on_step(self) -> bool:
            seen.append(sb3.step_rewards(self).copy())
            return True

    venv = ActionCost(toy_venv(reward=1.0), 0.5)
    model = toy_ppo(venv)
    model.learn(PER_ROLLOUT, callback=Record())
    rewards = np.stack(seen)  # (n_steps, N)
    assert rewards.shape == (STEPS, ENVS) and np.all(rewards < 1.0)  # the action cost is paid
    np.testing.assert_array_equal(rewards, model.rollout_buffer.rewards)  # what PPO learns from
