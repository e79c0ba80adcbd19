"""Test helpers (import with ``from helpers import ...``): the copied parity fixtures, tiny random
models and environment cores, and scripts imported as modules."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch
from safetensors.torch import load_file

from adanat.models.enat import ENAT, ENATConfig
from adanat.models.vqgan import MaskGITVQGAN
from adanat.presets import model_preset

DATA = Path(__file__).parent / "data"


def fixture_tensors(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(model state dict, other tensors) of a parity fixture."""
    tensors = load_file(str(DATA / name))
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    rest = {k: v for k, v in tensors.items() if not k.startswith("model.")}
    return model, rest


def load_script(path: Path) -> ModuleType:
    """A script of ``scripts/`` imported as a module (to test its functions without a subprocess)."""
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_weights(folder: Path) -> tuple[Path, Path]:
    """Random ``tiny`` preset generator and tokenizer weights in ``folder`` (seeded)."""
    from safetensors.torch import save_file

    preset = model_preset("tiny")
    save_file(random_enat(preset.generator).state_dict(), str(folder / "gen.safetensors"))
    torch.manual_seed(0)
    save_file(MaskGITVQGAN(preset.tokenizer).state_dict(), str(folder / "tok.safetensors"))
    return folder / "gen.safetensors", folder / "tok.safetensors"


