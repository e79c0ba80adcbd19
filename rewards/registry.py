"""Reward registry: a name and a world in, a ready :class:`~adanat.rewards.base.Reward` out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adanat.rewards.adversarial import AdversarialReward, DiscriminatorTraining
from adanat.rewards.base import Reward


class RewardError(ValueError):
    """A reward cannot be built as asked (unknown name, missing weights or data)."""


@dataclass(frozen=True)
class RewardOptions:
    """Everything the rewards may need beyond the world.

    :param discriminator: the adversarial reward's training settings.
    :param real_images: ImageNet-layout folder of real images (``in256``/``in512``).
    :param dino: DINO ViT-S/16 weights (``in256``/``in512``; default: the timm cache).
    :param clip_model: open-clip architecture name for the ``clip`` reward.
    :param clip_weights: its weights file.
    :param prompt: the ``clip`` prompt template.
    :param minibatch_std: images per minibatch-std group of the ``shapes`` discriminator
        (:func:`~adanat.rewards.discriminators.group_std`); 0 (AdaNAT) is off.
    """

    discriminator: DiscriminatorTraining = field(default_factory=DiscriminatorTraining)
    real_images: Path | None = None
    dino: Path | None = None
    clip_model: str = "ViT-B-32"
    clip_weights: Path | None = None
    prompt: str = "a photo of a {}"
    minibatch_std: int = 0

    def __post_init__(self) -> None:
        if self.minibatch_std == 1 or self.minibatch_std < 0:
            raise ValueError(f"minibatch-std must be 0 (off) or >= 2 images, got {self.minibatch_std}")


Builder = Callable[[str, RewardOptions, torch.device], Reward]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make a builder ``(world, options, device) -> Reward`` available by name."""

    def deco(fn: Builder) -> Builder:
        _REGISTRY[name] = fn
        return fn

    return deco


def reward_names() -> list[str]:
    return sorted(_REGISTRY)


def make_reward(
    name: str, world: str, options: RewardOptions | None = None, device: torch.device | str = "cpu"
) -> Reward:
    """Build reward ``name`` for ``world`` (``shapes``, ``in256``, ``in512``)."""
    if name not in _REGISTRY:
        raise RewardError(f"unknown reward {name!r}; known: {', '.join(reward_names())}")
    return _REGISTRY[name](world, options or RewardOptions(), torch.device(device))


@register("adversarial")
def _adversarial(world: str, options: RewardOptions, device: torch.device) -> Reward:
    from adanat.presets import world_preset

    w = world_preset(world)
    if w.discriminator == "conv":  # a small conv net on the world's own procedural real images
        from adanat.rewards.discriminators import ConvDiscriminator, ConvDiscriminatorConfig
        from adanat.rewards.real_images import ShapesReal

        with torch.random.fork_rng(devices=[]):  # seeded initial weights, global state untouched
            torch.manual_seed(options.discriminator.seed)
            disc = ConvDiscriminator(ConvDiscriminatorConfig(group=options.minibatch_std)).to(device)
        return AdversarialReward(disc, ShapesReal(), options.discriminator)
    from adanat.rewards.discriminators import ProjectedDiscriminator, dino_backbone
    from adanat.rewards.real_images import ImageFolderReal

    if options.minibatch_std:
        raise RewardError("--minibatch-std exists for the shapes discriminator only")
    if options.real_images is None:
        raise RewardError(
            f"the adversarial reward on {world} needs --real-images DIR (ImageNet train folder)"
        )
    try:
        backbone = dino_backbone(options.dino)
        real = ImageFolderReal(options.real_images, w.image_size)
    except (FileNotFoundError, ValueError) as e:
        raise RewardError(str(e)) from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.discriminator.seed)
        disc = ProjectedDiscriminator(backbone, num_classes=w.num_classes).to(device)
    return AdversarialReward(disc, real, options.discriminator)


@register("classifier")
def _classifier(world: str, options: RewardOptions, device: torch.device) -> Reward:
    from adanat.presets import world_preset

    if not world_preset(world).class_accuracy:  # its metric network's logits are its classes
        raise RewardError("the classifier reward exists for the shapes world only")
    from adanat.assets import load_metric_network
    from adanat.rewards.classifier import ClassifierReward

    return ClassifierReward(load_metric_network().to(device))


@register("clip")
def _clip(world: str, options: RewardOptions, device: torch.device) -> Reward:
    from adanat.rewards.clip import ClipReward, load_clip

    if options.clip_weights is None:
        raise RewardError("the clip reward needs --clip-weights PATH (open-clip weights, never downloaded)")
    try:
        model, tokenizer = load_clip(options.clip_model, options.clip_weights)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        raise RewardError(
            f"cannot load open-clip {options.clip_model} from {options.clip_weights}: {e}"
        ) from None
    from adanat.presets import world_preset

    return ClipReward(model.to(device), tokenizer, world_preset(world).class_names(), options.prompt)
