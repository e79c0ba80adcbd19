"""Every use of stable-baselines3 internals, behind small named functions.

adanat drives SB3's PPO through its public API and its callbacks, but a run that resumes, holds
the exploration std fixed, exports its actor and checks its rewards has to reach a few of SB3's
attributes that are not documented API (``_n_updates``, ``_last_obs``, ``_last_episode_starts``,
``policy.log_std``, ``policy.action_net``, ``policy.value_net``, ``policy.pi_features_extractor``,
``policy.vf_features_extractor``, the logger's
``name_to_value`` and its TensorBoard writer, a callback's ``locals``). They are read and written
here only; ``tests/test_sb3_internals.py`` builds a tiny PPO and fails if an SB3 release moves,
renames or changes the meaning of one of them. Tested with stable-baselines3 2.3 to 2.x.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import TensorBoardOutputFormat
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn
from torch.utils.tensorboard import SummaryWriter

__all__ = [
    "action_head",
    "actor_extractor",
    "critic_extractor",
    "exploration_log_std",
    "freeze_exploration_std",
    "gradient_epochs",
    "last_logged",
    "next_observation",
    "optimizer",
    "rollouts_done",
    "set_counters",
    "set_exploration_std",
    "set_next_observation",
    "step_rewards",
    "tensorboard_writer",
    "value_head",
]


def rollouts_done(model: OnPolicyAlgorithm) -> int:
    """PPO updates (rollouts) completed so far: ``num_timesteps // (n_steps * n_envs)``."""
    return int(model.num_timesteps // (model.n_steps * model.n_envs))


def gradient_epochs(model: BaseAlgorithm) -> int:
    """SB3's ``_n_updates``: PPO epochs run so far (logged as ``train/n_updates``)."""
    return int(model._n_updates)


def set_counters(model: BaseAlgorithm, num_timesteps: int, epochs: int) -> None:
    """Put a resumed run's counters back: env steps done and :func:`gradient_epochs`."""
    model.num_timesteps = int(num_timesteps)
    model._n_updates = int(epochs)


def set_next_observation(model: BaseAlgorithm, obs: dict[str, np.ndarray]) -> None:
    """The observation the next rollout starts from (``_last_obs``), every row at an episode
    start (``_last_episode_starts``); ``learn(reset_num_timesteps=False)`` then does not reset
    the env."""
    model._last_obs = obs  # type: ignore[assignment]
    model._last_episode_starts = np.ones((model.n_envs,), dtype=bool)


def next_observation(model: BaseAlgorithm) -> dict[str, np.ndarray] | np.ndarray | None:
    """The observation the next rollout starts from (``_last_obs``)."""
    return model._last_obs  # type: ignore[return-value]


def exploration_log_std(model: BaseAlgorithm) -> nn.Parameter:
    """The Gaussian policy's state-independent ``log_std`` parameter ``(action_dim,)``."""
    log_std = model.policy.log_std
    assert isinstance(log_std, nn.Parameter), "a Gaussian (Box-action, non-gSDE) policy only"
    return log_std


def set_exploration_std(model: BaseAlgorithm, std: float) -> None:
    """Set the exploration std of every action dimension to ``std``."""
    with torch.no_grad():
        exploration_log_std(model).fill_(math.log(std))


def freeze_exploration_std(model: BaseAlgorithm) -> None:
    """Keep the optimiser from learning the std (it follows a fixed schedule)."""
    exploration_log_std(model).requires_grad_(False)


def action_head(model: BaseAlgorithm) -> nn.Linear:
    """The linear layer from actor features to the mean action (``policy.action_net``)."""
    head = model.policy.action_net
    assert isinstance(head, nn.Linear)
    return head


def actor_extractor(model: BaseAlgorithm) -> BaseFeaturesExtractor:
    """The actor's features extractor (``policy.pi_features_extractor``; the critic has its own
    when ``share_features_extractor=False``)."""
    return model.policy.pi_features_extractor  # type: ignore[return-value]


def value_head(model: BaseAlgorithm) -> nn.Linear:
    """The linear layer from critic features to the value (``policy.value_net``)."""
    head = model.policy.value_net
    assert isinstance(head, nn.Linear)
    return head


def critic_extractor(model: BaseAlgorithm) -> BaseFeaturesExtractor:
    """The critic's features extractor (``policy.vf_features_extractor``; the actor's own when
    ``share_features_extractor=True``)."""
    return model.policy.vf_features_extractor  # type: ignore[return-value]


def optimizer(model: BaseAlgorithm) -> torch.optim.Optimizer:
    """The policy's optimiser (actor and critic)."""
    return model.policy.optimizer


def tensorboard_writer(model: BaseAlgorithm) -> SummaryWriter:
    """The ``SummaryWriter`` of the model's TensorBoard logger output (set with ``set_logger``)."""
    try:
        outputs = model.logger.output_formats
    except AttributeError:  # no logger set yet (SB3 makes its own in learn())
        outputs = []
    for out in outputs:
        if isinstance(out, TensorBoardOutputFormat):
            return out.writer
    raise ValueError("the model's logger has no TensorBoard output")


def last_logged(model: BaseAlgorithm, key: str) -> float | None:
    """The value recorded under ``key`` since the last dump (e.g. ``train/loss`` after an
    update), or None."""
    values = model.logger.name_to_value
    return float(values[key]) if key in values else None


def step_rewards(callback: BaseCallback) -> np.ndarray:
    """In ``_on_step``: the rewards ``(N,)`` the env returned for this step, after every wrapper
    (e.g. the action cost), as the rollout buffer receives them."""
    return np.asarray(callback.locals["rewards"])