def random_enat(config: ENATConfig, seed: int = 0) -> ENAT:
    """An ENAT with every parameter random (no zero gate), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    model = ENAT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.15 if p.dim() > 1 else 0.05))
    return model


def tiny_reward(seed: int = 0, lr: float = 1e-4):
    """An adversarial reward with a small random conv discriminator on the shapes data."""
    from adanat.rewards.adversarial import AdversarialReward, DiscriminatorTraining
    from adanat.rewards.discriminators import ConvDiscriminator, ConvDiscriminatorConfig
    from adanat.rewards.real_images import ShapesReal

    torch.manual_seed(seed)
    disc = ConvDiscriminator(ConvDiscriminatorConfig(widths=(8, 16, 32)))
    training = DiscriminatorTraining(lr=lr, batch_size=16, seed=seed)
    return AdversarialReward(disc, ShapesReal(size=200), training)


def tiny_core(
    num_rows: int, steps: int = 4, observation: str = "compact", reward=None, labels=None, precision="float32"
):
    """A :class:`NATCore` on tiny random models with a cosine base schedule (guidance 2)."""
    from adanat.envs.actions import ActionMapping
    from adanat.envs.core import NATCore
    from adanat.sampling import NATSampler
    from adanat.schedules import cosine_schedule

    preset = model_preset("tiny")
    torch.manual_seed(0)
    vq = MaskGITVQGAN(preset.tokenizer).eval()
    mapping = ActionMapping(cosine_schedule(steps, guidance=2.0), scale=2.0)
    sampler = NATSampler(random_enat(preset.generator), vq, precision)
    return NATCore(sampler, reward or tiny_reward(), mapping, observation, num_rows, labels)


def tiny_model_args(folder: Path) -> list[str]:
    """Command-line flags of the ``tiny`` preset with weights ``gen.safetensors`` and
    ``tok.safetensors`` in ``folder``."""
    return [
        "--preset",
        "tiny",
        "--generator",
        str(folder / "gen.safetensors"),
        "--tokenizer",
        str(folder / "tok.safetensors"),
    ]


def adanat_policy_checkpoint(
    path: Path, in_channels: int, hidden: int = 32, grid: int = 8, seed: int = 0, critic: bool = True
) -> None:
    """An AdaNAT policy checkpoint in the release's form (``{'model': ...}`` with
    ``policy_old.actor.*``, ``policy_old.critic.*`` when ``critic``, and the ``policy.*`` copies)
    sized for a generator of width ``in_channels`` on a ``grid`` x ``grid`` token grid, every
    tensor random and small (seeded)."""
    from adanat.agents.adanat_policy import ReleaseActor

    gen = torch.Generator().manual_seed(seed)
    model: dict[str, torch.Tensor] = {}
    for name, out in (("actor", 4), ("critic", 1))[: 2 if critic else 1]:
        with torch.random.fork_rng(devices=[]):
            net = ReleaseActor(in_channels, hidden, grid, out)
        for k, v in net.state_dict().items():
            value = torch.randn(v.shape, generator=gen) * (0.05 if v.dim() > 1 else 0.02)
            model[f"policy_old.{name}.{k}"] = value
            model[f"policy.{name}.{k}"] = value.clone()
    torch.save({"model": model, "step": 1000}, path)


# -- text-to-image: tiny random components ---------------------------------------------------

TINY_CLIP = {  # a tiny open-clip model (image and text towers) for the clip reward and CLIP score
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CAPTIONS = [
    "a red circle on a dark background",
    "a blue square",
    "a green triangle in the corner",
    "two yellow bars",
    "a white star at night",
    "a cyan ring",
]


def tiny_text_encoder(seed: int = 0):
    """The ``clip-tiny`` text tower of the ``uvit-t2i-tiny`` preset with random weights (seeded)."""
    from adanat.presets import text_encoder_preset
    from adanat.text_encoder import TextEncoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TextEncoder.from_preset(text_encoder_preset("clip-tiny")).eval()


def write_tiny_t2i(folder: Path) -> Path:
    """Random ``uvit-t2i-tiny`` generator, tokenizer and text encoder weights in ``folder``
    (``gen``, ``tok``, ``text.safetensors``), seeded; returns ``folder``."""
    from safetensors.torch import save_file

    from adanat.models.uvit import UViTNAT

    preset = model_preset("uvit-t2i-tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_file(UViTNAT(preset.generator).state_dict(), str(folder / "gen.safetensors"))
        save_file(MaskGITVQGAN(preset.tokenizer).state_dict(), str(folder / "tok.safetensors"))
    state = {k: v.contiguous() for k, v in tiny_text_encoder().state_dict().items()}
    save_file(state, str(folder / "text.safetensors"))
    return folder


def t2i_args(folder: Path) -> list[str]:
    """Command-line flags of the ``uvit-t2i-tiny`` preset with the weights of :func:`write_tiny_t2i`."""
    return [
        "--preset",
        "uvit-t2i-tiny",
        "--generator",
        str(folder / "gen.safetensors"),
        "--tokenizer",
        str(folder / "tok.safetensors"),
        "--text-encoder",
        str(folder / "text.safetensors"),
    ]


def write_caption_folder(
    folder: Path, captions: list[str] = CAPTIONS, size: tuple[int, int] = (40, 36)
) -> Path:
    """Random RGB images ``000i.png`` with captions ``000i.txt`` (img2dataset's layout), seeded."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, caption in enumerate(captions):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")
        (folder / f"{i:04d}.txt").write_text(caption + "\n", encoding="utf-8")
    return folder


def write_tiny_clip(folder: Path) -> tuple[Path, Path]:
    """A tiny random open-clip model: its config JSON and its weights (seeded)."""
    import json

    import open_clip
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = open_clip.CLIP(**TINY_CLIP)
    (folder / "clip.json").write_text(json.dumps(TINY_CLIP), encoding="utf-8")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "clip.safetensors"))
    return folder / "clip.json", folder / "clip.safetensors"


def write_random_dino(path: Path) -> Path:
    """A DINO ViT-S/16 of random weights (the projected discriminator's backbone), seeded."""
    import timm
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def write_random_inception(path: Path) -> Path:
    """torch-fidelity's Inception-v3 layout with random weights (the FID network of text worlds,
    which cannot be downloaded here): the module is built with its weight loading skipped."""
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with (
        torch.random.fork_rng(devices=[]),
        mock.patch.object(fe.torch, "load", return_value={}),
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None),
    ):
        torch.manual_seed(0)
        model = fe.FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path="x"
        )
        with torch.no_grad():  # He-scaled weights, so the features neither vanish nor explode
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0, (2 / p[0].numel()) ** 0.5)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path
