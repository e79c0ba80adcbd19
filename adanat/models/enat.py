"""ENAT: the efficient non-autoregressive transformer (Ni et al., NeurIPS 2024).

The module reproduces the official architecture under the official parameter names, so the
released ``nnet_ema.pth`` state dicts load with ``strict=True``:

* visible tokens are encoded by the first ``encoder_layers`` blocks, masked tokens only by the
  last ``decoder_layers`` blocks, which read the visible features as context (SC-attention:
  separate key/value projections ``kv.A`` for context rows and ``kv.B`` for self rows);
* with a reuse state from the previous step, only the tokens revealed since then are encoded,
  and the already-visible ones are represented by ``prev_proj`` of their previous features.

Unlike the official code, every row of a batch may have its own number of masked (and newly
revealed) tokens. Tokens are kept packed (row after row) through every token-wise layer and
padded only inside attention, with a key-padding mask (see :class:`Layout`); when all rows
agree, packing is a reshape, no mask is built, and the computation is the official one.
``benchmarks/generation.py`` measures this against a shared schedule and a per-row loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adanat.generator import ConfigShape, GuidedOutput


@dataclass(frozen=True)
class ENATConfig:
    """Architecture of an ENAT generator.

    :param encoder_layers: blocks that encode visible tokens.
    :param decoder_layers: blocks that decode masked tokens.
    :param width: hidden size ``D``.
    :param heads: attention heads.
    :param grid: side of the token grid (sequence length ``grid**2``).
    :param codebook_size: ``K`` token ids; the mask id is ``K``.
    :param num_classes: ``C`` classes; label ``C`` is the null class used for guidance.
    :param mlp_ratio: hidden size of the MLPs relative to ``D``.
    :param dropout: embedding dropout (training only).
    """

    encoder_layers: int
    decoder_layers: int
    width: int
    heads: int
    grid: int
    codebook_size: int
    num_classes: int
    mlp_ratio: float = 4.0
    dropout: float = 0.1

    @property
    def seq_len(self) -> int:
        return self.grid * self.grid

    @property
    def mask_id(self) -> int:
        return self.codebook_size

    @property
    def null_class(self) -> int:
        return self.num_classes


@dataclass
class ReuseState:
    """What one ENAT forward hands to the next step of the same branch.

    :param feat: ``(B, L, D)`` features of every position before the final norm.
    :param masking: ``(B, L)`` True where the input token was masked.
    """

    feat: Tensor  # (B, L, D)
    masking: Tensor  # (B, L) bool

    def select(self, rows: Tensor | slice) -> ReuseState:
        """The state of a subset of rows."""
        return ReuseState(self.feat[rows], self.masking[rows])

    @staticmethod
    def cat(states: list[ReuseState]) -> ReuseState:
        """Stack the states of several batches along the row axis."""
        return ReuseState(torch.cat([s.feat for s in states]), torch.cat([s.masking for s in states]))


@dataclass
class ENATOutput:
    """Result of an ENAT forward.

    :param logits: ``(B, L, K)`` token logits at every position.
    :param state: reuse state for the next step (its ``feat`` is what a policy observes).
    """

    logits: Tensor  # (B, L, K)
    state: ReuseState


class Layout:
    """Where the tokens of one group (for example the masked ones) sit in a batch.

    Tokens are kept *packed*: ``(T, D)``, row after row, each row's tokens in positional order
    (exactly ``x[sel]``). Token-wise layers run on the packed tokens, so rows of different lengths
    cost no padding there; only attention sees a padded ``(B, n, ...)`` view, with a key-padding
    mask. When every row has the same count, packing and padding are plain reshapes.
    """

    def __init__(self, sel: Tensor) -> None:
        self.sel = sel  # (B, L) bool
        self.rows = sel.shape[0]
        counts = sel.sum(dim=1)  # (B,)
        self.n = int(counts.max()) if self.rows else 0
        self.valid = torch.arange(self.n, device=sel.device) < counts[:, None]  # (B, n)
        self.uniform = bool((counts == self.n).all())
        self._flat = None if self.uniform else self.valid.flatten().nonzero().squeeze(1)  # (T,)
        self._row_of = None if self.uniform else torch.repeat_interleave(counts)  # (T,)
        self._gaps = None if self.uniform else (~self.valid).flatten().nonzero().squeeze(1)  # (B*n - T,)

    @property
    def tokens(self) -> int:
        return self.rows * self.n if self.uniform else len(self._flat)

    def pack(self, x: Tensor) -> Tensor:
        """``(B, L, D)`` -> ``(T, D)``."""
        return x[self.sel]

    def unpack(self, x: Tensor, length: int) -> Tensor:
        """``(T, D)`` -> ``(B, L, D)`` with zeros at unselected positions."""
        out = x.new_zeros(self.rows, length, x.shape[-1])
        out[self.sel] = x
        return out

    def pad(self, x: Tensor) -> Tensor:
        """``(T, C)`` -> ``(B, n, C)``, zero rows as padding."""
        if self.uniform:
            return x.view(self.rows, self.n, x.shape[-1])
        out = x.new_empty(self.rows * self.n, x.shape[-1]).index_copy_(0, self._flat, x)
        out.index_fill_(0, self._gaps, 0.0)  # padding only: cheaper than zeroing everything first
        return out.view(self.rows, self.n, x.shape[-1])

    def unpad(self, x: Tensor) -> Tensor:
        """``(B, n, C)`` -> ``(T, C)``."""
        flat = x.reshape(self.rows * self.n, x.shape[-1])
        return flat if self.uniform else flat.index_select(0, self._flat)

    def modulate(self, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
        """adaLN modulation of packed tokens ``(T, D)`` by per-row ``(B, D)`` shift and scale."""
        if self.uniform:
            y = x.view(self.rows, self.n, -1) * (1 + scale[:, None]) + shift[:, None]  # (B, n, D)
            return y.view(x.shape)
        row_of = self._row_of  # (T,)
        return x * (1 + scale.index_select(0, row_of)) + shift.index_select(0, row_of)  # (T, D)

    def gate(self, x: Tensor, g: Tensor) -> Tensor:
        """Packed tokens ``(T, D)`` times per-row gates ``(B, D)``."""
        if self.uniform:
            return (x.view(self.rows, self.n, -1) * g[:, None]).view(x.shape)
        return x * g.index_select(0, self._row_of)  # (T, D)


def attention_mask(query: Layout, keys: list[Layout]) -> Tensor | None:
    """Key padding mask ``(B, 1, 1, Nk)`` (True = attend), or None when no row is padded.

    Only keys are masked: the outputs of padded query rows (whatever they are, NaN included for
    a row without keys) are dropped when unpadding.
    """
    if query.uniform and all(k.uniform for k in keys):
        return None
    return torch.cat([k.valid for k in keys], dim=1)[:, None, None, :]  # (B, 1, 1, Nk)


class Mlp(nn.Module):
    """Two-layer MLP (``fc1``/``fc2`` as in timm) with a configurable GELU."""

    def __init__(self, dim: int, hidden: int, approximate: str = "tanh") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class TwoWayLinear(nn.Module):
    """Key/value projection with one weight for context rows (``A``) and one for self rows (``B``)."""

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.A = nn.Linear(dim, out)
        self.B = nn.Linear(dim, out)


class SCAttention(nn.Module):
    """Attention whose queries are the self rows and whose keys/values are ``[context ; self]``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = TwoWayLinear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor, layout: Layout, parts: int) -> tuple[Tensor, ...]:
        """Packed ``(T, parts*D)`` -> ``parts`` padded per-head tensors ``(B, H, n, hd)``."""
        b, n = layout.rows, layout.n
        x = layout.pad(x).view(b, n, parts, self.heads, -1).permute(2, 0, 3, 1, 4)  # (parts, B, H, n, hd)
        return x.unbind(0)

    def forward(
        self,
        x: Tensor,
        layout: Layout,
        ctx: Tensor | None,
        ctx_layout: Layout | None,
        attn_mask: Tensor | None,
    ) -> Tensor:
        """``x`` (T, D) modulated self tokens; ``ctx`` (Tc, D) modulated context tokens or None;
        ``attn_mask`` (B, 1, 1, nc + n) bool key mask or None. Returns (T, D)."""
        (q,) = self._heads(self.q(x), layout, 1)  # (B, H, n, hd)
        k, v = self._heads(self.kv.B(x), layout, 2)  # 2 x (B, H, n, hd)
        if ctx is not None:
            kc, vc = self._heads(self.kv.A(ctx), ctx_layout, 2)  # 2 x (B, H, nc, hd)
            k = torch.cat([kc, k], dim=2)  # (B, H, nc + n, hd)
            v = torch.cat([vc, v], dim=2)  # (B, H, nc + n, hd)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, n, hd)
        out = out.transpose(1, 2).reshape(layout.rows, layout.n, -1)  # (B, n, D)
        return self.proj(layout.unpad(out))  # (T, D)


