"""Pretrain a world's models: ``python scripts/pretrain.py --env shapes --stage all``.

Stages: ``metric`` (classifier for FID/IS), ``tokenizer`` (VQGAN), ``generator`` (ENAT, on the
tokens of the tokenizer in ``--out``); ``all`` runs these three. ``prune`` (not in ``all``) merges
the tokenizer's near-duplicate codes; it needs the metric network and the tokenizer. Each stage
resumes from ``--run-dir`` after an interruption and writes its weights and manifest entry to
``--out`` (by default the package's shipped assets).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from adanat.assets import asset_dir
from adanat.cli import UsageError, resolve_device
from adanat.precision import PRECISIONS
from adanat.pretrain.shapes import ALL_STAGES, STAGES, ShapesPretrainer, ShapesPretraining


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="shapes", choices=["shapes"], help="world to pretrain")
    p.add_argument("--stage", default="all", choices=[*STAGES, "all"])
    p.add_argument(
        "--run-dir", type=Path, default=Path("runs/pretrain-shapes"), help="checkpoints, caches, logs"
    )
    p.add_argument("--out", type=Path, default=None, help="weights + manifest (default: package assets)")
    p.add_argument("--tiny", action="store_true", help="tiny models, a few iterations (smoke test)")
    g = p.add_argument_group("generator stage")
    g.add_argument(
        "--init-generator",
        type=Path,
        default=None,
        metavar="FILE",
        help="continue training from these weights (safetensors of the same config)",
    )
    g.add_argument("--generator-steps", type=_positive_int, default=None, help="training steps")
    g.add_argument("--generator-lr", type=_positive_float, default=None, help="peak learning rate")
    g.add_argument("--generator-batch-size", type=_positive_int, default=None, help="batch size")
    g.add_argument("--generator-warmup", type=_positive_int, default=None, help="warm-up steps")
    g.add_argument(
        "--generator-reuse-chain",
        type=_positive_int,
        default=None,
        metavar="N",
        help="build the reuse path's previous state through up to N earlier steps run with reuse, "
        "as sampling does (default 1: the published strategy)",
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
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except UsageError as e:
        print(f"pretrain: error: {e}", file=sys.stderr)
        return 2
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
    if overrides:
        cfg = replace(cfg, generator_training=replace(cfg.generator_training, **overrides))
    out = args.out or asset_dir(args.env)
    command = "python scripts/pretrain.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    stages = ALL_STAGES if args.stage == "all" else (args.stage,)
    try:
        results = ShapesPretrainer(cfg, args.run_dir, out, command, device).run(stages, args.init_generator)
    except KeyboardInterrupt:
        print(
            "interrupted: progress is saved in the run folder; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    except (FileNotFoundError, ValueError) as e:  # missing stages, mismatched or corrupt files
        print(f"pretrain: error: {e}", file=sys.stderr)
        return 2
    for stage, quality in results.items():
        print(stage, " ".join(f"{k}={v:.4f}" for k, v in quality.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
