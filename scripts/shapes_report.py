"""Measure the shipped ``shapes`` world with fixed schedules and write ``docs/shapes.md`` and grids.

    python scripts/shapes_report.py --n 5000
    python scripts/shapes_report.py --from-json docs/shapes_metrics.json   # rewrite the text only

For each schedule and T: FID, IS, precision, recall (metric-network features, torch-fidelity,
N generated vs N held-out real) and class accuracy; plus the real-vs-real floor. ``--from-json``
takes the numbers of an earlier run on the same weights (checked by sha256) and rewrites
``docs/shapes.md`` without measuring again (the grids stay as they are).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from adanat.assets import asset_dir, read_manifest
from adanat.evaluation import SampleSpec, generate_samples
from adanat.outputs import save_grid
from adanat.sampling import ScheduleController
from adanat.schedules import load_schedule
from adanat.weights import load_models
from adanat.worlds.shapes import real_images, shapes_floor, shapes_quality

# (schedule, T, ENAT computation reuse); the last row measures what reuse costs in quality
CONFIGS = [
    ("cosine", 4, True),
    ("enat", 4, True),
    ("cosine", 8, True),
    ("enat", 8, True),
    ("autonat-l-t8", 8, True),
    ("enat", 8, False),
]


def _label(name: str, steps: int, reuse: bool) -> str:
    return f"{name} T={steps}" + ("" if reuse else ", no reuse")


def _grid_name(name: str, steps: int, reuse: bool) -> str:
    return f"shapes_{name}_t{steps}{'' if reuse else '_noreuse'}.png"


def _chain(entry: dict) -> Iterator[dict]:
    """A manifest entry, then the entries of the runs it continued (``init``), newest first."""
    while entry:
        yield entry
        entry = entry.get("init", {})


def _from_json(path: Path, weights: dict[str, str]) -> dict:
    """The numbers of an earlier report; ``ValueError`` unless they were measured on ``weights``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--from-json {path}: {e}") from None
    if not isinstance(data, dict) or data.get("weights") != weights:
        raise ValueError(f"--from-json {path}: not measured on the shipped weights")
    if not all(key in data for key in ("n", "seed", "rows")):
        raise ValueError(f"--from-json {path}: not a shapes_metrics.json (needs n, seed, rows)")
    return data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--from-json", type=Path, default=None, help="reuse the numbers of an earlier run")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    manifest = read_manifest(asset_dir("shapes"))
    weights = {k: v["sha256"] for k, v in manifest["models"].items()}
    if args.from_json is not None:
        try:
            data = _from_json(args.from_json, weights)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        args.n, args.seed = data["n"], data["seed"]
        rows = data["rows"]
    else:
        rows = measure(args)
    write_report(args, rows, manifest, weights)
    return 0


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every row of the table (and the sample grids) on the shipped weights."""
    models = load_models("shapes")
    reference = real_images("heldout", args.n)
    rows: dict[str, dict[str, float]] = {}
    args.docs.mkdir(parents=True, exist_ok=True)
    with Progress() as progress:
        for name, steps, reuse in CONFIGS:
            task = progress.add_task(_label(name, steps, reuse), total=args.n)
            ctrl = ScheduleController(load_schedule(name, steps=steps, variant="shapes"))
            t0 = time.perf_counter()
            sampler = models.sampler(reuse=reuse)
            spec = SampleSpec(args.n, steps, args.seed)
            samples = generate_samples(sampler, ctrl, spec, on_batch=lambda k, t=task: progress.advance(t, k))
            seconds = time.perf_counter() - t0
            rows[_label(name, steps, reuse)] = {
                **shapes_quality(samples.images, samples.labels, reference, args.seed),
                "ms_per_image": 1e3 * seconds / args.n,
            }
            save_grid(samples.images[:100].float() / 255, args.docs / _grid_name(name, steps, reuse), nrow=10)
    rows["real (held-out vs reference)"] = shapes_floor(args.n, args.seed)
    return rows


def write_report(args: argparse.Namespace, rows: dict, manifest: dict, weights: dict[str, str]) -> None:
    """The table on stdout, ``shapes_metrics.json`` and ``shapes.md``."""

    table = Table(title=f"shapes, {args.n} samples")
    cols = ["FID", "IS", "precision", "recall", "class acc", "ms/img"]
    keys = [
        "frechet_inception_distance",
        "inception_score_mean",
        "precision",
        "recall",
        "class_accuracy",
        "ms_per_image",
    ]
    table.add_column("schedule")
    for c in cols:
        table.add_column(c, justify="right")
    lines = ["| schedule | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row, vals in rows.items():
        cells = [f"{vals[k]:.3f}" if k in vals else "" for k in keys]
        table.add_row(row, *cells)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    Console().print(table)
    quality = {k: v["quality"] for k, v in manifest["models"].items()}
    record = {"n": args.n, "seed": args.seed, "rows": rows, "models": quality, "weights": weights}
    (args.docs / "shapes_metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    grids = "\n".join(f"| {_label(*c)} | ![]({_grid_name(*c)}) |" for c in CONFIGS)
    sweep = manifest["models"]["tokenizer"].get("codebook_sweep", {})
    sweep_rows = "\n".join(
        f"| {k} | {v['psnr']:.2f} | {v['codebook_usage']:.3f} |" for k, v in sweep.get("results", {}).items()
    )
    q_tok, q_met = quality["tokenizer"], quality["metric"]
    len_codes = manifest["models"]["tokenizer"]["config"]["codebook_size"]
    tok_psnr, tok_usage = q_tok["psnr"], q_tok["codebook_usage"]
    # a continued model's time includes the runs it continued, each counted where it ran
    spent: dict[str, Counter[str]] = {k: Counter() for k in manifest["models"]}
    for k, v in manifest["models"].items():
        for e in _chain(v):
            spent[k][e.get("device", "CPU")] += float(e.get("train_seconds", 0.0))
    secs = {k: on["CPU"] for k, on in spent.items()}
    times = {
        k: f"{on['CPU']:.0f} s" + "".join(f" + {t:.0f} s on {d}" for d, t in on.items() if d != "CPU")
        for k, on in spent.items()
    }
    off_cpu = sorted({d for on in spent.values() for d in on} - {"CPU"})
    where = "on the 2-core CPU"
    if off_cpu:
        where += f", plus the runs on {', '.join(off_cpu)} named in the table"
    variant = json.dumps(
        json.loads(resources.files("adanat.data").joinpath("schedules", "enat.json").read_text())["variants"][
            "shapes"
        ]
    )
    gen_acc = ", ".join(f"{k[-2:]} {v:.3f}" for k, v in quality["generator"].items())
    pruning = manifest["models"]["tokenizer"].get("codebook_pruning")
    prune_text = ""
    if pruning:
        prune_rows = "\n".join(
            f"| {v['codebook_size']} | {v['psnr']:.2f} | {v['reconstruction_class_accuracy']:.4f} |"
            for v in [pruning["trained_quality"], *pruning["results"].values()]
        )
        prune_text = f"""
