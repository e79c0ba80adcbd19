"""The training loop: env, reward and PPO for a :class:`PolicyTraining`, run in a run folder.

The run folder holds ``checkpoint/`` (:mod:`adanat.agents.checkpoint`), ``sb3_model.zip`` (SB3's
own format, for SB3 users; adanat never loads it, as it is a pickle), ``policy/`` (the exported
actor), ``best/`` + ``best.json`` (FID model selection) and ``tb/``. Nothing is written before
:meth:`PolicyTrainer.train` starts: building a trainer and restoring a checkpoint only read.
Ctrl-C asks for a stop after the current PPO update (:class:`StopOnSignal`).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from torch.utils.tensorboard import SummaryWriter

from adanat.agents import sb3
from adanat.agents.callbacks import (
    EpisodeProgress,
    Every,
    ExplorationStd,
    FiniteGuard,
    NonFiniteError,
    RewardRounds,
    check_finite,
    std_at,
)
from adanat.agents.checkpoint import (
    CHECKPOINT,
    OPTIMIZER,
    POLICY,
    REWARD,
    RNG,
    STATE,
    Checkpoint,
    CheckpointError,
    find_checkpoint,
    global_rng_state,
    set_global_rng_state,
    write_checkpoint,
)
from adanat.agents.config import PolicyTraining
from adanat.agents.evaluation import PolicyEvaluator
from adanat.agents.export import Actor, PolicyMeta, export_policy
from adanat.agents.ppo import make_ppo
from adanat.agents.selection import FidSelection, world_selection
from adanat.assets import sha256_of
from adanat.configs import to_dict
from adanat.envs.spec import build_core, load_env_models
from adanat.envs.vec_env import NATVecEnv, make_vec_env
from adanat.errors import first_line
from adanat.progress import StepProgress
from adanat.rewards.base import LearnedReward

__all__ = ["PolicyTrainer", "StopOnSignal"]


class PolicyTrainer:
    """Builds env, reward and PPO for a :class:`PolicyTraining` and runs it in ``run_dir``.

    :param cfg: the run's settings.
    :param run_dir: the run folder (created by :meth:`train`).
    :param device: torch device of the models, the policy and the environment.
    :param log_dir: TensorBoard folder (default ``RUN_DIR/tb``).
    """

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
        self.model = make_ppo(self.monitor, cfg, device)
        self.evaluator = PolicyEvaluator(self.core, cfg.eval_episodes, cfg.eval_seed)
        self.selection = self._fid_selection() if cfg.select_fid else None
        self.resumed = False
        self.rows_reseeded = False  # set by restore() from a checkpoint of another device kind
        self._digests: tuple[str, str] | None = None
        self._writer: SummaryWriter | None = None

    def _fid_selection(self) -> FidSelection:
        cfg = self.cfg
        stats = Path(cfg.fid_reference) if cfg.fid_reference else None
        inception = Path(cfg.inception) if cfg.inception else None
        return world_selection(
            self.core, cfg.env.world, cfg.select_fid, cfg.select_fid_seed, self.run_dir, stats, inception
        )

    @property
    def writer(self) -> SummaryWriter:
        """The run's TensorBoard writer (SB3's logger writes there too); made on first use."""
        if self._writer is None:
            self.model.set_logger(configure(str(self.log_dir), ["tensorboard"]))
            self._writer = sb3.tensorboard_writer(self.model)
        return self._writer

    # -- the exported actor ------------------------------------------------------------
    def actor(self) -> Actor:
        """The actor (extractor + action head) as it is now, apart from SB3."""
        with torch.random.fork_rng(devices=[]):  # building layers must not move the global RNG
            actor = Actor(self.core.form, self.cfg.extractor)
        actor.extractor.load_state_dict(sb3.actor_extractor(self.model).state_dict())
        actor.head.load_state_dict(sb3.action_head(self.model).state_dict())
        return actor.to(self.device).eval()

    def meta(self) -> PolicyMeta:
        """The exported policy's metadata (world, weights' digests, mapping, std now)."""
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
            std=std_at(self.cfg.std_schedule, sb3.rollouts_done(self.model)),
            reuse=self.cfg.env.reuse,
        )

    # -- checkpoints -----------------------------------------------------------------
    def save(self) -> None:
        """Write ``checkpoint/`` atomically, then the SB3 zip and the exported policy."""
        pol, model = self.model.policy, self.model
        state = {
            "num_timesteps": int(model.num_timesteps),
            "n_updates": sb3.gradient_epochs(model),
            "rollouts": sb3.rollouts_done(model),
            "episodes": int(model.num_timesteps // self.cfg.env.steps),
            "config": to_dict(self.cfg),
        }
        rng = {
            **global_rng_state(),
            "rows": [g.get_state() for g in self.core.rngs],
            "labels": self.core.labels.cpu(),
        }
        files: dict[str, Callable[[Path], None]] = {
            POLICY: lambda p: save_model(pol, str(p)),  # handles SB3's aliased extractor
            OPTIMIZER: lambda p: torch.save(sb3.optimizer(model).state_dict(), p),
        }
        if isinstance(self.reward, LearnedReward):
            reward = self.reward
            files[REWARD] = lambda p: torch.save(reward.state_dict(), p)
        files[RNG] = lambda p: torch.save(rng, p)
        files[STATE] = lambda p: p.write_text(json.dumps(state, indent=2) + "\n")
        write_checkpoint(self.run_dir, files)
        zip_tmp = self.run_dir / "sb3_model.tmp.zip"
        try:
            model.save(zip_tmp)
            zip_tmp.replace(self.run_dir / "sb3_model.zip")
        finally:
            zip_tmp.unlink(missing_ok=True)
        export_policy(self.run_dir / "policy", self.actor(), self.meta())

    def restore(self, checkpoint: Checkpoint | None = None) -> dict[str, Any]:
        """Continue from ``checkpoint`` (default: :func:`find_checkpoint` of the run folder, which
        falls back to ``checkpoint.old`` when ``checkpoint/`` is damaged). Returns its state.

        :raises CheckpointError: a file does not fit this run (one line naming it).
        """
        ckpt = checkpoint or find_checkpoint(self.run_dir)
        folder, state, rng = ckpt.folder, ckpt.state, ckpt.rng
        model = self.model
        with _names_file(folder / POLICY, "does not fit this policy"):
            load_model(model.policy, str(folder / POLICY), device=str(self.device))
        with _names_file(folder / OPTIMIZER, "does not fit this policy's optimizer"):
            sb3.optimizer(model).load_state_dict(ckpt.optimizer)
        if isinstance(self.reward, LearnedReward):
            if ckpt.reward is None:
                raise CheckpointError(f"checkpoint file {folder / REWARD} is missing")
            with _names_file(folder / REWARD, "does not fit this run's reward"):
                self.reward.load_state_dict(ckpt.reward)
        sb3.set_counters(model, state["num_timesteps"], state["n_updates"])
        # the env: start episodes, then put the row streams and labels back as they were
        rows = rng["rows"]
        if len(rows) != self.cfg.num_envs:
            n = self.cfg.num_envs
            raise CheckpointError(f"checkpoint file {folder / RNG} holds {len(rows)} row streams, not {n}")
        self.venv.seed(self.cfg.seed)
        self.monitor.reset()
        if all(g.get_state().numel() == r.numel() for g, r in zip(self.core.rngs, rows, strict=True)):
            for g, r in zip(self.core.rngs, rows, strict=True):
                g.set_state(r)
        else:  # saved on another kind of device: its generator states do not load here
            seeds = np.random.SeedSequence([self.cfg.seed, ckpt.rollouts]).generate_state(len(rows))
            self.core.seed([int(x) for x in seeds])
            self.rows_reseeded = True
        sb3.set_next_observation(model, self.core.set_labels(rng["labels"]))
        set_global_rng_state(rng)
        self.resumed = True
        return state

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self, updates: int) -> dict[str, float]:
        """Held-out rewards of the policy and its base (and FID selection when on); logs them."""
        result = self.evaluator.run(self.actor(), self.meta())
        step = int(self.model.num_timesteps)
        writer = self.writer
        writer.add_scalar("eval/reward_policy", result.policy_reward, step)
        writer.add_scalar("eval/reward_base", result.base_reward, step)
        writer.add_image("eval/samples", result.grid, step)
        writer.add_figure("eval/schedule", result.figure(), step)
        out = {"policy": result.policy_reward, "base": result.base_reward}
        line = f"eval at update {updates}: reward {result.policy_reward:.4f} (base {result.base_reward:.4f})"
        if self.selection is not None:
            fid = self.selection.score(self.actor(), self.meta(), updates, step // self.cfg.env.steps)
            writer.add_scalar("eval/fid_policy", fid.fid, step)
            writer.add_scalar("eval/fid_best", fid.best_fid, step)
            writer.add_scalar("eval/fid_base", fid.base_fid, step)
            out.update(fid_policy=fid.fid, fid_best=fid.best_fid, fid_base=fid.base_fid)
            line += f", FID {fid.fid:.3f} (lowest {fid.best_fid:.3f}, base {fid.base_fid:.3f})"
        writer.flush()
        print(line, flush=True)
        return out

    # -- the run ---------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        """Train to ``cfg.episodes``; Ctrl-C saves and returns ``{}``. Returns the final evaluation.
        The TensorBoard files are closed at the end, whatever happens.

        :raises NonFiniteError: a reward, loss or parameter became non-finite; the last good
            checkpoint stays as it was.
        """
        try:
            return self._train()
        finally:
            self.close()

    def _train(self) -> dict[str, float]:
        cfg, steps = self.cfg, self.cfg.env.steps
        self.run_dir.mkdir(parents=True, exist_ok=True)
        writer = self.writer
        total = cfg.updates * cfg.episodes_per_update * steps
        remaining = max(total - int(self.model.num_timesteps), 0)
        rounds = RewardRounds(self.venv, self.reward, writer)
        stop = StopOnSignal(self.save)
        done = int(self.model.num_timesteps) // steps
        with StepProgress(
            "PPO episodes", total // steps, completed=done, every=cfg.episodes_per_update
        ) as progress:
            callbacks = CallbackList(
                [
                    ExplorationStd(cfg.std_schedule),
                    FiniteGuard(),
                    rounds,
                    EpisodeProgress(progress, steps, rounds, cfg.updates),
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
                raise NonFiniteError(f"{e}; {self._last_good()}") from None
            finally:
                signal.signal(signal.SIGINT, previous)
        if stop.stopped:
            return {}
        try:
            check_finite(self.model)
        except NonFiniteError as e:
            raise NonFiniteError(f"{e}; {self._last_good()}") from None
        self.save()
        return self.evaluate(sb3.rollouts_done(self.model))

    def close(self) -> None:
        """Flush and close the TensorBoard files (SB3's logger and the run's writer)."""
        if self._writer is not None:
            self.model.logger.close()
            self._writer = None

    def _last_good(self) -> str:
        final = self.run_dir / CHECKPOINT
        if (final / STATE).is_file():
            return f"the last good checkpoint is in {final}"
        return "no checkpoint was saved before (nothing to resume)"


class _names_file:
    """Turn a failure to apply a checkpoint file into one :class:`CheckpointError` line naming it."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> bool:
        if error is None or not isinstance(error, Exception):
            return False
        text = first_line(error, 200)
        raise CheckpointError(f"checkpoint file {self.path} {self.what} ({text})") from None


class StopOnSignal(BaseCallback):
    """Ctrl-C asks the run to stop: at the next consistent point (the start of a rollout,
    after a PPO update) it saves and ends training. A second Ctrl-C stops at once."""

    def __init__(self, save: Callable[[], None]) -> None:
        super().__init__()
        self.save_fn = save
        self.requested = self.stopped = False

    def request(self, signum: int, frame: object) -> None:
        """The SIGINT handler."""
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def _on_rollout_start(self) -> None:
        if self.requested and not self.stopped:
            self.save_fn()
            self.stopped = True

    def _on_step(self) -> bool:
        return not self.stopped
