"""Sample quality of a controller: generate many images with a sampler, then FID/IS/precision/recall.

Which images: :class:`SampleSpec` (``n`` images, labels ``i % C``, image ``i`` from row stream
``i`` of the seed, so the images do not depend on the batch size or the number of processes).
What they are compared with: a :class:`~adanat.metrics.Reference` in a
:class:`~adanat.metrics.FeatureSpace`, which the world provides
(:meth:`adanat.presets.World.reference`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from adanat.distributed import Shard, batch_bounds, gather_batches
from adanat.flops import count_flops
from adanat.metrics import FeatureSpace, FidStatistics, Reference, fid_from_features, metrics_from_features
from adanat.outputs import to_uint8
from adanat.rng import Rngs, row_rngs
from adanat.sampling import Controller, Generation, NATSampler
from adanat.schedules import CONTROL_NAMES

if TYPE_CHECKING:
    from adanat.clip_score import ClipSimilarity

ControllerFactory = Callable[[Rngs], Controller]
"""The controller of a batch, given the batch's row rngs (a fixed schedule ignores them)."""


@dataclass(frozen=True)
class SampleSpec:
    """Which images to generate: ``n`` with labels ``i % C``, image ``i`` from row stream ``i`` of
    ``seed``, in ``steps`` steps, ``batch_size`` at a time."""

    n: int
    steps: int
    seed: int
    batch_size: int = 250

    def bounds(self) -> list[range]:
        return batch_bounds(self.n, self.batch_size)


@dataclass
class Samples:
    images: Tensor  # (N, 3, H, W) uint8
    labels: Tensor  # (N,)
    trace: Tensor  # (N, T, 4)


def fixed(controller: Controller) -> ControllerFactory:
    """The same controller for every batch."""
    return lambda _rngs: controller


@torch.no_grad()
def sample_batches(
    sampler: NATSampler,
    make_controller: ControllerFactory,
    spec: SampleSpec,
    batches: Iterable[int] | None = None,
) -> Iterator[tuple[Tensor, Generation]]:
    """``(labels, generation)`` per batch of ``spec`` (``batches``: the indices to run, default
    all; a shard runs its own)."""
    device = sampler.device
    num_classes = sampler.generator.num_classes
    assert num_classes is not None, "class-conditional generators only"
    labels = torch.arange(spec.n, device=device) % num_classes  # (N,)
    bounds = spec.bounds()
    for j in range(len(bounds)) if batches is None else batches:
        rows = bounds[j]
        rngs = row_rngs(spec.seed, len(rows), device, offset=rows.start)
        batch = labels[rows.start : rows.stop]  # (b,)
        yield batch, sampler.generate(batch, make_controller(rngs), spec.steps, rngs)


@torch.no_grad()
def generate_samples(
    sampler: NATSampler,
    controller: Controller,
    spec: SampleSpec,
    on_batch: Callable[[int], None] | None = None,
) -> Samples:
    """All images of ``spec`` as uint8, on the CPU, with their labels and controls."""
    images, labels, traces = [], [], []
    for rows, out in sample_batches(sampler, fixed(controller), spec):
        assert out.images is not None
        images.append(to_uint8(out.images).cpu())
        labels.append(rows.cpu())
        traces.append(out.trace.cpu())
        if on_batch is not None:
            on_batch(len(rows))
    return Samples(torch.cat(images), torch.cat(labels), torch.cat(traces))


@dataclass
class Scoring:
    """What an evaluation measures against: a feature space, its reference, whether the
    space's logits are the generator's classes (then class accuracy is reported too), and for
    prompts a CLIP model whose similarity of each image with its own prompt gives the CLIP score."""

    space: FeatureSpace
    reference: Reference
    class_accuracy: bool = False
    clip: ClipSimilarity | None = None


