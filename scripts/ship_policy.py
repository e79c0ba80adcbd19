"""Ship a trained ``shapes`` policy as a built-in learned policy (for maintainers).

    python scripts/ship_policy.py --run runs/policy-shapes-adversarial-seed0 --name adanat-shapes-t8

Copies the run's FID-selected ``best/`` (or ``--use policy`` for its final ``policy/``) into
``adanat/assets/shapes/policies/NAME/``, scores it and its base schedule with ``adanat eval`` on
``--n`` held-out images (seed ``--seed``), and records both in the manifest entry beside the
files' sizes and sha256 and the command that trained it (read from the run's checkpoint). The
policy must have been trained on the shipped generator and tokenizer (its ``policy.json`` says
so by sha256), and it is refused unless it beats its base schedule's FID.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from adanat.assets import asset_dir, read_manifest, sha256_of, verified_file
from adanat.cli import main as adanat_main
from adanat.outputs import write_text_atomic
from adanat.policies import policy_manifest_entry

KEPT = ("frechet_inception_distance", "precision", "recall", "inception_score_mean", "class_accuracy")


def evaluate(policy: str, steps: int, n: int, seed: int, out: Path) -> dict[str, float]:
    args = ["eval", "--preset", "shapes", "--policy", policy, "--steps", str(steps), "-n", str(n)]
    code = adanat_main([*args, "--seed", str(seed), "--out", str(out)])
    if code != 0:
        raise SystemExit(f"ship_policy: adanat eval of {policy} failed ({code})")
    metrics = json.loads(out.read_text())["metrics"]
    return {k: round(float(metrics[k]), 4) for k in KEPT if k in metrics}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished adanat train run folder")
    p.add_argument("--name", required=True, help="name of the shipped policy (adanat-shapes-tT)")
    p.add_argument("--use", choices=("best", "policy"), default="best")
    p.add_argument("--n", type=int, default=5000, help="held-out images of the evaluation")
    p.add_argument("--seed", type=int, default=11, help="seed of the evaluation images")
    p.add_argument("--command", required=True, help="the command that trained the run (recorded)")
    a = p.parse_args(argv)
    source = a.run / a.use
    if not (source / "policy.json").is_file() or not (a.run / "checkpoint" / "state.json").is_file():
        print(f"ship_policy: {a.run} is not a finished adanat train run with {a.use}/", file=sys.stderr)
        return 2
    meta = json.loads((source / "policy.json").read_text())
    root = asset_dir("shapes")
    shipped = {m: sha256_of(verified_file(root, m)) for m in ("generator", "tokenizer")}
    if (meta["generator_sha256"], meta["tokenizer_sha256"]) != (shipped["generator"], shipped["tokenizer"]):
        print(f"ship_policy: {source} was not trained on the shipped shapes weights", file=sys.stderr)
        return 2
    config = json.loads((a.run / "checkpoint" / "state.json").read_text())
    steps = int(meta["steps"])
    base = meta["base_schedule"]["name"]
    with tempfile.TemporaryDirectory() as tmp:
        learned = evaluate(str(source), steps, a.n, a.seed, Path(tmp) / "policy.json")
        fixed = evaluate(base, steps, a.n, a.seed, Path(tmp) / "base.json")
    fid, base_fid = learned["frechet_inception_distance"], fixed["frechet_inception_distance"]
    print(f"{a.name}: FID {fid:.3f} against {base_fid:.3f} for {base} ({a.n} held-out images, seed {a.seed})")
    if fid >= base_fid:
        print("ship_policy: the policy does not beat its base schedule; not shipped", file=sys.stderr)
        return 1
    folder = root / "policies" / a.name
    folder.mkdir(parents=True, exist_ok=True)
    for file in ("policy.safetensors", "policy.json"):
        shutil.copyfile(source / file, folder / file)
    best = json.loads((a.run / "best.json").read_text()) if a.use == "best" else {}
    quality = {
        "images": a.n,
        "seed": a.seed,
        "policy": learned,
        "base": {"schedule": base, **fixed},
        "selected_at_update": best.get("updates"),
        "episodes": config["episodes"],
    }
    command = a.command
    manifest = read_manifest(root)
    entry = policy_manifest_entry(folder, root, command, quality)
    entry["trained"] = {"run": a.run.name, "settings": config["config"]}
    manifest.setdefault("policies", {})[a.name] = entry
    write_text_atomic(root / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    print(f"shipped to {folder}; manifest entry written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
