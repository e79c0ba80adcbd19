"""ENAT: the efficient non-autoregressive transformer (Ni et al., NeurIPS 2024).

The module reproduces the official architecture under the official parameter names, so the
released ``nnet_ema.pth`` state dicts load with ``strict=True``:

* visible tokens are encoded by the first ``encoder_layers`` blocks, masked tokens only by the
  last ``decoder_layers`` blocks, which read the visible features as context (SC-attention:
  separate key/value projections ``kv.A`` for context rows and ``kv.B`` for self rows);
* with a reuse state from the previous step, only the tokens revealed since then are encoded,
  and the already-visible ones are represented by ``prev_proj`` of their previous features.

Unlike the official code, every row of a batch may have its own number of masked (and newly
revealed) tokens. Rows are gathered into padded ``(B, N_max, D)`` blocks and attention uses a key
padding mask; when all rows agree, no mask is built and the computation is the official one.
Padding was chosen over per-row loops and nested tensors by measurement (``benchmarks/``):
it keeps one batched forward per step, which is what the batched RL environment needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation of ``(B, N, D)`` rows by ``(B, D)`` shift and scale."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


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

    def _split_heads(self, kv: Tensor) -> tuple[Tensor, Tensor]:
        b, n, _ = kv.shape
        kv = kv.reshape(b, n, 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # (2, B, H, N, hd)
        return kv[0], kv[1]

    def forward(self, x: Tensor, ctx: Tensor | None, attn_mask: Tensor | None) -> Tensor:
        """``x`` (B, N, D) modulated self rows; ``ctx`` (B, M, D) modulated context rows or None;
        ``attn_mask`` (B, 1, N, M+N) bool (True = attend) or None."""
        b, n, d = x.shape
        q = self.q(x).reshape(b, n, self.heads, -1).transpose(1, 2)  # (B, H, N, hd)
        k, v = self._split_heads(self.kv.B(x))  # (B, H, N, hd)
        if ctx is not None:
            kc, vc = self._split_heads(self.kv.A(ctx))  # (B, H, M, hd)
            k = torch.cat([kc, k], dim=2)  # (B, H, M+N, hd)
            v = torch.cat([vc, v], dim=2)  # (B, H, M+N, hd)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, N, hd)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))  # (B, N, D)


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
        c: Tensor,
        ctx: Tensor | None,
        attn_mask: Tensor | None,
        valid: Tensor | None = None,
    ) -> Tensor:
        """``x`` (B, N, D) self rows, ``c`` (B, D) condition, ``ctx`` (B, M, D) or None.

        ``valid`` (B, N) marks the real rows of a padded batch: the MLP then runs on those only.
        """
        (shift_s, scale_s, shift_c, scale_c, gate_msa, shift_mlp, scale_mlp, gate_mlp) = (
            self.adaLN_modulation(c).chunk(8, dim=1)
        )  # 8 x (B, D)
        ctx_mod = None if ctx is None else modulate(self.norm1_(ctx), shift_c, scale_c)
        attn = self.attn(modulate(self.norm1(x), shift_s, scale_s), ctx_mod, attn_mask)
        x = x + gate_msa.unsqueeze(1) * attn  # (B, N, D)
        h = modulate(self.norm2(x), shift_mlp, scale_mlp)  # (B, N, D)
        if valid is None:
            h = self.mlp(h)
        else:
            h = torch.zeros_like(h).index_put_((valid,), self.mlp(h[valid]))  # (B, N, D)
        return x + gate_mlp.unsqueeze(1) * h


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


@dataclass
class _Rows:
    """Positions selected per row, gathered in positional order and padded to ``n`` columns."""

    index: Tensor  # (B, n) positions; padded columns hold unselected positions
    valid: Tensor  # (B, n) bool
    uniform: bool  # every row selects the same count

    @staticmethod
    def of(sel: Tensor) -> _Rows:
        counts = sel.sum(dim=1)  # (B,)
        n = int(counts.max()) if sel.shape[0] else 0
        # stable sort puts the selected positions first, each group in positional order
        order = torch.sort((~sel).to(torch.uint8), dim=1, stable=True).indices  # (B, L)
        index = order[:, :n]  # (B, n)
        valid = torch.arange(n, device=sel.device) < counts[:, None]  # (B, n)
        uniform = bool((counts == n).all())
        return _Rows(index, valid, uniform)

    @property
    def n(self) -> int:
        return self.index.shape[1]

    def gather(self, x: Tensor) -> Tensor:
        """``x`` (B, L, D) -> (B, n, D)."""
        return x.gather(1, self.index[..., None].expand(-1, -1, x.shape[-1]))

    def scatter(self, x: Tensor, length: int) -> Tensor:
        """(B, n, D) -> (B, L, D), zeros where nothing is written (pads land on unselected rows)."""
        out = x.new_zeros(x.shape[0], length, x.shape[-1])
        return out.scatter(1, self.index[..., None].expand(-1, -1, x.shape[-1]), x)


def _attention_mask(query: _Rows, keys: list[_Rows]) -> Tensor | None:
    """Key padding mask ``(B, 1, Nq, Nk)`` or None when no row is padded.

    Padded query rows may attend to every key, so no softmax row is empty; their outputs are
    discarded when the rows are scattered back.
    """
    if query.uniform and all(k.uniform for k in keys):
        return None
    key_valid = torch.cat([k.valid for k in keys], dim=1)  # (B, Nk)
    return (key_valid[:, None, :] | ~query.valid[:, :, None])[:, None]  # (B, 1, Nq, Nk)


class ENAT(nn.Module):
    """ENAT generator: ``forward(ids, labels, prev)`` gives logits and the reuse state.

    Rows may have different numbers of masked tokens, and under reuse different numbers of newly
    revealed tokens; each row's output equals running that row alone.
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

        if prev is None:
            new = ~masking  # (B, L) tokens to encode
            context_full = None
            old = None
        else:
            if bool((prev.masking < masking).any()):
                raise ValueError("reuse state: a token visible before is masked now")
            new = ~masking & prev.masking  # (B, L) revealed since the previous step
            old = ~prev.masking  # (B, L) visible before
            old_rows = _Rows.of(old)
            context = self.prev_proj(old_rows.gather(prev.feat.to(x.dtype)))  # (B, P, D)
            context_full = old_rows.scatter(context, length)  # (B, L, D)

        # encoder: newly visible tokens, with the projected previous features as context
        new_rows = _Rows.of(new)
        h = new_rows.gather(x)  # (B, N, D)
        if new_rows.n:
            if old is None or old_rows.n == 0:
                ctx, mask = None, _attention_mask(new_rows, [new_rows])
            else:
                ctx = old_rows.gather(context_full)  # (B, P, D)
                mask = _attention_mask(new_rows, [old_rows, new_rows])
            for block in self.encoder:
                h = block(h, c, ctx, mask, None if new_rows.uniform else new_rows.valid)  # (B, N, D)
        visible_full = new_rows.scatter(h, length)  # (B, L, D)
        if context_full is not None:
            visible_full = torch.where(old[..., None], context_full, visible_full)

        # decoder: masked tokens, with every visible feature as context
        vis_rows, mask_rows = _Rows.of(~masking), _Rows.of(masking)
        m = mask_rows.gather(x)  # (B, M, D)
        if mask_rows.n:
            vis = vis_rows.gather(visible_full) if vis_rows.n else None  # (B, V, D)
            keys = [vis_rows, mask_rows] if vis_rows.n else [mask_rows]
            mask = _attention_mask(mask_rows, keys)
            for block in self.decoder:
                m = block(m, c, vis, mask, None if mask_rows.uniform else mask_rows.valid)  # (B, M, D)
        feat = torch.where(masking[..., None], mask_rows.scatter(m, length), visible_full)

        word = self.x_embedder.word_embeddings.weight.detach()  # (K+1, D)
        if masked_logits_only:
            logits = self.mlm_layer(self.norm(m), word)[..., : self.config.codebook_size]  # (B, M, K)
            logits = mask_rows.scatter(logits, length) * masking[..., None]  # (B, L, K)
        else:
            logits = self.mlm_layer(self.norm(feat), word)[..., : self.config.codebook_size]  # (B, L, K)
        return ENATOutput(logits=logits, state=ReuseState(feat=feat, masking=masking))
