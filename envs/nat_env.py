"""A single-sample Gymnasium environment: one image generated in ``T`` steps per episode."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from adanat.envs.core import NATCore


class NATEnv(gym.Env):
    """One generation episode at a time (a :class:`NATCore` with one row).

    Observation: ``{"features": (tokens, D), "step": Discrete(T)}`` (and ``"prompt": (E,)`` when
    the prompt is observed). Action: ``Box(-1, 1, (4,))``,
    a residual on the base schedule (with AdaNAT's mapping, its raw actions in a wider box).
    Reward: 0 until the last step, then the reward of the image.
    ``reset(seed=s)`` makes the episodes equal to row ``i`` of a :class:`NATVecEnv` seeded with
    ``s - i``. ``options={"label": k}`` fixes the next episode's class.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"]}

    def __init__(self, core: NATCore, render_mode: str | None = None) -> None:
        if core.num_rows != 1:
            raise ValueError("NATEnv drives a core with one row; use NATVecEnv for batches")
        self.core = core
        self.render_mode = render_mode
        self.observation_space = core.form.space()
        self.action_space = core.mapping.action_space()
        self._last_image: np.ndarray | None = None
        self._started = False  # the core holds a fresh episode that no reset() has returned

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None or not self.core.rngs:
            self.core.seed([seed if seed is not None else int(self.np_random.integers(2**62))])
            obs = self.core.reset()
        elif self._started:  # the core started this episode when the last one ended
            obs = self.core.observation()
        else:
            obs = self.core.reset()
        label = (options or {}).get("label")
        if label is not None:
            obs = self.core.set_labels(torch.tensor([int(label)]))
        self._started = False
        return _row(obs), {"label": int(self.core.labels[0])}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        label = int(self.core.labels[0])
        result = self.core.step(np.asarray(action, dtype=np.float32)[None])
        info: dict[str, Any] = {"label": label}
        if not result.done:
            return _row(result.observation), 0.0, False, False, info
        assert result.finished is not None and result.terminal_observation is not None
        image = result.finished.images[0]  # (3, H, W)
        self._last_image = (image.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        info["controls"] = result.finished.controls[0].cpu().numpy()  # (T, 4)
        self._started = True
        # the episode is over: its terminal observation is the last step's; the core has
        # already started the next episode, which the next reset() replaces
        return _row(result.terminal_observation), float(result.rewards[0]), True, False, info

    def render(self) -> np.ndarray | None:
        return self._last_image


def _row(obs: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: int(v[0]) if k == "step" else v[0] for k, v in obs.items()}
