"""The generation environment: action mapping, observations, gymnasium/SB3 checks, batched == single."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from helpers import tiny_core
from stable_baselines3 import A2C
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from adanat.envs import ActionCost, NATEnv, NATVecEnv, make_vec_env
from adanat.envs.actions import ActionMapping
from adanat.envs.observation import ObservationForm
from adanat.envs.spec import EnvConfig
from adanat.rng import row_rngs
from adanat.sampling import ScheduleController
from adanat.schedules import load_schedule


def test_zero_action_is_the_base_schedule_bit_for_bit():
    base = load_schedule("autonat-l-t8", steps=8)
    mapping = ActionMapping(base, scale=2.0)
    table = base.tensor()  # (T, 4)
    for k in range(8):
        got = mapping.controls(torch.zeros(3, 4), k).stack()  # (3, 4)
        assert torch.equal(got, table[k].expand(3, -1))


def test_actions_move_each_control_through_its_activation():
    base = load_schedule("autonat-l-t8", steps=8)
    mapping = ActionMapping(base, scale=2.0)
    a = torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0], [5.0, -5.0, 0.0, 0.0]])
    c = mapping.controls(a, 2).stack()  # (3, 4)
    b = base.tensor()[2].double()
    ratio = torch.sigmoid(torch.logit(b[0]) + 2.0)
    assert c[0, 0].item() == pytest.approx(ratio.item(), abs=1e-6)
    soft = torch.nn.functional.softplus(b[1] + torch.log(-torch.expm1(-b[1])) - 2.0)
    assert c[1, 1].item() == pytest.approx(soft.item(), abs=1e-6)  # b[1] > 0.5: plain softplus residual
    # guidance 1e-4 at step 2: moved from the 0.5 pivot, so an action still acts
    assert b[3] < 1e-3 and c[0, 3] > 1.0 and c[1, 3] == 0.0
    assert (c[0] > c[1]).all()  # monotone in the action
    assert torch.equal(c[2], mapping.controls(torch.tensor([[1.0, -1.0, 0.0, 0.0]]), 2).stack()[0])  # clipped
    assert c[:, 0].min() >= 0 and c[:, 0].max() < 1 and (c[:, 1:] >= 0).all()


def test_observation_forms():
    feat = torch.randn(2, 64, 24)  # (B, L, D) on an 8x8 grid
    compact, full = ObservationForm("compact", 8, 24, 4), ObservationForm("full", 8, 24, 4)
    c, f = compact.numpy(feat, 3), full.numpy(feat, 3)
    assert c["features"].shape == (2, 16, 24) and c["features"].dtype == np.float16
    assert f["features"].shape == (2, 64, 24) and f["features"].dtype == np.float32
    assert (c["step"] == 3).all()
    grid = feat.reshape(2, 8, 8, 24)
    top_left = grid[:, :2, :2].mean(dim=(1, 2))  # (2, 24) first pooled token
    np.testing.assert_allclose(c["features"][:, 0].astype(np.float32), top_left.numpy(), atol=2e-3)
    assert compact.bytes_per_observation * 7 < full.bytes_per_observation
    for form, obs in ((compact, c), (full, f)):
        assert form.space().contains({"features": obs["features"][0], "step": 3})


@pytest.mark.filterwarnings("ignore:Your observation features has an unconventional shape")
@pytest.mark.parametrize("observation", ["compact", "full"])
def test_single_env_passes_both_checkers(observation):
    env = NATEnv(tiny_core(1, observation=observation))
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(NATEnv(tiny_core(1, observation=observation)), warn=True)


def test_episode_shape_and_rewards():
    env = NATEnv(tiny_core(1, steps=4))
    obs, info = env.reset(seed=3, options={"label": 7})
    assert info["label"] == 7 and obs["step"] == 0 and obs["features"].shape == (16, 64)
    rewards, done, steps = [], False, 0
    while not done:
        obs, r, done, trunc, info = env.step(np.zeros(4, np.float32))
        rewards.append(r)
        steps += 1
        assert not trunc
    assert steps == 4 and rewards[:3] == [0.0, 0.0, 0.0] and 0.0 < rewards[3] < 1.0
    assert info["label"] == 7 and info["controls"].shape == (4, 4) and info["controls"][-1, 0] == 0.0
    assert env.render().shape == (32, 32, 3)


def test_batched_rows_equal_single_envs_with_the_same_seeds_and_actions():
    n, steps, seed = 3, 4, 11
    vec = NATVecEnv(tiny_core(n, steps=steps), seed=seed)
    vec.seed(seed)
    obs = vec.reset()
    singles = [NATEnv(tiny_core(1, steps=steps)) for _ in range(n)]
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    rng = np.random.default_rng(0)
    for t in range(2 * steps + 1):  # two full episodes and the start of a third
        for i in range(n):
            np.testing.assert_allclose(obs["features"][i], single_obs[i]["features"], atol=2e-3, rtol=1e-2)
            assert obs["step"][i] == single_obs[i]["step"] == t % steps
        actions = rng.uniform(-1, 1, (n, 4)).astype(np.float32)
        vec.step_async(actions)
        obs, rewards, dones, infos = vec.step_wait()
        for i, env in enumerate(singles):
            o, r, done, _, info = env.step(actions[i])
            assert info["label"] == infos[i]["label"]
            assert done == dones[i]
            assert r == pytest.approx(float(rewards[i]), abs=1e-5)
            if done:
                term = infos[i]["terminal_observation"]
                np.testing.assert_allclose(term["features"], o["features"], atol=2e-3, rtol=1e-2)
                o, _ = env.reset()
            single_obs[i] = o
    assert len(vec.drain_finished()) == 2


def test_zero_actions_reproduce_generation_with_the_base_schedule():
    n, steps, seed = 4, 4, 5
    vec = NATVecEnv(tiny_core(n, steps=steps), seed=seed)
    vec.seed(seed)
    vec.reset()
    for _ in range(steps):
        vec.step_async(np.zeros((n, 4), np.float32))
        vec.step_wait()
    (finished,) = vec.drain_finished()
    core = vec.core
    gens = [row_rngs(seed + i, 1)[0] for i in range(n)]
    labels = torch.cat([torch.randint(0, 10, (1,), generator=g) for g in gens])  # as the env draws them
    assert torch.equal(labels, finished.labels)
    ref = core.sampler.generate(labels, ScheduleController(core.mapping.base), steps, gens)
    assert torch.equal(finished.controls, ref.trace)
    assert torch.equal(finished.images, ref.images)  # one episode code path: bit for bit


def test_vec_env_with_vec_monitor_reports_episodes_and_fixed_labels():
    venv = make_vec_env(tiny_core(2, steps=2, labels=torch.tensor([3, 4])), seed=0)
    venv.reset()
    for _ in range(2):
        _, rewards, dones, infos = venv.step(np.zeros((2, 4), np.float32))
    assert dones.all() and [i["label"] for i in infos] == [3, 4]
    assert all("episode" in i and i["episode"]["l"] == 2 for i in infos)
    assert infos[0]["episode"]["r"] == pytest.approx(float(rewards[0]))


def test_a2c_drives_the_vec_env():
    venv = make_vec_env(tiny_core(2, steps=2), seed=0)
    model = A2C("MultiInputPolicy", venv, n_steps=2, seed=0, device="cpu")
    model.learn(8)
    assert model.num_timesteps == 8


def test_registered_ids():
    import adanat.envs  # noqa: F401

    for world in ("shapes", "in256", "in512"):
        assert f"adanat/NAT-{world}-v0" in gymnasium.registry


def test_default_base_schedule_is_the_searched_one_where_it_ships():
    from adanat.presets import world_preset

    shapes = world_preset("shapes")
    assert shapes.base_schedule(4).name == "autonat-shapes-t4"  # searched for shapes
    assert shapes.base_schedule(8).name == "autonat-shapes-t8"
    assert world_preset("in256").base_schedule(8).name == "autonat-l-t8"  # ImageNet: the published one
    assert EnvConfig(world="shapes", steps=4).base_schedule().name == "autonat-shapes-t4"
    other = shapes.base_schedule(6)  # nothing searched or published: the world's ENAT
    assert other.name == "enat" and other == load_schedule("enat", 6, variant="shapes")


def test_action_cost_pays_for_the_distance_from_the_base_at_every_step():
    actions = [
        np.array([[0.5, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], np.float32),
        np.array([[2.0, 0.0, 0.0, 0.0], [0.2, 0.2, 0.2, 0.2]], np.float32),  # 2.0 is clipped to 1
    ]
    cost = 0.5
    plain = make_vec_env(tiny_core(2, steps=2), seed=0)
    paid = make_vec_env(tiny_core(2, steps=2), seed=0, action_cost=cost)
    assert isinstance(paid.unwrapped, NATVecEnv) and isinstance(paid.venv, ActionCost)
    plain.reset(), paid.reset()
    totals = np.zeros(2)
    for a in actions:
        _, r0, _, _ = plain.step(a)
        _, r1, dones, infos = paid.step(a)
        expected = r0 - cost * np.square(np.clip(a, -1, 1)).mean(axis=1)  # (2,)
        np.testing.assert_allclose(r1, expected, rtol=1e-6)
        totals += r1
    # the episode's return (VecMonitor's record) is the final reward minus the costs of every step
    assert dones.all()
    np.testing.assert_allclose(totals, r0 - [0.5 * (1.25 / 4 + 1 / 4), 0.5 * 0.04], rtol=1e-5)
    assert infos[0]["episode"]["r"] == pytest.approx(totals[0], rel=1e-5)
    with pytest.raises(ValueError, match="action cost must be >= 0"):
        ActionCost(plain.unwrapped, -1.0)
