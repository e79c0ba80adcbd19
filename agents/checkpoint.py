"""A run's checkpoint: written atomically, read back whole and checked before anything uses it.

``RUN_DIR/checkpoint/`` holds ``state.json`` (counters and the run's :class:`PolicyTraining`),
``policy.safetensors`` (the SB3 policy: actor, critic, ``log_std``), ``optimizer.pt``,
``rng.pt`` (the global random states SB3 draws from, the environment's per-row streams and the
labels of the episodes in flight) and, for a learned reward, ``reward.pt``. Torch files are read
with ``weights_only=True`` (no pickle).

:func:`write_checkpoint` writes every file into ``checkpoint.tmp/``, then swaps: ``checkpoint/``
becomes ``checkpoint.old/``, ``checkpoint.tmp/`` becomes ``checkpoint/``, and ``checkpoint.old/``
is removed, so one complete checkpoint is on disk at every moment. :func:`find_checkpoint` reads
``checkpoint/``, and falls back to ``checkpoint.old/`` when ``checkpoint/`` is missing (a crash
between the two renames), incomplete or corrupt, as long as the old one is intact.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from adanat.agents.config import PolicyTraining
from adanat.checkpoints import CheckpointError
from adanat.configs import from_dict
from adanat.errors import first_line

CHECKPOINT, OLD, TMP = "checkpoint", "checkpoint.old", "checkpoint.tmp"
STATE, POLICY, OPTIMIZER, RNG, REWARD = (
    "state.json",
    "policy.safetensors",
    "optimizer.pt",
    "rng.pt",
    "reward.pt",
)
STATE_KEYS = ("num_timesteps", "n_updates", "rollouts", "episodes", "config")
RNG_KEYS = ("torch", "numpy_keys", "numpy_pos", "python", "rows", "labels")
POLICY_KEYS = ("log_std", "action_net.weight", "action_net.bias", "value_net.weight", "value_net.bias")

__all__ = [
    "CHECKPOINT",
    "Checkpoint",
    "CheckpointError",
    "find_checkpoint",
    "global_rng_state",
    "read_checkpoint",
    "run_has_checkpoint",
    "set_global_rng_state",
    "write_checkpoint",
]


@dataclass
class Checkpoint:
    """A checkpoint read back whole (every file parsed and checked)."""

    folder: Path
    state: dict[str, Any]  # state.json
    config: PolicyTraining
    policy: dict[str, Tensor]  # policy.safetensors
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    reward: dict[str, Any] | None  # reward.pt, when the run's reward is learned

    @property
    def rollouts(self) -> int:
        """PPO updates done when it was saved."""
        return int(self.state["rollouts"])

    @property
    def episodes(self) -> int:
        """Episodes done when it was saved."""
        return int(self.state["episodes"])


def _bad(folder: Path, name: str, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint file {folder / name} is {why}")


def _torch_file(folder: Path, name: str) -> Any:
    path = folder / name
    if not path.is_file():
        raise _bad(folder, name, "missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle and unpickling errors, OS errors
        raise _bad(folder, name, f"unreadable ({first_line(e)})") from None


def _state(folder: Path) -> dict[str, Any]:
    path = folder / STATE
    if not path.is_file():
        raise _bad(folder, STATE, "missing")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(folder, STATE, f"unreadable ({first_line(e)})") from None
    if not isinstance(state, dict):
        raise _bad(folder, STATE, "not a JSON object")
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise _bad(folder, STATE, f"missing key(s) {', '.join(missing)}")
    for key in STATE_KEYS[:-1]:
        if not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0:
            raise _bad(folder, STATE, f"malformed: {key} must be an integer >= 0, got {state[key]!r}")
    return state


def _rng(folder: Path) -> dict[str, Any]:
    rng = _torch_file(folder, RNG)
    if not isinstance(rng, dict):
        raise _bad(folder, RNG, "malformed (not a dict)")
    missing = [k for k in RNG_KEYS if k not in rng]
    if missing:
        raise _bad(folder, RNG, f"missing key(s) {', '.join(missing)}")
    ok = (
        isinstance(rng["torch"], Tensor)
        and isinstance(rng["numpy_keys"], Tensor)
        and rng["numpy_keys"].numel() == 624
        and isinstance(rng["numpy_pos"], int)
        and isinstance(rng["python"], list)
        and len(rng["python"]) == 625
        and isinstance(rng["rows"], list)
        and all(isinstance(r, Tensor) for r in rng["rows"])
        and isinstance(rng["labels"], Tensor)
        and rng["labels"].shape == (len(rng["rows"]),)
    )
    if not ok:
        raise _bad(folder, RNG, "malformed (random states of the wrong type or size)")
    return rng


def _policy(folder: Path) -> dict[str, Tensor]:
    path = folder / POLICY
    if not path.is_file():
        raise _bad(folder, POLICY, "missing")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _bad(folder, POLICY, f"unreadable ({first_line(e)})") from None
    missing = [k for k in POLICY_KEYS if k not in tensors]
    if missing:
        raise _bad(folder, POLICY, f"missing tensor(s) {', '.join(missing)}")
    if not all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()):
        raise _bad(folder, POLICY, "corrupt (non-finite values)")
    return tensors


def read_checkpoint(folder: Path) -> Checkpoint:
    """Read and check every file of the checkpoint in ``folder``.

    :raises CheckpointError: a file is missing, unreadable or malformed (one line naming it).
    """
    folder = Path(folder)
    state = _state(folder)
    try:
        config = from_dict(PolicyTraining, state["config"])
    except ValueError as e:
        raise _bad(folder, STATE, f"malformed: {e}") from None
    policy = _policy(folder)
    optimizer = _torch_file(folder, OPTIMIZER)
    if not isinstance(optimizer, dict) or not {"state", "param_groups"} <= set(optimizer):
        raise _bad(folder, OPTIMIZER, "malformed (not an optimizer state dict)")
    rng = _rng(folder)
    reward = _torch_file(folder, REWARD) if (folder / REWARD).exists() else None
    if reward is not None and not isinstance(reward, dict):
        raise _bad(folder, REWARD, "malformed (not a state dict)")
    return Checkpoint(folder, state, config, policy, optimizer, rng, reward)


def run_has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint folder (complete or not)."""
    return any((Path(run_dir) / name).is_dir() for name in (CHECKPOINT, OLD))


