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
