"""Learned policies shipped beside the fixed schedules (``adanat-shapes-t4``, ``adanat-shapes-t8``).

Each is an exported policy folder (``policy.safetensors`` + ``policy.json``, as ``adanat train``
writes it) in ``adanat/assets/<world>/policies/<name>/``, listed in that world's
``manifest.json`` under ``policies`` with each file's byte size and sha256, the command that
trained it and its held-out numbers. The policy's own metadata ties it to the shipped generator
and tokenizer by their sha256. ``--policy NAME`` takes these names wherever it takes a schedule
name; the folder is checked against the manifest before it is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adanat.assets import AssetError, asset_dir, read_manifest, sha256_of

__all__ = ["builtin_policy", "builtin_policy_names", "policy_entry", "policy_folder", "policy_manifest_entry"]

SHIPPING_WORLDS: tuple[str, ...] = ("shapes",)  # worlds whose weights are package data


def _entries() -> dict[str, tuple[Path, dict[str, Any]]]:
    out = {}
    for world in SHIPPING_WORLDS:
        folder = asset_dir(world)
        for name, entry in read_manifest(folder).get("policies", {}).items():
            out[name] = (folder, entry)
    return out


def builtin_policy_names() -> list[str]:
    """Names of the shipped learned policies."""
    return sorted(_entries())


def policy_entry(name: str) -> dict[str, Any]:
    """The manifest entry of shipped policy ``name`` (files, command, held-out numbers)."""
    entries = _entries()
    if name not in entries:
        raise AssetError(f"no shipped policy {name!r}; shipped: {', '.join(sorted(entries)) or 'none'}")
    return entries[name][1]


def builtin_policy(name: str) -> Path:
    """The folder of shipped policy ``name`` after checking every file's size and sha256."""
    entries = _entries()
    if name not in entries:
        raise AssetError(f"no shipped policy {name!r}; shipped: {', '.join(sorted(entries)) or 'none'}")
    root, entry = entries[name]
    folder = root / entry["folder"]
    for file, expected in entry["files"].items():
        path = folder / file
        if not path.is_file():
            raise AssetError(f"shipped policy file missing: {path}")
        if path.stat().st_size != expected["bytes"] or sha256_of(path) != expected["sha256"]:
            raise AssetError(
                f"shipped policy file {path} is corrupt (its size or sha256 is not the manifest's)"
            )
    return folder


def policy_folder(policy: str) -> Path | None:
    """The policy folder ``--policy`` names: a shipped policy's, or an existing folder; None when
    it names a schedule."""
    if policy in _entries():
        return builtin_policy(policy)
    path = Path(policy)
    return path if path.is_dir() else None


def policy_manifest_entry(folder: Path, root: Path, command: str, quality: dict[str, Any]) -> dict[str, Any]:
    """A manifest entry for the policy folder ``folder`` (inside the assets folder ``root``)."""
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
        for p in sorted(folder.iterdir())
        if p.name in ("policy.safetensors", "policy.json")
    }
    where = folder.relative_to(root).as_posix()
    return {"folder": where, "files": files, "command": command, "quality": quality}
