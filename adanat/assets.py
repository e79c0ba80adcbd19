"""Weights shipped inside the package (the ``shapes`` world), checked against their manifest.

``adanat/assets/<world>/manifest.json`` lists, for each model, its file, byte size, sha256,
architecture config, the command that produced it and its measured quality. Loading verifies
size and hash first and raises :class:`AssetError` (one line) if a file is missing or corrupt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from adanat.checkpoints import CheckpointError, read_state_dict
from adanat.errors import first_line
from adanat.models.classifier import ClassifierConfig, ShapesClassifier


class AssetError(CheckpointError):
    """A shipped weight file that is missing, corrupt, or does not match its manifest."""


def asset_dir(world: str) -> Path:
    """Folder of a world's shipped assets inside the installed package."""
    return Path(str(resources.files("adanat").joinpath("assets", world)))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    if not path.is_file():
        raise AssetError(f"asset manifest missing: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AssetError(f"asset manifest {path} is not valid JSON ({e.msg})") from None


def verified_file(folder: Path, model: str) -> Path:
    """Path of ``model``'s weights in ``folder`` after checking size and sha256 against the manifest."""
    entry = read_manifest(folder).get("models", {}).get(model)
    if entry is None:
        raise AssetError(f"asset manifest in {folder} has no entry for {model!r}")
    path = folder / entry["file"]
    if not path.is_file():
        raise AssetError(f"asset file missing: {path}")
    if path.stat().st_size != entry["bytes"]:
        raise AssetError(f"asset file {path} has {path.stat().st_size} bytes, manifest says {entry['bytes']}")
    if sha256_of(path) != entry["sha256"]:
        raise AssetError(f"asset file {path} is corrupt (sha256 differs from the manifest)")
    return path


def manifest_entry(
    path: Path, config: Any, command: str, quality: dict[str, float], **extra: Any
) -> dict[str, Any]:
    """A manifest entry for a freshly written weight file."""
    cfg = asdict(config) if hasattr(config, "__dataclass_fields__") else config
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256_of(path),
        "config": cfg,
        "command": command,
        "quality": quality,
        **extra,
    }


def load_metric_network(path: Path | None = None, device: torch.device | str = "cpu") -> ShapesClassifier:
    """The ``shapes`` metric network, from ``path`` or the verified shipped file."""
    if path is None:
        folder = asset_dir("shapes")
        path = verified_file(folder, "metric")
        cfg = read_manifest(folder)["models"]["metric"]["config"]
        config = ClassifierConfig(widths=tuple(cfg["widths"]), num_classes=cfg["num_classes"])
    else:
        config = ClassifierConfig()
    net = ShapesClassifier(config)
    sd = read_state_dict(path)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"metric network {path} does not fit: {first_line(e)}") from None
    return net.eval().requires_grad_(False).to(device)
