"""The scaling study on ``shapes`` (``docs/scaling.md``): learned-policy FID against the best fixed
schedule as episodes per update and total episodes grow, at T=4 and T=8, two seeds each.

    python scripts/scaling.py --stage all                 # or train | eval | report
    python scripts/scaling.py --stage train --only t8-epu512-seed0 --device cuda

Each run (``t{T}-epu{E}-seed{S}`` in ``--work``, default ``runs/scaling``) trains in legs to the
``--milestones`` (total episodes); after each leg its FID-selected ``best/`` is copied aside and
scored with ``adanat eval`` on ``--n`` held-out images (seed 11), with the base schedule and the
best fixed schedule on the same images. The exploration std halves at a quarter of the last
milestone, written as an absolute update, so the legs together are one run (``--resume``). Every
stage skips what is done, so an interrupted study continues where it stopped, across sessions and
machines; ``runs.json`` in the work folder records which machine ran each leg and how long it took.
``report`` writes the table, the settings and times of every leg and a matplotlib plot of the FID
ratio against episodes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

STEPS = (4, 8)
EPISODES_PER_UPDATE = (128, 512, 2048)
SEEDS = (0, 1)
MILESTONES = (16_384, 40_960, 81_920, 163_840)
FIXED = {4: ("enat", "autonat-shapes-t4"), 8: ("enat", "autonat-shapes-t8")}
EVAL_SEED = 11


def sh(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    if code != 0:
        raise SystemExit(f"scaling: the command above ended with exit code {code}; rerun to continue")


def run_name(steps: int, epu: int, seed: int) -> str:
    return f"t{steps}-epu{epu}-seed{seed}"


def episodes_done(folder: Path) -> int:
    state = folder / "checkpoint" / "state.json"
    return int(json.loads(state.read_text())["episodes"]) if state.is_file() else 0


def machine(device: str) -> str:
    """The machine a leg ran on: CPU model and cores, and the GPU when it ran on one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = f"{cpu}, {os.cpu_count()} cores"
    if device.startswith("cuda"):
        import torch

        out += f", {torch.cuda.get_device_name()}"
    return out


def record(work: Path, name: str, entry: dict[str, object]) -> None:
    path = work / "runs.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault(name, []).append(entry)
    path.write_text(json.dumps(data, indent=1) + "\n")


def stage_train(a: argparse.Namespace) -> None:
    script = str(Path(__file__).with_name("train_policy.py"))
    last = max(a.milestones)
    for steps in a.steps:
        for epu in a.epu:
            for seed in a.seeds:
                name = run_name(steps, epu, seed)
                if a.only and name not in a.only:
                    continue
                folder = a.work / name
                for milestone in sorted(a.milestones):
                    if episodes_done(folder) >= milestone:
                        continue
                    if episodes_done(folder):
                        cmd = [sys.executable, script, "--resume", str(folder), "--episodes", str(milestone)]
                    else:
                        switch = max(1, last // epu // 4)  # the std halves a quarter into the whole study run
                        cmd = [sys.executable, script, "--steps", str(steps), "--seed", str(seed)]
                        cmd += ["--episodes", str(milestone), "--episodes-per-update", str(epu)]
                        cmd += [
                            "--num-envs",
                            str(min(epu, a.num_envs)),
                            "--action-std",
                            f"0:0.6,{switch}:0.3",
                        ]
                        cmd += ["--device", a.device, "--run-dir", str(folder)]
                    t0 = time.time()
                    sh(cmd)
                    shutil.copytree(folder / "best", folder / f"best-{milestone}", dirs_exist_ok=True)
                    record(
                        a.work,
                        name,
                        {
                            "milestone": milestone,
                            "seconds": round(time.time() - t0),
                            "machine": machine(a.device),
                            "device": a.device,
                            "command": " ".join(cmd),
                        },
                    )


def stage_eval(a: argparse.Namespace) -> None:
    out = a.work / "eval"
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(f"t{s}-{p}", p, s) for s in a.steps for p in FIXED[s]]
    for folder in sorted(a.work.glob("t*-epu*-seed*")):
        steps = int(folder.name.split("-")[0][1:])
        for best in sorted(folder.glob("best-*")):
            jobs.append((f"{folder.name}-{best.name}", str(best), steps))
    for name, policy, steps in jobs:
        target = out / f"{name}.json"
        if target.is_file():
            continue
        sh(
            [
                sys.executable,
                "-m",
                "adanat",
                "eval",
                "--preset",
                "shapes",
                "--policy",
                policy,
                "-n",
                str(a.n),
                "--steps",
                str(steps),
                "--seed",
                str(EVAL_SEED),
                "--out",
                str(target),
            ]
        )


