"""The measured comparison on ``shapes`` (``docs/results.md``): fixed schedules, the searched
AutoNAT schedule and learned policies, at T=4 and T=8.

    python scripts/results.py --stage all          # or search | train | eval | report

Stages run the real commands (``adanat search``, ``scripts/train_policy.py``, ``adanat eval``)
into ``--work`` (default ``runs/results``) and skip what is already done there, so an interrupted
run continues where it stopped. ``report`` reads the evaluation JSONs and writes the markdown
table, one sample grid per row and the learned schedules' per-step mean and spread.
Searched schedules are written to ``runs/results/search-tT/schedule.json``; shipping one as the
built-in ``autonat-shapes-tT`` (``adanat/data/schedules/``) makes it the base of the policies
trained afterwards, so ``search`` is followed by copying it into the package before ``train``
(``--ship`` does that).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from importlib import resources
from pathlib import Path

from adanat.schedules import builtin_schedule_names

STEPS = (4, 8)
SEEDS = (0, 1, 2)
METRICS = (
    ("FID", "frechet_inception_distance", "{:.2f}"),
    ("IS", "inception_score_mean", "{:.2f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("class acc.", "class_accuracy", "{:.3f}"),
)


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def policy_dir(work: Path, steps: int, reward: str, seed: int) -> Path:
    return work / f"policy-t{steps}-{reward}-seed{seed}"


def finished(folder: Path) -> bool:
    """Whether the training run in ``folder`` has done all its episodes."""
    state_file = folder / "checkpoint" / "state.json"
    if not state_file.is_file():
        return False
    state = json.loads(state_file.read_text())
    return state["episodes"] >= state["config"]["episodes"]


def trained_policy(folder: Path) -> Path:
    """The policy a finished run is evaluated with: ``best/`` (the lowest FID at the run's
    evaluations, on the ``reference`` split, as AdaNAT selects) if the run kept one, else its
    final ``policy/``. Until the run has finished, a path that does not exist (so it is skipped)."""
    if not finished(folder):
        return folder / "policy (unfinished)"
    return folder / "best" if (folder / "best").is_dir() else folder / "policy"


def rows(work: Path, steps: int) -> list[tuple[str, str, str]]:
    """``(row name, --policy value, group)``; policies of one group are averaged over seeds."""
    out = [("cosine", "cosine", "cosine"), ("enat", "enat", "enat")]
    if steps == 8:
        out.append(("autonat-l-t8", "autonat-l-t8", "autonat-l-t8"))
    out.append((f"autonat-shapes-t{steps}", f"autonat-shapes-t{steps}", "searched AutoNAT"))
    for seed in SEEDS:
        path = trained_policy(policy_dir(work, steps, "adversarial", seed))
        out.append((f"adanat-adversarial-seed{seed}", str(path), "AdaNAT, adversarial reward"))
    path = trained_policy(policy_dir(work, steps, "classifier", 0))
    out.append(("adanat-classifier-seed0", str(path), "AdaNAT, classifier reward"))
    return out


def stage_search(args: argparse.Namespace) -> None:
    for steps in args.steps:
        out = args.work / f"search-t{steps}"
        run([
            sys.executable, "-m", "adanat", "search", "--preset", "shapes", "--steps", str(steps),
            "--updates", str(args.updates), "--samples", str(args.search_samples), "--out", str(out),
            "--name", f"autonat-shapes-t{steps}",
        ])  # fmt: skip
        if args.ship:
            folder = Path(str(resources.files("adanat.data").joinpath("schedules")))
            shutil.copyfile(out / "schedule.json", folder / f"autonat-shapes-t{steps}.json")
            print(f"shipped autonat-shapes-t{steps}")


def stage_train(args: argparse.Namespace) -> None:
    script = str(Path(__file__).with_name("train_policy.py"))
    jobs = [(s, "adversarial", seed) for s in args.steps for seed in SEEDS]
    jobs += [(s, "classifier", 0) for s in args.steps]
    for steps, reward, seed in jobs:
        folder = policy_dir(args.work, steps, reward, seed)
        if finished(folder):
            continue
        if (folder / "checkpoint" / "state.json").is_file():
            cmd = [sys.executable, script, "--resume", str(folder)]
        else:
            cmd = [sys.executable, script, "--steps", str(steps), "--reward", reward, "--seed", str(seed)]
            cmd += ["--run-dir", str(folder)]
            if args.episodes:
                cmd += ["--episodes", str(args.episodes)]
        run(cmd)


def stage_eval(args: argparse.Namespace) -> None:
    (args.work / "eval").mkdir(parents=True, exist_ok=True)
    args.grids.mkdir(parents=True, exist_ok=True)
    for steps in args.steps:
        for name, policy, _ in rows(args.work, steps):
            out = args.work / "eval" / f"t{steps}-{name}.json"
            if out.is_file():
                continue
            if not (policy in builtin_schedule_names() or Path(policy).is_dir()):
                print(f"skipping {name} at T={steps}: {policy} is not there yet", flush=True)
                continue
            grid = args.grids / f"t{steps}-{name}.png"
            grid.unlink(missing_ok=True)
            run([
                sys.executable, "-m", "adanat", "eval", "--preset", "shapes", "--policy", policy,
                "-n", str(args.n), "--steps", str(steps), "--seed", "0", "--out", str(out),
                "--grid", str(grid),
            ])  # fmt: skip


def _fmt(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def _selection(reports: list[dict]) -> str:
    """Which update each evaluated policy came from (its run's ``best.json``)."""
    parts = []
    for rep in reports:
        folder = Path(rep["config"]["policy"])
        record = folder.parent / "best.json"
        if folder.name == "best" and record.is_file():
            best = json.loads(record.read_text())
            parts.append(
                f"`{folder.parent.name}` update {best['updates']} (selection FID {best['fid']:.2f}, "
                f"base {best['base_fid']:.2f}, {best['images']} images)"
            )
        else:
            parts.append(f"`{folder.parent.name}` final policy")
    return "evaluated policies: " + "; ".join(parts) + "."


def _settings(reports: list[dict]) -> str:
    """The training settings of the runs behind a policy row (from their saved configuration),
    once if the seeds share them."""
    seen = []
    for rep in reports:
        state = Path(rep["config"]["policy"]).parent / "checkpoint" / "state.json"
        if not state.is_file():
            continue
        cfg = json.loads(state.read_text())["config"]
        reward = cfg["env"]["reward_options"]
        updates = -(-cfg["episodes"] // cfg["episodes_per_update"])
        stds = [
            f"{std} from update {u}" + (" (not reached)" if u >= updates else "")
            for u, std in cfg["std_schedule"]
        ]
        parts = [
            f"{cfg['episodes']:,} episodes ({updates} PPO updates)",
            f"action scale {cfg['env']['action_scale']}",
            f"exploration std {', '.join(stds)}",
            f"action cost {cfg.get('action_cost', 0.0)}",
        ]
        text = ", ".join(parts)
        if cfg["env"]["reward"] == "adversarial":
            text += (
                f", {reward['discriminator']['updates_per_round']} discriminator updates a round, "
                f"minibatch-std groups {reward.get('minibatch_std', 0) or 'off'}"
            )
        if text not in seen:
            seen.append(text)
    return "Training settings: " + "; ".join(seen) + "." if seen else ""


def stage_report(args: argparse.Namespace) -> None:
    lines = [
        "# Results on `shapes`",
        "",
        f"Written by `python scripts/results.py --stage report` from `adanat eval` runs ({args.n} generated "
        f"vs {args.n} held-out images, seed 0, metric-network feature space through torch-fidelity). "
        "Learned policies: mean ± std over the training seeds named in the row, each evaluated with "
        "its mean action at the update its run selected (lowest FID of 1,000 images of the "
        "`reference` split, a split apart from the held-out one used here). ms/img is wall time on "
        "the machine as it was during the run (other jobs may have shared it). GFLOPs/img counts the "
        "generator's forward passes (both guidance branches, every step); a policy adds under 1% "
        "of that on `shapes` (docs/performance.md).",
        "",
    ]
    for steps in STEPS:
        reports: dict[str, list[dict]] = {}
        names: dict[str, list[str]] = {}
        for name, _, group in rows(args.work, steps):
            path = args.work / "eval" / f"t{steps}-{name}.json"
            if path.is_file():
                reports.setdefault(group, []).append(json.loads(path.read_text()))
                names.setdefault(group, []).append(name)
        if not reports:
            continue
        lines += [f"## T = {steps}", ""]
        head = [m[0] for m in METRICS] + ["generator GFLOPs/img", "ms/img (CPU)"]
        lines += ["| schedule | " + " | ".join(head) + " | grid |", "|" + " --- |" * (len(head) + 2)]
        for group, reps in reports.items():
            cells = []
            for _, key, fmt in METRICS:
                cells.append(_fmt([r["metrics"][key] for r in reps], fmt))
            cells.append(_fmt([r["gflops_per_image"] for r in reps], "{:.3f}"))
            cells.append(_fmt([1000 * r["seconds_per_image"] for r in reps], "{:.1f}"))
            grid = f"[grid](results/t{steps}-{names[group][0]}.png)"
            label = group
            if group.startswith("AdaNAT"):
                seeds = ", ".join(n.rsplit("seed", 1)[1] for n in names[group])
                label += f" (seed{'s' if len(reps) > 1 else ''} {seeds})"
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {grid} |")
        fixed = [g for g in reports if not g.startswith("AdaNAT")]
        best = min(fixed, key=lambda g: reports[g][0]["metrics"]["frechet_inception_distance"])
        best_fid = reports[best][0]["metrics"]["frechet_inception_distance"]
        learned = reports.get("AdaNAT, adversarial reward")
        lines.append("")
        for group in (g for g in reports if g.startswith("AdaNAT")):
            lines.append(f"{group}: {_selection(reports[group])} {_settings(reports[group])}".rstrip())
            if "classifier" in group:
                lines.append(
                    "The classifier reward is the metric network's log-probability of the class, and "
                    "FID here is measured in that same network's features: this row's FID is not an "
                    "independent measure of the policy."
                )
            lines.append("")
        if learned:
            fid = statistics.mean(r["metrics"]["frechet_inception_distance"] for r in learned)
            recall = statistics.mean(r["metrics"]["recall"] for r in learned)
            best_recall = reports[best][0]["metrics"]["recall"]
            verdict = "met" if fid <= 0.85 * best_fid and recall >= best_recall else "not met"
            lines.append(
                f"Target (learned FID <= 0.85 x best fixed, recall not lower): best fixed is {best} "
                f"(FID {best_fid:.2f}, recall {best_recall:.3f}); learned mean FID {fid:.2f} "
                f"({fid / best_fid:.2f}x), recall {recall:.3f}: **{verdict}**."
            )
            lines += [
                "",
                "Learned schedule (adversarial reward, seed 0): per-step mean ± spread over images",
                "",
            ]
            rep = learned[0]
            lines += ["| control | " + " | ".join(f"step {k}" for k in range(steps)) + " |"]
            lines.append("|" + " --- |" * (steps + 1))
            for control, means in rep["schedule_mean"].items():
                stds = rep["schedule_std"][control]
                cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(means, stds, strict=True)]
                lines.append(f"| {control} | " + " | ".join(cells) + " |")
        lines.append("")
    notes = args.doc.with_name(args.doc.stem + "_investigation.md")
    if notes.is_file():
        link = f"[{notes.name}]({notes.name})"
        lines += [f"What was tried to reach the target and what each change did: {link}.", ""]
    args.doc.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.doc}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", choices=["search", "train", "eval", "report", "all"])
    p.add_argument("--work", type=Path, default=Path("runs/results"))
    p.add_argument("--n", type=int, default=5000, help="images per evaluation")
    p.add_argument("--updates", type=int, default=10, help="search updates")
    p.add_argument("--search-samples", type=int, default=1000, help="images per FID in the search")
    p.add_argument(
        "--episodes", type=int, default=None, help="policy training episodes (default: the script's)"
    )
    p.add_argument(
        "--steps", type=int, nargs="+", default=list(STEPS), choices=STEPS, help="T values to run (all)"
    )
    p.add_argument("--ship", action="store_true", help="copy searched schedules into the package")
    p.add_argument("--grids", type=Path, default=Path("docs/results"))
    p.add_argument("--doc", type=Path, default=Path("docs/results.md"))
    args = p.parse_args()
    stages = ["search", "train", "eval", "report"] if args.stage == "all" else [args.stage]
    for stage in stages:
        globals()[f"stage_{stage}"](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