class ENATBlock(nn.Module):
    """DiT-style block with separate adaLN modulation of the self and the context rows."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm1_ = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SCAttention(dim, heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 8 * dim))

    def forward(
        self,
        x: Tensor,
        layout: Layout,
        c: Tensor,
        ctx: Tensor | None = None,
        ctx_layout: Layout | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """``x`` (T, D) packed self tokens, ``c`` (B, D) condition, ``ctx`` (Tc, D) or None."""
        shift_s, scale_s, shift_c, scale_c, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c
        ).chunk(8, dim=1)  # 8 x (B, D)
        ctx_mod = None
        if ctx is not None:
            ctx_mod = ctx_layout.modulate(self.norm1_(ctx), shift_c, scale_c)  # (Tc, D)
        xm = layout.modulate(self.norm1(x), shift_s, scale_s)  # (T, D)
        x = x + layout.gate(self.attn(xm, layout, ctx_mod, ctx_layout, attn_mask), gate_msa)  # (T, D)
        h = self.mlp(layout.modulate(self.norm2(x), shift_mlp, scale_mlp))  # (T, D)
        return x + layout.gate(h, gate_mlp)


class TokenEmbedding(nn.Module):
    """Word + learned position embedding, LayerNorm and dropout (BERT-style names)."""

    def __init__(self, vocab: int, dim: int, seq_len: int, dropout: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Embedding(seq_len, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-6)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.word_embeddings(ids) + self.position_embeddings.weight[: ids.shape[1]]
        return self.dropout(self.LayerNorm(x))  # (B, L, D)


class LabelEmbedding(nn.Module):
    """Class table with one extra row for the null class."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: Tensor) -> Tensor:
        return self.embedding_table(labels)  # (B, D)


