"""Building an environment core from a world: models, reward, action mapping, observation form."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from adanat.envs.actions import ActionMap, ActionMapping, ReleaseActionMapping
from adanat.envs.core import NATCore
from adanat.precision import check_precision
from adanat.presets import world_preset
from adanat.rewards.base import Reward
from adanat.rewards.registry import RewardOptions, make_reward
from adanat.schedules import Schedule, load_schedule
from adanat.weights import LoadedModels, load_models

ACTIONS: tuple[str, ...] = ("residual", "adanat", "adanat-heuristic")


@dataclass(frozen=True)
class EnvConfig:
    """An environment's settings.

    :param world: ``shapes``, ``in256`` or ``in512``.
    :param steps: generation steps ``T`` per episode.
    :param reward: reward name (see :func:`adanat.rewards.reward_names`).
    :param base: base schedule name or JSON path; None for the world's
        (:meth:`adanat.presets.World.base_schedule`). With AdaNAT's actions, the schedule
        evaluations compare the policy with.
    :param observation: ``compact`` or ``full``.
    :param action_scale: pre-activation distance of a unit action. 1.0 keeps AdaNAT's exploration:
        its std 0.6 is in pre-activation units (on ``shapes`` at T=4, 2.0 doubled that, and the
        policy's FID drifted above its base schedule's at every evaluation;
        ``docs/results_investigation.md``).
    :param actions: the action mapping (:func:`action_mapping`): ``residual`` (ours, actions in
        ``[-1, 1]`` moving the base schedule), ``adanat`` (AdaNAT's raw pre-activation actions,
        no base) or ``adanat-heuristic`` (AdaNAT's, added to its hand-made schedule, ``--heu 1``);
        ``adanat train --init-policy`` picks AdaNAT's for the policy it fine-tunes.
    :param preset: model preset to load instead of the world's own (tests use ``tiny``).
    :param generator: generator weights (ImageNet worlds; ``shapes`` ships its own).
    :param tokenizer: tokenizer weights (ImageNet worlds).
    :param reuse: the generator reuses each step's features at the next (ENAT's computation
        reuse); off, every step encodes every visible token. A policy observes features computed
        this way, so it is recorded with the exported policy.
    :param precision: ``float32`` or ``bfloat16`` autocast of generator and decoder
        (:mod:`adanat.precision`; on a GPU about 3x the images/s of float32 for ENAT-L).
    """

    world: str = "shapes"
    steps: int = 8
    reward: str = "adversarial"
    base: str | None = None
    observation: str = "compact"
    action_scale: float = 1.0
    actions: str = "residual"
    preset: str | None = None
    generator: Path | None = None
    tokenizer: Path | None = None
    reward_options: RewardOptions = field(default_factory=RewardOptions)
    precision: str = "float32"
    reuse: bool = True

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.actions not in ACTIONS:
            raise ValueError(f"unknown actions {self.actions!r}; known: {', '.join(ACTIONS)}")

    def base_schedule(self) -> Schedule:
        if self.base is None:
            return world_preset(self.world).base_schedule(self.steps)
        return load_schedule(self.base, steps=self.steps, variant=self.world)


def action_mapping(config: EnvConfig) -> ActionMap:
    """The one place an environment's action mapping is chosen (``config.actions``)."""
    if config.actions == "residual":
        return ActionMapping(config.base_schedule(), config.action_scale)
    return ReleaseActionMapping(config.base_schedule(), heuristic=config.actions == "adanat-heuristic")


def load_env_models(config: EnvConfig, device: torch.device | str = "cpu") -> LoadedModels:
    """The generator and tokenizer of ``config`` (its model preset, or the world's)."""
    return load_models(config.preset or config.world, config.generator, config.tokenizer, device)


def build_core(
    config: EnvConfig,
    num_rows: int,
    device: torch.device | str = "cpu",
    models: LoadedModels | None = None,
    reward: Reward | None = None,
    labels: torch.Tensor | None = None,
) -> NATCore:
    """A :class:`NATCore` for ``config`` (loads models and builds the reward unless given)."""
    models = models or load_env_models(config, device)
    reward = reward or make_reward(config.reward, config.world, config.reward_options, device)
    return NATCore(
        models.sampler(config.precision, config.reuse),
        reward,
        action_mapping(config),
        config.observation,
        num_rows,
        labels,
    )
