"""``adanat train``: learn an adaptive generation policy with PPO (also ``scripts/train_policy.py``).

Runs in ``--run-dir`` (checkpoints, exported ``policy/``, TensorBoard logs under ``tb/`` or
``--log-dir``); ``--resume RUN_DIR`` continues a run with its saved settings (``--episodes``
may raise the total, ``--precision`` switches the compute precision). Ctrl-C saves at the end of
the current PPO update and exits. At the end, the policy and its base schedule are scored on
held-out seeds. Off a terminal, one plain progress line is printed per PPO update.
``--init-policy DIR`` fine-tunes an AdaNAT-format policy (``adanat import-policy``) instead of
training our network from its zero head; the run exports its policy in that format.

Defaults marked "per world" come from the world's ``policy_training`` entry in
``adanat/data/presets.json`` and are resolved after parsing (:func:`resolve_world_defaults`).
Bad input ends with one line on stderr and exit code 2 before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from adanat.agents.callbacks import NonFiniteError
from adanat.agents.checkpoint import Checkpoint, find_checkpoint, run_has_checkpoint
from adanat.agents.config import PolicyTraining, parse_std_schedule
from adanat.agents.export import PolicyError
from adanat.cli.common import (
    EXPECTED_ERRORS,
    Parser,
    UsageError,
    finite_float,
    nonnegative_int,
    positive_int,
    resolve_device,
    seed_int,
)
from adanat.configs import Flag, FlagSet, add_flags
from adanat.envs.spec import EnvConfig
from adanat.errors import first_line
from adanat.outputs import check_writable
from adanat.precision import PRECISIONS

if TYPE_CHECKING:
    from adanat.agents.trainer import PolicyTrainer
    from adanat.distributed import Shard
from adanat.presets import recipe, recipe_names, world_names, world_preset
from adanat.rewards.adversarial import DiscriminatorTraining
from adanat.rewards.registry import RewardError, RewardOptions, reward_names

__all__ = [
    "add_arguments",
    "add_parser",
    "config_from_args",
    "main",
    "parse",
    "resolve_init_policy",
    "resolve_world_defaults",
    "run",
]

BAD_INPUT = (
    *EXPECTED_ERRORS,
    RewardError,
    PolicyError,
    FileNotFoundError,
    FileExistsError,
    ValueError,
    OSError,
)


def _per_world(name: str) -> str:
    """``shapes 0.05, in256 0, in512 0``: a per-world default as the help shows it."""
    return "per world: " + ", ".join(
        f"{w} {getattr(world_preset(w).policy_training, name)}" for w in world_names()
    )


def std_spec(text: str) -> str:
    """Checks the form of ``--action-std``. ``P%`` entries are resolved once the run's length is
    known; resolved against a one-update run here, where shares land on the first free updates, so
    only a schedule wrong for every length is refused at parse time."""
    try:
        parse_std_schedule(text, 1)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


@dataclass(frozen=True)
class TrainFlags:
    """The flag sets of the config dataclasses, to read the parsed values back by class."""

    env: FlagSet
    reward: FlagSet
    disc: FlagSet
    training: FlagSet


def add_arguments(p: argparse.ArgumentParser) -> TrainFlags:
    """Register the ``train`` options on ``p`` (flags of the config dataclasses' fields)."""
    env = add_flags(
        p,
        EnvConfig,
        [
            Flag("world", ("--world", "--env"), choices=world_names()),
            Flag("steps", ("--steps", "-T"), type=positive_int, help="generation steps T per image"),
            Flag("reward", choices=reward_names()),
            Flag("base", default_help="the world's AutoNAT baseline"),
            Flag(
                "observation",
                choices=["compact", "full"],
                default=None,
                default_help="compact; full with --init-policy",
            ),
            Flag("action_scale", type=finite_float),
            Flag(
                "precision",
                default=None,
                choices=PRECISIONS,
                default_help="float32; with --resume, the run's",
            ),
            "reuse",
            Flag("preset", help="model preset instead of the world's (e.g. tiny)"),
            Flag("generator", help="generator weights (in256/in512; shapes ships its own)"),
            Flag("tokenizer", help="tokenizer weights (in256/in512/cc3m)"),
            Flag("text_encoder", help="cc3m: CLIP text tower weights (default: $ADANAT_TEXT_ENCODER, cache)"),
            Flag("prompts_file", help="cc3m: the episodes' prompts, one per line (default: --captions)"),
            "observe_prompt",
        ],
    )
    training = add_flags(
        p,
        PolicyTraining,
        [
            Flag(
                "episodes",
                type=positive_int,
                default=None,
                default_help=f"{PolicyTraining.episodes}; with --resume the run's, a larger value extends it",
            ),
            Flag("num_envs", ("--num-envs", "--batch"), type=positive_int),
            Flag(
                "episodes_per_update",
                type=positive_int,
                default=None,
                default_help=f"{PolicyTraining.episodes_per_update}; the recipe's with --recipe",
            ),
            Flag(
                "learning_rate",
                ("--lr",),
                type=finite_float,
                default=None,
                default_help=_per_world("learning_rate") + "; the recipe's with --recipe",
            ),
            Flag(
                "std_schedule",
                ("--action-std",),
                type=std_spec,
                default=None,
                metavar="U:STD,..",
                default_help=_per_world("action_std"),
                help="exploration std from PPO update U on; U may be a share of the run, P% (a share "
                "landing on an update the entry before holds moves to the next update)",
            ),
            Flag("action_cost", type=finite_float, default=None, default_help=_per_world("action_cost")),
            Flag("minibatch", type=positive_int),
            Flag("eval_every", type=positive_int),
            Flag("eval_episodes", type=positive_int),
            Flag(
                "select_fid",
                type=nonnegative_int,
                default=None,
                metavar="N",
                default_help=_per_world("select_fid") + "; worlds without shipped FID references: only "
                "with --fid-reference; 0: off",
            ),
            Flag("fid_reference", help="fid_stats.npz (Inception mu/sigma) for --select-fid on in256/in512"),
            Flag("inception", help="torch-fidelity Inception-v3 weights (in256/in512; default: its cache)"),
            Flag(
                "init_policy",
                metavar="DIR",
                help="fine-tune this AdaNAT-format policy folder (adanat import-policy DIR): its actor and "
                "critic, with AdaNAT's raw actions on the full observation; the generator's feature width "
                "and grid and --steps must be the policy's",
            ),
            Flag("save_every", type=positive_int),
            Flag("seed", type=seed_int),
        ],
    )
    disc = add_flags(
        p,
        DiscriminatorTraining,
        [
            Flag(
                "updates_per_round",
                ("--disc-updates",),
                type=positive_int,
                default=None,
                default_help=_per_world("disc_updates"),
            )
        ],
    )
    reward = add_flags(
        p,
        RewardOptions,
        [
            Flag(
                "minibatch_std",
                type=nonnegative_int,
                default=None,
                metavar="G",
                default_help=_per_world("minibatch_std") + "; 0: off",
            ),
            "real_images",
            Flag("captions", help="cc3m: image-caption pairs (TSV or folder): real images with their text"),
            "dino",
            "clip_model",
            "clip_weights",
        ],
    )
    p.add_argument(
        "--recipe",
        choices=recipe_names(),
        default=None,
        help="a published recipe's settings for every option it names that is not given: adanat = "
        "AdaNAT's ImageNet-256 PPO (4,096 episodes per update for 1,000 updates, lr 1e-5, std 0.6, 0.3 "
        "from update 500, floor 0.1, 5 discriminator updates a round; no action cost or minibatch std)",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="new or empty run folder (default runs/policy-WORLD-REWARD-seedS)",
    )
    p.add_argument("--log-dir", type=Path, default=None, help="TensorBoard folder (default RUN_DIR/tb)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue this run")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    flags = TrainFlags(env, reward, disc, training)
    p.set_defaults(run=run, train_flags=flags)
    return flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``adanat train``."""
    p = sub.add_parser(
        "train",
        help="learn an adaptive schedule policy with PPO",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(prog="adanat train")


def parse(argv: Sequence[str] | None = None, prog: str = "adanat train") -> argparse.Namespace:
    """Parse the ``train`` options on their own (``scripts/train_policy.py``)."""
    p = Parser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(prog=prog)
    return p.parse_args(argv)


def resolve_world_defaults(a: argparse.Namespace) -> argparse.Namespace:
    """The one place where per-world defaults are filled in: every option left at None takes
    the value of ``--recipe`` when it names it (``--episodes``: the recipe's updates of
    ``--episodes-per-update`` episodes), else of the world's ``policy_training`` preset; FID
    selection stays off on a world without shipped FID references unless ``--fid-reference`` is
    given."""
    world = world_preset(a.world)
    defaults = world.policy_training
    out = argparse.Namespace(**vars(a))
    if out.recipe is not None:  # the recipe's settings where no flag was given
        r = recipe(out.recipe)
        for dest, value in (
            ("episodes_per_update", r.episodes_per_update),
            ("learning_rate", r.learning_rate),
            ("std_schedule", r.action_std),
            ("action_cost", r.action_cost),
            ("updates_per_round", r.disc_updates),
            ("minibatch_std", r.minibatch_std),
        ):
            if getattr(out, dest) is None:
                setattr(out, dest, value)
        if out.episodes is None:
            out.episodes = r.updates * out.episodes_per_update
    for dest, name in (
        ("std_schedule", "action_std"),
        ("action_cost", "action_cost"),
        ("updates_per_round", "disc_updates"),
        ("minibatch_std", "minibatch_std"),
        ("learning_rate", "learning_rate"),
    ):
        if getattr(out, dest) is None:
            setattr(out, dest, getattr(defaults, name))
    if out.select_fid is None:
        has_reference = world.reference_splits is not None or out.fid_reference is not None
        out.select_fid = defaults.select_fid if has_reference else 0
    return out


def resolve_init_policy(a: argparse.Namespace) -> argparse.Namespace:
    """With ``--init-policy DIR``: the options that AdaNAT's policy implies (the full observation,
    its actions, no action cost), after refusing those it cannot run with and a folder that does
    not fit the generator or ``--steps`` (checked before any weights load); unchanged without it."""
    if a.init_policy is None:
        return a
    from adanat.agents.finetune import check_fit, read_init_meta, release_actions
    from adanat.weights import resolve_preset

    folder = Path(a.init_policy)
    meta = read_init_meta(folder)
    where = f"--init-policy {folder}"
    if a.action_cost not in (None, 0):
        raise UsageError(f"--action-cost is a distance from the base schedule; {where} acts with none")
    if a.observe_prompt:
        raise UsageError(f"--observe-prompt: {where} observes the generator's features and the step only")
    if a.action_scale != EnvConfig.action_scale:
        raise UsageError(f"--action-scale scales the residual actions; {where} acts with AdaNAT's raw ones")
    preset = resolve_preset(a.preset or a.world)[0]
    gen = preset.generator
    observation = a.observation or "full"
    where_gen = f"preset {preset.name}"
    check_fit(
        meta,
        folder,
        width=gen.width,
        grid=gen.grid,
        steps=a.steps,
        observation=observation,
        generator=where_gen,
    )
    out = argparse.Namespace(**vars(a))
    out.observation, out.action_cost, out.actions = observation, 0.0, release_actions(meta)
    out.init_policy = str(folder.resolve())  # a resumed run finds it from any folder
    return out


def config_from_args(a: argparse.Namespace) -> PolicyTraining:
    """The :class:`PolicyTraining` of a new run from parsed options."""
    flags: TrainFlags = a.train_flags
    a = resolve_world_defaults(resolve_init_policy(a))
    disc = DiscriminatorTraining(**flags.disc.values(a), seed=a.seed)
    options = RewardOptions(discriminator=disc, **flags.reward.values(a))
    env_values = flags.env.values(a)
    env = EnvConfig(**env_values, actions=getattr(a, "actions", EnvConfig.actions))
    training = {k: v for k, v in flags.training.values(a).items() if k != "std_schedule"}
    cfg = PolicyTraining(env=replace(env, reward_options=options), **training)
    # shares of the run (P%) need its length, which the validated settings give
    return replace(cfg, std_schedule=parse_std_schedule(a.std_schedule, cfg.updates))


# -- the run folder: checked before anything is written -----------------------------------------


def check_new_run_dir(run_dir: Path) -> None:
    """A new run goes into a new or empty folder (or one of a run stopped before its first
    checkpoint), never over another run or unrelated files."""
    check_writable(run_dir, "--run-dir")
    if run_has_checkpoint(run_dir):
        raise UsageError(f"{run_dir} already holds a run; pass --resume {run_dir} or another --run-dir")
    # a run stopped before its first checkpoint leaves only these: it starts again
    unrelated = (
        [p.name for p in run_dir.iterdir() if p.name not in ("tb", "checkpoint.tmp")]
        if run_dir.is_dir()
        else []
    )
    if unrelated:
        raise UsageError(f"--run-dir {run_dir} holds files but no adanat run; choose a new or empty folder")


def _resume_checkpoint(run_dir: Path) -> Checkpoint:
    if not run_dir.is_dir():
        raise UsageError(f"--resume {run_dir}: no such run folder")
    check_writable(run_dir, "--resume")
    return find_checkpoint(run_dir)


RESUME_SETTINGS = ("episodes", "precision", "device", "log_dir")  # what --resume may change


def _changed_on_resume(a: argparse.Namespace) -> list[str]:
    """The options given beside ``--resume`` that a resumed run would ignore (its saved settings
    stand): those that differ from their defaults, other than :data:`RESUME_SETTINGS`."""
    p = Parser()
    add_arguments(p)
    defaults = vars(p.parse_args([]))
    keep = {"resume", "train_flags", *RESUME_SETTINGS}
    return sorted(k for k, v in vars(a).items() if k in defaults and k not in keep and v != defaults[k])


def _prepare(a: argparse.Namespace) -> tuple[PolicyTraining, Path, Checkpoint | None]:
    if a.resume is not None:
        changed = _changed_on_resume(a)
        if changed:
            allowed = ", ".join(f"--{k.replace('_', '-')}" for k in RESUME_SETTINGS)
            raise UsageError(
                f"--resume continues with the run's saved settings; --{changed[0].replace('_', '-')} "
                f"cannot change with it (only {allowed} can)"
            )
        ckpt = _resume_checkpoint(a.resume)
        cfg = ckpt.config
        if a.episodes is not None:  # a resumed run may be extended
            cfg = replace(cfg, episodes=a.episodes)
        if a.precision is not None:  # a compute setting, like --device
            cfg = replace(cfg, env=replace(cfg.env, precision=a.precision))
        run_dir = a.resume
    else:
        ckpt = None
        cfg = config_from_args(a)
        run_dir = a.run_dir or Path("runs") / f"policy-{a.world}-{a.reward}-seed{a.seed}"
        check_new_run_dir(run_dir)
    if a.log_dir is not None:
        check_writable(a.log_dir, "--log-dir")
    return cfg, run_dir, ckpt


def run(a: argparse.Namespace) -> int:
    """Train (or resume) and print the held-out results; returns the exit code. Under
    ``torchrun`` every process runs this: the settings are checked in each (the same way, so bad
    input ends them all with 2), then rank 0 leads the run and the others serve it (only rank 0
    prints and writes)."""
    from adanat.agents.trainer import PolicyTrainer
    from adanat.distributed import Shard, close_shard, init_shard
    from adanat.team import Team

    prog = getattr(a, "prog", "adanat train")
    leader = os.environ.get("RANK", "0") == "0"

    def say(line: str, err: bool = True) -> None:
        if leader:
            print(line, file=sys.stderr if err else sys.stdout, flush=True)

    shard, trainer = Shard(), None
    try:
        device = resolve_device(a.device)
        cfg, run_dir, ckpt = _prepare(a)
        shard, device = init_shard(device)
        trainer = PolicyTrainer(cfg, run_dir, str(device), a.log_dir, Team(shard, device))
        if ckpt is not None:
            state = trainer.restore(ckpt)
            if ckpt.folder.name != "checkpoint":
                missing = run_dir / "checkpoint"
                say(f"note: {missing} is missing or damaged; resuming from {ckpt.folder}", False)
            say(f"resuming {run_dir} at episode {state['episodes']} (update {state['rollouts']})", False)
            if trainer.rows_reseeded:
                say(
                    "note: the checkpoint's environment random streams come from another kind of device; "
                    "they are re-seeded, so the run goes on, though not bit for bit as it would have there",
                    False,
                )
        if not shard.is_main:
            return _serve(trainer, prog)
    except NonFiniteError as e:
        say(f"{prog}: stopped: {e}")
        return _ended(1, trainer, shard)
    except BAD_INPUT as e:  # refused before any training: nothing of the run was written
        say(f"{prog}: error: {first_line(e)}")
        return _ended(2, trainer, shard)
    except KeyboardInterrupt:
        say(f"{prog}: interrupted")
        return _ended(130, trainer, shard)
    finally:
        if not shard.is_main and not (trainer is not None and trainer.team.broken):
            close_shard(shard)
    try:
        result = trainer.train()
    except NonFiniteError as e:
        say(f"{prog}: stopped: {e}")
        return _ended(1, trainer, shard)
    except (OSError, RuntimeError, ValueError) as e:  # failed while training: not bad input
        say(f"{prog}: failed: {first_line(e)}; the last checkpoint is in {run_dir}")
        return _ended(1, trainer, shard)
    except KeyboardInterrupt:
        say(f"{prog}: interrupted at once (second Ctrl-C); the last checkpoint stands")
        return _ended(130, trainer, shard)
    _ended(0, trainer, shard)
    if not result:
        say(f"interrupted: saved in {run_dir}; continue with --resume {run_dir}")
        return 130
    print(f"held-out mean reward ({cfg.eval_episodes} images, seed {cfg.eval_seed}):")
    print(f"  base schedule  {result['base']:.4f}")
    print(f"  learned policy {result['policy']:.4f}")
    if "fid_best" in result:
        assert trainer.selection is not None
        print(f"FID ({cfg.select_fid} images, seed {cfg.select_fid_seed}, {trainer.selection.space.name}):")
        print(f"  base schedule  {result['fid_base']:.3f}")
        print(f"  final policy   {result['fid_policy']:.3f}")
        print(f"  best policy    {result['fid_best']:.3f}  (exported to {run_dir / 'best'}, see best.json)")
    print(f"policy exported to {run_dir / 'policy'}; TensorBoard: tensorboard --logdir {trainer.log_dir}")
    return 0


def _ended(code: int, trainer: PolicyTrainer | None, shard: Shard) -> int:
    """The leader releases the other processes and leaves the process group; returns ``code``.
    After an operation failed part-way the others are inside it: they end with the leader."""
    from adanat.distributed import close_shard

    if shard.is_main and not (trainer is not None and trainer.team.broken):
        if trainer is not None:
            trainer.team.stop()
        close_shard(shard)
    return code


def _serve(trainer: PolicyTrainer, prog: str) -> int:
    """A process other than the leader serves the run; 0 when the leader released it, 1 when the
    run broke off (the leader, which reports the cause, ended; or this process failed)."""
    rank = trainer.team.shard.rank
    try:
        trainer.serve()
    except Exception as e:  # one line, not a traceback per process
        print(f"{prog} (rank {rank}): stopped: {first_line(e)}", file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "adanat train") -> int:
    """``train`` as a program of its own (``scripts/train_policy.py``)."""
    return run(parse(argv, prog))
