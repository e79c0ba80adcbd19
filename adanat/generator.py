"""The generator protocol: what the sampler needs from a non-autoregressive transformer.

A NAT for :class:`~adanat.sampling.NATSampler` answers one question per step: given the current
token ids of ``B`` rows and their condition, what are the conditional and the unconditional
logits, which features does a policy observe, and what (if anything) does the next step reuse?
:meth:`NATGenerator.guided_forward` runs both guidance branches in ONE batched forward (the
unconditional rows are the same ids with the null condition), so a step costs one call.

How the generator families fit:

* **ENAT** (:class:`~adanat.models.enat.ENAT`, the first implementation): the condition is a
  ``(B,)`` tensor of class ids, the null condition is the class id ``num_classes``; the state is
  the pair of :class:`~adanat.models.enat.ReuseState` (conditional rows, unconditional rows) that
  the next step's forward reuses (``reuses_state`` is True). With ``state=None`` every visible
  token is encoded.
* **U-ViT NATs** (AutoNAT-L, AdaNAT's MUSE-style CC3M model): every step runs the whole
  sequence, so ``reuses_state`` is False and the returned state is None; guidance is the same
  second batch of null-condition rows in the same forward.
* **Text conditions**: the condition is a ``(B, tokens, width)`` tensor of text-encoder hidden
  states instead of ``(B,)`` class ids, and :meth:`NATGenerator.null_condition` returns the
  empty prompt's states expanded to ``B`` rows; ``num_classes`` is None. The sampler only
  concatenates and slices conditions along the row axis, so it works for both kinds unchanged.

The features are float32 ``(B, L, D)``, one vector per token position, whatever the
generator's own layout; ``feature_dim`` is ``D``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor, nn


@dataclass
class GuidedOutput:
    """Both guidance branches of one step.

    :param cond_logits: ``(B, L, K)`` conditional logits; only masked positions are used.
    :param uncond_logits: ``(B, L, K)`` unconditional logits.
    :param raw_features: ``(B, L, D)`` conditional-branch features in the generator's dtype.
    :param state: what the next step's forward may reuse (None for generators without reuse).
    """

    cond_logits: Tensor  # (B, L, K)
    uncond_logits: Tensor  # (B, L, K)
    raw_features: Tensor  # (B, L, D)
    state: Any | None

    @property
    def features(self) -> Tensor:
        """``(B, L, D)`` float32 features, what a policy observes (converted when asked for, so a
        fixed schedule under bfloat16 pays no copy)."""
        return self.raw_features.float()


class ConfigShape:
    """The shape half of the protocol, read from a generator's ``config`` (its ``seq_len``,
    ``grid``, ``mask_id`` and ``width``): a mixin for the generator modules."""

    config: Any

    @property
    def seq_len(self) -> int:
        return self.config.seq_len

    @property
    def grid(self) -> int:
        return self.config.grid

    @property
    def mask_id(self) -> int:
        return self.config.mask_id

    @property
    def feature_dim(self) -> int:
        return self.config.width


class NATGenerator(Protocol):
    """A non-autoregressive token generator as the sampler drives it."""

    @property
    def seq_len(self) -> int:
        """``L`` token positions per image."""
        ...

    @property
    def grid(self) -> int:
        """Side of the square token grid (``grid**2 == seq_len``)."""
        ...

    @property
    def mask_id(self) -> int:
        """The id of a masked position."""
        ...

    @property
    def feature_dim(self) -> int:
        """``D`` of the observed features."""
        ...

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional generator (labels ``0..C-1``); None for text conditions."""
        ...

    @property
    def reuses_state(self) -> bool:
        """Whether :meth:`guided_forward` returns a state the next step can reuse."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The weights (a generator is a torch module; the sampler runs on their device)."""
        ...

    def null_condition(self, cond: Tensor) -> Tensor:
        """The unconditional counterpart of ``cond`` (same rows and shape)."""
        ...

    def guided_forward(self, ids: Tensor, cond: Tensor, state: Any | None = None) -> GuidedOutput:
        """One forward of the conditional and the unconditional rows of ``ids`` ``(B, L)``.

        :param cond: ``(B,)`` class ids or ``(B, tokens, width)`` text states.
        :param state: the previous step's state (None at the first step, or to re-encode).
        """
        ...
