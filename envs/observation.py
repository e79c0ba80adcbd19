"""What the policy observes: the generator's features of the current step and the step index.

Two forms (SB3 keeps observations as numpy arrays on the CPU, so their size is rollout cost):

- ``full``: the conditional branch's features ``(L, D)`` in float32, as the generator made them.
- ``compact`` (default): the features average-pooled 2x2 on the token grid, ``(L / 4, D)``, in
  float16: 8x fewer bytes. ``docs/performance.md`` has the measured rollout overhead of both.

In a text-to-image world either form may also hold ``prompt``, the episode prompt's normalised
pooled text embedding ``(E,)`` in float32 (``prompt_dim = E``; off by default, as in AdaNAT).
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
    :param prompt_dim: ``E`` of the prompt embedding the observation also holds (0: none).
    """

    kind: str
    grid: int
    width: int
    steps: int
    prompt_dim: int = 0

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
        prompt = self.prompt_dim * np.dtype(np.float32).itemsize
        return self.tokens * self.width * np.dtype(self.dtype).itemsize + np.dtype(np.int64).itemsize + prompt

    def space(self) -> spaces.Dict:
        limit = float(np.finfo(self.dtype).max)
        parts: dict[str, spaces.Space] = {
            "features": spaces.Box(-limit, limit, (self.tokens, self.width), dtype=self.dtype),
            "step": spaces.Discrete(self.steps),
        }
        if self.prompt_dim:
            parts["prompt"] = spaces.Box(-1.0, 1.0, (self.prompt_dim,), dtype=np.float32)
        return spaces.Dict(parts)

    def features(self, feat: Tensor) -> Tensor:
        """``(B, L, D)`` generator features -> ``(B, tokens, D)`` in the form's dtype (same device)."""
        if self.kind == "full":
            return feat.float()
        b, _, d = feat.shape
        grid = feat.float().transpose(1, 2).reshape(b, d, self.grid, self.grid)  # (B, D, g, g)
        pooled = F.avg_pool2d(grid, 2)  # (B, D, g/2, g/2)
        limit = float(np.finfo(np.float16).max)
        return pooled.flatten(2).transpose(1, 2).clamp(-limit, limit).half()  # (B, g^2/4, D)

    def numpy(self, feat: Tensor, step: int, prompt: Tensor | None = None) -> dict[str, np.ndarray]:
        """Batched observation dict: ``features`` ``(B, tokens, D)``, ``step`` ``(B,)`` and, with
        a ``prompt_dim``, ``prompt`` ``(B, E)`` (the rows' normalised prompt embeddings)."""
        f = self.features(feat).cpu().numpy()
        out = {"features": f, "step": np.full((f.shape[0],), step, dtype=np.int64)}
        if self.prompt_dim:
            if prompt is None or tuple(prompt.shape) != (f.shape[0], self.prompt_dim):
                raise ValueError(
                    f"the observation holds the prompt embeddings ({f.shape[0]}, {self.prompt_dim})"
                )
            out["prompt"] = prompt.float().clamp(-1, 1).cpu().numpy()
        return out


def step_of(obs: dict[str, Tensor]) -> Tensor:
    """The step index ``(B,)`` from a batched observation as SB3 hands it to a network
    (``Discrete`` spaces arrive one-hot encoded, ``(B, T)`` or ``(B, 1, T)``), or as indices."""
    step = obs["step"]
    flat = step.reshape(step.shape[0], -1)  # (B, T) one-hot or (B, 1) index
    return flat.argmax(dim=-1) if flat.shape[1] > 1 else flat[:, 0].long()
