"""Pretrain a world's models: ``python scripts/pretrain.py --env shapes --stage all``.

Stages: ``metric`` (classifier for FID/IS), ``tokenizer`` (VQGAN), ``generator`` (ENAT, on the
tokens of the tokenizer in ``--out``); ``all`` runs these three. ``prune`` (not in ``all``) merges
the tokenizer's near-duplicate codes; it needs the metric network and the tokenizer. Each stage
resumes from ``--run-dir`` after an interruption and writes its weights and manifest entry to
``--out`` (default ``RUN_DIR/out``).

The package's shipped assets (``adanat/assets/<world>/``) are never a default output: writing
there takes ``--update-shipped-assets`` (for the maintainers, to retrain what ships). A non-empty
``--run-dir`` must be a pretrain run folder of the same world and size, a non-empty ``--out`` a
folder with a manifest of pretrained models.

Exit status: 0 done; 1 the training failed (a loss or weights became NaN or infinite: nothing of
it is saved, the last good checkpoint stays); 2 the command was refused (a value, folder or file
that cannot be used; nothing is left behind); 130 interrupted (run the same command to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from adanat.assets import asset_dir
from adanat.cli.common import Parser, UsageError, learning_rate, nonnegative_int, positive_int, resolve_device
from adanat.precision import PRECISIONS
from adanat.pretrain.run import (
    NonFiniteError,
    folders_under,
    remove_new_empty_folders,
    writable_folder,
)
from adanat.pretrain.shapes import (
    ALL_STAGES,
    RUN_MARKER,
    STAGES,
    ShapesPretrainer,
    ShapesPretraining,
    check_out_dir,
    check_run_dir,
    write_run_marker,
)


def _path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="pretrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="shapes", choices=["shapes"], help="world to pretrain")
    p.add_argument("--stage", default="all", choices=[*STAGES, "all"])
    p.add_argument(
        "--run-dir",
        type=_path,
        default=None,
        help="checkpoints, caches, logs (default runs/pretrain-ENV, runs/pretrain-ENV-tiny with --tiny)",
    )
    p.add_argument("--out", type=_path, default=None, help="weights + manifest (default RUN_DIR/out)")
    p.add_argument(
        "--update-shipped-assets",
        action="store_true",
        help="write into the package's shipped assets (adanat/assets/ENV/) instead of --out: for the "
        "maintainers, to retrain what ships",
    )
    p.add_argument("--tiny", action="store_true", help="tiny models, a few iterations (smoke test)")
    g = p.add_argument_group("generator stage")
    g.add_argument(
        "--init-generator",
        type=_path,
        default=None,
        metavar="FILE",
        help="continue training from these weights (safetensors of the same config)",
    )
    g.add_argument("--generator-steps", type=positive_int, default=None, help="training steps (>= 1)")
    g.add_argument("--generator-lr", type=learning_rate, default=None, help="peak learning rate, in (0, 1]")
    g.add_argument(
        "--generator-batch-size", type=positive_int, default=None, help="batch size (1 .. training images)"
    )
    g.add_argument(
        "--generator-warmup",
        type=nonnegative_int,
        default=None,
        help="warm-up steps (0: none; fewer than the steps)",
    )
    g.add_argument(
        "--generator-reuse-chain",
        type=positive_int,
        default=None,
        metavar="N",
        help="build the reuse path's previous state through up to N earlier steps run with reuse, "
        "as sampling does (1 .. tokens of a grid; default 1: the published strategy)",
    )
    g.add_argument(
        "--generator-precision",
        choices=PRECISIONS,
        default=None,
        help="compute precision of forward and backward: bfloat16 autocast is 1.33x as fast at batch 128 "
        "(1.50x at 256) on a CPU with AMX, slower on one without (default float32)",
    )
    g.add_argument(
        "--device", default="cpu", help="where the generator trains: cpu, cuda, cuda:1 (other stages: cpu)"
    )
    return p


def _config(args: argparse.Namespace) -> ShapesPretraining:
    """The run's config with the generator flags applied; values that do not fit it are refused."""
    cfg = ShapesPretraining.tiny() if args.tiny else ShapesPretraining()
    overrides = {
        k: v
        for k, v in (
            ("steps", args.generator_steps),
            ("lr", args.generator_lr),
            ("batch_size", args.generator_batch_size),
            ("warmup", args.generator_warmup),
            ("reuse_chain", args.generator_reuse_chain),
            ("precision", args.generator_precision),
        )
        if v is not None
    }
    training = replace(cfg.generator_training, **overrides)
    default = "" if args.generator_warmup is not None else " (the default)"
    if training.warmup >= training.steps:
        raise UsageError(
            f"--generator-warmup {training.warmup}{default} is not shorter than the training "
            f"(--generator-steps {training.steps}); give a smaller --generator-warmup"
        )
    if training.batch_size > cfg.train_images:
        raise UsageError(
            f"--generator-batch-size {training.batch_size} is larger than the "
            f"{cfg.train_images} training images"
        )
    if training.reuse_chain > cfg.generator.seq_len:
        raise UsageError(
            f"--generator-reuse-chain {training.reuse_chain} is longer than the {cfg.generator.seq_len} "
            "tokens of a grid (at most that many sampling steps)"
        )
    return replace(cfg, generator_training=training)


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _folders(args: argparse.Namespace) -> tuple[Path, Path]:
    """``(run folder, output folder)``, refused when they would write into the shipped assets."""
    run_dir = args.run_dir or Path(f"runs/pretrain-{args.env}{'-tiny' if args.tiny else ''}")
    shipped = asset_dir(args.env)
    if _inside(run_dir, shipped.parent):
        raise UsageError(f"--run-dir {run_dir} is inside the package's shipped assets ({shipped.parent})")
    if args.update_shipped_assets:
        if args.out is not None and args.out.resolve() != shipped.resolve():
            raise UsageError(f"--update-shipped-assets writes to {shipped}; leave out --out {args.out}")
        if args.tiny:
            raise UsageError("--tiny models never go into the shipped assets (--update-shipped-assets)")
        return run_dir, shipped
    out = args.out if args.out is not None else run_dir / "out"
    if _inside(out, shipped.parent):
        raise UsageError(
            f"--out {out} is the package's shipped assets; writing there takes --update-shipped-assets"
        )
    return run_dir, out


