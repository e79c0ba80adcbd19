"""Pruning a trained VQ codebook to fewer codes by merging near-duplicates.

A VQGAN trained with dead-code restarts uses every code, but many codes are near-duplicates: the
restarts land where encoder outputs are dense, so a flat background colour ends up split over
dozens of codes whose choice depends only on what lies within the encoder's receptive field. A
generator then spends its capacity guessing among duplicates that decode alike.

:func:`prune_codebook` clusters the code vectors with usage-weighted k-means (k-means++ start,
drawn from a ``torch.Generator``) and keeps, from each cluster, its most used code. The result is
the same MaskGIT VQGAN with a codebook that is a subset of the trained one, so encoding is the
nearest kept code and the decoder sees only vectors it was trained on.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import Tensor, nn

from adanat.models.vqgan import MaskGITVQGAN


@torch.no_grad()
def encode_uint8(model: MaskGITVQGAN, images: Tensor, batch: int = 500) -> Tensor:
    """Code ids ``(N, h, w)`` of uint8 images ``(N, 3, H, W)``, encoded ``batch`` at a time."""
    return torch.cat(
        [model.encode(images[i : i + batch].float() / 255) for i in range(0, len(images), batch)]
    )


def code_usage(model: MaskGITVQGAN, images: Tensor, batch: int = 500) -> Tensor:
    """How often each code is chosen for uint8 images ``(N, 3, H, W)``: ``(K,)`` counts."""
    ids = encode_uint8(model, images, batch)  # (N, h, w)
    return torch.bincount(ids.flatten(), minlength=model.config.codebook_size).float()


def weighted_kmeans(points: Tensor, weights: Tensor, k: int, gen: torch.Generator, iters: int = 50) -> Tensor:
    """Cluster of each point ``(N,)`` for points ``(N, D)`` with weights ``(N,)`` (all > 0)."""
    if not 1 <= k <= len(points):
        raise ValueError(f"cannot make {k} clusters of {len(points)} points")
    first = int(torch.multinomial(weights / weights.sum(), 1, generator=gen))
    centres = [points[first]]
    for _ in range(k - 1):  # k-means++: next centre drawn by weight x squared distance
        d2 = torch.cdist(points, torch.stack(centres)).min(dim=1).values.pow(2) * weights  # (N,)
        if float(d2.sum()) == 0.0:  # fewer distinct points than clusters
            d2 = weights.clone()
        centres.append(points[int(torch.multinomial(d2 / d2.sum(), 1, generator=gen))])
    c = torch.stack(centres)  # (k, D)
    assign = torch.cdist(points, c).argmin(dim=1)  # (N,)
    for _ in range(iters):
        one_hot = torch.zeros(len(points), k).scatter_(1, assign[:, None], 1.0) * weights[:, None]  # (N, k)
        mass = one_hot.sum(0)  # (k,)
        moved = (one_hot.t() @ points) / mass.clamp_min(1e-12)[:, None]  # (k, D)
        c = torch.where(mass[:, None] > 0, moved, c)
        new = torch.cdist(points, c).argmin(dim=1)  # (N,)
        if torch.equal(new, assign):
            break
        assign = new
    return assign


def prune_codebook(model: MaskGITVQGAN, usage: Tensor, size: int, seed: int = 0) -> MaskGITVQGAN:
    """A copy of ``model`` whose codebook keeps ``size`` of its codes (fewer if clusters come out
    empty): the most used code ``usage`` ``(K,)`` of each usage-weighted k-means cluster, in
    their original order."""
    codes = model.quantize.embedding.weight.detach()  # (K, z)
    gen = torch.Generator().manual_seed(seed)
    assign = weighted_kmeans(codes, usage.float() + 1e-3, size, gen)  # unused codes weigh almost 0
    keep = sorted(
        int(members[usage[members].argmax()])
        for j in range(size)
        if len(members := (assign == j).nonzero().flatten())
    )
    pruned = copy.deepcopy(model)
    pruned.config = replace(model.config, codebook_size=len(keep))
    # the kept codes replace the table (from_pretrained draws no random init)
    pruned.quantize.embedding = nn.Embedding.from_pretrained(codes[keep].clone(), freeze=False)
    return pruned
