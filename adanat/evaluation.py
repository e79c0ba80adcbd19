"""Sample quality of a controller: generate many images, then FID/IS/precision/recall and class accuracy.

For ``shapes`` every number is computed in the world's metric-network feature space through
torch-fidelity (see :mod:`adanat.metrics`) against the held-out split; the real-vs-real floor
compares the held-out split with a second real split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from adanat.assets import load_metric_network
from adanat.distributed import Shard, batch_bounds, gather_batches
from adanat.metrics import (
    FeatureSpace,
    FidStatistics,
    fid_from_features,
    fidelity_metrics,
    metrics_from_features,
    register_shapes_extractor,
)
from adanat.models.classifier import accuracy
from adanat.models.enat import ENAT
from adanat.models.vqgan import MaskGITVQGAN
from adanat.outputs import to_uint8
from adanat.rng import Generators, row_generators
from adanat.sampling import Controller, Generation, generate
from adanat.schedules import CONTROL_NAMES
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
    make_controller: Callable[[Generators], Controller],
    n: int,
    steps: int,
    seed: int,
    batch_size: int,
    batches: Iterable[int] | None = None,
    reuse: bool = True,
    precision: str = "float32",
) -> Iterator[tuple[Tensor, Generation]]:
    """``(labels, generation)`` per batch of ``n`` images with labels ``i % C``; image ``i`` uses
    row stream ``i`` of ``seed``, so the images do not depend on ``batch_size``.

    :param make_controller: the controller of a batch, given the batch's row generators (a
        fixed schedule ignores them: ``lambda _g: controller``).
    :param batches: indices of the batches to run (default all; a shard runs its own).
    :param reuse: ENAT's computation reuse between steps (see :func:`adanat.sampling.generate`).
    :param precision: ``float32`` or ``bfloat16`` autocast (:mod:`adanat.precision`).
    """
    device = next(generator.parameters()).device
    labels = torch.arange(n, device=device) % generator.config.num_classes  # (N,)
    bounds = batch_bounds(n, batch_size)
    for j in range(len(bounds)) if batches is None else batches:
        rows = bounds[j]
        gens = row_generators(seed, len(rows), device, offset=rows.start)
        batch = labels[rows.start : rows.stop]  # (b,)
        controller = make_controller(gens)
        yield (
            batch,
            generate(
                generator,
                batch,
                controller,
                steps,
                gens,
                tokenizer=tokenizer,
                reuse=reuse,
                precision=precision,
            ),
        )


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
    reuse: bool = True,
    precision: str = "float32",
) -> Samples:
    """``n`` images with labels ``i % C``; image ``i`` uses row stream ``i`` of ``seed``."""
    images, labels, traces = [], [], []
    batches = sample_batches(
        generator,
        tokenizer,
        lambda _g: controller,
        n,
        steps,
        seed,
        batch_size,
        reuse=reuse,
        precision=precision,
    )
    for rows, out in batches:
        images.append(to_uint8(out.images).cpu())
        labels.append(rows.cpu())
        traces.append(out.trace.cpu())
        if on_batch is not None:
            on_batch(len(rows))
    return Samples(torch.cat(images), torch.cat(labels), torch.cat(traces))


def real_images(split: str, n: int) -> Tensor:
    """``n`` uint8 images of a ``shapes`` split."""
    ds = ShapesDataset(split, n)
    return to_uint8(torch.stack([ds[i][0] for i in range(n)]))


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


# --- sharded evaluation (``adanat eval``) ---------------------------------------------------


@dataclass
class Reference:
    """What generated features are compared with: FID statistics, and real features for
    precision/recall when available."""

    stats: FidStatistics
    features: Tensor | None  # (M, F)
    description: str


@torch.no_grad()
def shapes_reference(
    space: FeatureSpace,
    n: int,
    shard: Shard,
    device: torch.device,
    batch_size: int = 250,
    split: str = "heldout",
) -> Reference:
    """Features of ``n`` real ``shapes`` images of ``split`` (sharded like the generated ones;
    each process renders only its own batches)."""
    ds = ShapesDataset(split, n)

    def render(rows: range) -> Tensor:
        return to_uint8(torch.stack([ds[i][0] for i in rows]))  # (b, 3, H, W)

    feats = features_of_batches(space, n, render, shard, device, batch_size)  # (n, F)
    return Reference(FidStatistics.of(feats), feats, f"shapes {split} split, {n} images")


@torch.no_grad()
def features_of_batches(
    space: FeatureSpace,
    n: int,
    images_of: Callable[[range], Tensor],
    shard: Shard,
    device: torch.device,
    batch_size: int = 250,
) -> Tensor:
    """FID-layer features ``(n, F)`` of ``n`` uint8 images that ``images_of(rows)`` gives batch
    by batch; each process computes its own batches, every process gets all features."""
    bounds = batch_bounds(n, batch_size)
    mine = [space(images_of(bounds[j]))[0] for j in shard.batches(len(bounds))]
    return gather_batches(shard, mine, [len(b) for b in bounds], device)


@dataclass
class EvalOutcome:
    """Everything ``adanat eval`` measures for one controller."""

    metrics: dict[str, float]
    trace: Tensor  # (N, T, 4) controls used per image
    images: Tensor  # (K, 3, H, W) uint8: the first images (on the main process)
    gflops_per_image: float  # generator forward FLOPs (both guidance branches, all steps)
    seconds_per_image: float  # generation time (generator + tokenizer), summed over processes


def generator_gflops(
    generator: ENAT,
    tokenizer: MaskGITVQGAN,
    controller: Controller,
    steps: int,
    seed: int,
    rows: int = 2,
    reuse: bool = True,
) -> float:
    """Generator GFLOPs per image, counted by torch's FLOP counter on ``rows`` images."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(generator.parameters()).device
    labels = torch.arange(rows, device=device) % generator.config.num_classes
    with FlopCounterMode(display=False) as counter:
        gens = row_generators(seed, rows, device)
        generate(generator, labels, controller, steps, gens, tokenizer=tokenizer, reuse=reuse)
    counts = counter.get_flop_counts().get(type(generator).__name__, {})
    return sum(counts.values()) / rows / 1e9


