"""Training an ENAT generator on token grids with the published strategy.

Per batch: one mask ratio from Beta(12, 3), masked count ``round(L r)`` clamped to ``[1, L-1]``
at random positions per row; cross-entropy on masked positions with label smoothing 0.1; class
label replaced by the null class with p = 0.15 (classifier-free guidance); in half of the steps
the reuse path is trained: a random fraction ``u ~ U(0, 1)`` of the visible tokens is re-masked
to form the previous step, whose features come from the EMA model without gradient.
``reuse_chain > 1`` (an option, off by default) builds that previous state through a chain of
earlier steps run with reuse, as sampling does (:func:`previous_state`).

``precision="bfloat16"`` runs forward and backward under bfloat16 autocast (weights, optimiser and
EMA stay float32). On a CPU with AMX (Intel Sapphire Rapids and later) its matrix products run
5-6x as fast as float32 ones and a whole step 1.33x (batch 128) to 1.50x (batch 256); attention
then takes PyTorch's math kernel, because the fused CPU kernel's bfloat16 backward is slower than
float32's (``benchmarks/pretrain.py``).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from adanat.models.enat import ENAT, ReuseState
from adanat.precision import autocast, check_precision
from adanat.pretrain.run import GlobalRNG, TrainingRun, warmup_cosine


@dataclass(frozen=True)
class GeneratorTraining:
    steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.03
    warmup: int = 200
    ema_decay: float = 0.999  # reached after a warm-up: min(decay, (1 + step) / (10 + step))
    beta_a: float = 12.0
    beta_b: float = 3.0
    label_smoothing: float = 0.1
    p_uncond: float = 0.15
    reuse_prob: float = 0.5
    reuse_chain: int = 1  # EMA steps that build the previous state (1: the published strategy)
    precision: str = "float32"  # or "bfloat16": autocast for forward and backward
    seed: int = 0

    def __post_init__(self) -> None:
        check_precision(self.precision)
        for name, low in (("steps", 1), ("batch_size", 1), ("warmup", 0), ("reuse_chain", 1)):
            if (value := getattr(self, name)) < low:
                raise ValueError(f"generator training: {name} must be at least {low}, got {value}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"generator training: lr must be a positive finite number, got {self.lr}")
        for name in ("ema_decay", "p_uncond", "reuse_prob", "label_smoothing"):
            if not 0 <= (value := getattr(self, name)) <= 1:
                raise ValueError(f"generator training: {name} must be in [0, 1], got {value}")


@contextlib.contextmanager
def training_autocast(device: torch.device, precision: str) -> Iterator[None]:
    """The compute precision of a training step on ``device`` (see the module docstring)."""
    kernel = (
        sdpa_kernel(SDPBackend.MATH)
        if device.type == "cpu" and precision != "float32"
        else contextlib.nullcontext()
    )
    with kernel, autocast(device, precision):
        yield


def _random_subset(rows: int, length: int, counts: Tensor, allowed: Tensor, gen: torch.Generator) -> Tensor:
    """Per row, ``counts[r]`` positions chosen uniformly among ``allowed[r]`` (B, L) bool."""
    score = torch.rand(rows, length, generator=gen).masked_fill(~allowed, 2.0)  # (B, L)
    rank = score.argsort(dim=1).argsort(dim=1)  # (B, L)
    return rank < counts[:, None]


def masked_batch(
    tokens: Tensor, labels: Tensor, model: ENAT, cfg: GeneratorTraining, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """``(inputs, targets, labels)``: tokens ``(B, L)`` masked with one Beta ratio per batch,
    targets ``-100`` at visible positions, labels dropped to the null class with ``p_uncond``."""
    b, length = tokens.shape
    n = min(max(round(length * _beta(cfg, gen)), 1), length - 1)
    mask = _random_subset(b, length, torch.full((b,), n), torch.ones(b, length, dtype=torch.bool), gen)
    inputs = torch.where(mask, model.config.mask_id, tokens)  # (B, L)
    targets = torch.where(mask, tokens, -100)  # (B, L)
    drop = torch.rand(b, generator=gen) < cfg.p_uncond  # (B,)
    return inputs, targets, torch.where(drop, model.config.null_class, labels)


def _beta(cfg: GeneratorTraining, gen: torch.Generator) -> float:
    """One Beta(a, b) draw from ``gen`` by inverting the CDF on a grid of 4095 points
    (torch's Beta sampler takes no generator)."""
    x = torch.linspace(0, 1, 4097, dtype=torch.float64)[1:-1]
    logpdf = (cfg.beta_a - 1) * torch.log(x) + (cfg.beta_b - 1) * torch.log1p(-x)
    cdf = torch.cumsum(torch.exp(logpdf - logpdf.max()), 0)
    u = float(torch.rand(1, generator=gen, dtype=torch.float64)) * float(cdf[-1])
    return float(x[torch.searchsorted(cdf, torch.tensor([u], dtype=torch.float64)).clamp_max(len(x) - 1)])


def previous_step(inputs: Tensor, mask_id: int, gen: torch.Generator) -> Tensor:
    """Re-mask a random fraction ``u ~ U(0, 1)`` of the visible tokens (one ``u`` per batch)."""
    b, length = inputs.shape
    visible = inputs != mask_id  # (B, L)
    u = float(torch.rand(1, generator=gen))
    counts = (visible.sum(1).double() * u).round().long()  # (B,)
    remask = _random_subset(b, length, counts, visible, gen)
    return torch.where(remask, mask_id, inputs)


@torch.no_grad()
def previous_state(
    ema: ENAT, inputs: Tensor, labels: Tensor, cfg: GeneratorTraining, gen: torch.Generator
) -> ReuseState:
    """The reuse state of a previous step of ``inputs`` ``(B, L)``, computed by the EMA model.

    With ``reuse_chain`` 1 (the published strategy) the previous step is encoded from scratch.
    With ``n > 1`` a chain of ``d ~ U{1..n}`` nested earlier steps is run with reuse, as at
    sampling time, where a token revealed early has been carried (and projected) through every
    later step: the previous state then comes from the same kind of chain it will meet.
    """
    steps = [previous_step(inputs, ema.config.mask_id, gen)]  # (B, L) each, outermost first
    if cfg.reuse_chain > 1:
        depth = int(torch.randint(1, cfg.reuse_chain + 1, (1,), generator=gen))
        while len(steps) < depth:
            steps.append(previous_step(steps[-1], ema.config.mask_id, gen))
    state = None
    for ids in reversed(steps):
        state = ema(ids.to(labels.device), labels, state).state
    assert state is not None
    return state


def train_generator(
    model: ENAT, tokens: Tensor, labels: Tensor, run: TrainingRun, cfg: GeneratorTraining
) -> ENAT:
    """Train on ``tokens`` ``(N, L)`` with ``labels`` ``(N,)``; returns the EMA model.

    The model trains on its own device (:func:`train_step`). Dropout on a GPU draws from the CUDA
    generator, which the checkpoint does not hold: a resumed GPU run continues with the same data
    but other dropout masks.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # dropout masks inside the model
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = make_optimizer(model, cfg)
    parts = {"model": model, "ema": ema, "optimizer": opt, "generator": gen, "torch_rng": GlobalRNG()}
    run.restore(parts)

    model.train()
    with run.progress("generator") as progress:
        while run.step < cfg.steps:
            loss, logits, targets = train_step(model, ema, opt, tokens, labels, cfg, gen, run.step)
            run.watch(loss)
            run.step += 1
            info: dict[str, float] = {}
            if run.logging_due():
                sel = targets != -100  # (B, L)
                acc = float((logits.argmax(-1)[sel] == targets[sel]).float().mean())
                info = {"loss": loss.item(), "masked_acc": acc}
                run.log(
                    {
                        "generator/loss": info["loss"],
                        "generator/masked_acc": acc,
                        "generator/lr": warmup_cosine(run.step, cfg.lr, cfg.warmup, cfg.steps, 0.05),
                    }
                )
            progress.advance(1, **info)
            run.checkpoint(parts)
    return ema


def make_optimizer(model: ENAT, cfg: GeneratorTraining) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices except embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 or "embed" in name else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.99),
    )


def train_step(
    model: ENAT,
    ema: ENAT,
    opt: torch.optim.Optimizer,
    tokens: Tensor,
    labels: Tensor,
    cfg: GeneratorTraining,
    gen: torch.Generator,
    step: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """One optimiser step on a batch drawn from ``tokens`` ``(N, L)`` / ``labels`` ``(N,)`` with
    ``gen``, then the EMA update. Returns the detached ``(loss, logits (B, L, K), targets (B, L))``.

    Batches are drawn on the CPU, so a run on a GPU sees the same batches, masks and reuse draws
    as one on the CPU."""
    device = next(model.parameters()).device
    for group in opt.param_groups:
        group["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup, cfg.steps, 0.05)
    idx = torch.randint(0, len(tokens), (cfg.batch_size,), generator=gen)  # (B,)
    inputs, targets, y = masked_batch(tokens[idx], labels[idx], model, cfg, gen)  # CPU
    targets, y = targets.to(device), y.to(device)  # (B, L), (B,)
    prev = None
    reuse = float(torch.rand(1, generator=gen)) < cfg.reuse_prob
    with training_autocast(device, cfg.precision):
        if reuse:
            prev = previous_state(ema, inputs, y, cfg, gen)
        logits = model(inputs.to(device), y, prev).logits.float()  # (B, L, K)
        loss = F.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=-100, label_smoothing=cfg.label_smoothing
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    _ema_update(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
    return loss.detach(), logits.detach(), targets


@torch.no_grad()
def _ema_update(ema: ENAT, model: ENAT, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm, 1 - decay)
