"""What the policy observes: the generator's features of the current step and the step index.

Two forms (SB3 keeps observations as numpy arrays on the CPU, so their size is rollout cost):

- ``full``: the conditional branch's features ``(L, D)`` in float32, as the generator made them.
- ``compact`` (default): the features average-pooled 2x2 on the token grid, ``(L / 4, D)``, in
  float16: 8x fewer bytes. ``docs/performance.md`` has the measured rollout overhead of both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor

FORMS: tuple[str, ...] = ("compact", "full")


@dataclass(frozen=True)
class ObservationForm:
    """How features become observations.

    :param kind: ``compact`` or ``full``.
    :param grid: side of the generator's token grid (``L = grid**2``).
    :param width: feature width ``D``.
    :param steps: number of generation steps ``T`` (the step index is ``Discrete(T)``).
    """

    kind: str
    grid: int
    width: int
    steps: int

    def __post_init__(self) -> None:
        if self.kind not in FORMS:
            raise ValueError(f"unknown observation form {self.kind!r}; known: {', '.join(FORMS)}")
        if self.kind == "compact" and self.grid % 2:
            raise ValueError(f"the compact form pools 2x2 and needs an even grid, got {self.grid}")

    @property
    def tokens(self) -> int:
        return self.grid**2 if self.kind == "full" else (self.grid // 2) ** 2

    @property
    def dtype(self) -> type[np.floating]:
        return np.float32 if self.kind == "full" else np.float16

    @property
    def bytes_per_observation(self) -> int:
        return self.tokens * self.width * np.dtype(self.dtype).itemsize + np.dtype(np.int64).itemsize

    def space(self) -> spaces.Dict:
        limit = float(np.finfo(self.dtype).max)
        return spaces.Dict(
            {
                "features": spaces.Box(-limit, limit, (self.tokens, self.width), dtype=self.dtype),
                "step": spaces.Discrete(self.steps),
            }
        )

    def features(self, feat: Tensor) -> Tensor:
        """``(B, L, D)`` generator features -> ``(B, tokens, D)`` in the form's dtype (same device)."""
        if self.kind == "full":
            return feat.float()
        b, _, d = feat.shape
        grid = feat.float().transpose(1, 2).reshape(b, d, self.grid, self.grid)  # (B, D, g, g)
        pooled = F.avg_pool2d(grid, 2)  # (B, D, g/2, g/2)
        limit = float(np.finfo(np.float16).max)
        return pooled.flatten(2).transpose(1, 2).clamp(-limit, limit).half()  # (B, g^2/4, D)

    def numpy(self, feat: Tensor, step: int) -> dict[str, np.ndarray]:
        """Batched observation dict: ``features`` ``(B, tokens, D)``, ``step`` ``(B,)``."""
        f = self.features(feat).cpu().numpy()
        return {"features": f, "step": np.full((f.shape[0],), step, dtype=np.int64)}


def step_of(obs: dict[str, Tensor]) -> Tensor:
    """The step index ``(B,)`` from a batched observation as SB3 hands it to a network
    (``Discrete`` spaces arrive one-hot encoded, ``(B, T)`` or ``(B, 1, T)``), or as indices."""
    step = obs["step"]
    flat = step.reshape(step.shape[0], -1)  # (B, T) one-hot or (B, 1) index
    return flat.argmax(dim=-1) if flat.shape[1] > 1 else flat[:, 0].long()
