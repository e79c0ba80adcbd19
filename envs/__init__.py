"""Generation as reinforcement learning (``adanat.envs``): the batched core, a Gymnasium env
registered as ``adanat/NAT-<world>-v0``, and a stable-baselines3 VecEnv over batch rows."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from adanat.envs.action_cost import ActionCost
from adanat.envs.actions import ActionMap, ActionMapping, ReleaseActionMapping
from adanat.envs.core import Finished, NATCore
from adanat.envs.nat_env import NATEnv
from adanat.envs.observation import ObservationForm
from adanat.envs.sharded import ShardedVecEnv
from adanat.envs.spec import EnvConfig, build_core
from adanat.envs.vec_env import NATVecEnv, make_vec_env, wrap_vec_env
from adanat.presets import world_names

__all__ = [
    "ActionCost",
    "ActionMap",
    "ActionMapping",
    "EnvConfig",
    "Finished",
    "NATCore",
    "NATEnv",
    "NATVecEnv",
    "ObservationForm",
    "ReleaseActionMapping",
    "ShardedVecEnv",
    "build_core",
    "make_env",
    "make_vec_env",
    "wrap_vec_env",
]


def make_env(
    world: str = "shapes", device: str = "cpu", render_mode: str | None = None, **config: Any
) -> NATEnv:
    """A single-sample :class:`NATEnv` for ``world`` (keyword arguments: :class:`EnvConfig`)."""
    return NATEnv(build_core(EnvConfig(world=world, **config), 1, device), render_mode=render_mode)


for _world in world_names():
    _id = f"adanat/NAT-{_world}-v0"
    if _id not in gym.registry:
        gym.register(id=_id, entry_point="adanat.envs:make_env", kwargs={"world": _world})