class PrevProj(nn.Module):
    """Residual MLP that adapts previous-step features to serve as encoder context."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm(x))


class MlmHead(nn.Module):
    """Token head: Linear, exact GELU, LayerNorm, then the (tied) word table plus a bias."""

    def __init__(self, dim: int, vocab: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.ln = nn.LayerNorm(dim)
        self.bias = nn.Parameter(torch.zeros(1, 1, vocab))

    def forward(self, x: Tensor, word_embeddings: Tensor) -> Tensor:
        h = self.ln(F.gelu(self.fc(x)))  # (B, L, D)
        return h @ word_embeddings.t() + self.bias  # (B, L, K+1)


class ENAT(ConfigShape, nn.Module):
    """ENAT generator: ``forward(ids, labels, prev)`` gives logits and the reuse state.

    Rows may have different numbers of masked tokens, and under reuse different numbers of newly
    revealed tokens; each row's output equals running that row alone. It implements
    :class:`adanat.generator.NATGenerator` (class ids as the condition, reuse of the previous
    step's features) through :meth:`guided_forward`.
    """

    def __init__(self, config: ENATConfig) -> None:
        super().__init__()
        self.config = config
        d, vocab = config.width, config.codebook_size + 1
        self.x_embedder = TokenEmbedding(vocab, d, config.seq_len, config.dropout)
        self.y_embedder = LabelEmbedding(config.num_classes, d)
        # present in the official checkpoints but unused by the official forward
        self.prev_embedder = Mlp(d, 4 * d)
        self.prev_proj = PrevProj(d)
        depth = config.encoder_layers + config.decoder_layers
        self.blocks = nn.ModuleList(ENATBlock(d, config.heads, config.mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(d)
        self.mlm_layer = MlmHead(d, vocab)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: xavier linears, N(0, 0.02) tables, zero adaLN."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.x_embedder.word_embeddings.weight, std=0.02)
        nn.init.normal_(self.x_embedder.position_embeddings.weight, std=0.02)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)

    # -- the generator protocol (adanat.generator.NATGenerator; the shape from ConfigShape) -----

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def reuses_state(self) -> bool:
        return True

    def null_condition(self, cond: Tensor) -> Tensor:
        """The null class for every row of ``cond`` ``(B,)``."""
        return torch.full_like(cond, self.config.null_class)  # (B,)

    def guided_forward(
        self, ids: Tensor, cond: Tensor, state: tuple[ReuseState, ReuseState] | None = None
    ) -> GuidedOutput:
        """Conditional and null-class rows of ``ids`` ``(B, L)`` in one forward, each branch with
        its own reuse state; the state returned is ``(conditional, unconditional)``."""
        b = ids.shape[0]
        prev = None if state is None else ReuseState.cat(list(state))
        out = self(torch.cat([ids, ids]), torch.cat([cond, self.null_condition(cond)]), prev, True)
        cond_state, uncond_state = out.state.select(slice(0, b)), out.state.select(slice(b, 2 * b))
        return GuidedOutput(
            cond_logits=out.logits[:b],  # (B, L, K)
            uncond_logits=out.logits[b:],  # (B, L, K)
            raw_features=cond_state.feat,  # (B, L, D)
            state=(cond_state, uncond_state),
        )

    @property
    def encoder(self) -> nn.ModuleList:
        return self.blocks[: self.config.encoder_layers]

    @property
    def decoder(self) -> nn.ModuleList:
        return self.blocks[self.config.encoder_layers :]

    def forward(
        self, ids: Tensor, labels: Tensor, prev: ReuseState | None = None, masked_logits_only: bool = False
    ) -> ENATOutput:
        """Predict every position's token.

        :param ids: ``(B, L)`` token ids, ``mask_id`` where masked.
        :param labels: ``(B,)`` class labels (``null_class`` for the unconditional branch).
        :param prev: reuse state of this branch's previous step; its masked set must contain
            the current one. None encodes every visible token.
        :param masked_logits_only: run the head on masked positions only (what a sampler
            needs); the logits of visible positions are then 0.
        """
        length = ids.shape[1]
        x = self.x_embedder(ids)  # (B, L, D)
        c = self.y_embedder(labels)  # (B, D)
        masking = ids == self.config.mask_id  # (B, L)

        # encoder: the newly visible tokens, with projected previous features as context
        if prev is None:
            new, old = ~masking, None  # (B, L)
        else:
            if bool((prev.masking < masking).any()):
                raise ValueError("reuse state: a token visible before is masked now")
            new, old = ~masking & prev.masking, ~prev.masking  # (B, L)
        new_l = Layout(new)
        h = new_l.pack(x)  # (N, D)
        ctx = ctx_l = None
        if old is not None:
            ctx_l = Layout(old)
            ctx = self.prev_proj(ctx_l.pack(prev.feat).to(x.dtype))  # (P, D)
            if ctx_l.tokens == 0:
                ctx = ctx_l = None
        if new_l.tokens:
            mask = attention_mask(new_l, [new_l] if ctx_l is None else [ctx_l, new_l])
            for block in self.encoder:
                h = block(h, new_l, c, ctx, ctx_l, mask)  # (N, D)
        visible = new_l.unpack(h, length)  # (B, L, D)
        if ctx_l is not None:
            visible = visible + ctx_l.unpack(ctx, length)  # disjoint positions

        # decoder: the masked tokens, with every visible feature as context
        vis_l, mask_l = Layout(~masking), Layout(masking)
        m = mask_l.pack(x)  # (M, D)
        if mask_l.tokens:
            vis = vis_l.pack(visible) if vis_l.tokens else None  # (V, D)
            vis_layout = vis_l if vis_l.tokens else None
            mask = attention_mask(mask_l, [mask_l] if vis is None else [vis_l, mask_l])
            for block in self.decoder:
                m = block(m, mask_l, c, vis, vis_layout, mask)  # (M, D)
        feat = visible + mask_l.unpack(m, length)  # (B, L, D)

        word = self.x_embedder.word_embeddings.weight.detach()  # (K+1, D)
        if masked_logits_only:
            logits = self.mlm_layer(self.norm(m), word)[..., : self.config.codebook_size]  # (M, K)
            logits = mask_l.unpack(logits, length)  # (B, L, K)
        else:
            logits = self.mlm_layer(self.norm(feat), word)[..., : self.config.codebook_size]  # (B, L, K)
        return ENATOutput(logits=logits, state=ReuseState(feat=feat, masking=masking))
