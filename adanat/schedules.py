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
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch

CONTROL_NAMES: tuple[str, ...] = ("mask_ratio", "sampling_temp", "remask_temp", "guidance")
SELECTION_RULES: tuple[str, ...] = ("enat", "autonat", "adanat")
"""How a step's mask ratio becomes the tokens kept masked (part of a schedule's meaning):
``enat`` (ours, ENAT's sampler): the ``floor(L r)`` least confident, at most (masked - 1), ties by
position; ``autonat`` (AutoNAT's release): ``max(1, min(masked - 1, floor(L r)))``, every token at
or below that cut-off; ``adanat`` (AdaNAT's release): ``min(floor(L r), L - 1)``, every token
strictly below the next one's confidence."""
MAX_TEMPERATURE = 1e3  # above this a temperature is no schedule but a typo (1e38 was once accepted)
MAX_GUIDANCE = 100.0  # published schedules use at most about 10
_KEYS = {
    "fixed": {"name", "kind", "steps", "source", "search", "rule", *CONTROL_NAMES},
    "cosine": {"name", "kind", "source", "rule", "remask_temp", "sampling_temp", "guidance"},
    "enat": {"name", "kind", "source", "rule", "variants"},
}


class ScheduleError(ValueError):
    """A schedule that cannot be built, read, or used with the requested number of steps."""


@dataclass(frozen=True)
class Schedule:
    """Per-step controls for ``T`` steps, each a tuple of ``T`` floats, and the token-selection
    rule they were made for (:data:`SELECTION_RULES`)."""

    name: str
    mask_ratio: tuple[float, ...]
    sampling_temp: tuple[float, ...]
    remask_temp: tuple[float, ...]
    guidance: tuple[float, ...]
    rule: str = "enat"

    def __post_init__(self) -> None:
        if self.rule not in SELECTION_RULES:
            raise ScheduleError(
                f"schedule {self.name!r}: unknown rule {self.rule!r} ({', '.join(SELECTION_RULES)})"
            )
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
        if any(not 0 < t <= MAX_TEMPERATURE for t in self.sampling_temp):
            raise ScheduleError(f"schedule {self.name!r}: sampling_temp must lie in (0, {MAX_TEMPERATURE:g}]")
        if any(not 0 <= t <= MAX_TEMPERATURE for t in self.remask_temp):
            raise ScheduleError(f"schedule {self.name!r}: remask_temp must lie in [0, {MAX_TEMPERATURE:g}]")
        if any(not 0 <= w <= MAX_GUIDANCE for w in self.guidance):
            raise ScheduleError(f"schedule {self.name!r}: guidance must lie in [0, {MAX_GUIDANCE:g}]")

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
            "rule": self.rule,
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
    if kind not in _KEYS:
        raise ScheduleError(f"schedule {name!r}: unknown kind {kind!r} (fixed, cosine, enat)")
    unknown = sorted(set(data) - _KEYS[kind])
    if unknown:
        raise ScheduleError(f"schedule {name!r}: unknown key {unknown[0]!r} for kind {kind!r}")
    if kind == "fixed":
        missing = [f for f in CONTROL_NAMES if f not in data]
        if missing:
            raise ScheduleError(f"schedule {name!r}: missing field {missing[0]!r}")
        values = {f: _numbers(data[f], f, name) for f in CONTROL_NAMES}
        t = data.get("steps", len(values["sampling_temp"]))
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ScheduleError(f"schedule {name!r}: steps must be a whole number >= 1, got {t!r}")
        if steps is not None and steps != t:
            raise ScheduleError(f"schedule {name!r} is defined for {t} steps only, not {steps}")
        for f in ("mask_ratio", "remask_temp"):
            if len(values[f]) == t - 1:
                values[f].append(0.0)
        return Schedule(name=name, **{f: tuple(v) for f, v in values.items()}, rule=_rule(data, name))
    if steps is None or steps < 1:
        raise ScheduleError(f"schedule {name!r} needs a number of steps >= 1")
    params = {k: _number(data[k], k, name) for k in ("remask_temp", "sampling_temp", "guidance") if k in data}
    if kind == "enat":
        variants = data.get("variants", {})
        if variant not in variants:
            raise ScheduleError(f"schedule {name!r} has no variant {variant!r}")
        setting = variants[variant]
        if not isinstance(setting, dict) or set(setting) - {"remask_temp", "sampling_temp", "guidance"}:
            raise ScheduleError(f"schedule {name!r}: variant {variant!r} is malformed")
        schedule = enat_schedule(steps, **{k: _number(v, k, name) for k, v in setting.items()})
    else:
        schedule = cosine_schedule(steps, **params)
    return replace(schedule, rule=_rule(data, name))


def _rule(data: dict[str, Any], name: str) -> str:
    rule = data.get("rule", "enat")
    if rule not in SELECTION_RULES:
        raise ScheduleError(f"schedule {name!r}: unknown rule {rule!r} ({', '.join(SELECTION_RULES)})")
    return str(rule)


def _number(value: Any, field: str, name: str) -> float:
    """A JSON number (not a string, null or boolean)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScheduleError(f"schedule {name!r}: {field} must be a number, got {value!r}")
    return float(value)


def _numbers(values: Any, field: str, name: str) -> list[float]:
    if not isinstance(values, list):
        raise ScheduleError(f"schedule {name!r}: {field} must be a list of numbers")
    return [_number(v, field, name) for v in values]


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