@dataclass
class EvalOutcome:
    """Everything ``adanat eval`` measures for one controller."""

    metrics: dict[str, float]
    trace: Tensor  # (N, T, 4) controls used per image
    images: Tensor  # (K, 3, H, W) uint8: the first images (on the main process)
    gflops_per_image: float  # generator forward FLOPs (both guidance branches, all steps)
    seconds_per_image: float  # generation time (generator + tokenizer), summed over processes


def generator_gflops(
    sampler: NATSampler, controller: Controller, steps: int, seed: int, rows: int = 2
) -> float:
    """Generator GFLOPs per image (attention included), counted on ``rows`` images."""
    device = sampler.device
    num_classes = sampler.generator.num_classes or 1
    labels = torch.arange(rows, device=device) % num_classes  # (rows,)
    rngs = row_rngs(seed, rows, device)
    counts = count_flops(lambda: sampler.generate(labels, controller, steps, rngs))
    # a prompt-driven generator (adanat.prompts.PromptConditioned) counts its inner model's forwards
    model = getattr(sampler.generator, "generator", sampler.generator)
    return counts.of(type(model).__name__) / rows / 1e9


@torch.no_grad()
def evaluate_controller(
    sampler: NATSampler,
    make_controller: ControllerFactory,
    scoring: Scoring,
    spec: SampleSpec,
    shard: Shard | None = None,
    keep_images: int = 100,
    on_batch: Callable[[int], None] | None = None,
) -> EvalOutcome:
    """Generate the images of ``spec`` (this process's share of the batches only), then gather
    features and compute the metrics against ``scoring``."""
    shard = shard or Shard()
    device = sampler.device
    bounds = spec.bounds()
    sizes = [len(b) for b in bounds]
    feats, logits, traces, seconds, kept, sims = [], [], [], [], [], []
    t0 = time.perf_counter()
    for rows, out in sample_batches(sampler, make_controller, spec, shard.batches(len(bounds))):
        seconds.append(torch.tensor([time.perf_counter() - t0], dtype=torch.float64))  # generation
        assert out.images is not None
        images = to_uint8(out.images)  # (b, 3, H, W)
        f, lg = scoring.space(images)  # (b, F), (b, C)
        feats.append(f)
        logits.append(lg)
        if scoring.clip is not None:
            sims.append(scoring.clip(images, rows).double().to(device))  # (b,)
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
    ref = scoring.reference
    metrics = metrics_from_features(feats_all, logits_all, ref.stats, ref.features, seed=spec.seed)
    if scoring.clip is not None:
        from adanat.clip_score import clip_score

        metrics["clip_score"] = clip_score(gather_batches(shard, sims, sizes, device))  # over (N,)
    if scoring.class_accuracy:
        truth = torch.arange(spec.n) % (sampler.generator.num_classes or 1)  # (N,)
        metrics["class_accuracy"] = float((logits_all.argmax(1) == truth).double().mean())
    controller = make_controller(row_rngs(spec.seed, 2, device))
    return EvalOutcome(
        metrics=metrics,
        trace=trace.float(),
        images=torch.cat(kept)[:keep_images] if kept else torch.empty(0, 3, 1, 1, dtype=torch.uint8),
        gflops_per_image=generator_gflops(sampler, controller, spec.steps, spec.seed),
        seconds_per_image=total_seconds / spec.n,
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
    sampler: NATSampler,
    controller: Controller,
    space: FeatureSpace,
    reference: FidStatistics,
    spec: SampleSpec,
    shard: Shard | None = None,
) -> float:
    """FID of the images of ``spec`` under one controller (what the schedule search and model
    selection measure); with ``shard`` each process makes its share, and all get the FID."""
    shard = shard or Shard()
    bounds = spec.bounds()
    feats = []
    for _, out in sample_batches(sampler, fixed(controller), spec, shard.batches(len(bounds))):
        assert out.images is not None
        feats.append(space(to_uint8(out.images))[0])
    gathered = gather_batches(shard, feats, [len(b) for b in bounds], sampler.device)  # (N, F)
    return float(fid_from_features(gathered, reference))
