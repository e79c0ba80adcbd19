"""The ``adanat`` command line.

Bad input (a missing or mismatched checkpoint, an unknown preset or schedule, a class out of
range, an output folder that already holds files) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adanat.assets import sha256_of
from adanat.checkpoints import CheckpointError
from adanat.outputs import (
    OutputError,
    check_output_dir,
    save_grid,
    save_images,
    staged_dir,
    write_text_atomic,
)
from adanat.precision import PRECISIONS
from adanat.presets import ModelPreset, model_preset_names, world_names
from adanat.rng import Generators, row_generators
from adanat.sampling import Controller, ScheduleController, generate
from adanat.schedules import CONTROL_NAMES, Schedule, ScheduleError, builtin_schedule_names, load_schedule
from adanat.search import SearchConfig, SearchError
from adanat.weights import LoadedModels, load_models, resolve_preset


class UsageError(ValueError):
    """A command-line value that cannot be used."""


EXPECTED_ERRORS = (UsageError, CheckpointError, ScheduleError, OutputError, SearchError)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available")
    return device


def parse_classes(text: str | None, preset: ModelPreset, n: int) -> list[int]:
    """Labels for ``n`` images: the listed classes cycled, or all classes in order."""
    if text is None:
        return [i % preset.num_classes for i in range(n)]
    try:
        classes = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise UsageError(f"--classes must be comma-separated integers, got {text!r}") from None
    if not classes:
        raise UsageError("--classes is empty")
    bad = [c for c in classes if not 0 <= c < preset.num_classes]
    if bad:
        raise UsageError(
            f"class {bad[0]} is outside preset {preset.name}'s range 0..{preset.num_classes - 1}"
        )
    return [classes[i % len(classes)] for i in range(n)]


@dataclass(kw_only=True)
class GenerationArgs:
    """Options shared by the commands that generate images (``sample``, ``eval``)."""

    policy: str
    preset: str
    generator: Path | None
    tokenizer: Path | None
    n: int
    steps: int | None
    seed: int
    out: Path | None
    device: str
    batch_size: int
    stochastic: bool = False
    no_reuse: bool = False
    precision: str = "float32"


@dataclass(kw_only=True)
class SampleArgs(GenerationArgs):
    classes: str | None


def is_policy_folder(policy: str) -> bool:
    """A folder is an exported learned policy (``RUN_DIR/policy``); anything else names a schedule."""
    return Path(policy).is_dir()


@dataclass(kw_only=True)
class EvalArgs(GenerationArgs):
    reference: Path | None
    reference_n: int | None
    inception: Path | None
    grid: Path | None


def policy_controller_factory(
    args: SampleArgs | EvalArgs, schedule: Schedule | None, world: str | None, models: LoadedModels
) -> tuple[Callable[[Generators], Controller], int, dict[str, object]]:
    """``(controller for a batch's row generators, T, description)`` for a schedule (given,
    already loaded) or the policy folder ``args.policy``."""
    if schedule is not None:
        controller = ScheduleController(schedule)
        return (lambda _g: controller), schedule.steps, {"schedule": schedule.to_dict()}
    from adanat.agents.export import PolicyController, PolicyError, load_policy

    try:
        actor, meta = load_policy(Path(args.policy))
    except PolicyError as e:
        raise UsageError(str(e)) from None
    where = f"policy {args.policy} was trained"
    if (world is not None and world != meta.world) or models.preset.name != meta.preset:
        raise UsageError(f"{where} for world {meta.world!r} (preset {meta.preset}), not {args.preset!r}")
    if sha256_of(models.generator_file) != meta.generator_sha256:
        raise UsageError(f"{where} with another generator than {models.generator_file}")
    if sha256_of(models.tokenizer_file) != meta.tokenizer_sha256:
        raise UsageError(f"{where} with another tokenizer than {models.tokenizer_file}")
    if args.steps not in (None, meta.steps):
        raise UsageError(f"{where} for --steps {meta.steps}, not {args.steps}")
    actor = actor.to(next(models.generator.parameters()).device)
    info = {"policy_meta": meta.to_dict(), "stochastic": args.stochastic}
    return (lambda g: PolicyController(actor, meta, args.stochastic, g)), meta.steps, info


def cmd_sample(args: SampleArgs) -> int:
    """Generate images with a schedule and write PNGs, a grid and ``samples.json``."""
    preset, world = resolve_preset(args.preset)
    if args.n < 1 or (args.steps is not None and args.steps < 1) or args.batch_size < 1:
        raise UsageError("--n, --steps and --batch-size must be >= 1")
    labels = parse_classes(args.classes, preset, args.n)
    schedule = None  # a schedule is checked before any weights are loaded
    if not is_policy_folder(args.policy):
        steps = args.steps or (world.steps if world else 8)
        schedule = load_schedule(args.policy, steps=steps, variant=preset.enat_variant)
    device = resolve_device(args.device)
    name = Path(args.policy).stem if schedule is not None else Path(args.policy).resolve().parent.name
    out = args.out or Path("samples") / f"{args.preset}-{name}-seed{args.seed}"
    check_output_dir(out)
    models = load_models(args.preset, args.generator, args.tokenizer, device)
    model, tokenizer = models.generator, models.tokenizer
    world_name = world.name if world else None
    make_controller, steps, policy_info = policy_controller_factory(args, schedule, world_name, models)

    label_t = torch.tensor(labels, dtype=torch.long, device=device)
    batches = [range(i, min(i + args.batch_size, args.n)) for i in range(0, args.n, args.batch_size)]
    images, traces = [], []
    columns = (TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with staged_dir(out) as stage, Progress(*columns, transient=True) as progress:
        task = progress.add_task("sample", total=len(batches) * steps)
        for rows in batches:
            gens = row_generators(args.seed, len(rows), device, offset=rows.start)
            result = generate(
                model,
                label_t[rows.start : rows.stop],
                make_controller(gens),
                steps,
                gens,
                tokenizer=tokenizer,
                on_step=lambda _k: progress.advance(task),
                reuse=not args.no_reuse,
                precision=args.precision,
            )
            names = [f"{i:05d}_class{labels[i]}.png" for i in rows]
            save_images(result.images.cpu(), stage, names)
            images.append(result.images.cpu())
            traces.append(result.trace.cpu())
        save_grid(torch.cat(images), stage / "grid.png")
        trace = torch.cat(traces)  # (N, T, 4)
        meta = {
            "preset": args.preset,
            "generator": str(models.generator_file),
            "tokenizer": str(models.tokenizer_file),
            "policy": args.policy,
            **policy_info,
            "steps": steps,
            "reuse": not args.no_reuse,
            "precision": args.precision,
            "seed": args.seed,
            "labels": labels,
            "controls": {f: trace[:, :, j].tolist() for j, f in enumerate(CONTROL_NAMES)},
        }
        (stage / "samples.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.n} images and grid.png to {out}")
    return 0


def check_new_file(path: Path | None, flag: str) -> None:
    """Refuse to overwrite: a results file must not exist yet, and its folder must."""
    if path is None:
        return
    if path.exists():
        raise UsageError(f"{flag} {path} already exists; choose a new file")
    if not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: folder {path.parent} does not exist")


def cmd_eval(args: EvalArgs) -> int:
    """FID, IS, precision, recall (and class accuracy for ``shapes``) of a schedule or policy."""
    from adanat import evaluation
    from adanat.distributed import batch_bounds, close_shard, init_shard
    from adanat.metrics import (
        FidStatistics,
        MetricsError,
        inception_feature_space,
        reference_images,
        shapes_feature_space,
    )

    preset, world = resolve_preset(args.preset)
    if args.n < 2 or (args.steps is not None and args.steps < 1) or args.batch_size < 1:
        raise UsageError("--n must be >= 2, --steps and --batch-size >= 1")
    if args.reference_n is not None and args.reference_n < 2:
        raise UsageError("--reference-n must be >= 2")
    is_shapes = world is not None and world.name == "shapes"
    if not is_shapes and args.reference is None:
        raise UsageError(f"--reference fid_stats.npz (Inception mu/sigma) is needed for {args.preset!r}")
    check_new_file(args.out, "--out")
    check_new_file(args.grid, "--grid")
    schedule = None
    if not is_policy_folder(args.policy):
        steps = args.steps or (world.steps if world else 8)
        schedule = load_schedule(args.policy, steps=steps, variant=preset.enat_variant)
    shard, device = init_shard(resolve_device(args.device))
    try:
        models = load_models(args.preset, args.generator, args.tokenizer, device)
        make_controller, steps, policy_info = policy_controller_factory(
            args, schedule, world.name if world else None, models
        )
        try:
            space = shapes_feature_space() if is_shapes else inception_feature_space(args.inception)
            space = space.to(device)
            ref_n = args.reference_n or args.n
            if args.reference is not None:
                real = reference_images(args.reference)
                feats = None
                if real is not None:  # precision/recall need real features
                    feats = evaluation.features_of_batches(
                        space,
                        len(real),
                        lambda rows: real[rows.start : rows.stop],
                        shard,
                        device,
                        args.batch_size,
                    )
                reference = evaluation.Reference(
                    FidStatistics.load(args.reference),
                    feats,
                    f"statistics {args.reference}" + ("" if real is None else f" with {len(real)} images"),
                )
            else:
                reference = evaluation.shapes_reference(space, ref_n, shard, device, args.batch_size)
        except MetricsError as e:
            raise UsageError(str(e)) from None
        columns = (TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        bounds = batch_bounds(args.n, args.batch_size)
        share = sum(len(bounds[j]) for j in shard.batches(len(bounds)))  # this process's images
        with Progress(*columns, transient=True, disable=not shard.is_main) as progress:
            task = progress.add_task("eval", total=share)
            result = evaluation.evaluate_controller(
                models.generator,
                models.tokenizer,
                make_controller,
                space,
                reference,
                args.n,
                steps,
                args.seed,
                shard=shard,
                batch_size=args.batch_size,
                class_accuracy=is_shapes,
                on_batch=lambda b: progress.advance(task, b),
                reuse=not args.no_reuse,
                precision=args.precision,
            )
    finally:
        close_shard(shard)
    if not shard.is_main:
        return 0
    report = evaluation.eval_report(
        result,
        config={
            "preset": args.preset,
            "world": world.name if world else None,
            "policy": args.policy,
            **policy_info,
            "steps": steps,
            "reuse": not args.no_reuse,
            "precision": args.precision,
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
    if args.grid is not None:
        save_grid(result.images.float() / 255, args.grid, nrow=10)
    if args.out is not None:
        write_text_atomic(args.out, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


@dataclass
class SearchArgs:
    preset: str
    generator: Path | None
    tokenizer: Path | None
    steps: int | None
    updates: int
    samples: int
    seed: int
    out: Path | None
    device: str
    batch_size: int
    lr_ratio: float
    lr_other: float
    delta_ratio: float
    delta_other: float
    momentum: float
    name: str | None
    reference: Path | None
    inception: Path | None


def cmd_search(args: SearchArgs) -> int:
    """AutoNAT's schedule search (resumable: the same command continues a stopped search)."""
    import math

    from adanat import evaluation, search
    from adanat.distributed import Shard
    from adanat.metrics import FidStatistics, MetricsError, inception_feature_space, shapes_feature_space

    _, world = resolve_preset(args.preset)
    steps = args.steps or (world.steps if world else 8)
    numbers = (args.lr_ratio, args.lr_other, args.delta_ratio, args.delta_other, args.momentum)
    if steps < 2 or args.updates < 1 or args.samples < 2 or args.batch_size < 1:
        raise UsageError("--steps must be >= 2, --updates and --batch-size >= 1, --samples >= 2")
    if (
        not all(math.isfinite(v) and v >= 0 for v in numbers)
        or args.delta_ratio <= 0
        or args.delta_other <= 0
    ):
        raise UsageError("learning rates, probes and momentum must be finite and >= 0 (probes > 0)")
    is_shapes = world is not None and world.name == "shapes"
    if not is_shapes and args.reference is None:
        raise UsageError(f"--reference fid_stats.npz (Inception mu/sigma) is needed for {args.preset!r}")
    name = args.name or f"autonat-{args.preset}-t{steps}"
    out = args.out or Path("runs") / f"search-{name}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file")
    cfg = SearchConfig(
        steps=steps,
        updates=args.updates,
        samples=args.samples,
        seed=args.seed,
        lr_ratio=args.lr_ratio,
        lr_other=args.lr_other,
        delta_ratio=args.delta_ratio,
        delta_other=args.delta_other,
        momentum=args.momentum,
        name=name,
    )
    state = search.start_state(cfg, out)  # refuses a folder searched with other settings
    device = resolve_device(args.device)
    models = load_models(args.preset, args.generator, args.tokenizer, device)
    try:
        space = (shapes_feature_space() if is_shapes else inception_feature_space(args.inception)).to(device)
        if args.reference is not None:
            reference = FidStatistics.load(args.reference)
        else:  # the "reference" split: evaluation keeps the held-out split for itself
            reference = evaluation.shapes_reference(
                space, args.samples, Shard(), device, args.batch_size, split="reference"
            ).stats
    except MetricsError as e:
        raise UsageError(str(e)) from None

    def fid(schedule: Schedule) -> float:
        ctrl = ScheduleController(schedule)
        return evaluation.controller_fid(
            models.generator,
            models.tokenizer,
            ctrl,
            space,
            reference,
            args.samples,
            steps,
            args.seed,
            args.batch_size,
        )

    per_update = 4 * steps - 1
    total = args.updates * per_update
    # measurements past a smaller budget (a search resumed with fewer updates) count as done
    done = min(total, state.update * per_update + (state.base_fid is not None) + len(state.probes))
    columns = (
        TextColumn("search"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns) as progress:
        task = progress.add_task("search", total=total, completed=done, info="")

        def on_fid(what: str, value: float) -> None:
            progress.update(task, advance=1, info=f"{what}: FID {value:.3f}")

        final = search.run_search(cfg, out, fid, models.generator.config.seq_len, on_fid)
    source = (
        f"AutoNAT search on {args.preset} at T={steps}: {args.updates} updates, {args.samples} samples per "
        f"FID, seed {args.seed}, on {device.type} (adanat search; the random streams, so the FIDs, "
        "depend on the device type)"
    )
    sched_path, log_path = search.write_results(final, out, source)
    best = final.best or {}
    lowest = f"lowest FID {best.get('fid', float('nan')):.3f} at update {best.get('update')}"
    print(f"{lowest}; wrote {sched_path} and {log_path}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="adanat", description="Adaptive generation policies for NAT image generators.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("sample", help="generate images with a schedule or a policy")
    p.add_argument(
        "--policy",
        default="enat",
        help=f"built-in schedule ({', '.join(builtin_schedule_names())}), a schedule JSON path, "
        "or an exported policy folder (RUN_DIR/policy)",
    )
    p.add_argument("--stochastic", action="store_true", help="sample a policy's actions (default: its mean)")
    p.add_argument(
        "--preset",
        default="shapes",
        help="world or model preset: " + ", ".join(world_names() + model_preset_names()),
    )
    p.add_argument("--generator", type=Path, help="ENAT checkpoint (.pth or .safetensors)")
    p.add_argument("--tokenizer", type=Path, help="VQGAN checkpoint (.ckpt/.pth or .safetensors)")
    p.add_argument("--classes", help="comma-separated class ids, cycled over the images")
    p.add_argument("-n", "--n", type=int, default=16, help="number of images")
    p.add_argument(
        "--steps", type=int, default=None, help="generation steps T (default: the world's, or the policy's)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, help="output folder, new or empty (default samples/PRESET-POLICY-seedS)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--no-reuse",
        action="store_true",
        help="ENAT computation reuse off: every step re-encodes all visible tokens",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="generator and decoder in float32, or under bfloat16 autocast (GPUs; CPUs with AMX)",
    )

    e = sub.add_parser(
        "eval",
        help="FID, IS, precision/recall (and class accuracy) of a schedule or policy",
        description="Runs under torchrun too: the samples are sharded over the processes and the "
        "numbers equal a single-process run with the same seed.",
    )
    e.add_argument("--policy", default="enat", help="built-in schedule, schedule JSON, or policy folder")
    e.add_argument("--stochastic", action="store_true", help="sample a policy's actions (default: its mean)")
    e.add_argument("--preset", default="shapes", help="world or model preset")
    e.add_argument("--generator", type=Path, help="ENAT checkpoint (.pth or .safetensors)")
    e.add_argument("--tokenizer", type=Path, help="VQGAN checkpoint (.ckpt/.pth or .safetensors)")
    e.add_argument(
        "-n",
        "--n",
        type=int,
        default=5000,
        help="generated images, labels cycling over the classes (under torchrun write -n: torchrun "
        "reads --n as its own abbreviated option)",
    )
    e.add_argument("--steps", type=int, default=None, help="T (default: the world's, or the policy's)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", type=Path, help="results JSON (a new file)")
    e.add_argument("--grid", type=Path, help="PNG grid of the first 100 images (a new file)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda (cuda:LOCAL_RANK under torchrun)")
    e.add_argument("--batch-size", type=int, default=250)
    e.add_argument(
        "--no-reuse",
        action="store_true",
        help="ENAT computation reuse off: every step re-encodes all visible tokens",
    )
    e.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="generator and decoder in float32, or under bfloat16 autocast (GPUs; CPUs with AMX)",
    )
    e.add_argument(
        "--reference",
        type=Path,
        help="FID statistics .npz with mu/sigma (required for in256/in512); real images in it as "
        "arr_0 (ADM reference batches) also give precision/recall",
    )
    e.add_argument("--reference-n", type=int, help="shapes: held-out images for the reference (default: --n)")
    e.add_argument("--inception", type=Path, help="torch-fidelity Inception-v3 weights (.pth/.safetensors)")

    d = SearchConfig()
    s = sub.add_parser(
        "search",
        help="AutoNAT schedule search (SGD on FID by finite differences); resumable",
        description="Run the same command again to continue a stopped search from its folder.",
    )
    s.add_argument("--preset", default="shapes", help="world or model preset")
    s.add_argument("--generator", type=Path, help="ENAT checkpoint (.pth or .safetensors)")
    s.add_argument("--tokenizer", type=Path, help="VQGAN checkpoint (.ckpt/.pth or .safetensors)")
    s.add_argument("--steps", type=int, default=None, help="T (default: the world's)")
    s.add_argument("--updates", type=int, default=d.updates, help="SGD updates")
    s.add_argument("--samples", type=int, default=d.samples, help="generated images per FID")
    s.add_argument("--seed", type=int, default=d.seed, help="seed of every FID of the search")
    s.add_argument("--lr-ratio", type=float, default=d.lr_ratio, help="SGD step for mask ratios")
    s.add_argument("--lr-other", type=float, default=d.lr_other, help="SGD step for the other controls")
    s.add_argument("--delta-ratio", type=float, default=d.delta_ratio, help="probe of a mask ratio")
    s.add_argument("--delta-other", type=float, default=d.delta_other, help="probe of the other controls")
    s.add_argument("--momentum", type=float, default=d.momentum)
    s.add_argument("--name", help="schedule name (default autonat-PRESET-tT)")
    s.add_argument("--out", type=Path, help="search folder (default runs/search-NAME)")
    s.add_argument("--device", default="auto")
    s.add_argument("--batch-size", type=int, default=250)
    s.add_argument("--reference", type=Path, help="FID statistics .npz (required for in256/in512)")
    s.add_argument("--inception", type=Path, help="torch-fidelity Inception-v3 weights")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adanat`` console script."""
    args = build_parser().parse_args(argv)
    commands = {
        "sample": (SampleArgs, cmd_sample),
        "search": (SearchArgs, cmd_search),
        "eval": (EvalArgs, cmd_eval),
    }
    try:
        if args.command in commands:
            kind, run = commands[args.command]
            return run(kind(**{k: v for k, v in vars(args).items() if k in kind.__dataclass_fields__}))
    except EXPECTED_ERRORS as e:
        print(f"adanat {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adanat {args.command}: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
