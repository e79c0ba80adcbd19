"""Where a preset's weights come from: the package (``shapes``), flags, or environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from adanat.assets import asset_dir, verified_file
from adanat.checkpoints import CheckpointError, load_generator, load_tokenizer
from adanat.models.enat import ENAT
from adanat.models.vqgan import MaskGITVQGAN
from adanat.presets import (
    ModelPreset,
    World,
    model_preset,
    model_preset_names,
    world_names,
    world_preset,
)
from adanat.sampling import NATSampler


@dataclass
class LoadedModels:
    """A preset's generator and tokenizer, with the files they came from."""

    preset: ModelPreset
    world: World | None
    generator: ENAT
    tokenizer: MaskGITVQGAN
    generator_file: Path
    tokenizer_file: Path

    def sampler(self, precision: str = "float32", reuse: bool = True) -> NATSampler:
        """The generator and tokenizer as a :class:`~adanat.sampling.NATSampler` in eval mode."""
        return NATSampler(self.generator.eval(), self.tokenizer.eval(), precision, reuse)


def resolve_preset(name: str) -> tuple[ModelPreset, World | None]:
    """A world name (``shapes``, ``in256``) or a model preset name (``enat-l-in256``)."""
    if name in world_names():
        world = world_preset(name)
        return world.model, world
    if name not in model_preset_names():
        known = ", ".join(world_names() + model_preset_names())
        raise CheckpointError(f"unknown preset {name!r}; known: {known}")
    worlds = [world_preset(w) for w in world_names()]
    return model_preset(name), next((w for w in worlds if w.model.name == name), None)


def weight_files(
    preset: ModelPreset, world: World | None, generator: Path | None, tokenizer: Path | None
) -> tuple[Path, Path]:
    """The generator and tokenizer files: flags first, then environment variables, then the package."""
    if world is not None and world.weights == "package" and generator is None and tokenizer is None:
        folder = asset_dir(world.name)
        return verified_file(folder, "generator"), verified_file(folder, "tokenizer")
    files = []
    for flag, given, env in (
        ("--generator", generator, world.generator_env if world else None),
        ("--tokenizer", tokenizer, world.tokenizer_env if world else None),
    ):
        if given is None and env and os.environ.get(env):
            given = Path(os.environ[env])
        if given is None:
            hint = f" (or set {env})" if env else ""
            raise CheckpointError(f"preset {preset.name} needs {flag} PATH{hint}: no checkpoint given")
        files.append(given)
    return files[0], files[1]


def load_models(
    name: str,
    generator: Path | None = None,
    tokenizer: Path | None = None,
    device: torch.device | str = "cpu",
) -> LoadedModels:
    """Resolve and strictly load a preset's generator and tokenizer."""
    preset, world = resolve_preset(name)
    gen_file, tok_file = weight_files(preset, world, generator, tokenizer)
    return LoadedModels(
        preset=preset,
        world=world,
        generator=load_generator(gen_file, preset.generator, device),
        tokenizer=load_tokenizer(tok_file, preset.tokenizer, device),
        generator_file=gen_file,
        tokenizer_file=tok_file,
    )
