"""The rows of one run spread over ``torchrun`` processes, seen by the learner as one VecEnv.

Each process holds ``n`` rows in its own :class:`~adanat.envs.vec_env.NATVecEnv` (its own
generator replica, on its own device); process ``r`` holds the run's rows ``r n .. (r + 1) n - 1``
with the seeds those rows have in one process, so the rows, and every image, are those of a
single-process run with the same seed and the same total rows. The learner (SB3's PPO, on the
leader) sees :class:`ShardedVecEnv` with all ``K n`` rows: its ``step`` sends the actions to every
process, each steps its rows, and observations, rewards and labels come back in row order.
Images stay on the process that made them (a discriminator trains on them there, data-parallel:
:meth:`adanat.rewards.adversarial.AdversarialReward.update`); the leader keeps each finished
episode's label, reward and controls for its logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from adanat.envs.core import Finished
from adanat.envs.vec_env import BatchVecEnv, NATVecEnv
from adanat.team import Team

__all__ = ["ShardedVecEnv"]


class ShardedVecEnv(BatchVecEnv):
    """The leader's view of every process's rows (``num_envs`` = all rows of the run).

    Every process builds one (it registers the team's ``env.*`` operations); only the leader
    drives it as a VecEnv.

    :param local: this process's rows.
    :param team: the run's processes.
    """

    def __init__(self, local: NATVecEnv, team: Team) -> None:
        self.local, self.team = local, team
        self.rows = local.num_envs
        self.render_mode = None
        super().__init__(self.rows * team.size, local.observation_space, local.action_space)
        self._actions: np.ndarray | None = None
        self.finished: list[Finished] = []  # the leader's record of episodes (images stay apart)
        team.register("env.reset", self._reset_rows)
        team.register("env.step", self._step_rows)

    @property
    def row_offset(self) -> int:
        return self.team.shard.rank * self.rows

    # -- the VecEnv interface (leader) -------------------------------------------------
    def reset(self) -> dict[str, np.ndarray]:
        obs = self.team.call("env.reset")
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, 4)

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async first"
        out = self.team.call("env.step")
        self._actions = None
        return out

    def drain_finished(self) -> list[Finished]:
        """The episodes that ended since the last call: labels, rewards and controls of every
        row (``images`` None: they stay on the processes that made them)."""
        out, self.finished = self.finished, []
        return out

    def close(self) -> None:
        self.finished = []

    # -- what every process runs ---------------------------------------------------------
    def _reset_rows(self) -> dict[str, np.ndarray] | None:
        seeds = torch.tensor([-1 if s is None else int(s) for s in self._seeds], dtype=torch.int64)  # (N,)
        seeds = self.team.broadcast(seeds if self.team.is_leader else None)
        mine = seeds[self.row_offset : self.row_offset + self.rows].tolist()  # (n,)
        self.local._seeds = [None if s < 0 else int(s) for s in mine]
        return self._gather_observation(self.local.reset())

    def _step_rows(self) -> VecEnvStepReturn | None:
        team = self.team
        actions = team.broadcast(torch.from_numpy(self._actions) if team.is_leader else None)  # (N, 4)
        mine = actions[self.row_offset : self.row_offset + self.rows].numpy()  # (n, 4)
        obs, rewards, dones, infos = self.local.step(mine)
        labels = torch.tensor([info["label"] for info in infos], dtype=torch.int64)  # (n,)
        all_obs = self._gather_observation(obs)
        all_rewards = team.gather(torch.from_numpy(rewards))  # (N,)
        all_labels = team.gather(labels)  # (N,)
        done = bool(dones[0])  # every row ends its episode at the same step
        terminal: dict[str, np.ndarray] | None = None
        if done:
            last = {k: np.stack([info["terminal_observation"][k] for info in infos]) for k in obs}
            terminal = self._gather_observation(last)
            fin = self.local.finished[-1]
            controls = team.gather(fin.controls.float().cpu())  # (N, T, 4)
            if team.is_leader:
                self.finished.append(Finished(None, all_labels, all_rewards, controls))
        if not team.is_leader:
            return None
        assert all_obs is not None
        out_infos: list[dict[str, Any]] = [{"label": int(x)} for x in all_labels]
        if terminal is not None:
            for i, info in enumerate(out_infos):
                info["terminal_observation"] = {k: v[i] for k, v in terminal.items()}
                info["TimeLimit.truncated"] = False
        return all_obs, all_rewards.numpy(), np.full(self.num_envs, done), out_infos

    def _gather_observation(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        gathered = self.team.gather_arrays(obs)
        return gathered if self.team.is_leader else None

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        if seed is not None:
            self.local._base_seed = seed
        base = self.local._base_seed
        self._seeds = [base + i for i in range(self.num_envs)]
        return self._seeds
