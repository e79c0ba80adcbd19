"""Sample quality of a controller: generate many images, then FID/IS/precision/recall and class accuracy.

For ``shapes`` every number is computed in the world's metric-network feature space through
torch-fidelity (see :mod:`adanat.metrics`) against the held-out split; the real-vs-real floor
compares the held-out split with a second real split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from adanat.assets import load_metric_network
from adanat.metrics import fidelity_metrics, register_shapes_extractor
from adanat.models.classifier import accuracy
from adanat.models.enat import ENAT
from adanat.models.vqgan import MaskGITVQGAN
from adanat.rng import row_generators
from adanat.sampling import Controller, Generation, generate
from adanat.worlds.shapes import ShapesDataset


@dataclass
class Samples:
    images: Tensor  # (N, 3, H, W) uint8
    labels: Tensor  # (N,)
    trace: Tensor  # (N, T, 4)


@torch.no_grad()
def sample_batches(
    generator: ENAT,
    tokenizer: MaskGITVQGAN,
    controller: Controller,
    n: int,
    steps: int,
    seed: int,
    batch_size: int,
) -> Iterator[tuple[Tensor, Generation]]:
    """``(labels, generation)`` per batch of ``n`` images with labels ``i % C``; image ``i`` uses
    row stream ``i`` of ``seed``, so the images do not depend on ``batch_size``."""
    device = next(generator.parameters()).device
    labels = torch.arange(n, device=device) % generator.config.num_classes
    for i in range(0, n, batch_size):
        rows = labels[i : i + batch_size]
        gens = row_generators(seed, len(rows), device, offset=i)
        yield rows, generate(generator, rows, controller, steps, gens, tokenizer=tokenizer)


@torch.no_grad()
def generate_samples(
    generator: ENAT,
    tokenizer: MaskGITVQGAN,
    controller: Controller,
    n: int,
    steps: int,
    seed: int,
    batch_size: int = 250,
    on_batch: Callable[[int], None] | None = None,
) -> Samples:
    """``n`` images with labels ``i % C``; image ``i`` uses row stream ``i`` of ``seed``."""
    images, labels, traces = [], [], []
    for rows, out in sample_batches(generator, tokenizer, controller, n, steps, seed, batch_size):
        images.append((out.images * 255).round().to(torch.uint8).cpu())
        labels.append(rows.cpu())
        traces.append(out.trace.cpu())
        if on_batch is not None:
            on_batch(len(rows))
    return Samples(torch.cat(images), torch.cat(labels), torch.cat(traces))


def real_images(split: str, n: int) -> Tensor:
    """``n`` uint8 images of a ``shapes`` split."""
    ds = ShapesDataset(split, n)
    return torch.stack([(ds[i][0] * 255).round().to(torch.uint8) for i in range(n)])


def shapes_quality(samples: Samples, reference: Tensor, seed: int = 0) -> dict[str, float]:
    """FID, IS, precision, recall (metric-network space) and class accuracy of ``shapes`` samples."""
    out = fidelity_metrics(samples.images, reference, register_shapes_extractor(), seed=seed)
    metric = load_metric_network()
    out["class_accuracy"] = accuracy(metric, samples.images, samples.labels)
    return out


def shapes_floor(n: int, seed: int = 0) -> dict[str, float]:
    """Real-vs-real numbers: the held-out split against the reference split."""
    held = real_images("heldout", n)
    ref = real_images("reference", n)
    out = fidelity_metrics(ref, held, register_shapes_extractor(), seed=seed)
    out["class_accuracy"] = accuracy(load_metric_network(), ref, torch.arange(n) % 10)
    return out
