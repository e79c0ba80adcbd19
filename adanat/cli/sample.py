"""``adanat sample``: images of a schedule or a policy, with a grid and ``samples.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from adanat.cli import common
from adanat.distributed import batch_bounds
from adanat.outputs import check_output_dir, check_writable, save_grid, save_images, staged_dir
from adanat.progress import StepProgress
from adanat.rng import row_rngs
from adanat.schedules import CONTROL_NAMES
from adanat.weights import LoadedModels


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        parents=[common.model_options(), common.generation_options(), common.prompt_options()],
        help="generate images with a schedule or a policy",
        description="Writes one PNG per image, grid.png and samples.json (labels or prompts, schedule, "
        "controls). Text-to-image presets take --prompts or --prompts-file (cycled over the images).",
    )
    p.add_argument("--classes", help="comma-separated class ids, cycled over the images")
    p.add_argument("-n", "--n", type=common.positive_int, default=16, help="number of images")
    p.add_argument(
        "--out", type=Path, help="output folder, new or empty (default samples/PRESET-POLICY-seedS)"
    )
    p.set_defaults(batch_size=32, run=run)


def parse_classes(text: str | None, target: common.Target, n: int) -> list[int]:
    """Labels for ``n`` images: the listed classes cycled, or all classes in order."""
    if target.takes_text:
        if text is not None:
            raise common.UsageError(
                f"--classes: preset {target.preset.name} is text-to-image (use --prompts)"
            )
        return []
    num = target.preset.num_classes
    if text is None:
        return [i % num for i in range(n)]
    try:
        classes = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise common.UsageError(f"--classes must be comma-separated integers, got {text!r}") from None
    if not classes:
        raise common.UsageError("--classes is empty")
    bad = [c for c in classes if not 0 <= c < num]
    if bad:
        raise common.UsageError(f"class {bad[0]} is outside preset {target.preset.name}'s range 0..{num - 1}")
    return [classes[i % len(classes)] for i in range(n)]


def text_info(models: LoadedModels, prompts: list[str] | None, ids: list[int]) -> dict[str, object]:
    """``samples.json``'s text fields: the text encoder and each image's prompt (none for classes)."""
    if prompts is None:
        return {}
    return {
        "text_encoder": str(models.text_encoder_file),
        "prompt_list": prompts,
        "prompts": [prompts[i] for i in ids],
    }


def _policy_name(policy: str) -> str:
    """A learned policy's name in the default output folder: a shipped one's own name, else its
    run folder's (``RUN_DIR/policy`` -> ``RUN_DIR``'s name)."""
    if policy in common.builtin_policy_names():
        return policy
    return Path(policy).resolve().parent.name


def run(args: argparse.Namespace) -> int:
    """Generate images and write PNGs, a grid and ``samples.json``."""
    target = common.Target.of(args.preset)
    prompts = target.prompts(args)
    labels = parse_classes(args.classes, target, args.n)
    if prompts is not None:  # the prompt ids, cycled
        labels = [i % len(prompts) for i in range(args.n)]
    schedule = common.schedule_of(args, target)
    device = common.resolve_device(args.device)
    name = Path(args.policy).stem if schedule is not None else _policy_name(args.policy)
    out = args.out or Path("samples") / f"{args.preset}-{name}-seed{args.seed}"
    check_output_dir(out)
    check_writable(out, "--out")
    models, sampler = common.load_sampler(args, device, prompts)
    make_controller, steps, policy_info = common.policy_controllers(args, schedule, target, models, sampler)

    label_t = torch.tensor(labels, dtype=torch.long, device=device)  # (N,)
    batches = batch_bounds(args.n, args.batch_size)
    images, traces = [], []
    with staged_dir(out) as stage, StepProgress("sampling", len(batches) * steps, every=steps) as progress:
        for rows in batches:
            rngs = row_rngs(args.seed, len(rows), device, offset=rows.start)
            result = sampler.generate(
                label_t[rows.start : rows.stop],
                make_controller(rngs),
                steps,
                rngs,
                lambda _k: progress.advance(),
            )
            assert result.images is not None
            kind = "prompt" if prompts is not None else "class"
            names = [f"{i:05d}_{kind}{labels[i]}.png" for i in rows]
            save_images(result.images.cpu(), stage, names)
            images.append(result.images.cpu())
            traces.append(result.trace.cpu())
        save_grid(torch.cat(images), stage / "grid.png")
        trace = torch.cat(traces)  # (N, T, 4)
        meta = {
            "preset": args.preset,
            "generator": str(models.generator_file),
            "tokenizer": str(models.tokenizer_file),
            **text_info(models, prompts, labels),
            "policy": args.policy,
            **policy_info,
            "steps": steps,
            "reuse": sampler.reuse,
            "precision": sampler.precision,
            "seed": args.seed,
            "labels" if prompts is None else "prompt_ids": labels,
            "controls": {f: trace[:, :, j].tolist() for j, f in enumerate(CONTROL_NAMES)},
        }
        (stage / "samples.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.n} images and grid.png to {out}")
    return 0
