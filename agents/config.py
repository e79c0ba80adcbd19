"""The settings of a policy-training run (:class:`PolicyTraining`) and its exploration-std schedule.

A schedule is written ``UPDATE:STD,...`` (``0:0.6,500:0.3``: std 0.6 from PPO update 0, 0.3 from
update 500 on); an update may be a share of the run, ``P%`` (``0:0.6,25%:0.3``), resolved by
:func:`parse_std_schedule` once the run's length is known. A share rounds down to an update; when
that update is already taken by the entry before it (a short run), the share entry moves to the
next free update, so ``0:0.6,25%:0.3`` in a 3-update run is ``((0, 0.6), (1, 0.3))``. Entries
given as plain updates never move: they must rise.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from adanat.agents.extractor import ExtractorConfig
from adanat.envs.spec import EnvConfig

StdSchedule = tuple[tuple[int, float], ...]

__all__ = ["PolicyTraining", "StdSchedule", "check_std_schedule", "parse_std_schedule"]


@dataclass(frozen=True)
class PolicyTraining:
    """PPO settings (AdaNAT's where they carry over: gamma = lambda = 1, clip 0.2, 5 epochs,
    fixed exploration std 0.6 then 0.3 after 500 updates, 5 discriminator updates a round).

    :param env: the environment (world, steps, reward and its options, base schedule).
    :param episodes: total episodes (images) to train on.
    :param num_envs: rows of the generation batch (SB3 sub-environments).
    :param episodes_per_update: episodes per PPO rollout (a multiple of ``num_envs``).
    :param learning_rate: Adam learning rate of actor and critic.
    :param n_epochs: PPO epochs over each rollout.
    :param minibatch: PPO minibatch size in steps.
    :param clip_range: PPO clip range.
    :param vf_coef: value-loss coefficient.
    :param ent_coef: entropy coefficient (0: the std is fixed by the schedule anyway).
    :param max_grad_norm: gradient-norm clip.
    :param std_schedule: exploration std from each PPO update on, ``((update, std), ...)``.
    :param action_cost: reward cost per step of ``mean(action**2)``, the squared distance from
        the base schedule (:class:`~adanat.envs.action_cost.ActionCost`); 0 (AdaNAT) is off.
    :param extractor: the policy network's sizes.
    :param eval_every: PPO updates between evaluations.
    :param eval_episodes: held-out images per evaluation.
    :param eval_seed: seed of the held-out evaluation images.
    :param save_every: PPO updates between checkpoints.
    :param select_fid: images per FID at each evaluation; the policy with the lowest FID so far is
        exported to ``best/`` (AdaNAT's model selection). 0 turns selection off.
    :param select_fid_seed: seed of the FID selection images.
    :param fid_reference: ``fid_stats.npz`` (Inception ``mu``/``sigma``) for ImageNet worlds;
        ``shapes`` uses its ``reference`` split in the metric network's space.
    :param inception: torch-fidelity Inception-v3 weights for ImageNet worlds (default: its cache).
    :param init_policy: start from this AdaNAT-format policy folder (``adanat import-policy``, or
        a run's ``policy/`` trained from one): its actor, and its critic when the folder holds one,
        are the network (instead of ``extractor``), acting with AdaNAT's raw actions
        (``env.actions`` ``adanat`` or ``adanat-heuristic``, as the folder says) on the full
        observation; the generator's feature width and grid and ``T`` must be the policy's.
    :param seed: seed of PPO, the environment's row streams and the discriminator.
    """

    env: EnvConfig = field(default_factory=EnvConfig)
    episodes: int = 16_384
    num_envs: int = 64
    episodes_per_update: int = 128
    learning_rate: float = 3e-4
    n_epochs: int = 5
    minibatch: int = 256
    clip_range: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    max_grad_norm: float = 0.5
    std_schedule: StdSchedule = ((0, 0.6), (500, 0.3))
    action_cost: float = 0.0
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    eval_every: int = 16
    eval_episodes: int = 128
    eval_seed: int = 1_000_000
    save_every: int = 8
    select_fid: int = 0
    select_fid_seed: int = 2_000_000
    fid_reference: str | None = None
    inception: str | None = None
    init_policy: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("episodes", "num_envs", "episodes_per_update", "n_epochs", "minibatch"):
            _at_least(name, getattr(self, name), 1)
        for name in ("eval_every", "eval_episodes", "save_every"):
            _at_least(name, getattr(self, name), 1)
        for name in ("seed", "eval_seed", "select_fid_seed"):
            _at_least(name, getattr(self, name), 0)
        for name in ("learning_rate", "clip_range", "max_grad_norm"):
            _finite(name, getattr(self, name), positive=True)
        for name in ("vf_coef", "ent_coef", "action_cost"):
            _finite(name, getattr(self, name), positive=False)
        check_std_schedule(self.std_schedule)
        if self.select_fid == 1 or self.select_fid < 0:
            raise ValueError(f"select-fid must be 0 (off) or >= 2 images, got {self.select_fid}")
        if self.env.steps < 2:
            raise ValueError(f"steps must be >= 2, got {self.env.steps}")
        release = self.env.actions != "residual"
        if self.init_policy is not None and (not release or self.env.observation != "full"):
            raise ValueError(
                "init-policy acts with AdaNAT's actions on the full observation: env actions 'adanat' "
                "or 'adanat-heuristic' and observation 'full'"
            )
        if self.init_policy is None and release:
            raise ValueError(f"env actions {self.env.actions!r} are an AdaNAT policy's: give init-policy")
        if release and self.action_cost > 0:
            raise ValueError("action-cost is a distance from the base schedule; AdaNAT's actions have none")
        if self.episodes_per_update % self.num_envs:
            raise ValueError(
                f"episodes-per-update ({self.episodes_per_update}) must be a multiple of num-envs "
                f"({self.num_envs})"
            )

    @property
    def n_steps(self) -> int:
        """SB3 ``n_steps`` per sub-environment: a multiple of ``T``."""
        return self.env.steps * self.episodes_per_update // self.num_envs

    @property
    def updates(self) -> int:
        """PPO updates (rollouts) of the whole run."""
        return math.ceil(self.episodes / self.episodes_per_update)


def _flag(name: str) -> str:
    return {"learning_rate": "lr"}.get(name, name.replace("_", "-"))


def _finite(name: str, value: float, positive: bool) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{_flag(name)} must be a finite number, got {value}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{_flag(name)} must be {'> 0' if positive else '>= 0'}, got {value}")


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"{_flag(name)} must be >= {low}, got {value}")


def check_std_schedule(steps: StdSchedule, text: str | None = None) -> None:
    """Refuse a schedule that does not start at update 0, does not rise, or has a std that is not
    a finite number > 0 (``text``: the schedule as the user wrote it, for the message)."""
    if (
        not steps
        or steps[0][0] != 0
        or any(b[0] <= a[0] for a, b in itertools.pairwise(steps))
        or any(not (math.isfinite(std) and std > 0) for _, std in steps)
    ):
        shown = repr(text) if text is not None else str(steps)
        raise ValueError(
            f"action std schedule must start at update 0, rise in updates, have stds > 0: {shown}"
        )


def parse_std_schedule(text: str, updates: int) -> StdSchedule:
    """``"0:0.6,25%:0.3"`` -> ``((0, 0.6), (32, 0.3))`` in a 128-update run: the exploration std
    from each PPO update on, where ``P%`` is that share of the run's ``updates`` (rounded down;
    moved to the next update when the entry before already holds that one). The result is
    checked with :func:`check_std_schedule`, and errors quote ``text``."""
    out: list[tuple[int, float]] = []
    for item in text.split(","):
        at, _, std = item.strip().partition(":")
        try:
            share = float(at[:-1]) / 100 if at.endswith("%") else None
            if share is not None and not 0 <= share <= 1:
                raise ValueError(f"a share of the run must lie in 0%..100%, got {at} in {text!r}")
            if share is None:
                update = int(at)
            else:
                update = int(share * updates)
                if out and update <= out[-1][0]:  # a short run: the next free update
                    update = out[-1][0] + 1
            out.append((update, float(std)))
        except ValueError as e:
            if "share of the run" in str(e):
                raise
            msg = f"expected UPDATE:STD,... such as 0:0.6,500:0.3 or 0:0.6,50%:0.3, got {text!r}"
            raise ValueError(msg) from None
    check_std_schedule(tuple(out), text)
    return tuple(out)
