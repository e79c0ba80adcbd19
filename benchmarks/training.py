"""The real PPO training step against bare generation of the same images, side by side in one run.

Per row (one :class:`~adanat.agents.trainer.PolicyTrainer`, built from the same flags and per-world
defaults as ``adanat train``):

* ``loop``: one PPO update through SB3's ``learn`` with the callbacks of a training run (exploration
  std, finite guards, the reward round: episode records and one discriminator round): the rollout
  of ``episodes_per_update`` episodes, the PPO epochs, one discriminator round, SB3's log dump;
  plus the periodic work at its interval: ``trainer.evaluate`` (held-out rewards and FID selection)
  divided by ``eval_every``, ``trainer.save`` divided by ``save_every``;
* ``bare``: ``NATSampler.generate`` + decode of as many images with the base schedule, at the same
  batch (``num_envs``), precision, device and weights (the trainer's own sampler);
* ``bare*``: the same for the loop's own episodes of that round, each row with the labels and the
  per-step controls its episode used (the policy's per-sample schedules: rows reveal different
  numbers of tokens, which costs the generator more than one shared schedule), so ``ratio*`` is
  the RL machinery alone and ``bare* / bare`` the price of per-sample schedules.

Rows and their bare generations alternate within each round, after one warm-up round (which also
pays the one-off FID of the base schedule); each row reports its fastest round. Where the time
goes is measured from the outside, by wrapping methods of this run's objects (instance attributes,
no library change) and SB3's ``obs_as_tensor``: each phase's *exclusive* wall time (time inside a
nested phase counts for that one only; inside evaluation, FID selection and checkpoints nothing is
split further), so the phases add up to the loop's time. On CUDA every phase boundary synchronises.

    python benchmarks/training.py                                  # shapes, 128/1,024/4,096 episodes
    python benchmarks/training.py --episodes-per-update 1024 --minibatch 256,1024   # a lever, side by side
    python benchmarks/training.py --quick                          # a smoke run (< 1 min)
    python benchmarks/training.py --world in256 --preset enat-l-in256 --device cuda \\
        --precision bfloat16 --num-envs 256 --episodes-per-update 1024,4096    # random ENAT-L, GPU

``--preset NAME`` runs random weights of a model preset (written to a temporary folder, loaded as a
run loads them); on ``in256``/``in512`` without ``--real-images``/``--dino`` a folder of random
images and a random DINO ViT-S/16 stand in, and FID selection is off (no Inception weights here).
List options (``--num-envs 64,256``) make one row per combination; with ``--zip``, row ``i`` takes
the ``i``-th value of each (``--zip --num-envs 64,256 --minibatch 256,1024``: two rows).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import itertools
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common import on_policy_algorithm
from stable_baselines3.common.callbacks import CallbackList
from torch import Tensor

from adanat.agents.callbacks import ExplorationStd, FiniteGuard, RewardRounds, discriminator_round
from adanat.agents.config import PolicyTraining
from adanat.agents.trainer import PolicyTrainer
from adanat.cli.train import config_from_args, parse
from adanat.presets import model_preset, world_preset
from adanat.rewards.base import LearnedReward
from adanat.rng import row_rngs
from adanat.sampling import Controls, GenerationState, ScheduleController

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation import random_enat  # the sibling benchmark's random ENAT

GEN, SELECT, DECODE, SCORE = "generator forwards", "token selection", "decode", "reward scoring"
OBS_HOST, OBS_BUFFER, POLICY = "obs to host (pool, copy)", "obs to buffer + policy", "policy forwards"
ROLLOUT_REST = "env + SB3 rest (rollout)"
PPO_GATHER, PPO_FORWARD, PPO_REST, PPO_STEP = (
    "PPO minibatch gather",
    "PPO forward",
    "PPO backward + loss",
    "PPO optimizer step",
)
DISC, REAL = "discriminator round", "disc: real images"
LOGS, OTHER = "logging + callbacks", "other"
EVAL, FID, SAVE = "evaluation", "FID selection", "checkpoint"
PHASES = (
    GEN,
    SELECT,
    DECODE,
    SCORE,
    OBS_HOST,
    OBS_BUFFER,
    POLICY,
    ROLLOUT_REST,
    PPO_GATHER,
    PPO_FORWARD,
    PPO_REST,
    PPO_STEP,
    DISC,
    REAL,
    LOGS,
    EVAL,
    FID,
    SAVE,
    OTHER,
)
BARE_PHASES = (GEN, SELECT, DECODE, OTHER)
PERIODIC = frozenset({EVAL, FID, SAVE})  # nothing inside them is split further


class PhaseClock:
    """Exclusive wall time per phase while :meth:`measure` runs: entering a phase stops the clock of
    the one around it. Inside a phase of ``opaque`` only another ``opaque`` phase splits off."""

    def __init__(self, device: torch.device, opaque: frozenset[str] = PERIODIC) -> None:
        self.sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else lambda: None
        self.opaque = opaque
        self.seconds: dict[str, float] = {}
        self._names: list[str] = []  # the phases entered, innermost last
        self._pushed: list[bool] = []  # per enter(): whether it started a phase
        self._t = 0.0
        self.on = False

    def _switch(self) -> None:
        self.sync()
        now = time.perf_counter()
        if self._names:
            top = self._names[-1]
            self.seconds[top] = self.seconds.get(top, 0.0) + now - self._t
        self._t = now

    def enter(self, name: str) -> None:
        inside_opaque = bool(self._names) and self._names[-1] in self.opaque and name not in self.opaque
        if not self.on or inside_opaque:
            self._pushed.append(False)
            return
        self._switch()
        self._names.append(name)
        self._pushed.append(True)

    def exit(self) -> None:
        if self._pushed.pop():
            self._switch()
            self._names.pop()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.enter(name)
        try:
            yield
        finally:
            self.exit()

    def measure(self, fn: Callable[[], object], outer: str = OTHER) -> dict[str, float]:
        """Run ``fn`` with the clock on; its seconds per phase (time in no inner phase: ``outer``)."""
        self.seconds, self.on = {}, True
        try:
            with self.phase(outer):
                fn()
        finally:
            self.on = False
        return dict(self.seconds)


def timed(clock: PhaseClock, obj: object, attr: str, name: str) -> None:
    """Replace ``obj.attr`` (a method, on this instance only) by one that runs inside phase ``name``."""
    fn = getattr(obj, attr)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with clock.phase(name):
            return fn(*args, **kwargs)

    setattr(obj, attr, wrapper)


def timed_iterator(clock: PhaseClock, obj: object, attr: str, name: str) -> None:
    """Like :func:`timed` for a method returning an iterator: each ``next`` runs inside ``name``."""
    fn = getattr(obj, attr)

    def each(it: Iterator[Any]) -> Iterator[Any]:
        while True:
            with clock.phase(name):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item

    setattr(obj, attr, lambda *args, **kwargs: each(iter(fn(*args, **kwargs))))


@contextlib.contextmanager
def timed_obs_as_tensor(clock: PhaseClock) -> Iterator[None]:
    """SB3's host-to-policy-device copy of observations in a rollout, as phase :data:`OBS_BUFFER`."""
    original = on_policy_algorithm.obs_as_tensor

    def wrapper(obs: Any, device: torch.device) -> Any:
        with clock.phase(OBS_BUFFER):
            return original(obs, device)

    on_policy_algorithm.obs_as_tensor = wrapper  # type: ignore[assignment]
    try:
        yield
    finally:
        on_policy_algorithm.obs_as_tensor = original  # type: ignore[assignment]


