"""The U-ViT NAT of AutoNAT and AdaNAT (the MUSE-style generator of their releases).

The module reproduces the official architecture under the official parameter names, so the
released ``nnet_ema.pth`` state dicts (AutoNAT-L ImageNet-256, AdaNAT's CC3M text-to-image model)
load with ``strict=True``:

* image tokens: word table (``K+1`` rows, mask id ``K``) + learned positions, LayerNorm, dropout;
* context tokens prepended to the sequence: one class token (its own table, a one-row position
  table and a LayerNorm) or ``Linear(clip_dim, D)`` of every text hidden state;
* pre-norm transformer blocks (attention with one bias-free ``qkv``, exact-GELU MLP) with U-Net
  long skips: ``depth // 2`` in-blocks whose outputs are kept, a mid block, ``depth // 2``
  out-blocks that first merge ``[x ; skip]`` with ``skip_linear``, skips taken last in first out;
* final LayerNorm (``feat``: the image tokens' features after it), then the tied token head.

Every token attends to every token (masked ones included), so rows with different numbers of
masked tokens need no special care, and there is no reuse between steps: each step runs the
whole sequence. It implements :class:`adanat.generator.NATGenerator` with ``reuses_state`` False.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adanat.generator import ConfigShape, GuidedOutput
from adanat.models.enat import MlmHead, Mlp, TokenEmbedding


@dataclass(frozen=True)
class UViTConfig:
    """Architecture of a U-ViT NAT.

    :param grid: side of the token grid (sequence length ``grid**2``; the official ``img_size``).
    :param width: hidden size ``D`` (``embed_dim``).
    :param depth: in-blocks plus out-blocks (``depth // 2`` each), besides the mid block.
    :param heads: attention heads.
    :param codebook_size: ``K`` token ids; the mask id is ``K``.
    :param num_classes: ``C`` classes of a class-conditional model; its table has ``C + 1`` rows,
        the last one the null class (the official config counts that row: AutoNAT-L's says 1001);
        None for a text-conditional model.
    :param clip_dim: width of the text hidden states (text-conditional models).
    :param clip_tokens: text tokens per prompt (text-conditional models; 77 for CLIP).
    :param mlp_ratio: hidden size of the MLPs relative to ``D``.
    :param dropout: embedding dropout (training only).
    """

    grid: int
    width: int
    depth: int
    heads: int
    codebook_size: int
    num_classes: int | None = None
    clip_dim: int | None = None
    clip_tokens: int | None = None
    mlp_ratio: float = 4.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if (self.num_classes is None) == (self.clip_dim is None):
            raise ValueError("a U-ViT NAT is conditioned on classes (num_classes) or text (clip_dim)")
        if self.width % self.heads or self.depth % 2:
            raise ValueError(f"width {self.width} must divide into {self.heads} heads, depth must be even")

    @property
    def seq_len(self) -> int:
        return self.grid * self.grid

    @property
    def mask_id(self) -> int:
        return self.codebook_size

    @property
    def context_tokens(self) -> int:
        return 1 if self.num_classes is not None else int(self.clip_tokens or 0)


class Attention(nn.Module):
    """Multi-head self-attention over all tokens: one bias-free ``qkv`` linear and ``proj``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, N, d)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))  # (B, N, D)


