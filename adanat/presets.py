"""Named model presets, read from the package data file ``adanat/data/presets.json``.

Three tables: ENAT generator architectures, VQGAN tokenizer architectures, and model presets
that pair a generator with a tokenizer at an image size (the names used by ``--preset``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from adanat.models.enat import ENATConfig
from adanat.models.vqgan import VQGANConfig


@dataclass(frozen=True)
class ModelPreset:
    """A generator and its tokenizer.

    :param name: preset name.
    :param generator: ENAT architecture.
    :param tokenizer: VQGAN architecture.
    :param image_size: side of the generated images in pixels.
    :param enat_variant: which published ENAT sampler setting fits (``in256`` or ``in512``).
    """

    name: str
    generator: ENATConfig
    tokenizer: VQGANConfig
    image_size: int
    enat_variant: str

    @property
    def num_classes(self) -> int:
        return self.generator.num_classes


@cache
def _table() -> dict[str, Any]:
    text = resources.files("adanat.data").joinpath("presets.json").read_text(encoding="utf-8")
    return json.loads(text)


def _lookup(kind: str, name: str) -> dict[str, Any]:
    table = _table()[kind]
    if name not in table:
        raise KeyError(f"unknown {kind[:-1]} preset {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


def generator_config(name: str) -> ENATConfig:
    """ENAT architecture of a generator preset such as ``enat-l-in256``."""
    return ENATConfig(**_lookup("generators", name))


def tokenizer_config(name: str) -> VQGANConfig:
    """VQGAN architecture of a tokenizer preset such as ``maskgit-vqgan-f16``."""
    cfg = dict(_lookup("tokenizers", name))
    cfg["ch_mult"] = tuple(cfg["ch_mult"])
    return VQGANConfig(**cfg)


def model_preset(name: str) -> ModelPreset:
    """Generator + tokenizer preset used by ``adanat sample --preset``."""
    entry = _lookup("models", name)
    return ModelPreset(
        name=name,
        generator=generator_config(entry["generator"]),
        tokenizer=tokenizer_config(entry["tokenizer"]),
        image_size=entry["image_size"],
        enat_variant=entry["enat_variant"],
    )


def model_preset_names() -> list[str]:
    return sorted(_table()["models"])


def generator_preset_names() -> list[str]:
    return sorted(_table()["generators"])


@dataclass(frozen=True)
class PolicyTrainingDefaults:
    """Policy-training options whose default depends on the world (``scripts/train_policy.py``).

    ImageNet worlds use AdaNAT's. On ``shapes``, whose runs are about 130 PPO updates, the ones
    measured best there (docs/results_investigation.md, runs F to H): the exploration std halves
    a quarter into the run (AdaNAT's update 500 of 1,000 is never reached), the discriminator sees
    the spread of groups of 4 images, and a light action cost pulls towards the base schedule.

    :param action_std: exploration std schedule, ``"UPDATE:STD,..."`` (``P%`` of the run allowed).
    :param minibatch_std: group size of the discriminator's minibatch-std feature (0: off).
    :param action_cost: reward cost per step of ``mean(action**2)`` (0: off).
    """

    action_std: str
    minibatch_std: int
    action_cost: float


@dataclass(frozen=True)
class WorldPreset:
    """A world: a model preset, its class names, default ``T``, where its weights come from, and
    its policy-training defaults.

    :param weights: ``package`` (shipped, verified by manifest) or ``user`` (paths given by flags
        or the environment variables ``generator_env`` / ``tokenizer_env``).
    """

    name: str
    model: ModelPreset
    steps: int
    weights: str
    policy_training: PolicyTrainingDefaults
    classes: tuple[str, ...] | None = None
    generator_env: str | None = None
    tokenizer_env: str | None = None

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def num_classes(self) -> int:
        return self.model.num_classes


def world_preset(name: str) -> WorldPreset:
    """World preset ``shapes``, ``in256`` or ``in512``."""
    entry = dict(_lookup("worlds", name))
    model = model_preset(entry.pop("model"))
    classes = entry.pop("classes", None)
    training = PolicyTrainingDefaults(**entry.pop("policy_training"))
    return WorldPreset(
        name=name, model=model, policy_training=training, classes=tuple(classes) if classes else None, **entry
    )


def world_names() -> list[str]:
    return sorted(_table()["worlds"])
