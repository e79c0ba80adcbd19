"""A cost on the distance from the base schedule, paid at every step.

The action is a residual on the base schedule (a zero action is the base bit for bit), so the
squared action is a distance from it. :class:`ActionCost` subtracts ``cost * mean(a**2)`` over
the four controls from each step's reward: with ``gamma = 1`` an episode pays ``cost`` times the
sum over its steps. A policy then keeps the base where the reward does not pay for leaving it,
which counters a critic that rewards moving the whole schedule (see
``docs/results_investigation.md``). It wraps any SB3 ``VecEnv`` whose actions are ``(N, 4)``.
"""

from __future__ import annotations

import math

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn


class ActionCost(VecEnvWrapper):
    """Reward minus ``cost * mean(action**2)`` per step (actions clipped to the box first).

    :param venv: the environment (for example :class:`~adanat.envs.vec_env.NATVecEnv`).
    :param cost: cost per unit of mean squared action; a finite number >= 0.
    """

    def __init__(self, venv: VecEnv, cost: float) -> None:
        if not math.isfinite(cost):
            raise ValueError(f"action cost must be a finite number, got {cost}")
        if cost < 0:
            raise ValueError(f"action cost must be >= 0, got {cost}")
        super().__init__(venv)
        self.cost = float(cost)
        self._penalty = np.zeros(venv.num_envs, dtype=np.float32)  # (N,)

    def reset(self) -> VecEnvObs:
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        a = np.clip(np.asarray(actions, dtype=np.float32), -1.0, 1.0)  # (N, 4)
        self._penalty = self.cost * np.square(a).mean(axis=1)  # (N,)
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        return obs, (rewards - self._penalty).astype(np.float32), dones, infos  # (N,)