MODEL_WRAPPED = ("collect_rollouts", "train", "dump_logs")  # on the SB3 model, which save() pickles


@contextlib.contextmanager
def unwrapped(obj: object, names: tuple[str, ...]) -> Iterator[None]:
    """Without this run's instance wrappers ``names`` of ``obj`` (SB3's ``save`` pickles the model's
    attributes, and a wrapper holding the clock does not pickle)."""
    saved = {n: obj.__dict__.pop(n) for n in names if n in obj.__dict__}
    try:
        yield
    finally:
        obj.__dict__.update(saved)


def checkpoint(row: Row) -> None:
    """A run's periodic checkpoint (``checkpoint/``, the SB3 zip, the exported policy)."""
    with unwrapped(row.trainer.model, MODEL_WRAPPED):
        row.trainer.save()


@dataclass
class Row:
    """One training configuration: its trainer, the callbacks of a run, its measured rounds."""

    cfg: PolicyTraining
    trainer: PolicyTrainer
    callbacks: CallbackList
    loop: list[dict[str, float]] = field(default_factory=list)  # per round: seconds per phase per update
    bare: list[dict[str, float]] = field(default_factory=list)  # per round, bare generation's phases
    replay: list[dict[str, float]] = field(default_factory=list)  # per round, with the loop's controls
    episodes: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # last rollout: (labels, controls)

    @property
    def bare_key(self) -> tuple[int, int, str]:
        return self.cfg.episodes_per_update, self.cfg.num_envs, self.cfg.env.precision


