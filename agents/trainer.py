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
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from adanat.agents import sb3
from adanat.agents.adanat_policy import ReleaseActor, ReleaseMeta, export_release_policy
from adanat.agents.callbacks import (
    EpisodeProgress,
    Every,
    ExplorationStd,
    FiniteGuard,
    NonFiniteError,
    RewardRound,
    RewardRounds,
    check_finite,
    discriminator_round,
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
from adanat.agents.evaluation import EvalResult, PolicyEvaluator
from adanat.agents.export import Actor, PolicyMeta, export_policy
from adanat.agents.finetune import release_actor_of, release_critic_of, release_meta
from adanat.agents.ppo import make_ppo
from adanat.agents.selection import FidScore, FidSelection, world_selection
from adanat.assets import sha256_of
from adanat.configs import to_dict
from adanat.distributed import Shard
from adanat.envs.sharded import ShardedVecEnv
from adanat.envs.spec import build_core, load_env_models
from adanat.envs.vec_env import NATVecEnv, wrap_vec_env
from adanat.errors import first_line
from adanat.progress import StepProgress
from adanat.rewards.base import LearnedReward
from adanat.team import Team, TeamRows

__all__ = ["PolicyTrainer", "StopOnSignal"]


class PolicyTrainer:
    """Builds env, reward and PPO for a :class:`PolicyTraining` and runs it in ``run_dir``.

    :param cfg: the run's settings.
    :param run_dir: the run folder (created by :meth:`train`).
    :param device: torch device of the models, the policy and the environment.
    :param log_dir: TensorBoard folder (default ``RUN_DIR/tb``).
    """

    def __init__(
        self,
        cfg: PolicyTraining,
        run_dir: Path,
        device: str = "cpu",
        log_dir: Path | None = None,
        team: Team | None = None,
    ) -> None:
        self.cfg, self.run_dir, self.device = cfg, Path(run_dir), device
        self.log_dir = Path(log_dir) if log_dir else self.run_dir / "tb"
        self.team = team or Team(Shard(), device)
        rows = self._rows_per_process()
        env, shard = cfg.env, self.team.shard
        self.models = load_env_models(env, device)
        self.core = build_core(env, rows, device, self.models)
        self.reward = self.core.reward
        if isinstance(self.reward, LearnedReward):
            self.reward.check_team(self.team.size, rows, cfg.episodes_per_update)
        self.local = NATVecEnv(self.core, cfg.seed, row_offset=shard.rank * rows)  # this process's rows
        self.venv: NATVecEnv | ShardedVecEnv = (
            self.local if self.team.size == 1 else ShardedVecEnv(self.local, self.team)
        )
        if self.team.is_leader:
            check_rollout_memory(self.core.form.bytes_per_observation * cfg.n_steps * cfg.num_envs, cfg)
        self.monitor = wrap_vec_env(self.venv, cfg.action_cost)
        self.model = make_ppo(self.monitor, cfg, device)  # the learner (a replica off the leader)
        self.evaluator = PolicyEvaluator(self.core, cfg.eval_episodes, cfg.eval_seed, shard)
        self.selection = self._fid_selection() if cfg.select_fid else None
        self.resumed = False
        self.rows_reseeded = False  # set by restore() from a checkpoint of another device kind
        self._digests: tuple[str, str, str | None] | None = None  # generator, tokenizer, text encoder
        self._writer: SummaryWriter | None = None
        self._saved_rows: tuple[list[Tensor], Tensor, int] | None = None  # restore(): this process's
        for name, handler in (
            ("reward.round", self._reward_round),
            ("policy.evaluate", self._evaluate_here),
            ("env.row_states", self._row_states),
            ("env.restore", self._restore_rows),
        ):
            self.team.register(name, handler)

    def _rows_per_process(self) -> int:
        cfg, k = self.cfg, self.team.size
        if cfg.num_envs % k:
            raise ValueError(f"num-envs ({cfg.num_envs}) must be a multiple of the {k} processes")
        rows = cfg.num_envs // k
        for flag, n in (("eval-episodes", cfg.eval_episodes), ("select-fid", cfg.select_fid)):
            if n and -(-n // rows) < k:
                raise ValueError(
                    f"--{flag} {n} gives fewer batches of {rows} rows than the {k} processes; raise it"
                )
        return rows

    def _fid_selection(self) -> FidSelection:
        cfg = self.cfg
        stats = Path(cfg.fid_reference) if cfg.fid_reference else None
        inception = Path(cfg.inception) if cfg.inception else None
        return world_selection(
            self.core,
            cfg.env.world,
            cfg.select_fid,
            cfg.select_fid_seed,
            self.run_dir,
            stats,
            inception,
            self.team.shard,
        )

    @property
    def writer(self) -> SummaryWriter:
        """The run's TensorBoard writer (SB3's logger writes there too); made on first use."""
        if self._writer is None:
            self.model.set_logger(configure(str(self.log_dir), ["tensorboard"]))
            self._writer = sb3.tensorboard_writer(self.model)
        return self._writer

    # -- the exported actor ------------------------------------------------------------
    def actor(self) -> Actor | ReleaseActor:
        """The actor (extractor + action head) as it is now, apart from SB3: AdaNAT's network
        when the run fine-tunes an AdaNAT policy (``init_policy``)."""
        if self.cfg.init_policy is not None:
            return release_actor_of(self.model).to(self.device).eval()
        with torch.random.fork_rng(devices=[]):  # building layers must not move the global RNG
            actor = Actor(self.core.form, self.cfg.extractor)
        actor.extractor.load_state_dict(sb3.actor_extractor(self.model).state_dict())
        actor.head.load_state_dict(sb3.action_head(self.model).state_dict())
        return actor.to(self.device).eval()

    def meta(self) -> PolicyMeta | ReleaseMeta:
        """The exported policy's metadata (world, weights' digests, mapping, std now); in AdaNAT's
        format when the run fine-tunes an AdaNAT policy."""
        if self._digests is None:
            text = self.models.text_encoder_file
            self._digests = (
                sha256_of(self.models.generator_file),
                sha256_of(self.models.tokenizer_file),
                None if text is None else sha256_of(text),
            )
        if self.cfg.init_policy is not None:
            return release_meta(
                self.model,
                self.cfg.env.steps,
                self.cfg.env.actions == "adanat-heuristic",
                f"adanat train from {self.cfg.init_policy}",
                world=self.cfg.env.world,
                preset=self.models.preset.name,
                generator_sha256=self._digests[0],
                tokenizer_sha256=self._digests[1],
                **({} if self._digests[2] is None else {"text_encoder_sha256": self._digests[2]}),
                reuse=self.cfg.env.reuse,
                exploration_std=std_at(self.cfg.std_schedule, sb3.rollouts_done(self.model)),
            )
        return PolicyMeta(
            world=self.cfg.env.world,
            preset=self.models.preset.name,
            generator_sha256=self._digests[0],
            tokenizer_sha256=self._digests[1],
            text_encoder_sha256=self._digests[2],
            steps=self.cfg.env.steps,
            mapping=self.core.mapping,
            form=self.core.form,
            extractor=self.cfg.extractor,
            std=std_at(self.cfg.std_schedule, sb3.rollouts_done(self.model)),
            reuse=self.cfg.env.reuse,
        )

    # -- checkpoints -----------------------------------------------------------------
    def save(self) -> None:
        """Write ``checkpoint/`` atomically, then the SB3 zip and the exported policy (with its
        critic when in AdaNAT's format, so that it can start another ``--init-policy`` run)."""
        pol, model = self.model.policy, self.model
        state = {
            "num_timesteps": int(model.num_timesteps),
            "n_updates": sb3.gradient_epochs(model),
            "rollouts": sb3.rollouts_done(model),
            "episodes": int(model.num_timesteps // self.cfg.env.steps),
            "config": to_dict(self.cfg),
        }
        if self.core.prompts is not None:  # the rows' labels are ids of this prompt list
            state["prompts"] = {"count": len(self.core.prompts), "sha256": self.core.prompts.digest()}
        rows, labels = self.team.call("env.row_states")
        rng = {**global_rng_state(), "rows": rows, "labels": labels}
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
        actor, meta = self.actor(), self.meta()
        if isinstance(meta, ReleaseMeta):
            assert isinstance(actor, ReleaseActor)
            critic = release_critic_of(self.model)
            export_release_policy(self.run_dir / "policy", actor, replace(meta, critic=True), critic)
        else:
            export_policy(self.run_dir / "policy", actor, meta)

    def restore(self, checkpoint: Checkpoint | None = None) -> dict[str, Any]:
        """Continue from ``checkpoint`` (default: :func:`find_checkpoint` of the run folder, which
        falls back to ``checkpoint.old`` when ``checkpoint/`` is damaged). Returns its state.

        :raises CheckpointError: a file does not fit this run (one line naming it).
        """
        ckpt = checkpoint or find_checkpoint(self.run_dir)
        folder, state, rng = ckpt.folder, ckpt.state, ckpt.rng
        prompts = self.core.prompts
        saved = state.get("prompts")
        if prompts is not None and saved != {"count": len(prompts), "sha256": prompts.digest()}:
            count = "?" if saved is None else saved.get("count")
            raise CheckpointError(
                f"the run was trained on another prompt list ({count} prompts, now {len(prompts)}); "
                "resume it with the captions or prompts file it was started with"
            )
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
        start, n = self.local.row_offset, self.core.num_rows
        self._saved_rows = (rows[start : start + n], rng["labels"][start : start + n], ckpt.rollouts)
        if self.team.is_leader:  # the other processes put their rows back when it asks them
            self.venv.seed(self.cfg.seed)
            self.monitor.reset()
            sb3.set_next_observation(model, self.team.call("env.restore"))
        set_global_rng_state(rng)
        self.resumed = True
        return state

    def _restore_rows(self) -> dict[str, np.ndarray] | None:
        """Every process: its rows' random streams and labels from the checkpoint; the leader
        gets the observation of all rows."""
        assert self._saved_rows is not None, "restore() first"
        rows, labels, rollouts = self._saved_rows
        if all(g.get_state().numel() == r.numel() for g, r in zip(self.core.rngs, rows, strict=True)):
            for g, r in zip(self.core.rngs, rows, strict=True):
                g.set_state(r)
        else:  # saved on another kind of device: its generator states do not load here
            seeds = np.random.SeedSequence([self.cfg.seed, rollouts]).generate_state(self.cfg.num_envs)
            start = self.local.row_offset
            self.core.seed([int(x) for x in seeds[start : start + self.core.num_rows]])
            self.rows_reseeded = True
        gathered = self.team.gather_arrays(self.core.set_labels(labels))
        return gathered if self.team.is_leader else None

    def _row_states(self) -> tuple[list[Tensor], Tensor]:
        """Every process's row random streams and episode labels, in row order (for a checkpoint)."""
        states = self.team.gather(torch.stack([g.get_state() for g in self.core.rngs]))  # (N, S)
        labels = self.team.gather(self.core.labels.cpu())  # (N,)
        return [r.clone() for r in states], labels

    def _reward_update(self) -> RewardRound | None:
        """What :class:`RewardRounds` runs after a rollout: the discriminator round on the
        drained images in one process; under torchrun the team's data-parallel round."""
        if self.team.size > 1:
            return lambda _: self.team.call("reward.round")
        return discriminator_round(self.reward) if isinstance(self.reward, LearnedReward) else None

    def _reward_round(self) -> dict[str, float]:
        """Every process: one round of the learned reward on its rows' images of the rollout
        (data-parallel under torchrun); empties its record of finished episodes."""
        finished = self.local.drain_finished()
        if not isinstance(self.reward, LearnedReward) or not finished:
            return {}
        return discriminator_round(self.reward, TeamRows(self.team, self.core.num_rows))(finished)

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self, updates: int) -> dict[str, float]:
        """Held-out rewards of the policy and its base (and FID selection when on), by every
        process of the team; the leader logs them."""
        result, fid = self.team.call("policy.evaluate")
        step = int(self.model.num_timesteps)
        writer = self.writer
        writer.add_scalar("eval/reward_policy", result.policy_reward, step)
        writer.add_scalar("eval/reward_base", result.base_reward, step)
        writer.add_image("eval/samples", result.grid, step)
        writer.add_figure("eval/schedule", result.figure(), step)
        out = {"policy": result.policy_reward, "base": result.base_reward}
        line = f"eval at update {updates}: reward {result.policy_reward:.4f} (base {result.base_reward:.4f})"
        if fid is not None:
            writer.add_scalar("eval/fid_policy", fid.fid, step)
            writer.add_scalar("eval/fid_best", fid.best_fid, step)
            writer.add_scalar("eval/fid_base", fid.base_fid, step)
            out.update(fid_policy=fid.fid, fid_best=fid.best_fid, fid_base=fid.base_fid)
            line += f", FID {fid.fid:.3f} (lowest {fid.best_fid:.3f}, base {fid.base_fid:.3f})"
        writer.flush()
        print(line, flush=True)
        return out

    def _evaluate_here(self) -> tuple[EvalResult, FidScore | None]:
        """Every process: the leader's policy now (copied to the others), its share of the
        held-out episodes and of the FID selection images; every process gets the results."""
        model, team = self.model, self.team
        team.broadcast_module(model.policy)
        timesteps = team.broadcast(torch.tensor([model.num_timesteps]) if team.is_leader else None)
        model.num_timesteps = int(timesteps[0])
        actor, meta = self.actor(), self.meta()
        result = self.evaluator.run(actor, meta)
        fid = None
        if self.selection is not None:
            step = int(model.num_timesteps)
            fid = self.selection.score(actor, meta, sb3.rollouts_done(model), step // self.cfg.env.steps)
        return result, fid

    def serve(self) -> None:
        """A process other than the leader: carry out the leader's operations until it is done
        (Ctrl-C is the leader's to handle)."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.team.serve()
        finally:
            signal.signal(signal.SIGINT, previous)

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
        rounds = RewardRounds(self.venv, self._reward_update(), writer)
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


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_rollout_memory(needed: int, cfg: PolicyTraining) -> None:
    """Refuse a run whose rollout buffer (SB3 keeps every observation of a rollout in host
    memory, in the observation form's dtype) cannot fit in the memory available now."""
    free = available_memory()
    if free is None or needed <= free:
        return
    gib = 2.0**30
    raise ValueError(
        f"the rollout buffer of {cfg.episodes_per_update} episodes x {cfg.env.steps} steps needs "
        f"{needed / gib:.1f} GiB of host memory and {free / gib:.1f} GiB are available; use "
        "--observation compact (8x smaller than full) or fewer --episodes-per-update"
    )


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


SAME_CTRL_C = 2.0  # seconds within which a second SIGINT counts as the first


class StopOnSignal(BaseCallback):
    """Ctrl-C asks the run to stop: at the next consistent point (the start of a rollout,
    after a PPO update) it saves and ends training. A second Ctrl-C stops at once."""

    def __init__(self, save: Callable[[], None]) -> None:
        super().__init__()
        self.save_fn = save
        self.requested = self.stopped = False
        self._first = 0.0

    def request(self, signum: int, frame: object) -> None:
        """The SIGINT handler. A second signal within :data:`SAME_CTRL_C` seconds is the same
        Ctrl-C (torchrun passes the terminal's on to its processes as well)."""
        now = time.monotonic()
        if self.requested and now - self._first > SAME_CTRL_C:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested, self._first = True, now

    def _on_rollout_start(self) -> None:
        if self.requested and not self.stopped:
            self.save_fn()
            self.stopped = True

    def _on_step(self) -> bool:
        return not self.stopped
