"""Training a generation policy with stable-baselines3 PPO: setup, run folder, resume, export.

The run folder holds ``checkpoint/`` (policy and optimiser, reward/discriminator state, counters
and random states; replaced atomically), ``sb3_model.zip`` (SB3's own format, for SB3 users;
adanat never loads it, as it is a pickle), ``policy/`` (the exported actor) and ``tb/``.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from adanat.agents.callbacks import (
    Every,
    ExplorationStd,
    FiniteGuard,
    NonFiniteError,
    RewardRounds,
    RichProgress,
    check_finite,
    rollouts_done,
    std_at,
)
from adanat.agents.evaluation import PolicyEvaluator
from adanat.agents.export import Actor, PolicyMeta, export_policy
from adanat.agents.extractor import AdaNATExtractor, ExtractorConfig
from adanat.agents.selection import FidSelection, world_selection
from adanat.envs.spec import EnvConfig, build_core, load_env_models
from adanat.envs.vec_env import NATVecEnv, make_vec_env
from adanat.rewards.base import LearnedReward
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_model, save_model
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import TensorBoardOutputFormat, configure

from adanat.assets import sha256_of


@dataclass(frozen=True)
class PolicyTraining:
    """PPO settings (AdaNAT's where they carry over: gamma = lambda = 1, clip 0.2, 5 epochs,
    fixed exploration std 0.6 then 0.3 after 500 updates, 5 discriminator updates a round).

    :param episodes: total episodes (images) to train on.
    :param num_envs: rows of the generation batch (SB3 sub-environments).
    :param episodes_per_update: episodes per PPO rollout (a multiple of ``num_envs``).
    :param select_fid: images per FID at each evaluation; the policy with the lowest FID so far is
        exported to ``best/`` (AdaNAT's model selection). 0 turns selection off.
    :param action_cost: reward cost per step of ``mean(action**2)``, the squared distance from
        the base schedule (:class:`~adanat.envs.action_cost.ActionCost`); 0 (AdaNAT) is off.
    :param fid_reference: ``fid_stats.npz`` (Inception ``mu``/``sigma``) for ImageNet worlds;
        ``shapes`` uses its ``reference`` split in the metric network's space.
    :param inception: torch-fidelity Inception-v3 weights for ImageNet worlds (default: its cache).
    """

    env: EnvConfig = field(default_factory=EnvConfig)
    episodes: int = 16_384
    num_envs: int = 64
    episodes_per_update: int = 128
    learning_rate: float = 3e-4
    n_epochs: int = 5
    minibatch: int = 256
    clip_range: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    max_grad_norm: float = 0.5
    std_schedule: tuple[tuple[int, float], ...] = ((0, 0.6), (500, 0.3))
    action_cost: float = 0.0
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    eval_every: int = 16
    eval_episodes: int = 128
    eval_seed: int = 1_000_000
    save_every: int = 8
    select_fid: int = 0
    select_fid_seed: int = 2_000_000
    fid_reference: str | None = None
    inception: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "episodes",
            "num_envs",
            "episodes_per_update",
            "eval_every",
            "eval_episodes",
            "save_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        steps = self.std_schedule
        if (
            not steps
            or steps[0][0] != 0
            or any(b[0] <= a[0] for a, b in itertools.pairwise(steps))
            or any(not std > 0 for _, std in steps)
        ):
            raise ValueError(
                f"action std schedule must start at update 0, rise in updates, have stds > 0: {steps}"
            )
        if not self.action_cost >= 0:
            raise ValueError(f"action-cost must be >= 0, got {self.action_cost}")
        if self.select_fid == 1 or self.select_fid < 0:
            raise ValueError(f"select-fid must be 0 (off) or >= 2 images, got {self.select_fid}")
        if self.env.steps < 2:
            raise ValueError(f"steps must be >= 2, got {self.env.steps}")
        if self.episodes_per_update % self.num_envs:
            raise ValueError("episodes_per_update must be a multiple of num_envs")

    @property
    def n_steps(self) -> int:
        """SB3 ``n_steps`` per sub-environment: a multiple of ``T``."""
        return self.env.steps * self.episodes_per_update // self.num_envs

    @property
    def updates(self) -> int:
        return math.ceil(self.episodes / self.episodes_per_update)


def parse_std_schedule(text: str, updates: int) -> tuple[tuple[int, float], ...]:
    """``"0:0.6,25%:0.3"`` -> ``((0, 0.6), (32, 0.3))`` in a 128-update run: the exploration std
    from each PPO update on, where ``P%`` is that share of the run's ``updates`` (rounded down)."""
    out = []
    for item in text.split(","):
        at, _, std = item.partition(":")
        try:
            share = float(at[:-1]) / 100 if at.endswith("%") else None
            update = int(share * updates) if share is not None else int(at)
            out.append((update, float(std)))
        except ValueError:
            msg = f"expected UPDATE:STD,... such as 0:0.6,500:0.3 or 0:0.6,50%:0.3, got {text!r}"
            raise ValueError(msg) from None
    return tuple(out)


def checkpoint_folder(run_dir: Path) -> Path:
    """The run's complete checkpoint: ``checkpoint/``, or ``checkpoint.old`` after a crash while
    a new checkpoint was being swapped in."""
    for name in ("checkpoint", "checkpoint.old"):
        if (run_dir / name / "state.json").is_file():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir} holds no checkpoint to resume (no checkpoint/state.json)")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


