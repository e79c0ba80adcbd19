"""Named presets, read from the package data file ``adanat/data/presets.json``.

Five tables: generator architectures (ENAT, U-ViT NAT), VQGAN tokenizer architectures, text
encoders (the CLIP text towers of text-conditional generators), model presets that pair a
generator with a tokenizer (and, for text conditions, a text encoder) at an image size, and worlds
(:class:`World`: a model preset with everything the commands ask of it). ``--preset`` takes a
world or a model preset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adanat.models.enat import ENATConfig
from adanat.models.uvit import UViTConfig
from adanat.models.vqgan import VQGANConfig

if TYPE_CHECKING:
    from adanat.metrics import FeatureSpace, Reference, ReferenceRequest
    from adanat.schedules import Schedule


@dataclass(frozen=True)
class ModelPreset:
    """A generator and its tokenizer.

    :param name: preset name.
    :param generator: generator architecture (ENAT or U-ViT NAT).
    :param tokenizer: VQGAN architecture.
    :param image_size: side of the generated images in pixels.
    :param enat_variant: which published ENAT sampler setting fits (``in256`` or ``in512``).
    :param text_encoder: the text encoder of a text-conditional generator (None: class labels).
    """

    name: str
    generator: GeneratorConfig
    tokenizer: VQGANConfig
    image_size: int
    enat_variant: str
    text_encoder: TextEncoderPreset | None = None

    @property
    def takes_text(self) -> bool:
        """The generator is conditioned on prompts (``--prompts``), not class labels."""
        return self.text_encoder is not None

    @property
    def num_classes(self) -> int:
        if self.generator.num_classes is None:
            raise ValueError(f"preset {self.name} is text-conditional: it takes prompts, not classes")
        return self.generator.num_classes


@dataclass(frozen=True)
class TextEncoderPreset:
    """A CLIP text tower: an open-clip architecture by name (``arch``, with the Hugging Face repo
    whose cached weights are looked for) or an inline open-clip text config (``text_cfg`` and
    ``embed_dim``; the tiny test tower).

    :param name: preset name.
    :param about: what it is.
    """

    name: str
    about: str
    arch: str | None = None
    hf_repo: str | None = None
    embed_dim: int | None = None
    text_cfg: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.arch is None) == (self.text_cfg is None):
            raise ValueError(f"text encoder preset {self.name} names an arch or gives a text_cfg")


def text_encoder_preset(name: str) -> TextEncoderPreset:
    """Text encoder preset ``name`` (``clip-vit-bigg-14``)."""
    return TextEncoderPreset(name=name, **_lookup("text_encoders", name))


@cache
def _table() -> dict[str, Any]:
    text = resources.files("adanat.data").joinpath("presets.json").read_text(encoding="utf-8")
    return json.loads(text)


def _lookup(kind: str, name: str) -> dict[str, Any]:
    table = _table()[kind]
    if name not in table:
        raise KeyError(f"unknown {kind[:-1]} preset {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


GeneratorConfig = ENATConfig | UViTConfig
"""A generator architecture: ENAT, or the U-ViT NAT of AutoNAT/AdaNAT (``"family": "uvit"``)."""


def generator_config(name: str) -> GeneratorConfig:
    """Architecture of a generator preset such as ``enat-l-in256`` or ``autonat-l-in256``."""
    entry = dict(_lookup("generators", name))
    family = entry.pop("family", "enat")
    if family not in ("enat", "uvit"):
        raise KeyError(f"generator preset {name!r} has unknown family {family!r}")
    return UViTConfig(**entry) if family == "uvit" else ENATConfig(**entry)


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
        text_encoder=text_encoder_preset(entry["text_encoder"]) if "text_encoder" in entry else None,
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
    the spread of groups of 4 images, an action cost pulls towards the base schedule, and a lower
    learning rate and a selection on 2,000 images keep the policy near it (at T=8 the searched base
    is a sharp optimum of FID; these settings are the first whose policy beat it on held-out images).

    :param action_std: exploration std schedule, ``"UPDATE:STD,..."`` (``P%`` of the run allowed).
    :param minibatch_std: group size of the discriminator's minibatch-std feature (0: off).
    :param action_cost: reward cost per step of ``mean(action**2)`` (0: off).
    :param disc_updates: discriminator updates per round (AdaNAT's 5 over its 1,000 PPO updates; a
        ``shapes`` run has about 130 rounds, so its discriminator takes 20 to become a useful critic).
    :param select_fid: images per FID of the model selection at each evaluation (``shapes``: 2,000,
        about a minute on a 2-core CPU); on a world without shipped references it is on only when
        FID reference statistics are given.
    :param learning_rate: Adam learning rate of actor and critic.
    """

    action_std: str
    minibatch_std: int
    action_cost: float
    disc_updates: int
    select_fid: int
    learning_rate: float


@dataclass(frozen=True)
class Recipe:
    """A published training recipe: ``--recipe NAME`` gives its value to every option it names
    that the command line leaves open (a flag given still wins; then the world's defaults).

    :param about: whose settings these are.
    :param episodes_per_update: episodes (trajectories) per PPO update.
    :param updates: PPO updates of the run (its episodes: ``updates * episodes_per_update``).
    :param learning_rate: the policy's Adam learning rate.
    :param action_std: exploration std schedule, ``"UPDATE:STD,..."``.
    :param disc_updates: discriminator updates per round.
    :param minibatch_std: group size of the discriminator's minibatch-std feature (0: off).
    :param action_cost: reward cost per step of ``mean(action**2)`` (0: off).
    """

    about: str
    episodes_per_update: int
    updates: int
    learning_rate: float
    action_std: str
    disc_updates: int
    minibatch_std: int
    action_cost: float