def _error(error: BaseException, status: int) -> int:
    message = " ".join(str(error).split("\n")) or type(error).__name__
    print(f"pretrain: error: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        device = resolve_device(args.device)
        cfg = _config(args)
        run_dir, out = _folders(args)
        new_marker = check_run_dir(run_dir, args.env, args.tiny)
        check_out_dir(out)
    except (UsageError, ValueError) as e:  # RunFolderError is a ValueError
        return _error(e, 2)
    command = "python scripts/pretrain.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    stages = ALL_STAGES if args.stage == "all" else (args.stage,)
    pretrainer = ShapesPretrainer(cfg, run_dir, out, command, device)
    before = folders_under(run_dir) | folders_under(out)
    created: list[Path] = []
    done = False
    try:
        pretrainer.check(stages, args.init_generator)  # reads only: fails before anything is written
        created = writable_folder(run_dir, "--run-dir")
        created += writable_folder(out, "--out")
        if new_marker:
            write_run_marker(run_dir, args.env, args.tiny)
        results = pretrainer.run(stages, args.init_generator, check=False)
        done = True
    except KeyboardInterrupt:
        print(
            "interrupted: progress is saved in the run folder; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    except NonFiniteError as e:  # the command was valid, the training diverged: status 1
        return _error(e, 1)
    except (FileNotFoundError, ValueError) as e:  # missing stages, mismatched or corrupt files
        return _error(e, 2)
    except OSError as e:  # a fault of the disk or system while training (full, I/O error)
        return _error(e, 1)
    finally:
        if not done:
            _clean_up(run_dir, out, before, created, new_marker)
    for stage, quality in results.items():
        print(stage, " ".join(f"{k}={v:.4f}" for k, v in quality.items()))
    return 0


def _clean_up(run_dir: Path, out: Path, before: set[Path], created: list[Path], new_marker: bool) -> None:
    """After a failed run: remove the empty folders it made and a run marker it wrote into a run
    folder that holds nothing else."""
    with contextlib.suppress(OSError):  # best effort: the error being reported matters more
        remove_new_empty_folders([run_dir, out], before)
        marker = run_dir / RUN_MARKER
        if new_marker and marker.is_file() and [p.name for p in run_dir.iterdir()] == [RUN_MARKER]:
            marker.unlink()
        remove_new_empty_folders(created, before)


if __name__ == "__main__":
    sys.exit(main())
