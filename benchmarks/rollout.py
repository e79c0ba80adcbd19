"""Rollout cost of the RL environment, measured side by side in one run.

Per image at T steps, with random weights at ``shapes`` size (no trained weights needed):

* bare generation (``NATSampler.generate`` with the base schedule, decoded);
* the same images as PPO rollouts through ``NATVecEnv`` + the SB3 policy (actor and critic, built
  by :func:`adanat.agents.ppo.make_ppo` as training builds it), with
  the ``compact`` and the ``full`` observation form: env bookkeeping, observation transfer to
  numpy (as SB3 keeps it) and policy forwards. The reward is a constant, so only the RL overhead
  is measured; the discriminator's cost is a separate row;
* bytes per observation, and by arithmetic for ENAT-L in256 (256 tokens x 1024), with the size
  of a rollout buffer of AdaNAT's 4,096 trajectories x 8 steps;
* policy FLOPs (actor + critic, all T steps) as a share of the generator's FLOPs per image, at
  ``shapes`` size and at ENAT-L in256 size.

    python benchmarks/rollout.py            # batch 64, T=8
    python benchmarks/rollout.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from stable_baselines3.common.utils import obs_as_tensor

from adanat.agents.config import PolicyTraining
from adanat.agents.extractor import AdaNATExtractor, ExtractorConfig
from adanat.agents.ppo import make_ppo
from adanat.envs.actions import ActionMapping
from adanat.envs.core import NATCore
from adanat.envs.observation import ObservationForm
from adanat.envs.spec import EnvConfig
from adanat.envs.vec_env import NATVecEnv
from adanat.flops import count_flops
from adanat.models.enat import ENAT
from adanat.models.vqgan import MaskGITVQGAN
from adanat.presets import generator_config, model_preset
from adanat.rewards.adversarial import AdversarialReward, DiscriminatorTraining
from adanat.rewards.discriminators import ConvDiscriminator, ConvDiscriminatorConfig
from adanat.rewards.real_images import ShapesReal
from adanat.rng import row_rngs
from adanat.sampling import NATSampler, ScheduleController
from adanat.schedules import load_schedule


class ConstantReward:
    name = "constant"

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.full((images.shape[0],), 0.5)


def flops_of(fn: Callable[[], object]) -> int:
    """Total FLOPs of ``fn()``, attention included (:func:`adanat.flops.count_flops`)."""
    return count_flops(fn).total


def fastest(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` interleaved rounds per case, after one warm-up round."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(repeats + 1):
        for k, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def models(quick: bool) -> tuple[ENAT, MaskGITVQGAN]:
    preset = model_preset("tiny" if quick else "shapes")
    torch.manual_seed(0)
    gen = ENAT(preset.generator).eval()
    for block in gen.blocks:
        torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.02)
    return gen, MaskGITVQGAN(preset.tokenizer).eval()


def policy_for(venv: NATVecEnv) -> torch.nn.Module:
    """The SB3 policy (actor and critic) exactly as a training run builds it, one episode per
    row per rollout."""
    cfg = PolicyTraining(
        env=EnvConfig(steps=venv.core.steps), num_envs=venv.num_envs, episodes_per_update=venv.num_envs
    )
    return make_ppo(venv, cfg, "cpu").policy


def run(args: argparse.Namespace) -> None:
    torch.set_grad_enabled(False)
    gen, tok = models(args.quick)
    steps, b = args.steps, args.batch
    base = load_schedule("autonat-l-t8", steps=8) if steps == 8 else load_schedule("cosine", steps=steps)
    labels = torch.arange(b) % gen.config.num_classes

    sampler = NATSampler(gen, tok)

    def bare() -> None:
        sampler.generate(labels, ScheduleController(base), steps, row_rngs(0, b))

    envs, policies = {}, {}
    for form in ("compact", "full"):
        core = NATCore(sampler, ConstantReward(), ActionMapping(base, EnvConfig.action_scale), form, b)
        venv = NATVecEnv(core, seed=0)
        venv.seed(0)
        envs[form] = venv
        policies[form] = policy_for(venv).eval()

    def rollout(form: str) -> Callable[[], None]:
        venv, policy = envs[form], policies[form]

        state = {"obs": venv.reset()}

        def go() -> None:  # one episode per row; the last step's restart is the next first forward
            obs = state["obs"]
            for _ in range(steps):
                actions, _values, _logp = policy(obs_as_tensor(obs, "cpu"))
                venv.step_async(actions.numpy())
                obs, *_ = venv.step_wait()
            state["obs"] = obs
            venv.drain_finished()

        return go

    torch.manual_seed(1)
    disc = AdversarialReward(
        ConvDiscriminator(ConvDiscriminatorConfig(num_classes=gen.config.num_classes)),
        ShapesReal(1000),
        DiscriminatorTraining(),
    )
    images = torch.rand(b, 3, 32, 32)

    times = fastest(
        {
            "bare": bare,
            "compact": rollout("compact"),
            "full": rollout("full"),
            "reward": lambda: disc(images, labels),
        },
        args.repeats,
    )
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(
        f"model: {'enat-tiny' if args.quick else 'enat-shapes'} random weights, batch {b}, T={steps}; "
        f"fastest of {args.repeats} interleaved rounds"
    )
    print(f"{'case':44s} {'ms/img':>8s} {'vs bare':>8s}")
    rows = [
        ("bare generation (generate + decode)", times["bare"]),
        ("rollout, compact obs (env + obs + policy)", times["compact"]),
        ("rollout, full obs (env + obs + policy)", times["full"]),
        ("discriminator reward (shapes conv D)", times["reward"]),
    ]
    for name, t in rows:
        print(f"{name:44s} {1e3 * t / b:8.2f} {t / times['bare']:7.2f}x")
    print(
        f"rollout overhead vs bare: compact {times['compact'] / times['bare'] - 1:+.1%}, "
        f"full {times['full'] / times['bare'] - 1:+.1%}"
    )

    cfg = gen.config
    print("\nbytes per observation (features + step index):")
    for name, grid, width in (("shapes", cfg.grid, cfg.width), ("ENAT-L in256", 16, 1024)):
        for form in ("compact", "full"):
            ob = ObservationForm(form, grid, width, 8).bytes_per_observation
            buffer = ob * 4096 * 8
            print(
                f"  {name:13s} {form:8s} {ob / 1024:9.1f} KiB/obs; "
                f"4096 episodes x 8 steps: {buffer / 2**30:6.2f} GiB"
            )

    print("\npolicy FLOPs (actor + critic, every step) per image vs generator FLOPs per image:")
    gen_flops = flops_of(bare) / b
    share = policy_share(policies["compact"], envs["compact"].observation_space, steps)
    print(
        f"  shapes:        policy {share / 1e6:8.2f} MFLOPs, "
        f"generator {gen_flops / 1e9:7.3f} GFLOPs -> {share / gen_flops:.2%}"
    )
    if not args.skip_large:
        large = large_share(steps)
        print(
            f"  ENAT-L in256:  policy {large[0] / 1e9:8.3f} GFLOPs, "
            f"generator {large[1] / 1e12:7.3f} TFLOPs -> {large[0] / large[1]:.3%}"
        )


def policy_share(policy: torch.nn.Module, space, steps: int) -> float:
    sample = {k: torch.as_tensor(np.stack([space[k].sample() for _ in range(1)])) for k in ("features",)}
    obs = {"features": sample["features"].float(), "step": torch.zeros(1, dtype=torch.long)}
    per_step = flops_of(lambda: policy(obs))
    return per_step * steps


def large_share(steps: int) -> tuple[float, float]:
    """Policy and generator FLOPs per image for ENAT-L in256 (compact observations)."""
    form = ObservationForm("compact", 16, 1024, steps)
    space = form.space()
    actor = AdaNATExtractor(space, ExtractorConfig())
    critic = AdaNATExtractor(space, ExtractorConfig())
    heads = torch.nn.Linear(ExtractorConfig().features_dim, 5)
    obs = {"features": torch.randn(1, form.tokens, 1024), "step": torch.zeros(1, dtype=torch.long)}
    pol = flops_of(lambda: (heads(actor(obs)), critic(obs))) * steps
    torch.manual_seed(0)
    big = ENAT(generator_config("enat-l-in256")).eval()
    schedule = ScheduleController(load_schedule("enat", steps=steps))
    g = flops_of(lambda: NATSampler(big).generate(torch.tensor([1]), schedule, steps, row_rngs(0, 1)))
    return float(pol), float(g)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-large", action="store_true", help="skip the ENAT-L in256 FLOP count")
    p.add_argument("--quick", action="store_true", help="tiny model, batch 8, one repeat, no ENAT-L")
    args = p.parse_args()
    if args.quick:
        args.batch, args.repeats, args.skip_large = 8, 1, True
    run(args)


if __name__ == "__main__":
    main()