The trained codebook ({pruning["trained_codebook_size"]} codes) was then pruned: near-duplicate
codes merged by usage-weighted k-means over the code vectors, the most used code of each cluster
kept (rule: {pruning["rule"]}; held-out PSNR and the metric network's accuracy on the
reconstructions):

| codes | PSNR | reconstruction class acc |
| --- | --- | --- |
{prune_rows}
"""
    provenance = "\n".join(
        f"- {name}: `{entry['command']}`"
        + (f" on {entry['device']}" if "device" in entry else "")
        + (f" at commit `{entry['commit']}`" if "commit" in entry else "")
        + (f"; pruned by `{entry['codebook_pruning']['command']}`" if "codebook_pruning" in entry else "")
        + (f" ({entry['note']})" if "note" in entry else "")
        + "".join(
            f", continuing the weights (sha256 `{e['sha256'][:12]}`) of "
            f"`{e.get('command', 'an earlier run')}`" + (f" on {e['device']}" if "device" in e else "")
            for e in list(_chain(entry))[1:]
        )
        for name, entry in manifest["models"].items()
    )
    doc = f"""# The `shapes` world, measured

Produced by `python scripts/shapes_report.py --n {args.n} --seed {args.seed}` on the shipped weights.
FID, IS, precision and recall are computed by torch-fidelity in the metric network's feature space
({args.n} generated vs {args.n} held-out real images); class accuracy is the share of generated
images the metric network assigns to the requested class. Every row uses ENAT's computation reuse
except the one marked "no reuse" (each step re-encodes every visible token). The last row compares
two real splits: the floor of what a generator can reach. ms/img is the wall time of generation
and decoding on the machine that ran the report, including whatever else ran there.

{chr(10).join(lines)}

## Models

| model | quality | training time (2-core CPU unless named) |
| --- | --- | --- |
| metric network | held-out accuracy {q_met["heldout_accuracy"]:.4f} | {times["metric"]} |
| tokenizer | PSNR {tok_psnr:.2f} dB, {len_codes} codes, usage {tok_usage:.3f} | {times["tokenizer"]} |
| generator | class accuracy, ENAT sampler (T=8, T=4): {gen_acc} | {times["generator"]} |

`python scripts/pretrain.py --env shapes --stage all` runs every stage; the shipped files come from
(training time {sum(secs.values()) / 60:.0f} min in all {where}; CPU times include other work that
shared the machine):

{provenance}

The ENAT sampler's `shapes` setting (`adanat/data/schedules/enat.json`: {variant}) was chosen by
`python scripts/tune_enat_shapes.py` (coordinate descent on FID over guidance, sampling and
re-masking temperatures, starting from the ImageNet-256 setting).

Codebook size, by a short sweep ({sweep.get("steps", "?")} steps each, held-out PSNR and usage;
rule: {sweep.get("rule", "best PSNR")}):

| codebook | PSNR | usage |
| --- | --- | --- |
{sweep_rows}
{prune_text}
## Samples (first 100 images, classes in order per row)

| schedule | samples |
| --- | --- |
{grids}
"""
    (args.docs / "shapes.md").write_text(doc)
    print(json.dumps(quality, indent=1))


if __name__ == "__main__":
    sys.exit(main())