class PolicyTrainer:
    """Builds env, reward and PPO for a :class:`PolicyTraining` and runs it in ``run_dir``."""

    def __init__(
        self, cfg: PolicyTraining, run_dir: Path, device: str = "cpu", log_dir: Path | None = None
    ) -> None:
        self.cfg, self.run_dir, self.device = cfg, Path(run_dir), device
        self.log_dir = Path(log_dir) if log_dir else self.run_dir / "tb"
        env = cfg.env
        self.models = load_env_models(env, device)
        self.core = build_core(env, cfg.num_envs, device, self.models)
        self.reward = self.core.reward
        self.monitor = make_vec_env(self.core, cfg.seed, cfg.action_cost)
        self.venv: NATVecEnv = self.monitor.unwrapped  # type: ignore[assignment]
        self.model = PPO(
            "MultiInputPolicy",
            self.monitor,
            learning_rate=cfg.learning_rate,
            n_steps=cfg.n_steps,
            batch_size=min(cfg.minibatch, cfg.n_steps * cfg.num_envs),
            n_epochs=cfg.n_epochs,
            gamma=1.0,
            gae_lambda=1.0,
            clip_range=cfg.clip_range,
            ent_coef=cfg.ent_coef,
            vf_coef=cfg.vf_coef,
            max_grad_norm=cfg.max_grad_norm,
            policy_kwargs={
                "features_extractor_class": AdaNATExtractor,
                "features_extractor_kwargs": {"config": cfg.extractor},
                "share_features_extractor": False,
                "ortho_init": False,  # keep the extractor's own init (zero AdaLN modulation)
                "net_arch": {"pi": [], "vf": []},
                "log_std_init": math.log(cfg.std_schedule[0][1]),
            },
            seed=cfg.seed,
            device=device,
        )
        with torch.no_grad():  # the untrained policy's mean action is 0: the base schedule
            self.model.policy.action_net.weight.zero_()
            self.model.policy.action_net.bias.zero_()
        self.model.set_logger(configure(str(self.log_dir), ["tensorboard"]))
        self.writer = next(
            f.writer for f in self.model.logger.output_formats if isinstance(f, TensorBoardOutputFormat)
        )
        self.evaluator = PolicyEvaluator(self.core, cfg.eval_episodes, cfg.eval_seed)
        self.selection = self._fid_selection() if cfg.select_fid else None
        self.resumed = False
        self.rows_reseeded = False  # set by restore() from a checkpoint of another device kind
        self._digests: tuple[str, str] | None = None

    def _fid_selection(self) -> FidSelection:
        cfg = self.cfg
        stats = Path(cfg.fid_reference) if cfg.fid_reference else None
        inception = Path(cfg.inception) if cfg.inception else None
        return world_selection(
            self.core, cfg.env.world, cfg.select_fid, cfg.select_fid_seed, self.run_dir, stats, inception
        )

    # -- the exported actor ------------------------------------------------------------
    def actor(self) -> Actor:
        with torch.random.fork_rng(devices=[]):  # building layers must not move the global RNG
            actor = Actor(self.core.form, self.cfg.extractor)
        pol = self.model.policy
        actor.extractor.load_state_dict(pol.pi_features_extractor.state_dict())
        actor.head.load_state_dict(pol.action_net.state_dict())
        return actor.to(self.device).eval()

    def meta(self) -> PolicyMeta:
        if self._digests is None:
            self._digests = (sha256_of(self.models.generator_file), sha256_of(self.models.tokenizer_file))
        return PolicyMeta(
            world=self.cfg.env.world,
            preset=self.models.preset.name,
            generator_sha256=self._digests[0],
            tokenizer_sha256=self._digests[1],
            steps=self.cfg.env.steps,
            mapping=self.core.mapping,
            form=self.core.form,
            extractor=self.cfg.extractor,
            std=std_at(self.cfg.std_schedule, rollouts_done(self.model)),
        )

    # -- checkpoints -----------------------------------------------------------------
    def save(self) -> None:
        """Write ``checkpoint/`` atomically (tmp folder, then swap), then the SB3 zip and export."""
        final = self.run_dir / "checkpoint"
        tmp, old = self.run_dir / "checkpoint.tmp", self.run_dir / "checkpoint.old"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        pol = self.model.policy
        save_model(pol, str(tmp / "policy.safetensors"))  # handles SB3's aliased extractor
        torch.save(pol.optimizer.state_dict(), tmp / "optimizer.pt")
        if isinstance(self.reward, LearnedReward):
            torch.save(self.reward.state_dict(), tmp / "reward.pt")
        np_state = np.random.get_state()
        torch.save(
            {
                "torch": torch.get_rng_state(),
                **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
                "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
                "numpy_pos": int(np_state[2]),
                "python": list(random.getstate()[1]),
                "rows": [g.get_state() for g in self.core.rngs],
                "labels": self.core.labels.cpu(),
            },
            tmp / "rng.pt",
        )
        state = {
            "num_timesteps": int(self.model.num_timesteps),
            "n_updates": int(self.model._n_updates),
            "rollouts": rollouts_done(self.model),
            "episodes": int(self.model.num_timesteps // self.cfg.env.steps),
            "config": _jsonable(asdict(self.cfg)),
        }
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        if final.exists():  # keep one complete checkpoint on disk at every moment
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        zip_tmp = self.run_dir / "sb3_model.tmp.zip"
        self.model.save(zip_tmp)
        zip_tmp.replace(self.run_dir / "sb3_model.zip")
        export_policy(self.run_dir / "policy", self.actor(), self.meta())

    def restore(self) -> dict[str, Any]:
        """Continue from ``checkpoint/`` (or ``checkpoint.old`` after a crash mid-swap)."""
        folder = checkpoint_folder(self.run_dir)
        state = json.loads((folder / "state.json").read_text())
        pol = self.model.policy
        load_model(pol, str(folder / "policy.safetensors"), device=str(self.device))
        dev = torch.device(self.device)
        pol.optimizer.load_state_dict(
            torch.load(folder / "optimizer.pt", map_location=dev, weights_only=True)
        )
        if isinstance(self.reward, LearnedReward):
            self.reward.load_state_dict(torch.load(folder / "reward.pt", map_location=dev, weights_only=True))
        rng = torch.load(folder / "rng.pt", map_location="cpu", weights_only=True)
        self.model.num_timesteps = int(state["num_timesteps"])
        self.model._n_updates = int(state["n_updates"])
        # the env: start episodes, then put the row streams and labels back as they were
        self.venv.seed(self.cfg.seed)
        self.monitor.reset()
        rows = rng["rows"]
        if all(g.get_state().numel() == r.numel() for g, r in zip(self.core.rngs, rows, strict=True)):
            for g, r in zip(self.core.rngs, rows, strict=True):
                g.set_state(r)
        else:  # saved on another kind of device: its generator states do not load here
            seeds = np.random.SeedSequence([self.cfg.seed, int(state["rollouts"])]).generate_state(len(rows))
            self.core.seed([int(x) for x in seeds])
            self.rows_reseeded = True
        self.model._last_obs = self.core.set_labels(rng["labels"])  # type: ignore[assignment]
        self.model._last_episode_starts = np.ones((self.cfg.num_envs,), dtype=bool)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(
            ("MT19937", rng["numpy_keys"].numpy().astype(np.uint32), rng["numpy_pos"], 0, 0.0)
        )
        random.setstate((3, tuple(rng["python"]), None))
        self.resumed = True
        return state

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self, updates: int) -> dict[str, float]:
        result = self.evaluator.run(self.actor(), self.meta())
        step = int(self.model.num_timesteps)
        self.writer.add_scalar("eval/reward_policy", result.policy_reward, step)
        self.writer.add_scalar("eval/reward_base", result.base_reward, step)
        self.writer.add_image("eval/samples", result.grid, step)
        self.writer.add_figure("eval/schedule", result.figure(), step)
        out = {"policy": result.policy_reward, "base": result.base_reward}
        if self.selection is not None:
            fid = self.selection.score(self.actor(), self.meta(), updates, step // self.cfg.env.steps)
            self.writer.add_scalar("eval/fid_policy", fid.fid, step)
            self.writer.add_scalar("eval/fid_best", fid.best_fid, step)
            self.writer.add_scalar("eval/fid_base", fid.base_fid, step)
            out.update(fid_policy=fid.fid, fid_best=fid.best_fid, fid_base=fid.base_fid)
        self.writer.flush()
        return out

    # -- the run ---------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        """Train to ``cfg.episodes``; Ctrl-C saves and returns. Returns the final evaluation."""
        cfg, steps = self.cfg, self.cfg.env.steps
        self.run_dir.mkdir(parents=True, exist_ok=True)
        total = cfg.updates * cfg.episodes_per_update * steps
        remaining = max(total - int(self.model.num_timesteps), 0)
        rounds = RewardRounds(self.venv, self.reward, self.writer)
        stop = StopOnSignal(self.save)
        columns = (
            TextColumn("[bold]PPO"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
        )
        with Progress(*columns) as progress:
            task = progress.add_task(
                "episodes", total=total // steps, completed=self.model.num_timesteps // steps, info=""
            )
            callbacks = CallbackList(
                [
                    ExplorationStd(cfg.std_schedule),
                    FiniteGuard(),
                    rounds,
                    RichProgress(progress, task, steps, rounds),
                    Every(cfg.save_every, lambda _: self.save()),
                    Every(cfg.eval_every, self.evaluate),
                    stop,
                ]
            )
            previous = signal.signal(signal.SIGINT, stop.request)
            try:
                if remaining:
                    self.model.learn(remaining, callback=callbacks, reset_num_timesteps=not self.resumed)
            except NonFiniteError as e:
                raise NonFiniteError(
                    f"{e}; the last good checkpoint is in {self.run_dir / 'checkpoint'}"
                ) from None
            finally:
                signal.signal(signal.SIGINT, previous)
        if stop.stopped:
            return {}
        check_finite(self.model)
        self.save()
        return self.evaluate(rollouts_done(self.model))


class StopOnSignal(BaseCallback):
    """Ctrl-C asks the run to stop: at the next consistent point (the start of a rollout,
    after a PPO update) it saves and ends training. A second Ctrl-C stops at once."""

    def __init__(self, save: Callable[[], None]) -> None:
        super().__init__()
        self.save_fn = save
        self.requested = self.stopped = False

    def request(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def _on_rollout_start(self) -> None:
        if self.requested and not self.stopped:
            self.save_fn()
            self.stopped = True

    def _on_step(self) -> bool:
        return not self.stopped


def training_from_dict(d: dict[str, Any]) -> PolicyTraining:
    """Rebuild a :class:`PolicyTraining` from its saved JSON form (``checkpoint/state.json``)."""
    from adanat.rewards.adversarial import DiscriminatorTraining
    from adanat.rewards.registry import RewardOptions

    env = dict(d["env"])
    opts = dict(env.pop("reward_options"))
    raw = dict(opts.pop("discriminator"))
    disc = DiscriminatorTraining(**{**raw, "betas": tuple(raw["betas"])})
    for key in ("real_images", "dino", "clip_weights"):
        opts[key] = Path(opts[key]) if opts.get(key) else None
    for key in ("generator", "tokenizer"):
        env[key] = Path(env[key]) if env.get(key) else None
    rest = {k: v for k, v in d.items() if k not in ("env", "extractor", "std_schedule")}
    return PolicyTraining(
        env=EnvConfig(**env, reward_options=RewardOptions(discriminator=disc, **opts)),
        extractor=ExtractorConfig(**d["extractor"]),
        std_schedule=tuple((int(a), float(b)) for a, b in d["std_schedule"]),
        **rest,
    )