def keep_episodes(row: Row) -> None:
    """Keep the labels ``(b,)`` and controls ``(b, T, 4)`` of each batch of the last rollout, as
    the reward round drains them (for :func:`bare_generation` with the loop's own controls)."""
    venv = row.trainer.venv
    drain = venv.drain_finished

    def wrapper() -> list[Any]:
        finished = drain()
        if finished:
            row.episodes = [(f.labels.cpu(), f.controls.cpu()) for f in finished]
        return finished

    venv.drain_finished = wrapper  # type: ignore[method-assign]


class Replay:
    """A controller that gives each row the controls ``(b, T, 4)`` a rollout's episode used."""

    def __init__(self, controls: Tensor, rule: str) -> None:
        self.controls, self.rule = controls, rule

    def __call__(self, state: GenerationState) -> Controls:
        return Controls.from_tensor(self.controls[:, state.step].to(state.ids.device), self.rule)  # (b, 4)


def instrument(row: Row, clock: PhaseClock, breakdown: bool) -> None:
    """Wrap the methods of this row's objects that each phase runs in (instance attributes only)."""
    tr, model = row.trainer, row.trainer.model
    keep_episodes(row)
    if tr.selection is not None:
        timed(clock, tr.selection, "score", FID)
    if not breakdown:
        return
    sampler, core, policy = tr.core.sampler, tr.core, model.policy
    timed(clock, sampler, "_forward", GEN)
    timed(clock, sampler, "advance", SELECT)  # less its forward: sampling, re-masking, records
    timed(clock, sampler, "decode", DECODE)
    if hasattr(tr.reward, "logits"):
        timed(clock, tr.reward, "logits", SCORE)
    timed(clock, core, "observation", OBS_HOST)
    timed(clock, model.rollout_buffer, "add", OBS_BUFFER)
    policy.register_forward_pre_hook(lambda _m, _a: clock.enter(POLICY))
    policy.register_forward_hook(lambda _m, _a, _o: clock.exit())
    timed(clock, policy, "predict_values", POLICY)
    timed(clock, model, "collect_rollouts", ROLLOUT_REST)
    timed(clock, model, "train", PPO_REST)
    timed_iterator(clock, model.rollout_buffer, "get", PPO_GATHER)
    timed(clock, policy, "evaluate_actions", PPO_FORWARD)
    timed(clock, policy.optimizer, "step", PPO_STEP)  # the guards' finiteness checks included
    if hasattr(tr.reward, "update"):
        timed(clock, tr.reward, "update", DISC)
    if hasattr(tr.reward, "real"):  # drawing (rendering, decoding) the real images of a round
        timed(clock, tr.reward.real, "sample", REAL)
    rounds = next(c for c in row.callbacks.callbacks if isinstance(c, RewardRounds))
    timed(clock, rounds, "_on_rollout_end", LOGS)
    timed(clock, model, "dump_logs", LOGS)


def build_row(args: argparse.Namespace, settings: dict[str, Any], run_dir: Path, weights: list[str]) -> Row:
    """A trainer for one combination of the list options, configured as ``adanat train`` would be."""
    argv = ["--world", args.world, *weights]
    for flag in ("episodes-per-update", "num-envs", "precision", "disc-updates", "select-fid"):
        value = settings[flag.replace("-", "_")]
        if value is not None:
            argv += [f"--{flag}", str(value)]
    argv += ["--eval-every", str(args.eval_every), "--eval-episodes", str(args.eval_episodes)]
    if args.steps is not None:
        argv += ["--steps", str(args.steps)]
    cfg = replace(config_from_args(parse(argv)), minibatch=settings["minibatch"])
    trainer = PolicyTrainer(cfg, run_dir, args.device)
    reward = trainer.reward
    update = discriminator_round(reward) if isinstance(reward, LearnedReward) else None  # one process
    callbacks = CallbackList(
        [ExplorationStd(cfg.std_schedule), FiniteGuard(), RewardRounds(trainer.venv, update, None)]
    )
    return Row(cfg, trainer, callbacks)


