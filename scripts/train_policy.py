"""Train an adaptive generation policy with PPO: ``python scripts/train_policy.py [--env shapes]``.

Runs in ``--run-dir`` (checkpoints, exported ``policy/``, TensorBoard logs under ``tb/`` or
``--log-dir``); ``--resume RUN_DIR`` continues a run with its saved settings (``--episodes``
may raise the total). Ctrl-C saves at the end of the current PPO
update and exits. At the end, the policy and its base schedule are scored on held-out seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from adanat.agents.callbacks import NonFiniteError
from adanat.agents.training import (
    PolicyTrainer,
    PolicyTraining,
    checkpoint_folder,
    parse_std_schedule,
    training_from_dict,
)
from adanat.envs.spec import EnvConfig
from adanat.rewards.adversarial import DiscriminatorTraining
from adanat.rewards.registry import RewardError, RewardOptions, reward_names

from adanat.checkpoints import CheckpointError
from adanat.precision import PRECISIONS
from adanat.presets import world_names, world_preset
from adanat.schedules import ScheduleError

DEFAULT = PolicyTraining()
# options whose default depends on the world: presets.json, ``policy_training`` of each world
SHAPES, IMAGENET = world_preset("shapes").policy_training, world_preset("in256").policy_training


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="shapes", choices=world_names())
    p.add_argument(
        "--episodes", type=int, default=None, help=f"episodes (images) in total (default {DEFAULT.episodes})"
    )
    p.add_argument(
        "--num-envs", "--batch", type=int, default=DEFAULT.num_envs, help="rows per generation batch"
    )
    p.add_argument("--episodes-per-update", type=int, default=DEFAULT.episodes_per_update)
    p.add_argument("--steps", "-T", type=int, default=8, help="generation steps per image")
    p.add_argument("--reward", default="adversarial", choices=reward_names())
    p.add_argument("--base", default=None, help="base schedule name or JSON (default: the AutoNAT baseline)")
    p.add_argument("--observation", default="compact", choices=["compact", "full"])
    p.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="generator and decoder in float32 (default), or under bfloat16 autocast (GPUs; CPUs with "
        "AMX); with --resume, switches a run's precision from there on",
    )
    p.add_argument(
        "--action-scale",
        type=float,
        default=EnvConfig.action_scale,
        help=f"pre-activation distance of a unit action (default {EnvConfig.action_scale})",
    )
    p.add_argument("--lr", type=float, default=DEFAULT.learning_rate)
    p.add_argument(
        "--action-std",
        type=std_spec,
        default=None,
        metavar="U:STD,..",
        help="exploration std from PPO update U on; U may be a share of the run, P%% (default: shapes "
        f"{SHAPES.action_std.replace('%', '%%')}, else {IMAGENET.action_std}, AdaNAT's)",
    )
    p.add_argument(
        "--action-cost",
        type=float,
        default=None,
        help="reward cost per step of mean(action^2), the distance from the base schedule "
        f"(default: shapes {SHAPES.action_cost}, else {IMAGENET.action_cost}: off)",
    )
    p.add_argument(
        "--disc-updates",
        type=int,
        default=None,
        help="discriminator updates per round (default: shapes 20, else 5)",
    )
    p.add_argument(
        "--minibatch-std",
        type=int,
        default=None,
        metavar="G",
        help="the shapes discriminator also sees its features' std over groups of G images "
        f"(default: shapes {SHAPES.minibatch_std}; 0: off)",
    )
    p.add_argument(
        "--eval-every", type=int, default=DEFAULT.eval_every, help="PPO updates between evaluations"
    )
    p.add_argument("--eval-episodes", type=int, default=DEFAULT.eval_episodes)
    p.add_argument(
        "--select-fid",
        type=int,
        default=None,
        metavar="N",
        help="images per FID at each evaluation; the lowest-FID policy goes to RUN_DIR/best "
        "(default: shapes 1000; ImageNet 5000 with --fid-reference, else off; 0: off)",
    )
    p.add_argument(
        "--fid-reference", type=Path, default=None, help="fid_stats.npz for --select-fid (in256/in512)"
    )
    p.add_argument(
        "--inception", type=Path, default=None, help="torch-fidelity Inception-v3 weights (in256/in512)"
    )
    p.add_argument(
        "--save-every", type=int, default=DEFAULT.save_every, help="PPO updates between checkpoints"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", type=Path, default=None, help="default runs/policy-ENV-REWARD-seedS")
    p.add_argument("--log-dir", type=Path, default=None, help="TensorBoard folder (default RUN_DIR/tb)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue this run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default=None, help="model preset instead of the world's (e.g. tiny)")
    p.add_argument("--generator", type=Path, default=None, help="ENAT weights (in256/in512)")
    p.add_argument("--tokenizer", type=Path, default=None, help="VQGAN weights (in256/in512)")
    p.add_argument("--real-images", type=Path, default=None, help="ImageNet train folder (in256/in512)")
    p.add_argument("--dino", type=Path, default=None, help="DINO ViT-S/16 weights (default: timm cache)")
    p.add_argument("--clip-model", default="ViT-B-32")
    p.add_argument("--clip-weights", type=Path, default=None)
    return p.parse_args(argv)


def std_spec(text: str) -> str:
    """Checks the form of ``--action-std`` (``P%`` entries are resolved once the run's length is
    known)."""
    try:
        parse_std_schedule(text, 1)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def disc_updates(world: str) -> int:
    """AdaNAT's 5 updates a round over its 1,000 PPO updates; a ``shapes`` run has about 130 rounds,
    so its discriminator takes 20 a round to become a useful critic within the run."""
    return 20 if world == "shapes" else 5


def world_default(a: argparse.Namespace, name: str) -> Any:
    """The option ``name`` as given, else its default for the run's world (its preset's
    ``policy_training``)."""
    value = getattr(a, name)
    if value is not None:
        return value
    return getattr(world_preset(a.env).policy_training, name)


def select_fid(a: argparse.Namespace) -> int:
    """Images per FID for model selection: ``--select-fid``, else 1,000 on ``shapes`` (about 30 s
    a evaluation on a 2-core CPU), 5,000 on ImageNet when reference statistics are given."""
    if a.select_fid is not None:
        return a.select_fid
    if a.env == "shapes":
        return 1000
    return 5000 if a.fid_reference is not None else 0


def config_from_args(a: argparse.Namespace) -> PolicyTraining:
    options = RewardOptions(
        discriminator=DiscriminatorTraining(
            updates_per_round=a.disc_updates or disc_updates(a.env), seed=a.seed
        ),
        real_images=a.real_images,
        dino=a.dino,
        clip_model=a.clip_model,
        clip_weights=a.clip_weights,
        minibatch_std=world_default(a, "minibatch_std"),
    )
    env = EnvConfig(
        world=a.env,
        steps=a.steps,
        reward=a.reward,
        base=a.base,
        observation=a.observation,
        action_scale=a.action_scale,
        preset=a.preset,
        generator=a.generator,
        tokenizer=a.tokenizer,
        reward_options=options,
        precision=a.precision or "float32",
    )
    cfg = PolicyTraining(
        env=env,
        episodes=a.episodes or DEFAULT.episodes,
        num_envs=a.num_envs,
        episodes_per_update=a.episodes_per_update,
        learning_rate=a.lr,
        action_cost=world_default(a, "action_cost"),
        eval_every=a.eval_every,
        eval_episodes=a.eval_episodes,
        save_every=a.save_every,
        select_fid=select_fid(a),
        fid_reference=str(a.fid_reference) if a.fid_reference else None,
        inception=str(a.inception) if a.inception else None,
        seed=a.seed,
    )
    # shares of the run (P%) need its length, which the validated settings give
    return replace(cfg, std_schedule=parse_std_schedule(world_default(a, "action_std"), cfg.updates))


def saved_config(run_dir: Path) -> PolicyTraining:
    """The settings of the run in ``run_dir`` (from ``checkpoint/``, or ``checkpoint.old`` after a
    crash while a checkpoint was being replaced)."""
    state_file = checkpoint_folder(run_dir) / "state.json"
    try:
        return training_from_dict(json.loads(state_file.read_text())["config"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{state_file} is malformed ({e})") from None


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    try:
        if a.resume is not None:
            cfg = saved_config(a.resume)
            if a.episodes is not None:  # a resumed run may be extended
                cfg = replace(cfg, episodes=a.episodes)
            if a.precision is not None:  # a compute setting, like --device
                cfg = replace(cfg, env=replace(cfg.env, precision=a.precision))
            run_dir = a.resume
        else:
            cfg = config_from_args(a)
            run_dir = a.run_dir or Path("runs") / f"policy-{a.env}-{a.reward}-seed{a.seed}"
            if (run_dir / "checkpoint").exists():
                raise FileExistsError(
                    f"{run_dir} already holds a run; pass --resume {run_dir} or another --run-dir"
                )
        trainer = PolicyTrainer(cfg, run_dir, a.device, a.log_dir)
        if a.resume is not None:
            state = trainer.restore()
            print(f"resuming {run_dir} at episode {state['episodes']} (update {state['rollouts']})")
            if trainer.rows_reseeded:
                print(
                    "note: the checkpoint's environment random streams come from another kind of device; "
                    "they are re-seeded, so the run goes on, though not bit for bit as it would have there"
                )
        result = trainer.train()
    except (CheckpointError, RewardError, ScheduleError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"train_policy: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"train_policy: stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "train_policy: interrupted at once (second Ctrl-C); the last checkpoint stands", file=sys.stderr
        )
        return 130
    if not result:
        print(f"interrupted: saved in {run_dir}; continue with --resume {run_dir}", file=sys.stderr)
        return 130
    print(f"held-out mean reward ({cfg.eval_episodes} images, seed {cfg.eval_seed}):")
    print(f"  base schedule  {result['base']:.4f}")
    print(f"  learned policy {result['policy']:.4f}")
    if "fid_best" in result:
        print(f"FID ({cfg.select_fid} images, seed {cfg.select_fid_seed}, {trainer.selection.space.name}):")
        print(f"  base schedule  {result['fid_base']:.3f}")
        print(f"  final policy   {result['fid_policy']:.3f}")
        print(f"  best policy    {result['fid_best']:.3f}  (exported to {run_dir / 'best'}, see best.json)")
    print(f"policy exported to {run_dir / 'policy'}; TensorBoard: tensorboard --logdir {trainer.log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
