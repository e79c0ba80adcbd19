"""``adanat eval``: FID, IS, precision/recall (and class accuracy) of a schedule or a policy.

Text-to-image presets (``cc3m``) take their prompts from --prompts-file, --prompts or --captions
(image-caption pairs, whose images are also the FID reference unless --reference is given) and
report the CLIP score with --clip-weights. Runs under ``torchrun`` too: the batches are dealt
out to the processes and the numbers equal a single-process run with the same seed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from adanat.assets import sha256_of
from adanat.cli import common
from adanat.outputs import OutputError, save_grid, write_text_atomic
from adanat.progress import StepProgress

if TYPE_CHECKING:
    import torch

    from adanat.captions import CaptionSet
    from adanat.clip_score import ClipSimilarity
    from adanat.weights import LoadedModels


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        parents=[common.model_options(), common.generation_options(), common.prompt_options()],
        help="FID, IS, precision/recall (and class accuracy or CLIP score) of a schedule or policy",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "-n",
        "--n",
        type=common.positive_int,
        default=5000,
        help="generated images, labels cycling over the classes or the prompts (under torchrun write "
        "-n: torchrun reads --n as its own abbreviated option)",
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
        help="shapes: held-out images for the reference; --captions: captioned images (default: --n)",
    )
    p.add_argument("--inception", type=Path, help="torch-fidelity Inception-v3 weights (.pth/.safetensors)")
    p.add_argument(
        "--captions",
        type=Path,
        help="text-to-image presets: image-caption pairs (TSV or folder); the captions are the prompts "
        "and, without --reference, the images the FID reference",
    )
    p.add_argument(
        "--clip-model", default="ViT-L-14", help="open-clip architecture (or config JSON) of the CLIP score"
    )
    p.add_argument(
        "--clip-weights", type=Path, help="its weights: text-to-image presets then report the CLIP score"
    )
    p.set_defaults(run=run)


def eval_prompts(
    args: argparse.Namespace, target: common.Target
) -> tuple[list[str] | None, CaptionSet | None]:
    """The prompts of a text-to-image evaluation and its caption set (None, None for classes)."""
    if args.captions is None:
        return target.prompts(args), None
    from adanat.captions import CaptionSet

    if not target.takes_text:
        raise common.UsageError(f"--captions: preset {target.preset.name} is class-conditional")
    if args.prompts is not None or args.prompts_file is not None:
        raise common.UsageError("give --captions or --prompts/--prompts-file, not both")
    captions = CaptionSet.read(args.captions)
    return list(captions.captions), captions


def run(args: argparse.Namespace) -> int:
    """Evaluate, print a table, and write the JSON report and grid when asked."""
    from adanat import evaluation
    from adanat.distributed import batch_bounds, close_shard, init_shard
    from adanat.metrics import ReferenceRequest

    target = common.Target.of(args.preset)
    if args.n < 2 or (args.reference_n is not None and args.reference_n < 2):
        raise common.UsageError("--n and --reference-n must be >= 2")
    prompts, captions = eval_prompts(args, target)
    if captions is None or args.reference is not None:
        target.check_reference(args.reference)
    if args.clip_weights is not None and not target.takes_text:
        raise common.UsageError(
            f"--clip-weights: preset {target.preset.name} has no prompts to score against"
        )
    if args.clip_weights is not None and not args.clip_weights.is_file():
        raise common.UsageError(f"--clip-weights {args.clip_weights} is not a file")
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
        clip = clip_similarity(args, prompts, device)  # refused before the generator loads
        models, sampler = common.load_sampler(args, device, prompts)
        make_controller, steps, policy_info = common.policy_controllers(
            args, schedule, target, models, sampler
        )
        space = target.metric_space(args.inception).to(device)
        request = ReferenceRequest(
            args.reference_n or args.n,
            target.preset.image_size,
            device,
            args.reference,
            shard,
            args.batch_size,
        )
        if captions is not None and args.reference is None:
            from adanat.captions import caption_reference

            reference = caption_reference(captions, space, request)
        else:
            reference = target.reference("evaluation", space, request)
        scoring = evaluation.Scoring(space, reference, target.class_accuracy, clip)
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
            **text_config(args, models, prompts),
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


def clip_similarity(
    args: argparse.Namespace, prompts: list[str] | None, device: torch.device
) -> ClipSimilarity | None:
    """The CLIP model of the CLIP score (``--clip-weights``), each image against its own prompt."""
    if args.clip_weights is None or prompts is None:
        return None
    from adanat.clip_score import ClipSimilarity, load_clip

    try:
        model, tokenizer = load_clip(args.clip_model, args.clip_weights)
    except (OSError, RuntimeError, ValueError) as e:
        raise common.UsageError(
            f"cannot load open-clip {args.clip_model} from {args.clip_weights}: {e}"
        ) from None
    return ClipSimilarity(model.to(device), tokenizer, prompts)


def text_config(
    args: argparse.Namespace, models: LoadedModels, prompts: list[str] | None
) -> dict[str, object]:
    """The report's text fields: the text encoder, where the prompts came from, the CLIP model."""
    if prompts is None:
        return {}
    from adanat.prompts import prompts_digest

    text = models.text_encoder_file
    source = args.captions or args.prompts_file
    return {
        "text_encoder": str(text),
        "text_encoder_sha256": None if text is None else sha256_of(text),
        "prompts": str(source) if source is not None else prompts,  # a --prompts list as given
        "num_prompts": len(prompts),
        "prompts_sha256": prompts_digest(prompts),
        "clip_model": args.clip_model if args.clip_weights is not None else None,
        "clip_weights": None if args.clip_weights is None else str(args.clip_weights),
    }


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
        ("CLIP score", "clip_score", "{:.3f}"),
    ]
    for label, key, fmt in rows:
        if key in metrics:
            table.add_row(label, fmt.format(metrics[key]))
    table.add_row("generator GFLOPs / image", f"{report['gflops_per_image']:.3f}")
    table.add_row("generation ms / image", f"{1000 * float(report['seconds_per_image']):.2f}")  # type: ignore[arg-type]
    Console().print(table)