def loop_update(row: Row) -> None:
    """One PPO update as a run does it (rollout, the reward round, SB3's log dump, PPO epochs)."""
    tr, cfg = row.trainer, row.cfg
    rounds = next(c for c in row.callbacks.callbacks if isinstance(c, RewardRounds))
    rounds.writer = tr.writer  # the run's TensorBoard writer (made on first use, as in a run)
    tr.model.learn(cfg.n_steps * cfg.num_envs, callback=row.callbacks, reset_num_timesteps=False)


def evaluation(row: Row) -> None:
    """A run's periodic evaluation: held-out rewards of policy and base, FID selection, its logs."""
    with contextlib.redirect_stdout(io.StringIO()):  # evaluate() prints its line
        row.trainer.evaluate(len(row.loop) + 1)


def bare_generation(row: Row, seed: int, batches: int | None = None) -> None:
    """The update's images without RL: ``generate`` + decode with the base schedule, same batches
    (``batches``: only so many, for a warm-up)."""
    core, cfg = row.trainer.core, row.cfg
    b, dev = cfg.num_envs, core.device
    controller = ScheduleController(core.mapping.base)
    classes = core.sampler.generator.num_classes
    assert classes is not None
    draws = torch.Generator().manual_seed(seed)
    for j in range(cfg.episodes_per_update // b if batches is None else batches):
        labels = torch.randint(0, classes, (b,), generator=draws).to(dev)  # (b,)
        core.sampler.generate(labels, controller, core.steps, row_rngs(seed, b, dev, offset=j * b))


def replayed_generation(row: Row, seed: int) -> None:
    """The last rollout's images without RL: ``generate`` + decode with each episode's own labels
    and controls (the per-sample schedules the policy chose), same batches."""
    core, b = row.trainer.core, row.cfg.num_envs
    rule = core.mapping.base.rule
    for j, (labels, controls) in enumerate(row.episodes):
        rngs = row_rngs(seed, b, core.device, offset=j * b)
        core.sampler.generate(labels.to(core.device), Replay(controls, rule), core.steps, rngs)


def per_update(cfg: PolicyTraining, update: dict[str, float], extra: dict[str, float]) -> dict[str, float]:
    """Seconds per PPO update by phase: the update's own, plus the periodic work at its interval."""
    out = dict(update)
    for name, s in extra.items():
        every = cfg.save_every if name == SAVE else cfg.eval_every
        out[name] = out.get(name, 0.0) + s / every
    return out


def random_weights(args: argparse.Namespace, folder: Path) -> list[str]:
    """Flags loading random weights of ``--preset`` (and stand-ins for ImageNet reward inputs)."""
    from safetensors.torch import save_file

    from adanat.models.vqgan import MaskGITVQGAN

    preset = model_preset(args.preset)
    with torch.random.fork_rng(devices=[]):  # layer inits draw from the global RNG
        gen = random_enat(preset.generator, torch.device("cpu"))
        torch.manual_seed(1)
        tok = MaskGITVQGAN(preset.tokenizer)
    save_file({k: v.contiguous() for k, v in gen.state_dict().items()}, str(folder / "gen.safetensors"))
    save_file({k: v.contiguous() for k, v in tok.state_dict().items()}, str(folder / "tok.safetensors"))
    del gen, tok
    flags = ["--preset", args.preset, "--generator", str(folder / "gen.safetensors")]
    flags += ["--tokenizer", str(folder / "tok.safetensors")]
    world = world_preset(args.world)
    if world.discriminator != "conv":  # ImageNet worlds: DINO-projected discriminator on real images
        flags += ["--real-images", str(args.real_images or random_image_folder(folder, world.image_size))]
        flags += ["--dino", str(args.dino or random_dino(folder))]
    return flags


def random_image_folder(folder: Path, size: int, classes: int = 4, per_class: int = 16) -> Path:
    """An ImageFolder of random RGB images (stand-in real images: decoding them is real work)."""
    from PIL import Image

    root = folder / "real"
    draws = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / f"n{c:08d}").mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (size, size, 3), generator=draws, dtype=torch.uint8)  # (S, S, 3)
            Image.fromarray(pixels.numpy()).save(root / f"n{c:08d}" / f"{i}.png")
    return root