@torch.no_grad()
def evaluate_controller(
    generator: ENAT,
    tokenizer: MaskGITVQGAN,
    make_controller: Callable[[Generators], Controller],
    space: FeatureSpace,
    reference: Reference,
    n: int,
    steps: int,
    seed: int,
    shard: Shard | None = None,
    batch_size: int = 250,
    class_accuracy: bool = False,
    keep_images: int = 100,
    on_batch: Callable[[int], None] | None = None,
    reuse: bool = True,
    precision: str = "float32",
) -> EvalOutcome:
    """Generate ``n`` images (labels ``i % C``, image ``i`` from row stream ``i`` of ``seed``),
    this process's share of the batches only, then gather features and compute the metrics.

    :param make_controller: the controller for a batch, given the batch's row generators.
    :param class_accuracy: also report how often the feature space's logits give the label
        (``shapes``: the metric network).
    :param reuse: ENAT's computation reuse between steps (off: every step encodes every token).
    :param precision: ``float32`` or ``bfloat16`` autocast (:mod:`adanat.precision`).
    """
    shard = shard or Shard()
    device = next(generator.parameters()).device
    bounds = batch_bounds(n, batch_size)
    sizes = [len(b) for b in bounds]
    labels = torch.arange(n) % generator.config.num_classes  # (N,)
    feats, logits, traces, seconds, kept = [], [], [], [], []
    mine = shard.batches(len(bounds))
    t0 = time.perf_counter()
    batches = sample_batches(
        generator, tokenizer, make_controller, n, steps, seed, batch_size, mine, reuse, precision
    )
    for rows, out in batches:
        seconds.append(torch.tensor([time.perf_counter() - t0], dtype=torch.float64))  # generation
        images = to_uint8(out.images)  # (b, 3, H, W)
        f, lg = space(images)  # (b, F), (b, C)
        feats.append(f)
        logits.append(lg)
        traces.append(out.trace.double().cpu())  # (b, T, 4)
        if sum(len(k) for k in kept) < keep_images:
            kept.append(images.cpu())
        if on_batch is not None:
            on_batch(len(rows))
        t0 = time.perf_counter()
    feats_all = gather_batches(shard, feats, sizes, device)  # (N, F)
    logits_all = gather_batches(shard, logits, sizes, device)  # (N, C)
    trace = gather_batches(shard, traces, sizes, device)  # (N, T, 4)
    total_seconds = float(gather_batches(shard, seconds, [1] * len(sizes), device).sum())
    metrics = metrics_from_features(feats_all, logits_all, reference.stats, reference.features, seed=seed)
    if class_accuracy:
        metrics["class_accuracy"] = float((logits_all.argmax(1) == labels).double().mean())
    controller = make_controller(row_generators(seed, 2, device))
    return EvalOutcome(
        metrics=metrics,
        trace=trace.float(),
        images=torch.cat(kept)[:keep_images] if kept else torch.empty(0, 3, 1, 1, dtype=torch.uint8),
        gflops_per_image=generator_gflops(generator, tokenizer, controller, steps, seed, reuse=reuse),
        seconds_per_image=total_seconds / n,
    )


def eval_report(outcome: EvalOutcome, config: dict[str, object]) -> dict[str, object]:
    """The JSON form of an evaluation: every number, the schedule actually used (per-step mean
    and spread over the images) and the full configuration with library versions."""
    import torch_fidelity

    import adanat

    trace = outcome.trace  # (N, T, 4)
    return {
        "metrics": outcome.metrics,
        "gflops_per_image": outcome.gflops_per_image,
        "seconds_per_image": outcome.seconds_per_image,
        "schedule_mean": {f: trace[:, :, j].mean(0).tolist() for j, f in enumerate(CONTROL_NAMES)},
        "schedule_std": {f: trace[:, :, j].std(0).tolist() for j, f in enumerate(CONTROL_NAMES)},
        "config": config,
        "versions": {
            "adanat": adanat.__version__,
            "torch": torch.__version__,
            "torch_fidelity": torch_fidelity.__version__,
        },
    }


@torch.no_grad()
def controller_fid(
    generator: ENAT,
    tokenizer: MaskGITVQGAN,
    controller: Controller,
    space: FeatureSpace,
    reference: FidStatistics,
    n: int,
    steps: int,
    seed: int,
    batch_size: int = 250,
    precision: str = "float32",
) -> float:
    """FID of ``n`` images of a controller (one process; what the schedule search measures),
    generated in ``precision`` (:mod:`adanat.precision`)."""
    batches = sample_batches(
        generator, tokenizer, lambda _g: controller, n, steps, seed, batch_size, precision=precision
    )
    feats = [space(to_uint8(out.images))[0] for _, out in batches]
    return float(fid_from_features(torch.cat(feats), reference))
