"""Codebook pruning: usage-weighted k-means over the codes, most used member of each cluster kept."""

from __future__ import annotations

import pytest
import torch

from adanat.models.vqgan import MaskGITVQGAN
from adanat.presets import tokenizer_config
from adanat.pretrain.codebook import code_usage, prune_codebook, weighted_kmeans


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(20, 2, generator=g) for c in centres])  # (60, 2)
    assign = weighted_kmeans(points, torch.ones(60), 3, torch.Generator().manual_seed(1))
    groups = [set(assign[i * 20 : (i + 1) * 20].tolist()) for i in range(3)]
    assert all(len(s) == 1 for s in groups) and len(set.union(*groups)) == 3


def test_kmeans_rejects_more_clusters_than_points():
    with pytest.raises(ValueError, match="cannot make 5 clusters of 4 points"):
        weighted_kmeans(torch.zeros(4, 2), torch.ones(4), 5, torch.Generator())


@torch.no_grad()
def test_duplicates_merge_into_their_most_used_code():
    torch.manual_seed(0)
    model = MaskGITVQGAN(tokenizer_config("vqgan-tiny")).eval()  # 64 codes of 32 dims
    base = torch.randn(8, 32) * 5  # (8, z) distinct codes
    g = torch.Generator().manual_seed(0)
    codes = base.repeat_interleave(8, dim=0) + 0.01 * torch.randn(64, 32, generator=g)  # 8 near-copies each
    model.quantize.embedding.weight.copy_(codes)
    usage = torch.arange(64, dtype=torch.float32) % 8  # within each group, the last copy is most used
    pruned = prune_codebook(model, usage, 8, seed=0)
    assert pruned.config.codebook_size == 8 and pruned.quantize.embedding.weight.shape == (8, 32)
    kept = [int((codes == row).all(1).nonzero()) for row in pruned.quantize.embedding.weight]
    assert kept == [7, 15, 23, 31, 39, 47, 55, 63]
    assert model.config.codebook_size == 64  # the original is untouched
    # encoding picks the nearest kept code; decoding uses the same network
    images = torch.rand(2, 3, 32, 32)
    ids = pruned.encode(images)
    assert int(ids.max()) < 8
    assert torch.equal(pruned.decoder.conv_in.weight, model.decoder.conv_in.weight)
    again = prune_codebook(model, usage, 8, seed=0)
    assert torch.equal(again.quantize.embedding.weight, pruned.quantize.embedding.weight)


@torch.no_grad()
def test_code_usage_counts_every_token():
    torch.manual_seed(0)
    model = MaskGITVQGAN(tokenizer_config("vqgan-tiny")).eval()
    images = (torch.rand(5, 3, 32, 32) * 255).to(torch.uint8)
    counts = code_usage(model, images, batch=2)
    assert counts.shape == (64,) and int(counts.sum()) == 5 * 8 * 8
    ids = model.encode(images.float() / 255)
    assert torch.equal(counts, torch.bincount(ids.flatten(), minlength=64).float())
