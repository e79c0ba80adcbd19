"""From policy actions to step controls: a residual on a base schedule in pre-activation space.

A policy acts in ``[-1, 1]^4`` (``CONTROL_NAMES`` order). Action ``a`` moves the base value ``b``
of each control through the control's activation ``f``: the mask ratio through the sigmoid
(``sigmoid(logit(b) + s a)``), the two temperatures and the guidance scale through the softplus
(``softplus(softplus^-1(b) + s a)``), with ``s`` the action scale. The result is written as
``b + (f(z + s a) - f(z))``, so a zero action returns the base value bit for bit. For the
softplus controls ``z`` is taken at ``max(b, 0.5)``: published schedules use values such as
``1e-4`` or 0 (no guidance at the first steps), where the softplus is flat and no action could
move the control; the result is kept >= 0 (or >= ``b`` where a base is negative).

:class:`ReleaseActionMapping` is AdaNAT's own mapping, for a policy fine-tuned from its release
(``adanat train --init-policy``): raw pre-activation actions in the release's order (mask ratio,
re-masking temperature, sampling temperature, guidance) through the sigmoid and the softplus, on
no base schedule (with ``--heu 1``, on its hand-made one), with AdaNAT's token-selection rule.
Both mappings answer the same questions (:class:`ActionMap`), and
:func:`adanat.envs.spec.action_mapping` picks one from the environment's settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor

from adanat.sampling import Controls
from adanat.schedules import Schedule

ACTIVATIONS: tuple[str, ...] = ("sigmoid", "softplus", "softplus", "softplus")  # per control
_EPS = 1e-6
SOFTPLUS_PIVOT_FLOOR = 0.5


def _inverse(kind: str, x: Tensor) -> Tensor:
    if kind == "sigmoid":
        x = x.clamp(_EPS, 1 - _EPS)
        return torch.log(x) - torch.log1p(-x)
    x = x.clamp_min(_EPS)
    return x + torch.log(-torch.expm1(-x))  # softplus^-1, stable for large x


def _forward(kind: str, z: Tensor) -> Tensor:
    return torch.sigmoid(z) if kind == "sigmoid" else torch.nn.functional.softplus(z)


@dataclass(frozen=True)
class ActionMapping:
    """Maps actions ``(B, 4)`` in ``[-1, 1]`` at one step to :class:`Controls`.

    :param base: the base schedule (a zero action reproduces it exactly).
    :param scale: how far a unit action moves each control in pre-activation space (no default
        here: an environment's comes from :attr:`adanat.envs.spec.EnvConfig.action_scale`).
    """

    base: Schedule
    scale: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"action scale must be positive, got {self.scale}")

    @property
    def steps(self) -> int:
        return self.base.steps

    def action_space(self) -> spaces.Box:
        """``Box(-1, 1, (4,))``."""
        return spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)

    def controls(self, actions: Tensor, step: int) -> Controls:
        """Controls of ``step`` for ``actions`` ``(B, 4)`` (clipped to ``[-1, 1]``)."""
        a = actions.double().clamp(-1, 1)  # (B, 4)
        base = self.base.tensor(actions.device).double()[step]  # (4,)
        out = []
        for j, kind in enumerate(ACTIVATIONS):
            b = base[j].expand(a.shape[0])  # (B,)
            pivot = b if kind == "sigmoid" else b.clamp_min(SOFTPLUS_PIVOT_FLOOR)  # (B,)
            z = _inverse(kind, pivot)  # (B,)
            delta = _forward(kind, z + self.scale * a[:, j]) - _forward(kind, z)  # (B,)
            value = b + delta  # (B,) == b exactly where a == 0
            if kind == "sigmoid":
                out.append(value.clamp(0, 1 - _EPS))
            else:
                out.append(torch.maximum(value, b.clamp_max(0)))
        return Controls(*(v.float() for v in out), rule=self.base.rule)  # the base schedule's rule

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": "residual-preactivation",
            "activations": list(ACTIVATIONS),
            "scale": self.scale,
            "softplus_pivot_floor": SOFTPLUS_PIVOT_FLOOR,
        }


class ActionMap(Protocol):
    """What the environment, the evaluation and the export ask of an action mapping."""

    @property
    def base(self) -> Schedule:
        """The base schedule (for :class:`ReleaseActionMapping`, the one evaluations compare with)."""
        ...

    @property
    def steps(self) -> int: ...

    def action_space(self) -> spaces.Box: ...

    def controls(self, actions: Tensor, step: int) -> Controls: ...

    def to_dict(self) -> dict[str, object]: ...


# -- AdaNAT's own mapping ---------------------------------------------------------------------

RELEASE_ORDER: tuple[str, ...] = ("mask_ratio", "remask_temp", "sampling_temp", "guidance")
# Raw actions are unbounded in the release; the environment's box is +-10: sigmoid(+-10) spans mask
# ratios 4.5e-5 .. 0.99995 (every masked count from 0 to L - 1 for L up to 22,000 tokens) and
# softplus(+-10) temperatures and guidance 4.5e-5 .. 10, beyond any schedule the releases use, so
# only exploration noise far out is clipped (SB3 clips what it sends, not what it learns from).
RELEASE_ACTION_BOUND = 10.0


def heuristic_preactivations(step: int, steps: int) -> Tensor:
    """The hand-made schedule the release's ``--heu 1`` adds actions to, in pre-activation space
    and the release's order (ratio logit, re-masking, sampling, guidance softplus^-1), ``(4,)``."""
    r = (step + 1 - 1e-3) / steps
    ratio = torch.tensor(math.cos(math.pi / 2 * r))
    inverse_softplus = lambda y: y + torch.log(-torch.expm1(-y))  # noqa: E731
    return torch.stack(
        [
            torch.log(ratio) - torch.log1p(-ratio),
            inverse_softplus(torch.tensor(1 - r)),
            inverse_softplus(torch.tensor(1.0)),
            inverse_softplus(torch.tensor((step + 1e-3) / steps)),
        ]
    )  # (4,)


def release_controls(raw: Tensor, step: int, steps: int, heuristic: bool) -> Controls:
    """Controls of AdaNAT's raw actions ``(B, 4)`` (release order: ratio, re-masking temperature,
    sampling temperature, guidance): sigmoid of the first, softplus of the others, after adding
    :func:`heuristic_preactivations` when ``heuristic``; AdaNAT's token-selection rule."""
    a = raw.float()  # (B, 4)
    if heuristic:
        a = a + heuristic_preactivations(step, steps).to(a)  # (B, 4)
    ratio, remask, sampling, guidance = a.unbind(dim=1)  # (B,) each
    return Controls(
        torch.sigmoid(ratio), F.softplus(sampling), F.softplus(remask), F.softplus(guidance), rule="adanat"
    )


@dataclass(frozen=True)
class ReleaseActionMapping:
    """AdaNAT's action mapping: raw actions ``(B, 4)`` (clipped to ``+-RELEASE_ACTION_BOUND``)
    through :func:`release_controls`.

    :param base: the schedule evaluations compare the policy with (the actions do not move it);
        its ``steps`` are the episode's.
    :param heuristic: add the actions to the release's hand-made schedule first (its ``--heu 1``).
    """

    base: Schedule
    heuristic: bool

    @property
    def steps(self) -> int:
        return self.base.steps

    def action_space(self) -> spaces.Box:
        """``Box(-RELEASE_ACTION_BOUND, RELEASE_ACTION_BOUND, (4,))``."""
        b = RELEASE_ACTION_BOUND
        return spaces.Box(-b, b, (4,), dtype=np.float32)

    def controls(self, actions: Tensor, step: int) -> Controls:
        """Controls of ``step`` for raw ``actions`` ``(B, 4)`` in the release's order."""
        a = actions.float().clamp(-RELEASE_ACTION_BOUND, RELEASE_ACTION_BOUND)  # (B, 4)
        return release_controls(a, step, self.steps, self.heuristic)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": "adanat-release",
            "order": list(RELEASE_ORDER),
            "activations": ["sigmoid", "softplus", "softplus", "softplus"],
            "heuristic": self.heuristic,
            "bound": RELEASE_ACTION_BOUND,
        }
