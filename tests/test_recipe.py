"""``--recipe adanat``: AdaNAT's published ImageNet-256 PPO settings as one named setting, and the
memory its rollout buffer needs."""

from __future__ import annotations

import pytest

from adanat.agents import trainer
from adanat.agents.config import PolicyTraining
from adanat.cli.train import config_from_args, parse
from adanat.envs.observation import ObservationForm
from adanat.presets import recipe


def test_the_adanat_recipe_holds_the_published_settings():
    """The numbers of AdaNAT's release (shared/specs/schedules.json, ``adanat_ppo_in256``)."""
    r = recipe("adanat")
    assert (r.episodes_per_update, r.updates, r.learning_rate) == (4096, 1000, 1e-5)
    assert (r.action_std, r.disc_updates) == ("0:0.6,500:0.3,1000:0.1", 5)
    assert (r.minibatch_std, r.action_cost) == (0, 0.0)


def test_recipe_fills_what_no_flag_gives_and_flags_still_win():
    cfg = config_from_args(parse(["--world", "shapes", "--recipe", "adanat"]))
    assert (cfg.episodes_per_update, cfg.learning_rate, cfg.episodes) == (4096, 1e-5, 4_096_000)
    assert cfg.std_schedule == ((0, 0.6), (500, 0.3), (1000, 0.1))
    assert cfg.env.reward_options.discriminator.updates_per_round == 5
    assert (cfg.env.reward_options.minibatch_std, cfg.action_cost) == (0, 0.0)
    assert (cfg.n_epochs, cfg.clip_range, cfg.vf_coef) == (5, 0.2, 0.5)  # AdaNAT's, always
    given = ["--world", "shapes", "--recipe", "adanat", "--lr", "3e-5", "--episodes-per-update", "1024"]
    cfg = config_from_args(parse([*given, "--disc-updates", "7", "--minibatch-std", "4"]))
    assert (cfg.learning_rate, cfg.episodes_per_update, cfg.episodes) == (3e-5, 1024, 1_024_000)
    assert cfg.env.reward_options.discriminator.updates_per_round == 7
    assert cfg.env.reward_options.minibatch_std == 4
    plain = config_from_args(parse(["--world", "shapes"]))  # without it: the world's and the defaults
    assert (plain.episodes_per_update, plain.learning_rate) == (128, 1e-4)
    assert plain.env.reward_options.minibatch_std == 4 and plain.action_cost == 0.2


def test_rollout_buffer_of_the_recipe_on_enat_l_and_its_refusal(monkeypatch):
    """4,096 episodes x 8 steps of ENAT-L in256 observations: 4.0 GiB compact, 32 GiB full."""
    gib = 2.0**30
    compact = ObservationForm("compact", 16, 1024, 8).bytes_per_observation * 8 * 4096
    full = ObservationForm("full", 16, 1024, 8).bytes_per_observation * 8 * 4096
    assert compact / gib == pytest.approx(4.0, abs=0.01) and full / gib == pytest.approx(32.0, abs=0.01)
    cfg = PolicyTraining(episodes_per_update=4096)
    monkeypatch.setattr(trainer, "available_memory", lambda: int(16 * gib))
    trainer.check_rollout_memory(compact, cfg)  # fits
    with pytest.raises(ValueError, match=r"needs 32\.0 GiB of host memory and 16\.0 GiB are available"):
        trainer.check_rollout_memory(full, cfg)
