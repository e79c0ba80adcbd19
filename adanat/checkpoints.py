"""Reading model weights safely and loading them strictly into our modules.

Files are read as safetensors, or with ``torch.load(weights_only=True)`` (never full pickle).
A dict wrapped under ``state_dict`` (the VQGAN release) or ``model`` (AdaNAT's policy checkpoints)
is unwrapped. Every failure is a
:class:`CheckpointError` with a one-line message that names the file and, for key mismatches,
the first few missing and unexpected keys.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from adanat.errors import first_line
from adanat.models.enat import ENAT, ENATConfig
from adanat.models.uvit import UViTConfig, UViTNAT
from adanat.models.vqgan import MaskGITVQGAN, VQGANConfig


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a ``.safetensors`` file or a torch file (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        sd = load_file(str(path)) if path.suffix == ".safetensors" else _torch_load(path)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a torch file of plain tensors "
            "(only weights_only=True loading is allowed)"
        ) from None
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as e:
        first = first_line(e)
        raise CheckpointError(f"cannot read checkpoint {path}: {first[:200]}") from None
    for wrapper in ("state_dict", "model"):  # the VQGAN release; AdaNAT's policy checkpoints
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    return sd


def _torch_load(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``; memory-mapped when the file format allows."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def key_mismatch(missing: list[str], unexpected: list[str]) -> str:
    """``"2 missing (e.g. a, b); 1 unexpected (e.g. c)"``: a key mismatch said in one line."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    return "; ".join(parts)


def check_keys(module: nn.Module, state_dict: dict[str, Tensor], what: str) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` has exactly the module's keys and shapes."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{what} keys do not match the preset: {key_mismatch(missing, unexpected)}")
    for k, shape in expected.items():
        if tuple(state_dict[k].shape) != shape:
            raise CheckpointError(
                f"{what} tensor {k} has shape {tuple(state_dict[k].shape)}, the preset expects {shape}"
            )


def _load(module: nn.Module, state_dict: dict[str, Tensor], what: str) -> nn.Module:
    check_keys(module, state_dict, what)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    module.load_state_dict(sd, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def _build_and_load(
    cls: type[nn.Module],
    config: object,
    source: str | Path | dict[str, Tensor],
    device: torch.device | str,
    what: str,
) -> nn.Module:
    sd = read_state_dict(source) if isinstance(source, (str, Path)) else source
    with torch.device("meta"):
        model = cls(config)
    return _load(model, sd, what).to(device)


def load_generator(
    source: str | Path | dict[str, Tensor],
    config: ENATConfig | UViTConfig,
    device: torch.device | str = "cpu",
) -> ENAT | UViTNAT:
    """The generator of ``config`` (ENAT or U-ViT NAT) built on the meta device and filled from
    ``source`` (path or state dict). A U-ViT file's ``*.position_ids`` buffers (the CC3M release
    holds some) are dropped, as the official loader does."""
    if isinstance(config, UViTConfig):
        sd = read_state_dict(source) if isinstance(source, (str, Path)) else source
        sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
        return _build_and_load(UViTNAT, config, sd, device, "generator")
    return _build_and_load(ENAT, config, source, device, "generator")


def load_tokenizer(
    source: str | Path | dict[str, Tensor], config: VQGANConfig, device: torch.device | str = "cpu"
) -> MaskGITVQGAN:
    """A MaskGIT VQGAN built on the meta device and filled from ``source`` (path or state dict)."""
    return _build_and_load(MaskGITVQGAN, config, source, device, "tokenizer")
