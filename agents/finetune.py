"""Fine-tuning from AdaNAT's released policy (``adanat train --init-policy DIR``), through SB3's hooks.

The SB3 policy is AdaNAT's network: the features extractor is the release network up to its
512-wide layer (:class:`ReleaseExtractor`, one for the actor and one for the critic), no MLP after
it, SB3's ``action_net`` is the actor's last linear and its ``value_net`` the critic's.
:func:`load_start` puts the imported weights there (the critic's too when the folder holds one;
else the critic keeps the fresh initialisation SB3 gave it), so before any update the policy's mean
action is the imported actor's raw output. The environment acts with AdaNAT's mapping
(:class:`~adanat.envs.actions.ReleaseActionMapping`) on the full observation, and the run exports
its policy in the same folder format (:func:`release_actor_of`, :func:`release_critic_of`,
:func:`release_meta`), which ``adanat sample/eval --policy`` run and another ``--init-policy``
continues from. :func:`check_fit` is the one check that a folder fits the run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor

from adanat.agents import sb3
from adanat.agents.adanat_policy import (
    META,
    RELEASE_FORMAT,
    TRUNK_WIDTH,
    ReleaseActor,
    ReleaseMeta,
    ReleaseTrunk,
    load_release_policy,
    saved_release_critic,
)
from adanat.agents.export import PolicyError
from adanat.envs.observation import step_of
from adanat.envs.spec import EnvConfig
from adanat.errors import first_line

__all__ = [
    "InitPolicy",
    "ReleaseExtractor",
    "check_fit",
    "load_init_policy",
    "load_start",
    "read_init_meta",
    "release_actions",
    "release_actor_of",
    "release_critic_of",
    "release_meta",
]


class ReleaseExtractor(BaseFeaturesExtractor):
    """AdaNAT's policy network up to its last linear as an SB3 features extractor:
    ``{"features": (B, L, C), "step": one-hot or index}`` -> ``(B, 512)``.

    :param observation_space: the env's Dict space (full features, ``L`` a square number).
    :param hidden: the network's hidden size (the imported policy's).
    """

    def __init__(self, observation_space: spaces.Dict, hidden: int = 512) -> None:
        super().__init__(observation_space, TRUNK_WIDTH)
        tokens, width = observation_space["features"].shape
        grid = math.isqrt(tokens)
        if grid**2 != tokens:
            raise ValueError(f"features must lie on a square grid, got {tokens} tokens")
        self.trunk = ReleaseTrunk(width, hidden, grid)

    def forward(self, observations: dict[str, Tensor]) -> Tensor:
        return self.trunk(observations["features"].float(), step_of(observations))  # (B, 512)


@dataclass
class InitPolicy:
    """An ``--init-policy`` folder read back: its metadata, actor and critic (None if it has none)."""

    folder: Path
    meta: ReleaseMeta
    actor: ReleaseActor
    critic: ReleaseActor | None


def release_actions(meta: ReleaseMeta) -> str:
    """The environment's ``actions`` for a policy in AdaNAT's format."""
    return "adanat-heuristic" if meta.heuristic else "adanat"


def read_init_meta(folder: Path) -> ReleaseMeta:
    """``policy.json`` of an ``--init-policy`` folder.

    :raises PolicyError: it is not a readable AdaNAT-format policy folder (one line).
    """
    where = f"--init-policy {folder}"
    if not (folder / META).is_file():
        raise PolicyError(f"{where} is not a policy folder (no {META}; make one with adanat import-policy)")
    try:
        data = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PolicyError(f"{where}: {META} is not readable JSON ({first_line(e)})") from None
    kind = data.get("format") if isinstance(data, dict) else None
    if kind != RELEASE_FORMAT:
        raise PolicyError(
            f"{where} holds a policy of format {kind!r}; it takes AdaNAT's format ({RELEASE_FORMAT}: "
            "adanat import-policy, or a run's policy/ trained from one)"
        )
    try:
        return ReleaseMeta.from_dict(data)
    except ValueError as e:
        raise PolicyError(f"{where}: {first_line(e)}") from None


def check_fit(
    meta: ReleaseMeta,
    folder: Path,
    *,
    width: int,
    grid: int,
    steps: int,
    observation: str,
    generator: str = "the generator",
) -> None:
    """The folder's policy fits a run whose generator gives ``width`` features on a ``grid`` x
    ``grid`` token grid, generating in ``steps`` steps with the ``observation`` form.

    :raises PolicyError: the first mismatch, as one line naming the flag to change.
    """
    where = f"--init-policy {folder}"
    if observation != "full":
        raise PolicyError(
            f"{where} reads the generator's full features (AdaNAT's observation); "
            f"--observation {observation} does not give them"
        )
    if (meta.in_channels, meta.grid) != (width, grid):
        raise PolicyError(
            f"{where} reads {meta.in_channels} features on a {meta.grid}x{meta.grid} grid; "
            f"{generator} gives {width} on {grid}x{grid}"
        )
    if steps != meta.steps:
        raise PolicyError(f"{where} acts for T={meta.steps}; pass --steps {meta.steps} (not {steps})")


def load_init_policy(folder: Path, observation_space: spaces.Dict, env: EnvConfig) -> InitPolicy:
    """Read an ``--init-policy`` folder for the environment ``env`` with ``observation_space``,
    checked with :func:`check_fit` and against ``env.actions``.

    :raises PolicyError: it does not fit or its weights do not load (one line).
    """
    meta = read_init_meta(folder)
    tokens, width = observation_space["features"].shape
    grid = math.isqrt(tokens)  # the token grid of the full observation (the only one that fits)
    check_fit(meta, folder, width=width, grid=grid, steps=env.steps, observation=env.observation)
    if env.actions != release_actions(meta):
        raise PolicyError(
            f"--init-policy {folder} acts with env actions {release_actions(meta)!r}, not {env.actions!r}"
        )
    try:
        actor, _ = load_release_policy(folder)
        critic = saved_release_critic(folder, meta)
    except Exception as e:  # safetensors errors derive from Exception only
        raise PolicyError(f"--init-policy {folder}: its weights do not load ({first_line(e)})") from None
    return InitPolicy(folder, meta, actor, critic)


def _trunk_state(net: ReleaseActor) -> dict[str, Tensor]:
    return {k: v for k, v in net.state_dict().items() if not k.startswith("linear3.")}


def load_start(model: BaseAlgorithm, init: InitPolicy) -> None:
    """Put the imported actor (and critic) into a PPO built with :class:`ReleaseExtractor`."""
    with torch.no_grad():
        sb3.actor_extractor(model).trunk.load_state_dict(_trunk_state(init.actor))
        sb3.action_head(model).load_state_dict(init.actor.linear3.state_dict())
        if init.critic is not None:
            sb3.critic_extractor(model).trunk.load_state_dict(_trunk_state(init.critic))
            sb3.value_head(model).load_state_dict(init.critic.linear3.state_dict())


def _network(extractor: BaseFeaturesExtractor, head: torch.nn.Linear) -> ReleaseActor:
    trunk = extractor.trunk
    assert isinstance(trunk, ReleaseTrunk), "a PPO built for --init-policy"
    with torch.random.fork_rng(devices=[]):  # building layers must not move the global RNG
        net = ReleaseActor(trunk.in_channels, trunk.hidden, trunk.grid, head.out_features)
    head_state = {f"linear3.{k}": v for k, v in head.state_dict().items()}
    net.load_state_dict({**trunk.state_dict(), **head_state}, strict=True)
    return net.eval()


def release_actor_of(model: BaseAlgorithm) -> ReleaseActor:
    """The SB3 policy's actor as it is now, as AdaNAT's actor (on the CPU)."""
    return _network(sb3.actor_extractor(model), sb3.action_head(model))


def release_critic_of(model: BaseAlgorithm) -> ReleaseActor:
    """The SB3 policy's critic as it is now, as AdaNAT's critic (one output; on the CPU)."""
    return _network(sb3.critic_extractor(model), sb3.value_head(model))


def release_meta(
    model: BaseAlgorithm, steps: int, heuristic: bool, source: str, **trained: Any
) -> ReleaseMeta:
    """Metadata of the SB3 policy's actor in AdaNAT's format (``trained``: world, preset, the
    weights' sha256, reuse and exploration std of the run)."""
    trunk = sb3.actor_extractor(model).trunk
    assert isinstance(trunk, ReleaseTrunk), "a PPO built for --init-policy"
    return ReleaseMeta(trunk.in_channels, trunk.hidden, trunk.grid, steps, heuristic, source, trained=trained)
