"""The PPO learner of a run, built in one place (training and ``benchmarks/rollout.py`` use it).

AdaNAT's settings through SB3's hooks: the AdaNAT features extractor for actor and critic apart
(``share_features_extractor=False``, no MLP after it, SB3's orthogonal init off so the
extractor keeps its zero AdaLN modulation), a zero-initialised action head (the untrained
policy's mean action is 0: the base schedule bit for bit), the first exploration std of the
schedule as ``log_std`` init, ``gamma = gae_lambda = 1`` (the reward comes with the image).
Every optimiser step is guarded (:func:`~adanat.agents.callbacks.guard_gradient_steps`).

With ``cfg.init_policy`` (fine-tuning from AdaNAT's policy, :mod:`adanat.agents.finetune`) the
extractors are AdaNAT's network up to its last linear, and the imported actor's and critic's
weights go into them and into SB3's action and value heads, instead of the zero head.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv

from adanat.agents import sb3
from adanat.agents.callbacks import guard_gradient_steps
from adanat.agents.config import PolicyTraining
from adanat.agents.extractor import AdaNATExtractor
from adanat.agents.finetune import ReleaseExtractor, load_init_policy, load_start

__all__ = ["make_ppo"]


def make_ppo(env: VecEnv, cfg: PolicyTraining, device: torch.device | str = "cpu") -> PPO:
    """SB3 PPO for ``cfg`` on ``env`` (seeded with ``cfg.seed``; this seeds SB3's global RNGs).

    :raises PolicyError: ``cfg.init_policy`` does not fit the environment (one line).
    """
    init = None
    extractor: dict[str, object] = {
        "features_extractor_class": AdaNATExtractor,
        "features_extractor_kwargs": {"config": cfg.extractor},
    }
    if cfg.init_policy is not None:
        init = load_init_policy(Path(cfg.init_policy), env.observation_space, cfg.env)  # type: ignore[arg-type]
        extractor = {
            "features_extractor_class": ReleaseExtractor,
            "features_extractor_kwargs": {"hidden": init.meta.hidden},
        }
    model = PPO(
        "MultiInputPolicy",
        env,
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
            **extractor,
            "share_features_extractor": False,
            "ortho_init": False,  # keep the extractor's own init (zero AdaLN modulation)
            "net_arch": {"pi": [], "vf": []},
            "log_std_init": math.log(cfg.std_schedule[0][1]),
        },
        seed=cfg.seed,
        device=device,
    )
    if init is not None:
        load_start(model, init)  # the untrained policy is the imported one
    else:
        head = sb3.action_head(model)
        with torch.no_grad():  # the untrained policy's mean action is 0: the base schedule
            head.weight.zero_()
            head.bias.zero_()
    guard_gradient_steps(model)
    return model
