"""The stable-baselines3 face of the core: the N sub-environments are the N rows of one batch.

Each ``step`` runs one batched generator forward (conditional + unconditional) for all rows; at the
last step it decodes and scores all images at once and resets every row together (episodes of
all rows have the same length ``T``). Wrap it in ``VecMonitor`` for SB3's episode statistics
(:func:`make_vec_env` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from adanat.envs.action_cost import ActionCost
from adanat.envs.core import Finished, NATCore


class BatchVecEnv(VecEnv):
    """A VecEnv whose sub-environments are the rows of one batch: an attribute or method is the
    batch's, the same for every row."""

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def _get_indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)


class NATVecEnv(BatchVecEnv):
    """N generation episodes on one batch. ``seed(s)`` gives row ``i`` the seed ``s + i``
    (SB3's convention), so row ``i`` equals a :class:`~adanat.envs.nat_env.NATEnv` reset with
    seed ``s + i`` and driven with the same actions. ``row_offset`` numbers the rows from there
    (a process's share of a run's rows under torchrun: its row ``i`` is the run's row
    ``row_offset + i`` and gets the seed ``s + row_offset + i``)."""

    def __init__(self, core: NATCore, seed: int = 0, row_offset: int = 0) -> None:
        self.core, self.row_offset = core, row_offset
        self.render_mode = None
        super().__init__(core.num_rows, core.form.space(), core.mapping.action_space())
        self._base_seed = seed
        self._actions: np.ndarray | None = None
        self.finished: list[Finished] = []  # episodes ended since the last drain_finished()

    def reset(self) -> dict[str, np.ndarray]:
        # a reset without new seeds continues the row streams
        if not self.core.rngs or any(s is not None for s in self._seeds):
            base = self._base_seed + self.row_offset
            self.core.seed([s if s is not None else base + i for i, s in enumerate(self._seeds)])
        obs = self.core.reset()
        self._reset_seeds()
        self._reset_options()
        return obs

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        if seed is not None:
            self._base_seed = seed
        self._seeds = [self._base_seed + self.row_offset + i for i in range(self.num_envs)]
        return self._seeds

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, 4)

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async first"
        labels = self.core.labels.cpu().numpy()
        result = self.core.step(self._actions)
        self._actions = None
        dones = np.full(self.num_envs, result.done)
        infos: list[dict[str, Any]] = [{"label": int(labels[i])} for i in range(self.num_envs)]
        if result.done:
            assert result.terminal_observation is not None and result.finished is not None
            self.finished.append(result.finished)
            for i, info in enumerate(infos):
                info["terminal_observation"] = {k: v[i] for k, v in result.terminal_observation.items()}
                info["TimeLimit.truncated"] = False
        return result.observation, result.rewards, dones, infos

    def drain_finished(self) -> list[Finished]:
        """The episodes that ended since the last call (images, labels, rewards, controls)."""
        out, self.finished = self.finished, []
        return out

    def close(self) -> None:
        self.finished = []


def make_vec_env(core: NATCore, seed: int = 0, action_cost: float = 0.0) -> VecMonitor:
    """A :class:`NATVecEnv` with SB3's episode statistics (``VecMonitor``); with ``action_cost``
    > 0 the rewards first pay for the distance from the base schedule
    (:class:`~adanat.envs.action_cost.ActionCost`). ``.unwrapped`` is the :class:`NATVecEnv`."""
    return wrap_vec_env(NATVecEnv(core, seed), action_cost)


def wrap_vec_env(venv: VecEnv, action_cost: float = 0.0) -> VecMonitor:
    """``venv`` with the action cost (when > 0) and SB3's episode statistics, as
    :func:`make_vec_env` wraps it."""
    if action_cost > 0:
        venv = ActionCost(venv, action_cost)
    return VecMonitor(venv)
