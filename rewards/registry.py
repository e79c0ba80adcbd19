"""Reward registry: a name and a world in, a ready :class:`~adanat.rewards.base.Reward` out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from adanat.rewards.adversarial import AdversarialReward, DiscriminatorTraining
from adanat.rewards.base import Reward

if TYPE_CHECKING:
    from adanat.presets import World
    from adanat.prompts import PromptBank


class RewardError(ValueError):
    """A reward cannot be built as asked (unknown name, missing weights or data)."""


@dataclass(frozen=True)
class RewardOptions:
    """Everything the rewards may need beyond the world.

    :param discriminator: the adversarial reward's training settings.
    :param real_images: ImageNet-layout folder of real images (``in256``/``in512``).
    :param captions: image-caption pairs of a text world (a TSV or a folder,
        :class:`~adanat.captions.CaptionSet`): the adversarial reward's real images, each with
        its caption (the run's prompts are these captions).
    :param dino: DINO ViT-S/16 weights (``in256``/``in512``; default: the timm cache).
    :param clip_model: open-clip architecture name for the ``clip`` reward.
    :param clip_weights: its weights file.
    :param prompt: the ``clip`` prompt template.
    :param minibatch_std: images per minibatch-std group of the ``shapes`` discriminator
        (:func:`~adanat.rewards.discriminators.group_std`); 0 (AdaNAT) is off.
    """

    discriminator: DiscriminatorTraining = field(default_factory=DiscriminatorTraining)
    real_images: Path | None = None
    captions: Path | None = None
    dino: Path | None = None
    clip_model: str = "ViT-B-32"
    clip_weights: Path | None = None
    prompt: str = "a photo of a {}"
    minibatch_std: int = 0

    def __post_init__(self) -> None:
        if self.minibatch_std == 1 or self.minibatch_std < 0:
            raise ValueError(f"minibatch-std must be 0 (off) or >= 2 images, got {self.minibatch_std}")


Builder = Callable[["World", RewardOptions, torch.device, "PromptBank | None"], Reward]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make a builder ``(world, options, device, prompts) -> Reward`` available by name
    (``prompts``: the prompt bank whose ids label a text world's images; None for classes)."""

    def deco(fn: Builder) -> Builder:
        _REGISTRY[name] = fn
        return fn

    return deco


def reward_names() -> list[str]:
    return sorted(_REGISTRY)


def make_reward(
    name: str,
    world: str | World,
    options: RewardOptions | None = None,
    device: torch.device | str = "cpu",
    prompts: PromptBank | None = None,
) -> Reward:
    """Build reward ``name`` for ``world`` (a name: ``shapes``, ``in256``, ``in512``, ``cc3m``; or a
    :class:`~adanat.presets.World` whose model is the one generating, for its image size); a
    text world's images are labelled by the ids of ``prompts``."""
    if name not in _REGISTRY:
        raise RewardError(f"unknown reward {name!r}; known: {', '.join(reward_names())}")
    from adanat.presets import world_preset

    w = world_preset(world) if isinstance(world, str) else world
    if w.takes_text and prompts is None:
        raise RewardError(f"world {w.name} is text-to-image: its rewards need the run's prompts")
    if not w.takes_text and options is not None and options.captions is not None:
        raise RewardError(
            f"--captions: world {w.name} is class-conditional (its real images are not captioned)"
        )
    return _REGISTRY[name](w, options or RewardOptions(), torch.device(device), prompts)


@register("adversarial")
def _adversarial(
    w: World, options: RewardOptions, device: torch.device, prompts: PromptBank | None
) -> Reward:
    if w.takes_text:
        return _text_adversarial(w.image_size, options, device, prompts)
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
            f"the adversarial reward on {w.name} needs --real-images DIR (ImageNet train folder)"
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


def _text_adversarial(
    image_size: int, options: RewardOptions, device: torch.device, prompts: PromptBank | None
) -> Reward:
    """DINO-projected heads conditioned on the prompt's text, real images with their captions."""
    from adanat.captions import CaptionedImages, CaptionError, CaptionSet
    from adanat.rewards.discriminators import ProjectedDiscriminator, dino_backbone

    assert prompts is not None
    if options.minibatch_std:
        raise RewardError("--minibatch-std exists for the shapes discriminator only")
    if options.captions is None:
        raise RewardError("the adversarial reward of a text world needs --captions (image-caption pairs)")
    try:
        captions = CaptionSet.read(options.captions)
        backbone = dino_backbone(options.dino)
    except (CaptionError, FileNotFoundError, ValueError) as e:
        raise RewardError(str(e)) from None
    if list(captions.captions) != prompts.prompts:
        raise RewardError(
            f"the run's prompts must be the captions of {options.captions} (pass it as --captions)"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.discriminator.seed)
        disc = ProjectedDiscriminator(backbone, prompts=prompts).to(device)
    return AdversarialReward(disc, CaptionedImages(captions, image_size), options.discriminator)


@register("classifier")
def _classifier(w: World, options: RewardOptions, device: torch.device, prompts: PromptBank | None) -> Reward:
    if not w.class_accuracy:  # its metric network's logits are its classes
        raise RewardError("the classifier reward exists for the shapes world only")
    from adanat.assets import load_metric_network
    from adanat.rewards.classifier import ClassifierReward

    return ClassifierReward(load_metric_network().to(device))


@register("clip")
def _clip(w: World, options: RewardOptions, device: torch.device, prompts: PromptBank | None) -> Reward:
    from adanat.rewards.clip import ClipReward, load_clip

    if options.clip_weights is None:
        raise RewardError("the clip reward needs --clip-weights PATH (open-clip weights, never downloaded)")
    try:
        model, tokenizer = load_clip(options.clip_model, options.clip_weights)
    except (OSError, RuntimeError, ValueError) as e:
        raise RewardError(
            f"cannot load open-clip {options.clip_model} from {options.clip_weights}: {e}"
        ) from None
    if prompts is not None:  # a text world: each image against its own prompt
        return ClipReward(model.to(device), tokenizer, prompts.prompts)
    texts = [options.prompt.format(c) for c in w.class_names()]
    return ClipReward(model.to(device), tokenizer, texts)