def recipe(name: str) -> Recipe:
    """Training recipe ``name`` (``adanat``)."""
    return Recipe(**_lookup("recipes", name))


def recipe_names() -> list[str]:
    return sorted(_table()["recipes"])


DEFAULT_STEPS = 8  # T of a model preset that belongs to no world


@dataclass(frozen=True)
class World:
    """A world and its services: its model preset, class names, default ``T`` and base schedule
    per ``T``, where its weights come from, the feature space its FIDs are measured in and their
    reference, and its policy-training defaults. Every command asks the world for these.

    :param weights: ``package`` (shipped, verified by manifest) or ``user`` (paths given by flags
        or the environment variables ``generator_env`` / ``tokenizer_env``).
    :param feature_space: torch-fidelity feature extractor of its FIDs (``adanat-shapes``: the
        world's metric network; ``inception-v3-compat``: Inception-v3, weights given by path).
    :param reference_splits: real splits the world renders as FID reference, per purpose
        (``evaluation``, ``selection``, ``search``); None: a statistics file must be given.
    :param class_accuracy: the feature space's logits are the world's classes, so evaluations
        also report how often an image shows its label (and the ``classifier`` reward exists).
    :param discriminator: the adversarial reward's critic: ``conv`` (a small conv net on the world's
        own procedural real images) or ``dino-projected`` (class-projection heads on frozen DINO
        features, real images from a folder).
    """

    name: str
    model: ModelPreset
    steps: int
    weights: str
    feature_space: str
    policy_training: PolicyTrainingDefaults
    classes: tuple[str, ...] | None = None
    reference_splits: dict[str, str] | None = None
    class_accuracy: bool = False
    discriminator: str = "dino-projected"
    generator_env: str | None = None
    tokenizer_env: str | None = None
    text_encoder_env: str | None = None

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def takes_text(self) -> bool:
        """Its generator is conditioned on prompts (a text-to-image world such as ``cc3m``)."""
        return self.model.takes_text

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def class_names(self) -> list[str]:
        """Names of the classes ``0..C-1``: the world's own, else ImageNet-1k's (from torchvision)."""
        if self.takes_text:
            raise ValueError(f"world {self.name} is text-conditional: it has prompts, not classes")
        if self.classes is not None:
            return list(self.classes)
        from torchvision.models import ResNet50_Weights

        return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])

    def base_schedule(self, steps: int) -> Schedule:
        """The world's AutoNAT baseline for ``steps``: a schedule searched for the world
        (``autonat-<world>-t<T>``) when one ships, else the published ``autonat-l-t8`` at T=8,
        else the world's ENAT schedule."""
        from adanat.schedules import builtin_schedule_names, load_schedule

        searched = f"autonat-{self.name}-t{steps}"
        if searched in builtin_schedule_names():
            return load_schedule(searched, steps=steps)
        if steps == 8:
            return load_schedule("autonat-l-t8", steps=8)
        return load_schedule("enat", steps=steps, variant=self.model.enat_variant)

    def metric_space(self, inception: Path | None = None) -> FeatureSpace:
        """The feature space of the world's FIDs (``inception``: Inception-v3 weights by path,
        else torch-fidelity's file in the torch hub cache; never downloaded)."""
        from adanat.metrics import inception_feature_space, shapes_feature_space

        if self.feature_space == "adanat-shapes":
            return shapes_feature_space()
        return inception_feature_space(inception)

    def reference(self, purpose: str, space: FeatureSpace, request: ReferenceRequest) -> Reference:
        """The FID reference for ``purpose`` (``evaluation``, ``selection`` or ``search``): the
        statistics file of ``request`` when given, else the world's real split for that purpose
        (the held-out split stays for evaluation), else an error naming the flag to give."""
        from adanat.metrics import MetricsError, Reference

        if request.statistics is not None:
            return Reference.from_file(request.statistics, space, request)
        if self.reference_splits is None:
            raise MetricsError(f"--reference fid_stats.npz (Inception mu/sigma) is needed for {self.name!r}")
        from adanat.worlds.shapes import shapes_reference

        return shapes_reference(space, self.reference_splits[purpose], request)


def world_preset(name: str) -> World:
    """World ``shapes``, ``in256``, ``in512`` or ``cc3m``."""
    entry = dict(_lookup("worlds", name))
    model = model_preset(entry.pop("model"))
    classes = entry.pop("classes", None)
    training = PolicyTrainingDefaults(**entry.pop("policy_training"))
    return World(
        name=name, model=model, policy_training=training, classes=tuple(classes) if classes else None, **entry
    )


def default_steps(world: World | None) -> int:
    """``T`` when none is given: the world's, else :data:`DEFAULT_STEPS`."""
    return world.steps if world is not None else DEFAULT_STEPS


def world_names() -> list[str]:
    return sorted(_table()["worlds"])