def _metrics(path: Path) -> dict[str, float]:
    return json.loads(path.read_text())["metrics"]


def stage_report(a: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ev = a.work / "eval"
    legs = json.loads((a.work / "runs.json").read_text()) if (a.work / "runs.json").is_file() else {}
    lines = [
        "# Scaling study on `shapes`",
        "",
        f"Written by `python scripts/scaling.py --stage report`. "
        f"Every policy is its run's FID-selected `best/` at the milestone, scored by `adanat eval` on "
        f"{a.n} held-out images (seed {EVAL_SEED}).",
        "",
    ]
    fig, axes = plt.subplots(1, len(a.steps), figsize=(6 * len(a.steps), 4), squeeze=False)
    for ax, steps in zip(axes[0], a.steps, strict=True):
        fixed = {
            p: _metrics(ev / f"t{steps}-{p}.json")
            for p in FIXED[steps]
            if (ev / f"t{steps}-{p}.json").is_file()
        }
        if not fixed:
            continue
        best_name = min(fixed, key=lambda p: fixed[p]["frechet_inception_distance"])
        best_fid, best_recall = fixed[best_name]["frechet_inception_distance"], fixed[best_name]["recall"]
        lines += [
            f"## T = {steps}",
            "",
            f"Best fixed schedule: `{best_name}`, FID {best_fid:.3f}, recall {best_recall:.3f}.",
            "",
            "| run | episodes | FID | ratio | recall | precision | class acc. |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for epu in a.epu:
            for seed in a.seeds:
                name = run_name(steps, epu, seed)
                xs, ys = [], []
                for milestone in sorted(a.milestones):
                    path = ev / f"{name}-best-{milestone}.json"
                    if not path.is_file():
                        continue
                    m = _metrics(path)
                    ratio = m["frechet_inception_distance"] / best_fid
                    xs.append(milestone)
                    ys.append(ratio)
                    lines.append(
                        f"| {name} | {milestone:,} | {m['frechet_inception_distance']:.3f} | "
                        f"{ratio:.3f}x | {m['recall']:.3f} | {m['precision']:.3f} | "
                        f"{m.get('class_accuracy', float('nan')):.3f} |"
                    )
                if xs:
                    ax.plot(xs, ys, marker="o", label=f"{epu}/update, seed {seed}")
        ax.axhline(0.85, color="k", ls="--", lw=1, label="target 0.85x")
        ax.set_xscale("log")
        ax.set_xlabel("training episodes")
        ax.set_ylabel(f"FID / FID of {best_name}")
        ax.set_title(f"T = {steps}")
        ax.legend(fontsize=7)
        lines.append("")
    lines += [
        "## Legs (settings, machine, time)",
        "",
        "| run | milestone | seconds | machine | command |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, entries in sorted(legs.items()):
        for e in entries:
            lines.append(
                f"| {name} | {e['milestone']:,} | {e['seconds']} | {e['machine']} | `{e['command']}` |"
            )
    fig.tight_layout()
    a.docs.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.docs / "scaling.png", dpi=120)
    lines += ["", "![FID ratio against episodes](scaling.png)", ""]
    (a.docs / "scaling.md").write_text("\n".join(lines))
    print(f"wrote {a.docs / 'scaling.md'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=("train", "eval", "report", "all"), default="all")
    p.add_argument("--work", type=Path, default=Path("runs/scaling"))
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    p.add_argument(
        "--epu", type=int, nargs="+", default=list(EPISODES_PER_UPDATE), help="episodes per update"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--milestones", type=int, nargs="+", default=list(MILESTONES), help="total episodes")
    p.add_argument("--only", nargs="*", help="run names to train (t8-epu512-seed0 ...)")
    p.add_argument("--num-envs", type=int, default=64, help="generation rows (a divisor of every --epu)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=5000, help="held-out images per evaluation")
    a = p.parse_args(argv)
    if a.stage in ("train", "all"):
        stage_train(a)
    if a.stage in ("eval", "all"):
        stage_eval(a)
    if a.stage in ("report", "all"):
        stage_report(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
