"""Generation schedules: per-step values of the four NAT controls, stored as JSON.

Step ``k`` runs ``0..T-1``. ``mask_ratio[k]`` is the fraction of tokens still masked after step
``k`` and ``remask_temp[k]`` scales the Gumbel noise used to choose them; both are 0 at the last
step, which reveals every token. ``sampling_temp[k]`` divides the logits before sampling and
``guidance[k]`` is ``w`` in ``cond + w * (cond - uncond)``.

Built-ins live in ``adanat/data/schedules/``: parametric ones (``cosine``, ``enat``) are defined
for any ``T``; searched ones (``autonat-l-t8``) only for the ``T`` they were searched at.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

CONTROL_NAMES: tuple[str, ...] = ("mask_ratio", "sampling_temp", "remask_temp", "guidance")


class ScheduleError(ValueError):
    """A schedule that cannot be built, read, or used with the requested number of steps."""


@dataclass(frozen=True)
class Schedule:
    """Per-step controls for ``T`` steps, each a tuple of ``T`` floats."""

    name: str
    mask_ratio: tuple[float, ...]
    sampling_temp: tuple[float, ...]
    remask_temp: tuple[float, ...]
    guidance: tuple[float, ...]

    def __post_init__(self) -> None:
        steps = len(self.sampling_temp)
        if steps < 1:
            raise ScheduleError(f"schedule {self.name!r} has no steps")
        for field in CONTROL_NAMES:
            values = getattr(self, field)
            if len(values) != steps:
                raise ScheduleError(
                    f"schedule {self.name!r}: {field} has {len(values)} values, expected {steps}"
                )
            if not all(math.isfinite(v) for v in values):
                raise ScheduleError(f"schedule {self.name!r}: {field} has a non-finite value")
        if any(not 0.0 <= r < 1.0 for r in self.mask_ratio):
            raise ScheduleError(f"schedule {self.name!r}: mask_ratio must lie in [0, 1)")
        if self.mask_ratio[-1] != 0.0:
            raise ScheduleError(f"schedule {self.name!r}: the last step must reveal all tokens")
        if any(t <= 0 for t in self.sampling_temp):
            raise ScheduleError(f"schedule {self.name!r}: sampling_temp must be > 0")
        if any(t < 0 for t in self.remask_temp):
            raise ScheduleError(f"schedule {self.name!r}: remask_temp must be >= 0")

    @property
    def steps(self) -> int:
        return len(self.sampling_temp)

    def tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``(T, 4)`` float32 tensor, columns in ``CONTROL_NAMES`` order."""
        cols = [getattr(self, f) for f in CONTROL_NAMES]
        return torch.tensor(cols, dtype=torch.float32, device=device).t().contiguous()

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``T-1`` mask ratios and re-masking temperatures, ``T`` of the others."""
        return {
            "name": self.name,
            "kind": "fixed",
            "steps": self.steps,
            "mask_ratio": list(self.mask_ratio[:-1]),
            "remask_temp": list(self.remask_temp[:-1]),
            "sampling_temp": list(self.sampling_temp),
            "guidance": list(self.guidance),
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def cosine_schedule(
    steps: int, remask_temp: float = 4.5, sampling_temp: float = 1.0, guidance: float = 2.5
) -> Schedule:
    """MaskGIT cosine: ``mask_ratio = cos(pi/2 (k+1)/T)``, re-masking noise annealed linearly
    to zero, constant sampling temperature, guidance rising linearly as ``guidance * k / T``."""
    r = [(k + 1) / steps for k in range(steps)]
    return Schedule(
        name="cosine",
        mask_ratio=_cosine_ratios(steps),
        sampling_temp=tuple(sampling_temp for _ in r),
        remask_temp=tuple(remask_temp * (1 - x) for x in r),
        guidance=tuple(guidance * k / steps for k in range(steps)),
    )


def enat_schedule(
    steps: int, guidance: float = 2.5, remask_temp: float = 1.5, sampling_temp: float = 6.0
) -> Schedule:
    """ENAT's sampler: cosine mask ratios, both temperatures annealed linearly
    (sampling temperature floored at 1e-3), guidance ``guidance * k / T`` (0 at the first step)."""
    r = [(k + 1) / steps for k in range(steps)]
    return Schedule(
        name="enat",
        mask_ratio=_cosine_ratios(steps),
        sampling_temp=tuple(max(sampling_temp * (1 - x), 1e-3) for x in r),
        remask_temp=tuple(remask_temp * (1 - x) for x in r),
        guidance=tuple(guidance * k / steps for k in range(steps)),
    )


def _cosine_ratios(steps: int) -> tuple[float, ...]:
    ratios = [math.cos(math.pi / 2 * (k + 1) / steps) for k in range(steps - 1)]
    return (*ratios, 0.0)


def schedule_from_dict(data: dict[str, Any], steps: int | None = None, variant: str = "in256") -> Schedule:
    """Build a schedule from its JSON form (``kind`` ``fixed``, ``cosine`` or ``enat``).

    :param steps: ``T``; required for parametric kinds, checked against fixed ones.
    :param variant: setting of the ``enat`` kind (``in256``, ``in512``, ...).
    """
    kind = data.get("kind", "fixed")
    name = str(data.get("name", kind))
    if kind == "fixed":
        try:
            t = int(data["steps"]) if "steps" in data else len(data["sampling_temp"])
            values = {f: [float(v) for v in data[f]] for f in CONTROL_NAMES}
        except (KeyError, TypeError, ValueError) as e:
            raise ScheduleError(f"schedule {name!r}: missing or malformed field {e}") from None
        if steps is not None and steps != t:
            raise ScheduleError(f"schedule {name!r} is defined for {t} steps only, not {steps}")
        for f in ("mask_ratio", "remask_temp"):
            if len(values[f]) == t - 1:
                values[f].append(0.0)
        return Schedule(name=name, **{f: tuple(v) for f, v in values.items()})
    if kind not in ("cosine", "enat"):
        raise ScheduleError(f"schedule {name!r}: unknown kind {kind!r}")
    if steps is None or steps < 1:
        raise ScheduleError(f"schedule {name!r} needs a number of steps >= 1")
    params = {k: float(data[k]) for k in ("remask_temp", "sampling_temp", "guidance") if k in data}
    if kind == "enat":
        variants = data.get("variants", {})
        if variant not in variants:
            raise ScheduleError(f"schedule {name!r} has no variant {variant!r}")
        return enat_schedule(steps, **{k: float(v) for k, v in variants[variant].items()})
    return cosine_schedule(steps, **params)


def builtin_schedule_names() -> list[str]:
    folder = resources.files("adanat.data").joinpath("schedules")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_schedule(name_or_path: str | Path, steps: int | None = None, variant: str = "in256") -> Schedule:
    """A built-in schedule by name, or a schedule JSON file by path."""
    key = str(name_or_path)
    if key in builtin_schedule_names():
        text = resources.files("adanat.data").joinpath("schedules", f"{key}.json").read_text("utf-8")
    else:
        path = Path(key)
        if not path.is_file():
            known = ", ".join(builtin_schedule_names())
            raise ScheduleError(f"no built-in schedule or file named {key!r} (built-ins: {known})")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ScheduleError(f"cannot read schedule {key!r}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ScheduleError(f"schedule {key!r} is not a text (JSON) file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScheduleError(f"schedule {key!r} is not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ScheduleError(f"schedule {key!r} must be a JSON object")
    return schedule_from_dict(data, steps=steps, variant=variant)
