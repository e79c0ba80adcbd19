"""AutoNAT's generation-strategy search: SGD on FID with forward finite differences.

The searched parameters of a ``T``-step schedule are ``T-1`` mask ratios, ``T-1`` re-masking
temperatures (the last step reveals everything, so it has neither), ``T`` sampling temperatures
and ``T`` guidance scales, starting from the cosine schedule. One update measures FID at the
current point and at the point with one parameter raised by its probe size ``delta`` (every
parameter in turn), takes the forward differences as the gradient, and makes an SGD step with
momentum; mask ratios are clamped to ``[0, 0.99]`` and the other controls to ``>= 1e-4``. A mask
ratio within ``delta`` of 0.99 is probed downwards (a backward difference), since a ratio of 1 or
more is not a schedule. Every
FID of a search uses the same seed (common random numbers), so that differences measure the
schedule rather than the sampling noise.

AutoNAT probes mask ratios with ``+0.01``; with ``L`` tokens a ratio change below ``1/L`` may not
change a single masked count (``floor(L r)``), so the ratio probe is ``max(0.01, 1/L)``.

The search state (parameters, velocity, the FIDs measured so far in the current update, the log)
is written atomically after every FID, so an interrupted search resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adanat.outputs import write_text_atomic
from adanat.precision import check_precision
from adanat.schedules import SELECTION_RULES, Schedule, cosine_schedule

RATIO_MAX = 0.99
FLOOR = 1e-4
GROUPS = ("mask_ratio", "remask_temp", "sampling_temp", "guidance")


class SearchError(ValueError):
    """A search folder or setting that cannot be used."""


@dataclass(frozen=True)
class SearchConfig:
    """Settings of one search (stored with its state; a resumed search must match them).

    The SGD steps are per unit of FID gradient. On ``shapes`` (L=64) one token more or fewer
    revealed at the first step moves FID by about 1, a gradient near 100 per unit of ratio: at
    2e-3 / 2e-2 the first ratio jumped by up to 0.2 (13 tokens) per update and FID oscillated
    (10.1, 6.6, 8.0, 14.5, 9.1 over five updates at T=4); the defaults keep a ratio's step to a few
    tokens.

    :param steps: ``T`` of the searched schedule (>= 2).
    :param updates: SGD updates.
    :param samples: generated images per FID.
    :param seed: the seed of every FID of the search (evaluation uses other seeds).
    :param lr_ratio: SGD step for mask ratios.
    :param lr_other: SGD step for temperatures and guidance.
    :param delta_ratio: probe of a mask ratio (raised to 1/L by the search).
    :param delta_other: probe of a temperature or guidance scale.
    :param momentum: SGD momentum.
    :param name: name of the searched schedule.
    :param precision: the sampler's precision while searching (FIDs depend on it).
    :param reuse: the sampler's feature reuse while searching.
    :param rule: the token-selection rule the schedule is searched for and keeps: ``enat`` (ours),
        ``autonat`` or ``adanat`` (the releases', ``adanat.sampling.select_tokens``); AutoNAT's
        own searches ran with ``autonat``.
    :param prompts_sha256: a text-to-image search: the digest of its prompt list (the FIDs'
        images cycle over it), so a folder is continued with the same prompts only.
    """

    steps: int = 8
    updates: int = 10
    samples: int = 1000
    seed: int = 1
    lr_ratio: float = 5e-4
    lr_other: float = 1e-2
    delta_ratio: float = 0.01
    delta_other: float = 0.1
    momentum: float = 0.5
    name: str = "autonat"
    precision: str = "float32"
    reuse: bool = True
    rule: str = "enat"
    prompts_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.steps < 2 or self.updates < 1 or self.samples < 2 or self.seed < 0:
            raise SearchError("steps must be >= 2, updates >= 1, samples >= 2 and the seed >= 0")
        rates = (self.lr_ratio, self.lr_other, self.momentum)
        if not all(math.isfinite(v) and v >= 0 for v in rates):
            raise SearchError("learning rates and momentum must be finite and >= 0")
        if not all(math.isfinite(v) and v > 0 for v in (self.delta_ratio, self.delta_other)):
            raise SearchError("probes must be finite and > 0")
        try:
            check_precision(self.precision)
        except ValueError as e:
            raise SearchError(str(e)) from None
        if self.rule not in SELECTION_RULES:
            raise SearchError(f"unknown token-selection rule {self.rule!r} ({', '.join(SELECTION_RULES)})")


def parameter_names(steps: int) -> list[str]:
    """``group[k]`` names of the searched parameters, in vector order."""
    sizes = {"mask_ratio": steps - 1, "remask_temp": steps - 1, "sampling_temp": steps, "guidance": steps}
    return [f"{g}[{k}]" for g in GROUPS for k in range(sizes[g])]


def schedule_to_vector(schedule: Schedule) -> list[float]:
    t = schedule.steps
    return [
        *schedule.mask_ratio[: t - 1],
        *schedule.remask_temp[: t - 1],
        *schedule.sampling_temp,
        *schedule.guidance,
    ]


def vector_to_schedule(theta: list[float], steps: int, name: str, rule: str = "enat") -> Schedule:
    """The schedule of a parameter vector (the last step's ratio and re-masking noise are 0),
    for token-selection rule ``rule``."""
    t = steps
    r, m = theta[: t - 1], theta[t - 1 : 2 * t - 2]
    s, g = theta[2 * t - 2 : 3 * t - 2], theta[3 * t - 2 :]
    return Schedule(
        name=name,
        mask_ratio=(*r, 0.0),
        remask_temp=(*m, 0.0),
        sampling_temp=tuple(s),
        guidance=tuple(g),
        rule=rule,
    )


def clamp(theta: list[float], steps: int) -> list[float]:
    """Mask ratios into ``[0, 0.99]``, everything else to ``>= 1e-4``."""
    n_ratio = steps - 1
    return [min(max(v, 0.0), RATIO_MAX) if i < n_ratio else max(v, FLOOR) for i, v in enumerate(theta)]


def probe_sizes(cfg: SearchConfig, tokens: int) -> list[float]:
    n_ratio = cfg.steps - 1
    ratio = max(cfg.delta_ratio, 1.0 / tokens)
    return [ratio if i < n_ratio else cfg.delta_other for i in range(4 * cfg.steps - 2)]


def probe_steps(theta: list[float], deltas: list[float], steps: int) -> list[float]:
    """Signed probe of each parameter: ``+delta`` (forward difference), or ``-delta`` (backward)
    where the forward probe would leave the valid range (a mask ratio already near 0.99)."""
    n_ratio = steps - 1
    return [
        -d if i < n_ratio and p + d > RATIO_MAX else d
        for i, (p, d) in enumerate(zip(theta, deltas, strict=True))
    ]


@dataclass
class SearchState:
    """Everything needed to continue a search."""

    config: dict[str, Any]
    theta: list[float]
    velocity: list[float]
    update: int = 0
    base_fid: float | None = None  # FID at ``theta`` in the current update
    probes: dict[str, float] = field(default_factory=dict)  # parameter index -> FID, current update
    log: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # {"fid", "update", "theta"}: lowest FID measured at a base point

    def save(self, folder: Path) -> None:
        write_text_atomic(folder / "state.json", json.dumps(asdict(self), indent=1) + "\n")

    @staticmethod
    def load(folder: Path) -> SearchState | None:
        path = folder / "state.json"
        if not path.is_file():
            return None
        try:
            state = SearchState(**json.loads(path.read_text(encoding="utf-8")))
            SearchConfig(**state.config)
            n = len(parameter_names(int(state.config["steps"])))
            if len(state.theta) != n or len(state.velocity) != n:
                raise ValueError(f"{n} parameters expected")
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValueError) as e:
            raise SearchError(
                f"{path} is not a search state ({e}); remove the folder to start over"
            ) from None
        return state


def start_state(cfg: SearchConfig, folder: Path) -> SearchState:
    """The saved state of ``folder`` (its config must equal ``cfg``), or a fresh one at cosine."""
    state = SearchState.load(folder)
    if state is not None:
        saved = {k: v for k, v in asdict(SearchConfig(**state.config)).items() if k != "updates"}
        wanted = {k: v for k, v in asdict(cfg).items() if k != "updates"}
        if saved != wanted:
            diff = sorted(k for k in wanted if saved.get(k) != wanted[k])
            raise SearchError(f"{folder} holds a search with other settings ({', '.join(diff)})")
        state.config = asdict(cfg)  # more updates may be asked for
        return state
    theta = schedule_to_vector(cosine_schedule(cfg.steps))
    return SearchState(config=asdict(cfg), theta=clamp(theta, cfg.steps), velocity=[0.0] * len(theta))


def run_search(
    cfg: SearchConfig,
    folder: Path,
    fid: Callable[[Schedule], float],
    tokens: int,
    on_fid: Callable[[str, float], None] | None = None,
) -> SearchState:
    """Run (or continue) a search in ``folder`` until ``cfg.updates`` updates are done.

    :param fid: FID of a schedule (the same seed and reference every call).
    :param tokens: tokens per image ``L`` (sets the smallest useful mask-ratio probe).
    :param on_fid: called with ``(what, FID)`` after every measurement (progress).
    """
    folder.mkdir(parents=True, exist_ok=True)
    state = start_state(cfg, folder)
    deltas = probe_sizes(cfg, tokens)
    names = parameter_names(cfg.steps)
    n_ratio = cfg.steps - 1

    def measure(theta: list[float], what: str) -> float:
        value = fid(vector_to_schedule(theta, cfg.steps, cfg.name, cfg.rule))
        if not math.isfinite(value):
            raise SearchError(f"FID is not finite at {what}")
        if on_fid is not None:
            on_fid(what, value)
        return value

    while state.update < cfg.updates:
        t0 = time.perf_counter()
        if state.base_fid is None:
            state.base_fid = measure(state.theta, f"update {state.update}: base")
            if state.best is None or state.base_fid < state.best["fid"]:
                state.best = {"fid": state.base_fid, "update": state.update, "theta": list(state.theta)}
            state.save(folder)
        signed = probe_steps(state.theta, deltas, cfg.steps)
        for i, name in enumerate(names):
            if str(i) in state.probes:
                continue
            probe = list(state.theta)
            probe[i] += signed[i]
            state.probes[str(i)] = measure(probe, f"update {state.update}: {name}")
            state.save(folder)
        grad = [(state.probes[str(i)] - state.base_fid) / signed[i] for i in range(len(names))]
        state.velocity = [cfg.momentum * v + g for v, g in zip(state.velocity, grad, strict=True)]
        lrs = [cfg.lr_ratio if i < n_ratio else cfg.lr_other for i in range(len(names))]
        theta = [p - lr * v for p, lr, v in zip(state.theta, lrs, state.velocity, strict=True)]
        state.log.append(
            {
                "update": state.update,
                "fid": state.base_fid,
                "grad_norm": math.sqrt(sum(g * g for g in grad)),
                "seconds": round(time.perf_counter() - t0, 2),
                "theta": list(state.theta),
            }
        )
        state.theta = clamp(theta, cfg.steps)
        state.update += 1
        state.base_fid, state.probes = None, {}
        state.save(folder)
    return state


def write_results(state: SearchState, folder: Path, source: str) -> tuple[Path, Path]:
    """``schedule.json`` (the lowest-FID base point of the search, as a fixed schedule) and
    ``log.json`` (FID per update); returns their paths."""
    cfg = SearchConfig(**state.config)
    theta = state.best["theta"] if state.best is not None else state.theta
    schedule = vector_to_schedule(theta, cfg.steps, cfg.name, cfg.rule)
    data = {**schedule.to_dict(), "source": source}
    if state.best is not None:
        data["search"] = {"fid": state.best["fid"], "update": state.best["update"], "seed": cfg.seed}
    sched_path, log_path = folder / "schedule.json", folder / "log.json"
    sched_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    log = {
        "config": state.config,
        "updates": [{k: e[k] for k in ("update", "fid", "grad_norm", "seconds")} for e in state.log],
    }
    log_path.write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    return sched_path, log_path