class UViTBlock(nn.Module):
    """Pre-norm block; an out-block first merges its long skip with ``skip_linear``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, skip: bool = False) -> None:
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), approximate="none")

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.skip_linear is not None:
            assert skip is not None
            x = self.skip_linear(torch.cat([x, skip], dim=-1))  # (B, N, D)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))  # (B, N, D)


@dataclass
class UViTOutput:
    """Result of a U-ViT NAT forward.

    :param logits: ``(B, L, K)`` token logits of the image tokens.
    :param feat: ``(B, L, D)`` image-token features after the final norm (what a policy observes).
    """

    logits: Tensor  # (B, L, K)
    feat: Tensor  # (B, L, D)


class UViTNAT(ConfigShape, nn.Module):
    """U-ViT NAT generator: ``forward(ids, context)`` gives logits and features of the image tokens.

    :param config: the architecture.
    :param null_context: for a text-conditional model, the empty prompt's hidden states
        ``(clip_tokens, clip_dim)`` (the unconditional context of guidance); give them before
        sampling with :meth:`set_null_context`.
    """

    def __init__(self, config: UViTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.width
        self.token_emb = TokenEmbedding(config.codebook_size + 1, d, config.seq_len, config.dropout)
        if config.num_classes is not None:
            self.context_embed: nn.Module = TokenEmbedding(config.num_classes + 1, d, 1, config.dropout)
        else:
            assert config.clip_dim is not None
            self.context_embed = nn.Linear(config.clip_dim, d)
        half = config.depth // 2
        self.in_blocks = nn.ModuleList(UViTBlock(d, config.heads, config.mlp_ratio) for _ in range(half))
        self.mid_block = UViTBlock(d, config.heads, config.mlp_ratio)
        self.out_blocks = nn.ModuleList(
            UViTBlock(d, config.heads, config.mlp_ratio, skip=True) for _ in range(half)
        )
        self.norm = nn.LayerNorm(d)
        self.mlm_layer = MlmHead(d, config.codebook_size + 1)
        self.null_context: Tensor | None = None

    def set_null_context(self, states: Tensor) -> None:
        """The empty prompt's text states ``(clip_tokens, clip_dim)`` (text-conditional models)."""
        cfg = self.config
        if cfg.clip_dim is None or tuple(states.shape) != (cfg.clip_tokens, cfg.clip_dim):
            raise ValueError(
                f"null context must be ({cfg.clip_tokens}, {cfg.clip_dim}), got {tuple(states.shape)}"
            )
        self.null_context = states

    def forward(self, ids: Tensor, context: Tensor) -> UViTOutput:
        """Predict every image token.

        :param ids: ``(B, L)`` token ids, ``mask_id`` where masked.
        :param context: ``(B,)`` class ids (``num_classes`` is the null class) or
            ``(B, tokens, clip_dim)`` text hidden states.
        """
        x = self.token_emb(ids)  # (B, L, D)
        if self.config.num_classes is not None:
            c = self.context_embed(context[:, None])  # (B, 1, D)
        else:
            c = self.context_embed(context)  # (B, T, D)
        x = torch.cat([c, x], dim=1)  # (B, T + L, D)
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())
        x = self.norm(x)  # (B, T + L, D)
        word = self.token_emb.word_embeddings.weight.detach()  # (K+1, D)
        logits = self.mlm_layer(x, word)  # (B, T + L, K+1)
        extras = c.shape[1]
        return UViTOutput(logits[:, extras:, : self.config.codebook_size], x[:, extras:])

    # -- the generator protocol (adanat.generator.NATGenerator; the shape from ConfigShape) -----

    @property
    def num_classes(self) -> int | None:
        """``C`` (label ``C`` is the null class); None for text conditions."""
        return self.config.num_classes

    @property
    def reuses_state(self) -> bool:
        return False

    def null_condition(self, cond: Tensor) -> Tensor:
        """The null class for class ids ``(B,)``; the empty prompt's states for text ``(B, T, W)``."""
        if self.config.num_classes is not None:
            return torch.full_like(cond, self.config.num_classes)  # (B,)
        if self.null_context is None:
            raise RuntimeError("a text-conditional U-ViT NAT needs set_null_context() before guidance")
        return self.null_context.to(cond).expand_as(cond)  # (B, T, W)

    def guided_forward(self, ids: Tensor, cond: Tensor, state: object | None = None) -> GuidedOutput:
        """Conditional and null-condition rows of ``ids`` ``(B, L)`` in one forward (no state)."""
        b = ids.shape[0]
        out = self(torch.cat([ids, ids]), torch.cat([cond, self.null_condition(cond)]))
        return GuidedOutput(out.logits[:b], out.logits[b:], out.feat[:b], None)
