"""Building an environment core from a world: models, reward, action mapping, observation form."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from adanat.envs.actions import ActionMap, ActionMapping, ReleaseActionMapping
from adanat.envs.core import NATCore
from adanat.envs.observation import ObservationForm
from adanat.precision import check_precision
from adanat.presets import world_preset
from adanat.prompts import PromptBank, PromptError, read_prompts
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
    :param text_encoder: text-to-image worlds: the text encoder's weights (default: the world's
        environment variable, then the local caches).
    :param observe_prompt: text-to-image worlds: the observation also holds the episode prompt's
        normalised pooled text embedding (AdaNAT's observes the generator's features only).
    :param prompts_file: text-to-image worlds: the episodes' prompts, one per line; by default
        the captions of ``reward_options.captions`` (which the adversarial reward needs anyway).
        Each episode draws one of them uniformly.
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
    text_encoder: Path | None = None
    prompts_file: Path | None = None
    observe_prompt: bool = False

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.actions not in ACTIONS:
            raise ValueError(f"unknown actions {self.actions!r}; known: {', '.join(ACTIONS)}")

    def base_schedule(self) -> Schedule:
        if self.base is None:
            return world_preset(self.world).base_schedule(self.steps)
        return load_schedule(self.base, steps=self.steps, variant=world_preset(self.world).model.enat_variant)


def action_mapping(config: EnvConfig) -> ActionMap:
    """The one place an environment's action mapping is chosen (``config.actions``)."""
    if config.actions == "residual":
        return ActionMapping(config.base_schedule(), config.action_scale)
    return ReleaseActionMapping(config.base_schedule(), heuristic=config.actions == "adanat-heuristic")


def load_env_models(config: EnvConfig, device: torch.device | str = "cpu") -> LoadedModels:
    """The generator and tokenizer of ``config`` (its model preset, or the world's)."""
    return load_models(
        config.preset or config.world, config.generator, config.tokenizer, device, config.text_encoder
    )


def env_prompts(config: EnvConfig, models: LoadedModels) -> PromptBank | None:
    """The episodes' prompts of a text-to-image world (None for class labels): ``prompts_file``,
    else the captions of ``reward_options.captions``."""
    if not models.takes_text:
        if config.prompts_file is not None:
            raise PromptError(f"--prompts-file: world {config.world} is class-conditional")
        return None
    if config.prompts_file is not None:
        return models.prompt_bank(read_prompts(config.prompts_file))
    if config.reward_options.captions is not None:
        from adanat.captions import CaptionSet

        return models.prompt_bank(CaptionSet.read(config.reward_options.captions).captions)
    raise PromptError(
        f"world {config.world} is text-to-image: give --captions (image-caption pairs) or --prompts-file"
    )


def build_core(
    config: EnvConfig,
    num_rows: int,
    device: torch.device | str = "cpu",
    models: LoadedModels | None = None,
    reward: Reward | None = None,
    labels: torch.Tensor | None = None,
) -> NATCore:
    """A :class:`NATCore` for ``config`` (loads models and builds the reward unless given); in a
    text-to-image world the rows' labels are prompt ids (:func:`env_prompts`)."""
    models = models or load_env_models(config, device)
    prompts = env_prompts(config, models)
    world = replace(world_preset(config.world), model=models.preset)  # the world with the model generating
    reward = reward or make_reward(config.reward, world, config.reward_options, device, prompts)
    if config.observe_prompt and prompts is None:
        raise PromptError(f"--observe-prompt: world {config.world} has no prompts (it is class-conditional)")
    mapping, gen = action_mapping(config), models.generator
    prompt_dim = prompts.encoder.embed_dim if config.observe_prompt and prompts is not None else 0
    form = ObservationForm(config.observation, gen.grid, gen.feature_dim, mapping.steps, prompt_dim)
    return NATCore(
        models.sampler(config.precision, config.reuse, prompts), reward, mapping, form, num_rows, labels
    )
