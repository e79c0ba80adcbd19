"""``adanat.configs``: typed JSON round trips of nested config dataclasses, and flags from fields."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import pytest

from adanat.agents.config import PolicyTraining
from adanat.configs import Flag, add_flags, field_help, from_dict, to_dict
from adanat.envs.spec import EnvConfig
from adanat.presets import world_preset
from adanat.rewards.adversarial import DiscriminatorTraining
from adanat.rewards.registry import RewardOptions


@dataclass(frozen=True)
class Inner:
    """Inner settings.

    :param size: how big, in
        pixels (a second line).
    :param mode: ``fast`` or ``slow`` (see :class:`~adanat.configs.Flag`).
    """

    size: int
    mode: Literal["fast", "slow"] = "fast"


@dataclass(frozen=True)
class Outer:
    """Outer settings.

    :param inner: the inner ones.
    :param path: where.
    :param pairs: update and value pairs.
    :param scale: a factor.
    :param on: a switch.
    """

    inner: Inner
    path: Path | None = None
    pairs: tuple[tuple[int, float], ...] = ((0, 1.0),)
    scale: float = 1.0
    on: bool = False
    names: tuple[str, str] = ("a", "b")
    label: str = "x"

    def __post_init__(self) -> None:
        if self.scale < 0:
            raise ValueError(f"scale must be >= 0, got {self.scale}")


def test_policy_training_round_trips_through_json():
    cfg = PolicyTraining()
    env = replace(
        cfg.env,
        generator=Path("/w/gen.safetensors"),
        reward_options=RewardOptions(
            discriminator=DiscriminatorTraining(betas=(0.0, 0.9), updates_per_round=20),
            real_images=Path("/data/train"),
            minibatch_std=4,
        ),
    )
    cfg = replace(cfg, env=env, std_schedule=((0, 0.6), (32, 0.3)), fid_reference="stats.npz")
    saved = json.loads(json.dumps(to_dict(cfg)))
    assert saved["env"]["generator"] == "/w/gen.safetensors" and saved["std_schedule"] == [
        [0, 0.6],
        [32, 0.3],
    ]
    back = from_dict(PolicyTraining, saved)
    assert back == cfg
    assert isinstance(back.env.generator, Path) and back.env.reward_options.discriminator.betas == (0.0, 0.9)
    assert isinstance(back.std_schedule[1], tuple) and isinstance(back.std_schedule[1][1], float)


def test_nested_types_and_defaults():
    out = from_dict(Outer, {"inner": {"size": 3}, "path": "a/b", "pairs": [[1, 2], [5, 0.5]], "scale": 2})
    assert out == Outer(Inner(3), Path("a/b"), ((1, 2.0), (5, 0.5)), 2.0)
    assert isinstance(out.scale, float) and isinstance(out.pairs[0][1], float)  # an int is a float
    assert from_dict(Outer, {"inner": {"size": 1, "mode": "slow"}, "path": None}).path is None
    assert from_dict(EnvConfig, {}) == EnvConfig()  # keys of fields with defaults may be missing


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"inner": {"size": 1}, "colour": "red"}, "Outer: unknown key(s) 'colour' for Outer"),
        ({"inner": {"size": 1, "extra": 1}}, "Outer.inner: unknown key(s) 'extra' for Inner"),
        ({}, "Outer: missing key(s) 'inner' of Outer"),
        ({"inner": {}}, "Outer.inner: missing key(s) 'size' of Inner"),
        ({"inner": {"size": "3"}}, "Outer.inner.size: expected int, got str '3'"),
        ({"inner": {"size": True}}, "Outer.inner.size: expected int, got bool True"),
        ({"inner": {"size": 2.5}}, "Outer.inner.size: expected int, got float 2.5"),
        ({"inner": {"size": 1, "mode": "medium"}}, "Outer.inner.mode: expected one of 'fast', 'slow'"),
        ({"inner": [1]}, "Outer.inner: expected an object of Inner settings, got list [1]"),
        ({"inner": {"size": 1}, "path": 3}, "Outer.path: expected Path, got int 3"),
        ({"inner": {"size": 1}, "pairs": [[0, "a"]]}, "Outer.pairs[0][1]: expected float, got str 'a'"),
        ({"inner": {"size": 1}, "pairs": [[0, 1.0, 2]]}, "Outer.pairs[0]: expected a list of 2 values"),
        ({"inner": {"size": 1}, "pairs": 5}, "Outer.pairs: expected a list, got int 5"),
        ({"inner": {"size": 1}, "on": 1}, "Outer.on: expected bool, got int 1"),
        ({"inner": {"size": 1}, "label": None}, "Outer.label: expected str, got null"),
        ({"inner": {"size": 1}, "names": ["a"]}, "Outer.names: expected a list of 2 values"),
        ({"inner": {"size": 1}, "scale": -1}, "Outer: scale must be >= 0, got -1.0"),
    ],
)
def test_bad_data_is_a_clear_value_error(data, message):
    with pytest.raises(ValueError) as info:
        from_dict(Outer, data)
    assert message in str(info.value)


def test_saved_training_config_errors_name_the_key():
    saved = to_dict(PolicyTraining())
    saved["env"]["reward_options"]["discriminator"]["betas"] = [0.5, "x"]
    with pytest.raises(ValueError, match=r"PolicyTraining\.env\.reward_options\.discriminator\.betas\[1\]"):
        from_dict(PolicyTraining, saved)
    saved = to_dict(PolicyTraining())
    saved["episodes"] = 0
    with pytest.raises(ValueError, match="episodes must be >= 1, got 0"):
        from_dict(PolicyTraining, saved)


def test_field_help_reads_the_docstring():
    assert field_help(Inner, "size") == "how big, in pixels (a second line)."
    assert field_help(Inner, "mode") == "fast or slow (see Flag)."
    assert field_help(Inner, "nope") == ""


def test_flags_take_defaults_help_and_choices_from_the_fields():
    p = argparse.ArgumentParser()
    inner = add_flags(p, Inner, [Flag("size", default=None, default_help="per world"), "mode"])
    outer = add_flags(p, Outer, ["scale", "on", Flag("path", ("--where", "-w"))])
    helps = {a.dest: a for a in p._actions}
    assert helps["mode"].choices == ["fast", "slow"] and helps["mode"].default == "fast"
    assert helps["size"].help == "how big, in pixels (a second line). (default: per world)"
    assert helps["scale"].default == 1.0 and "(default: 1)" in helps["scale"].help
    args = p.parse_args([])
    assert inner.values(args) == {"mode": "fast"}  # None: resolved later
    assert outer.values(args) == {"scale": 1.0, "on": False}
    args = p.parse_args(["--size", "4", "--mode", "slow", "--on", "-w", "x/y", "--scale", "0.5"])
    assert inner.values(args) == {"size": 4, "mode": "slow"}
    assert outer.values(args) == {"scale": 0.5, "on": True, "path": Path("x/y")}
    assert args.path == Path("x/y")
    assert Outer(Inner(**inner.values(args)), **outer.values(args)).path == Path("x/y")
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "medium"])
    with pytest.raises(ValueError, match="Outer has no field 'colour'"):
        add_flags(argparse.ArgumentParser(), Outer, ["colour"])
    with pytest.raises(ValueError, match="field inner has no default"):
        add_flags(argparse.ArgumentParser(), Outer, ["inner"])


def test_train_flags_come_from_the_config_fields():
    from adanat.cli import train

    args = train.parse([])
    assert args.num_envs == PolicyTraining.num_envs
    assert args.learning_rate is None  # resolved after parsing: --recipe's, else the world's
    shapes = world_preset("shapes").policy_training.learning_rate
    assert train.config_from_args(args).learning_rate == shapes != PolicyTraining.learning_rate
    assert args.world == EnvConfig.world and args.clip_model == RewardOptions.clip_model
    assert train.parse(["--env", "in256"]).world == "in256" == train.parse(["--world", "in256"]).world
    assert train.parse(["--disc-updates", "7"]).updates_per_round == 7
    assert train.config_from_args(train.parse(["--minibatch", "1024"])).minibatch == 1024
    assert train.config_from_args(args).minibatch == PolicyTraining.minibatch
    text = ["--world", "cc3m", "--observe-prompt", "--captions", "pairs.tsv"]
    cfg = train.config_from_args(train.parse(text))
    assert cfg.env.observe_prompt and str(cfg.env.reward_options.captions) == "pairs.tsv"


def test_default_factories_and_field_objects():
    @dataclass(frozen=True)
    class WithFactory:
        """:param items: a list."""

        items: tuple[int, ...] = field(default_factory=lambda: (1, 2))

    assert from_dict(WithFactory, {}) == WithFactory()
    assert from_dict(WithFactory, {"items": [3]}).items == (3,)