def find_checkpoint(run_dir: Path) -> Checkpoint:
    """The run's intact checkpoint: ``checkpoint/``, else ``checkpoint.old/`` (a crash during
    the swap, or a damaged ``checkpoint/``).

    :raises CheckpointError: neither is intact (the message names what is wrong with
        ``checkpoint/``), or the folder holds no checkpoint.
    """
    run_dir = Path(run_dir)
    errors: list[CheckpointError] = []
    for name in (CHECKPOINT, OLD):
        if (run_dir / name).is_dir():
            try:
                return read_checkpoint(run_dir / name)
            except CheckpointError as e:
                errors.append(e)
    if errors:
        raise errors[0]
    raise CheckpointError(f"{run_dir} holds no checkpoint to resume (no {CHECKPOINT}/{STATE})")


def write_checkpoint(run_dir: Path, files: Mapping[str, Callable[[Path], None]]) -> Path:
    """Write a checkpoint atomically: each ``files[name](path)`` writes one file into
    ``checkpoint.tmp/``, then the folders are swapped. Returns ``RUN_DIR/checkpoint``."""
    run_dir = Path(run_dir)
    final, tmp, old = run_dir / CHECKPOINT, run_dir / TMP, run_dir / OLD
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, write in files.items():
        write(tmp / name)
    if final.exists():  # keep one complete checkpoint on disk at every moment
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def global_rng_state() -> dict[str, Any]:
    """The global random states SB3 draws from (torch, CUDA, numpy, Python), as plain tensors
    and lists (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),  # type: ignore[index]
        "numpy_pos": int(np_state[2]),  # type: ignore[index]
        "python": list(random.getstate()[1]),
    }


def set_global_rng_state(rng: Mapping[str, Any]) -> None:
    """Put back what :func:`global_rng_state` saved (CUDA states only where CUDA is here)."""
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(("MT19937", rng["numpy_keys"].numpy().astype(np.uint32), rng["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(rng["python"]), None))
