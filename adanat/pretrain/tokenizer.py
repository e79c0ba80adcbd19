"""Training a MaskGIT VQGAN tokenizer from scratch (the ``shapes`` world's small one).

Loss: L1 + MSE reconstruction through the straight-through estimator, the codebook term
``|sg(z) - e|^2`` and the commitment term ``beta |z - sg(e)|^2``. The codebook starts from
encoder outputs, and codes unused for a while are restarted on encoder outputs far from every live
code (drawn with probability proportional to the squared distance), which keeps usage high
without an adversarial or perceptual loss (neither is available offline).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from adanat.models.classifier import ShapesClassifier, accuracy
from adanat.models.vqgan import MaskGITVQGAN
from adanat.pretrain.run import TrainingRun, warmup_cosine


@dataclass(frozen=True)
class TokenizerTraining:
    steps: int = 2500
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    beta: float = 0.25
    restart_every: int = 100
    seed: int = 0


def vq_losses(model: MaskGITVQGAN, images: Tensor, beta: float) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """``(loss, parts, ids)`` for a batch of images ``(B, 3, H, W)`` in [0, 1]."""
    z = model.encoder(images)  # (B, z, h, w)
    ids = model.quantize.ids(z.detach())  # (B, h, w)
    zq = model.quantize.lookup(ids)  # (B, z, h, w)
    recon = model.decoder(z + (zq - z).detach())  # (B, 3, H, W)
    parts = {
        "l1": (recon - images).abs().mean(),
        "mse": F.mse_loss(recon, images),
        "codebook": F.mse_loss(zq, z.detach()),
        "commit": F.mse_loss(z, zq.detach()),
    }
    loss = parts["l1"] + parts["mse"] + parts["codebook"] + beta * parts["commit"]
    return loss, parts, ids


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Mean PSNR (dB) of images in [0, 1]."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(1 / mse)).mean()


@torch.no_grad()
def evaluate_tokenizer(
    model: MaskGITVQGAN,
    images: Tensor,
    batch: int = 256,
    metric: ShapesClassifier | None = None,
    labels: Tensor | None = None,
) -> dict[str, float]:
    """Reconstruction PSNR and codebook usage on held-out images ``(N, 3, H, W)`` in [0, 1]; with a
    ``metric`` network and ``labels`` ``(N,)``, also its accuracy on the reconstructions."""
    model.eval()
    recons, used = [], torch.zeros(model.config.codebook_size, dtype=torch.bool)
    for i in range(0, len(images), batch):
        ids = model.encode(images[i : i + batch])  # (b, h, w)
        used[ids.flatten()] = True
        recons.append(model.decode(ids))
    recon = torch.cat(recons)  # (N, 3, H, W)
    out = {"psnr": float(psnr(recon, images)), "codebook_usage": float(used.float().mean())}
    if metric is not None and labels is not None:
        out["reconstruction_class_accuracy"] = accuracy(metric, recon, labels)
    return out


def train_tokenizer(
    model: MaskGITVQGAN, train: Tensor, run: TrainingRun, cfg: TokenizerTraining
) -> MaskGITVQGAN:
    """Train on ``train`` images ``(N, 3, H, W)`` uint8, resuming from ``run`` if it has a checkpoint."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    k = model.config.codebook_size
    last_used = torch.zeros(k, dtype=torch.long)
    parts = {"model": model, "optimizer": opt, "generator": gen, "last_used": last_used}
    if not run.restore(parts):
        with torch.no_grad():  # codebook from encoder outputs of a first batch
            idx = torch.randint(0, len(train), (max(cfg.batch_size, k // 16 + 1),), generator=gen)
            z = (
                model.encoder(train[idx].float() / 255)
                .permute(0, 2, 3, 1)
                .reshape(-1, model.config.z_channels)
            )
            pick = torch.randint(0, len(z), (k,), generator=gen)
            model.quantize.embedding.weight.copy_(z[pick] + 0.01 * torch.randn(k, z.shape[1], generator=gen))

    model.train()
    with run.progress(f"tokenizer[{k}]") as progress:  # k codes
        while run.step < cfg.steps:
            for group in opt.param_groups:
                group["lr"] = warmup_cosine(run.step, cfg.lr, cfg.warmup, cfg.steps)
            idx = torch.randint(0, len(train), (cfg.batch_size,), generator=gen)  # (B,)
            images = train[idx].float() / 255  # (B, 3, H, W)
            loss, losses, ids = vq_losses(model, images, cfg.beta)
            run.watch(loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run.step += 1
            used = torch.zeros(k, dtype=torch.bool)  # (K,)
            used[ids.flatten()] = True
            last_used[used] = run.step
            if run.step % cfg.restart_every == 0:
                _restart_dead_codes(model, images, last_used, run.step, cfg.restart_every, gen)
            info: dict[str, float] = {}
            if run.logging_due():
                run.log({f"tokenizer/{k_}": v.item() for k_, v in losses.items()})
                with torch.no_grad():
                    recon = model.decode_raw(ids).clamp(0, 1)  # (B, 3, H, W)
                info = {"l1": losses["l1"].item(), "psnr": float(psnr(recon, images))}
                run.log({"tokenizer/psnr": info["psnr"]})
            progress.advance(1, **info)
            run.checkpoint(parts)
    return model.eval()


@torch.no_grad()
def _restart_dead_codes(
    model: MaskGITVQGAN, images: Tensor, last_used: Tensor, step: int, window: int, gen: torch.Generator
) -> None:
    """Move the codes unused for ``window`` steps onto encoder outputs of ``images``, drawn with
    probability proportional to their squared distance from the codebook (k-means++ style): new
    codes go where the batch is worst represented, not onto copies of well-served flat regions."""
    dead = (step - last_used) >= window  # (K,)
    n = int(dead.sum())
    if n == 0:
        return
    z = model.encoder(images).permute(0, 2, 3, 1).reshape(-1, model.config.z_channels)  # (N, z)
    err = torch.cdist(z, model.quantize.embedding.weight[~dead]).amin(dim=1).pow(2) if n < len(dead) else None
    weights = torch.ones(len(z)) if err is None or float(err.sum()) <= 0 else err  # (N,)
    pick = torch.multinomial(weights, n, replacement=True, generator=gen)  # (n,)
    model.quantize.embedding.weight[dead] = z[pick]
    last_used[dead] = step
