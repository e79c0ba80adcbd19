"""From policy actions to step controls: a residual on a base schedule in pre-activation space.

A policy acts in ``[-1, 1]^4`` (``CONTROL_NAMES`` order). Action ``a`` moves the base value ``b``
of each control through the control's activation ``f``: the mask ratio through the sigmoid
(``sigmoid(logit(b) + s a)``), the two temperatures and the guidance scale through the softplus
(``softplus(softplus^-1(b) + s a)``), with ``s`` the action scale. The result is written as
``b + (f(z + s a) - f(z))``, so a zero action returns the base value bit for bit. For the
softplus controls ``z`` is taken at ``max(b, 0.5)``: published schedules use values such as
``1e-4`` or 0 (no guidance at the first steps), where the softplus is flat and no action could
move the control; the result is kept >= 0 (or >= ``b`` where a base is negative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
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