def random_dino(folder: Path) -> Path:
    """A DINO ViT-S/16 state dict with random weights."""
    import timm
    from safetensors.torch import save_file

    from adanat.rewards.discriminators import DINO_MODEL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        model = timm.create_model(DINO_MODEL, pretrained=False, num_classes=0)
    path = folder / "dino.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def machine(device: torch.device) -> str:
    """Platform, CPU model and flags that matter, torch, threads, device."""
    cpu = platform.processor() or platform.machine()
    flags = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
        have = set(next((ln for ln in lines if ln.startswith("flags")), "").split())
        if "amx_bf16" in have:
            flags = ", AMX"
        elif "avx512_bf16" in have:
            flags = ", no AMX, avx512_bf16"
        else:
            flags = ", no bfloat16 matrix units"
    omp = os.environ.get("OMP_NUM_THREADS")
    gpu = f" {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (
        f"machine: {platform.platform()}, {cpu} ({os.cpu_count()} cores{flags}), torch {torch.__version__} "
        f"(cpu capability {torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads"
        f"{' (OMP_NUM_THREADS=' + omp + ')' if omp else ''}, device {device}{gpu}"
    )


def fastest(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The round with the least total time."""
    return min(rounds, key=lambda r: sum(r.values()))


def breakdown(title: str, phases: tuple[str, ...], best: list[dict[str, float]]) -> None:
    """Seconds per update and share of the row's total, one line per phase, one column per row."""
    totals = [sum(b.values()) for b in best]
    print(f"{title:28s}" + "".join(f" {'row ' + str(i):>16s}" for i in range(1, len(best) + 1)))
    for name in phases:
        if any(name in b for b in best):
            cells = [
                f" {b.get(name, 0.0):8.3f} ({b.get(name, 0.0) / t:5.1%})"
                for b, t in zip(best, totals, strict=True)
            ]
            print(f"{name:28s}{''.join(cells)}")
    print(f"{'total':28s}" + "".join(f" {t:8.3f} ({1:5.0%})" for t in totals))


def report(rows: list[Row], args: argparse.Namespace, device: torch.device) -> None:
    """The machine, the rows' episodes/s (loop, bare, ratio) and where each row's time goes."""
    print(machine(device))
    c0 = rows[0].cfg
    weights = f"random {args.preset}" if args.preset else "shipped weights"
    print(
        f"world {args.world} ({weights}), T={c0.env.steps}, {c0.env.observation} obs, "
        f"PPO {c0.n_epochs} epochs; loop = rollout + PPO + disc round + logs "
        f"+ evaluation/{c0.eval_every} ({c0.eval_episodes} episodes x 2 + FID selection) "
        f"+ checkpoint/{c0.save_every}; fastest of {args.repeats} interleaved rounds after a warm-up round"
    )
    print()
    print(
        f"{'row':>3s} {'episodes/update':>15s} {'batch':>5s} {'minibatch':>9s} {'precision':>9s} "
        f"{'disc':>4s} {'fid':>5s} {'loop ep/s':>9s} {'bare ep/s':>9s} {'ratio':>6s} "
        f"{'bare* ep/s':>10s} {'ratio*':>6s}"
    )
    for i, row in enumerate(rows, 1):
        c, loop, bare = row.cfg, sum(fastest(row.loop).values()), sum(fastest(row.bare).values())
        e = c.episodes_per_update
        replayed = f"{'-':>10s} {'-':>6s}"
        if row.replay:
            replay = sum(fastest(row.replay).values())
            replayed = f"{e / replay:10.2f} {replay / loop:6.3f}"
        print(
            f"{i:3d} {e:15d} {c.num_envs:5d} {c.minibatch:9d} {c.env.precision:>9s} "
            f"{c.env.reward_options.discriminator.updates_per_round:4d} {c.select_fid:5d} "
            f"{e / loop:9.2f} {e / bare:9.2f} {bare / loop:6.3f} {replayed}"
        )
    print(
        "bare: the base schedule (one schedule for the batch); bare*: the loop's images again, "
        "each with the controls its episode used (per-sample schedules), without RL"
    )
    print()
    breakdown("loop, s per update (share)", PHASES, [fastest(r.loop) for r in rows])
    print()
    breakdown("bare, s per update (share)", BARE_PHASES, [fastest(r.bare) for r in rows])
    if all(r.replay for r in rows):
        print()
        breakdown("bare*, s per update (share)", BARE_PHASES, [fastest(r.replay) for r in rows])


def run(args: argparse.Namespace) -> list[Row]:
    """Build every row, run the warm-up and the timed rounds interleaved, print the report."""
    device = torch.device(args.device)
    clock = PhaseClock(device)
    lists = {
        "episodes_per_update": args.episodes_per_update,
        "num_envs": args.num_envs,
        "minibatch": args.minibatch,
        "precision": args.precision,
        "disc_updates": args.disc_updates,
        "select_fid": args.select_fid,
    }
    with tempfile.TemporaryDirectory(prefix="adanat-bench-") as tmp, timed_obs_as_tensor(clock):
        weights = random_weights(args, Path(tmp)) if args.preset else []
        rows: list[Row] = []
        for i, combo in enumerate(combinations(list(lists.values()), args.zip)):
            rows.append(build_row(args, dict(zip(lists, combo, strict=True)), Path(tmp) / f"run{i}", weights))
            instrument(rows[-1], clock, not args.no_breakdown)
        for r in range(args.repeats + 1):  # round 0 warms up
            bare_done: dict[tuple[int, int, str], dict[str, float]] = {}
            for row in rows:
                if row.bare_key not in bare_done:
                    warm = 1 if r == 0 else None  # one batch warms bare generation up
                    bare_done[row.bare_key] = clock.measure(
                        lambda row=row, r=r, w=warm: bare_generation(row, r, w)
                    )
                update = clock.measure(lambda row=row: loop_update(row))
                extra = clock.measure(lambda row=row: evaluation(row), outer=EVAL)
                extra |= clock.measure(lambda row=row: checkpoint(row), outer=SAVE)
                if r:
                    row.loop.append(per_update(row.cfg, update, extra))
                    row.bare.append(bare_done[row.bare_key])
                    if not args.no_replay:
                        row.replay.append(clock.measure(lambda row=row, r=r: replayed_generation(row, r)))
            print(f"round {r}{' (warm-up)' if r == 0 else ''} done", file=sys.stderr, flush=True)
        for row in rows:
            row.trainer.close()
    report(rows, args, device)
    return rows


def combinations(lists: list[list[Any]], zipped: bool) -> list[tuple[Any, ...]]:
    """Every combination of the list options, or with ``zipped`` their i-th values together (a
    one-value list goes with every row)."""
    if not zipped:
        return list(itertools.product(*lists))
    n = max(len(v) for v in lists)
    if any(len(v) not in (1, n) for v in lists):
        raise SystemExit(f"--zip: every list option needs 1 or {n} values")
    return [tuple(v[i] if len(v) > 1 else v[0] for v in lists) for i in range(n)]


def ints(text: str) -> list[int]:
    """``"64,256"`` -> ``[64, 256]``."""
    return [int(v) for v in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default="shapes")
    p.add_argument("--preset", default=None, help="random weights of this model preset (e.g. enat-l-in256)")
    p.add_argument("--episodes-per-update", type=ints, default=[128, 1024, 4096], metavar="E1,E2,..")
    p.add_argument("--num-envs", type=ints, default=[64], metavar="B1,..", help="generation batch (rows)")
    p.add_argument("--minibatch", type=ints, default=[PolicyTraining.minibatch], metavar="M1,..")
    p.add_argument("--precision", type=lambda s: s.split(","), default=["float32"], metavar="P1,..")
    p.add_argument("--disc-updates", type=ints, default=[None], metavar="D1,..", help="default: the world's")
    p.add_argument("--select-fid", type=ints, default=[None], metavar="N1,..", help="default: the world's")
    p.add_argument("--eval-every", type=int, default=PolicyTraining.eval_every)
    p.add_argument("--eval-episodes", type=int, default=PolicyTraining.eval_episodes)
    p.add_argument("--steps", type=int, default=None, help="T (default: the world's)")
    p.add_argument("--repeats", type=int, default=2, help="timed rounds after the warm-up round")
    p.add_argument("--device", default="cpu")
    p.add_argument("--real-images", type=Path, default=None, help="ImageNet worlds: real-image folder")
    p.add_argument("--dino", type=Path, default=None, help="ImageNet worlds: DINO ViT-S/16 weights")
    p.add_argument("--zip", action="store_true", help="rows: the list options' i-th values together")
    p.add_argument("--no-replay", action="store_true", help="skip bare* (the loop's own controls)")
    p.add_argument("--no-breakdown", action="store_true", help="time the totals only (no inner wrappers)")
    p.add_argument("--quick", action="store_true", help="16 episodes a row at batch 8, small evaluation")
    args = p.parse_args()
    if args.quick:
        args.episodes_per_update, args.num_envs, args.repeats = [16], [8], 1
        args.eval_episodes, args.select_fid = 16, [64]
    run(args)


if __name__ == "__main__":
    main()
