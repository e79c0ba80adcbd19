"""Prompts as conditions: a prompt set by index, its text states cached, and a text-conditional
generator driven by prompt ids.

Everything downstream of the sampler (the environment's rows, rewards, evaluation, sharding)
passes conditions as ``(B,)`` integer ids. For a class-conditional generator they are class ids;
for a text-conditional one they index a :class:`PromptBank`, and :class:`PromptConditioned`
turns them into the text encoder's hidden states ``(B, 77, width)`` at each forward, with the
empty prompt's states as the null condition of guidance. So a prompt set of ``P`` prompts looks
to the rest of the library like ``P`` classes: episodes draw a prompt id per row, an
evaluation of ``n`` images cycles over the prompts, and a reward looks up the prompt of an id.

Text states are cached per prompt (most recently used kept, up to ``cache_size``), so an
episode's prompt is encoded once however many steps, guidance branches and reward calls use it.
They are computed in float32 outside any autocast, so they do not depend on who asked first. A
cached bigG prompt takes 77 x 1280 x 4 bytes (394 KB): the default 4,096 prompts hold 1.6 GB on the
text encoder's device.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adanat.generator import GuidedOutput
from adanat.text_encoder import TextEncoder


class PromptError(ValueError):
    """Prompts that cannot be used (none given, an empty prompt, an unreadable file)."""


def parse_prompts(text: str) -> list[str]:
    """``--prompts "a red bus,a cat on a sofa"``: comma-separated prompts (a prompt with a comma
    goes in a ``--prompts-file``)."""
    prompts = [p.strip() for p in text.split(",")]
    if not any(prompts):
        raise PromptError("--prompts is empty")
    if not all(prompts):
        raise PromptError(f"--prompts {text!r} holds an empty prompt (two commas in a row?)")
    return prompts


def read_prompts(path: Path) -> list[str]:
    """``--prompts-file``: one prompt per line (UTF-8; blank lines and surrounding spaces dropped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PromptError(f"cannot read --prompts-file {path}: {e}") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise PromptError(f"--prompts-file {path} holds no prompt")
    return prompts


def prompts_digest(prompts: Sequence[str]) -> str:
    """sha256 of a prompt list (what a run's, a search's or an evaluation's prompt ids refer to)."""
    return hashlib.sha256(json.dumps(list(prompts), ensure_ascii=False).encode("utf-8")).hexdigest()


class PromptBank:
    """Prompts by id with their text states, encoded on first use and cached.

    :param encoder: the text encoder (frozen; its device is where the states live).
    :param prompts: prompt ``i`` has id ``i``.
    :param cache_size: prompts whose states are kept (the least recently used goes first).
    """

    def __init__(self, encoder: TextEncoder, prompts: Sequence[str], cache_size: int = 4096) -> None:
        if not prompts:
            raise PromptError("a prompt bank needs at least one prompt")
        self.encoder, self.prompts, self.cache_size = encoder, list(prompts), cache_size
        self._cache: OrderedDict[int, tuple[Tensor, Tensor]] = OrderedDict()
        self._null: Tensor | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def digest(self) -> str:
        """:func:`prompts_digest` of the bank's prompts."""
        return prompts_digest(self.prompts)

    def _states(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        wanted = ids.tolist()
        bad = [i for i in wanted if not 0 <= i < len(self.prompts)]
        if bad:
            raise IndexError(f"prompt id {bad[0]} outside 0..{len(self.prompts) - 1}")
        missing = sorted({i for i in wanted if i not in self._cache})
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            states = self.encoder.encode([self.prompts[i] for i in chunk])
            pooled = torch.nn.functional.normalize(states.pooled, dim=-1)  # (b, E)
            for j, i in enumerate(chunk):  # copies: a view would keep its whole chunk alive
                self._cache[i] = (states.hidden[j].clone(), pooled[j].clone())
        for i in wanted:
            self._cache.move_to_end(i)
        hidden = torch.stack([self._cache[i][0] for i in wanted])  # (B, 77, W)
        pooled = torch.stack([self._cache[i][1] for i in wanted])  # (B, E)
        while len(self._cache) > max(self.cache_size, len(set(wanted))):
            self._cache.popitem(last=False)
        return hidden, pooled

    def hidden(self, ids: Tensor) -> Tensor:
        """``(B, 77, W)`` last hidden states of the prompts of ids ``(B,)`` (what the generator reads)."""
        return self._states(ids)[0].to(ids.device)

    def pooled(self, ids: Tensor) -> Tensor:
        """``(B, E)`` L2-normalised pooled (projected) text embeddings of the prompts of ``ids``
        (what a text-conditioned discriminator reads, as AdaNAT's does)."""
        return self._states(ids)[1].to(ids.device)

    def null_hidden(self) -> Tensor:
        """``(77, W)`` hidden states of the empty prompt (the unconditional context)."""
        if self._null is None:
            self._null = self.encoder.encode([""]).hidden[0]  # (77, W)
        return self._null


def prompt_bank_of(generator: object) -> PromptBank | None:
    """The prompt bank whose ids a generator takes (None for class ids)."""
    return generator.bank if isinstance(generator, PromptConditioned) else None


class PromptConditioned(nn.Module):
    """A text-conditional generator (:class:`~adanat.models.uvit.UViTNAT`) driven by prompt ids
    of a :class:`PromptBank`: a :class:`~adanat.generator.NATGenerator` whose conditions are
    ``(B,)`` ids, whose ``num_classes`` is the number of prompts, and whose null condition is the
    empty prompt."""

    def __init__(self, generator: Any, bank: PromptBank) -> None:
        super().__init__()
        if generator.num_classes is not None:
            raise PromptError("prompts condition a text-conditional generator, not a class-conditional one")
        width = generator.config.clip_dim
        if bank.encoder.width != width:
            raise PromptError(
                f"the text encoder gives states of width {bank.encoder.width}; the generator reads {width}"
            )
        self.generator, self.bank = generator, bank
        generator.set_null_context(bank.null_hidden().to(next(generator.parameters()).device))

    @property
    def config(self) -> Any:
        return self.generator.config

    @property
    def seq_len(self) -> int:
        return self.generator.seq_len

    @property
    def grid(self) -> int:
        return self.generator.grid

    @property
    def mask_id(self) -> int:
        return self.generator.mask_id

    @property
    def feature_dim(self) -> int:
        return self.generator.feature_dim

    @property
    def num_classes(self) -> int:
        """The prompts of the bank stand for classes: ids ``0..P-1``."""
        return len(self.bank)

    @property
    def reuses_state(self) -> bool:
        return self.generator.reuses_state

    def null_condition(self, cond: Tensor) -> Tensor:
        """The unconditional context of prompt ids ``(B,)``: the empty prompt's states ``(B, 77, W)``
        (there is no null prompt id; guidance runs inside :meth:`guided_forward`)."""
        null = self.bank.null_hidden().to(cond.device)  # (77, W)
        return null.expand(cond.shape[0], *null.shape)  # (B, 77, W)

    def guided_forward(self, ids: Tensor, cond: Tensor, state: object | None = None) -> GuidedOutput:
        """The generator's guided forward of ``ids`` ``(B, L)`` with the prompts of ``cond`` ``(B,)``."""
        return self.generator.guided_forward(ids, self.bank.hidden(cond), state)
