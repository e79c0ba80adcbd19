"""The reward protocol: final images and their labels in, one number per image out."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from adanat.team import TeamRows


@runtime_checkable
class Reward(Protocol):
    """Scores finished images: ``(images (B, 3, H, W) in [0, 1], labels (B,)) -> (B,)``."""

    name: str

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor: ...


@runtime_checkable
class LearnedReward(Reward, Protocol):
    """A reward that learns during policy training (a discriminator).

    ``update`` is called between rollouts with the policy's latest finished images (under
    torchrun: this process's share, with ``rows`` saying where the others are); the reward draws
    its own real images. Its state is saved with the run.
    """

    def update(self, fake: Tensor, labels: Tensor, rows: TeamRows | None = None) -> dict[str, float]: ...

    def check_team(self, processes: int, rows: int, episodes: int) -> None:
        """Raise ``ValueError`` if ``processes`` holding ``rows`` rows each (``episodes`` a
        rollout) cannot train this reward as one process would."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
