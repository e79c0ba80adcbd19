"""Where a preset's weights come from: the package (``shapes``), flags, or environment variables.

A text-conditional preset (``cc3m``) also loads its text encoder (``--text-encoder PATH``, the
world's environment variable, or the local open-clip / Hugging Face cache; never downloaded).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from adanat.prompts import PromptBank
    from adanat.text_encoder import TextEncoder


@dataclass
class LoadedModels:
    """A preset's generator and tokenizer, with the files they came from."""

    preset: ModelPreset
    world: World | None
    generator: ENAT
    tokenizer: MaskGITVQGAN
    generator_file: Path
    tokenizer_file: Path
    text_encoder: TextEncoder | None = None
    text_encoder_file: Path | None = None

    @property
    def takes_text(self) -> bool:
        return self.text_encoder is not None

    def prompt_bank(self, prompts: Sequence[str]) -> PromptBank:
        """``prompts`` as ids ``0..P-1`` with their states from this preset's text encoder."""
        from adanat.prompts import PromptBank, PromptError

        if self.text_encoder is None:
            raise PromptError(
                f"preset {self.preset.name} is class-conditional: it takes classes, not prompts"
            )
        return PromptBank(self.text_encoder, prompts)

    def sampler(
        self, precision: str = "float32", reuse: bool = True, prompts: PromptBank | None = None
    ) -> NATSampler:
        """The generator and tokenizer as a :class:`~adanat.sampling.NATSampler` in eval mode; a
        text-conditional generator is driven by the ids of ``prompts``
        (:class:`~adanat.prompts.PromptConditioned`)."""
        generator = self.generator.eval()
        if self.takes_text:
            from adanat.prompts import PromptConditioned, PromptError

            if prompts is None:
                raise PromptError(f"preset {self.preset.name} is text-conditional: give prompts")
            generator = PromptConditioned(generator, prompts)
        return NATSampler(generator, self.tokenizer.eval(), precision, reuse)


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


def text_encoder_file(world: World | None, given: Path | None) -> Path | None:
    """The text encoder's weights: ``--text-encoder``, else the world's environment variable,
    else None (the local caches are then searched)."""
    if (
        given is None
        and world is not None
        and world.text_encoder_env
        and os.environ.get(world.text_encoder_env)
    ):
        given = Path(os.environ[world.text_encoder_env])
    return given


def load_models(
    name: str,
    generator: Path | None = None,
    tokenizer: Path | None = None,
    device: torch.device | str = "cpu",
    text_encoder: Path | None = None,
) -> LoadedModels:
    """Resolve and strictly load a preset's generator and tokenizer (and text encoder)."""
    preset, world = resolve_preset(name)
    gen_file, tok_file = weight_files(preset, world, generator, tokenizer)
    encoder, encoder_file = None, None
    if preset.text_encoder is not None:
        from adanat.text_encoder import TextEncoderConfig, cached_weights, load_text_encoder

        encoder_file = text_encoder_file(world, text_encoder)
        if encoder_file is None:  # the local cache; the file is recorded like a given one
            encoder_file = cached_weights(TextEncoderConfig.of(preset.text_encoder))
        encoder = load_text_encoder(preset.text_encoder, encoder_file, device)
    elif text_encoder is not None:
        raise CheckpointError(
            f"--text-encoder: preset {preset.name} is class-conditional (it takes no prompts)"
        )
    return LoadedModels(
        preset=preset,
        world=world,
        generator=load_generator(gen_file, preset.generator, device),
        tokenizer=load_tokenizer(tok_file, preset.tokenizer, device),
        generator_file=gen_file,
        tokenizer_file=tok_file,
        text_encoder=encoder,
        text_encoder_file=encoder_file,
    )
