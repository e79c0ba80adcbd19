"""``adanat eval``: FID, IS, precision/recall (and class accuracy) of a schedule or a policy.

Runs under ``torchrun`` too: the batches are dealt out to the processes and the numbers equal a
single-process run with the same seed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from adanat.assets import sha256_of
from adanat.cli import common
from adanat.outputs import OutputError, save_grid, write_text_atomic
from adanat.progress import StepProgress


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        parents=[common.model_options(), common.generation_options()],
        help="FID, IS, precision/recall (and class accuracy) of a schedule or policy",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "-n",
        "--n",
        type=common.positive_int,
        default=5000,
        help="generated images, labels cycling over the classes (under torchrun write -n: torchrun "
        "reads --n as its own abbreviated option)",
    )
    p.add_argument("--out", type=Path, help="results JSON (a new file)")
    p.add_argument("--grid", type=Path, help="PNG grid of the first 100 images (a new file)")
    p.add_argument(
        "--reference",
        type=Path,
        help="FID statistics .npz with mu/sigma (required for in256/in512); real images in it as "
        "arr_0 (ADM reference batches) also give precision/recall",
    )
    p.add_argument(
        "--reference-n",
        type=common.positive_int,
        help="shapes: held-out images for the reference (default: --n)",
    )
    p.add_argument("--inception", type=Path, help="torch-fidelity Inception-v3 weights (.pth/.safetensors)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, print a table, and write the JSON report and grid when asked."""
    from adanat import evaluation
    from adanat.distributed import batch_bounds, close_shard, init_shard
    from adanat.metrics import ReferenceRequest

    target = common.Target.of(args.preset)
    if args.n < 2 or (args.reference_n is not None and args.reference_n < 2):
        raise common.UsageError("--n and --reference-n must be >= 2")
    target.check_reference(args.reference)
    common.check_new_file(args.out, "--out")
    common.check_new_file(args.grid, "--grid")
    if args.out is not None and args.grid is not None and args.out.resolve() == args.grid.resolve():
        raise common.UsageError(f"--out and --grid name the same file {args.out}")
    schedule = common.schedule_of(args, target)
    shard, device = init_shard(common.resolve_device(args.device))
    try:
        for flag, n in (("-n", args.n), ("--reference-n", args.reference_n or args.n)):
            if len(batch_bounds(n, args.batch_size)) < shard.world_size:
                raise common.UsageError(
                    f"{flag} {n} at --batch-size {args.batch_size} gives fewer batches than the "
                    f"{shard.world_size} processes; lower --batch-size"
                )
        models, sampler = common.load_sampler(args, device)
        make_controller, steps, policy_info = common.policy_controllers(args, schedule, target, models)
        space = target.metric_space(args.inception).to(device)
        request = ReferenceRequest(
            args.reference_n or args.n,
            target.preset.image_size,
            device,
            args.reference,
            shard,
            args.batch_size,
        )
        reference = target.reference("evaluation", space, request)
        scoring = evaluation.Scoring(space, reference, target.class_accuracy)
        spec = evaluation.SampleSpec(args.n, steps, args.seed, args.batch_size)
        bounds = batch_bounds(args.n, args.batch_size)
        share = sum(len(bounds[j]) for j in shard.batches(len(bounds)))  # this process's images
        progress = StepProgress("evaluating", share, every=args.batch_size) if shard.is_main else None
        with progress or contextlib.nullcontext():  # only the main process reports
            on_batch = None if progress is None else progress.advance
            result = evaluation.evaluate_controller(
                sampler, make_controller, scoring, spec, shard, on_batch=on_batch
            )
    finally:
        close_shard(shard)
    if not shard.is_main:
        return 0
    report = evaluation.eval_report(
        result,
        config={
            "preset": args.preset,
            "world": target.world_name,
            "policy": args.policy,
            **policy_info,
            "steps": steps,
            "reuse": sampler.reuse,
            "precision": sampler.precision,
            "n": args.n,
            "seed": args.seed,
            "batch_size": args.batch_size,
            "processes": shard.world_size,
            "device": str(device),
            "feature_space": space.name,
            "reference": reference.description,
            "generator": str(models.generator_file),
            "generator_sha256": sha256_of(models.generator_file),
            "tokenizer": str(models.tokenizer_file),
            "tokenizer_sha256": sha256_of(models.tokenizer_file),
        },
    )
    print_eval_table(report, args.policy)
    grid_tmp = None if args.grid is None else args.grid.with_name(f".{args.grid.name}.partial.png")
    try:  # both files or neither
        if grid_tmp is not None:
            save_grid(result.images.float() / 255, grid_tmp, nrow=10)
        if args.out is not None:
            write_text_atomic(args.out, json.dumps(report, indent=1) + "\n")
            print(f"wrote {args.out}")
        if grid_tmp is not None:
            grid_tmp.replace(args.grid)
    except OSError as e:
        raise OutputError(f"cannot write the results: {e}") from None
    finally:
        if grid_tmp is not None:
            grid_tmp.unlink(missing_ok=True)
    return 0


def print_eval_table(report: dict[str, object], name: str) -> None:
    """The headline numbers of an ``eval`` report as a table on stdout."""
    from rich.console import Console
    from rich.table import Table

    metrics = report["metrics"]
    assert isinstance(metrics, dict)
    table = Table("metric", "value", title=f"adanat eval: {name}")
    rows = [
        ("FID", "frechet_inception_distance", "{:.3f}"),
        ("IS", "inception_score_mean", "{:.3f}"),
        ("precision", "precision", "{:.4f}"),
        ("recall", "recall", "{:.4f}"),
        ("class accuracy", "class_accuracy", "{:.4f}"),
    ]
    for label, key, fmt in rows:
        if key in metrics:
            table.add_row(label, fmt.format(metrics[key]))
    table.add_row("generator GFLOPs / image", f"{report['gflops_per_image']:.3f}")
    table.add_row("generation ms / image", f"{1000 * float(report['seconds_per_image']):.2f}")  # type: ignore[arg-type]
    Console().print(table)
