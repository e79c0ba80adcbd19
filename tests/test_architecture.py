"""The structure the README's design notes promise, checked on the source."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = [ROOT / d for d in ("adanat", "envs", "agents", "rewards")]
MAX_PARAMETERS = 8


def _sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for d in PACKAGE for p in sorted(d.rglob("*.py"))}


def test_no_public_function_takes_more_than_eight_parameters():
    """Configs and the sampler carry the rest."""
    too_many = []
    for path, text in _sources().items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
                if len(names) > MAX_PARAMETERS:
                    too_many.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({len(names)})")
    assert too_many == []


def test_one_generation_episode():
    """The episode is written once, in NATSampler: nothing else runs select_tokens or calls a
    generator's guided forward, except a generator that wraps another (it defines its own
    ``guided_forward`` by delegating: prompts.PromptConditioned)."""
    users = {
        str(p.relative_to(ROOT))
        for p, text in _sources().items()
        if re.search(r"\bselect_tokens\(|\.guided_forward\(", text) and "def select_tokens" not in text
    }
    wrappers = {
        str(p.relative_to(ROOT))
        for p, text in _sources().items()
        if re.search(r"\bdef guided_forward\(", text) and not re.search(r"\bselect_tokens\(", text)
    }
    assert users - wrappers == set()
    assert wrappers >= {"adanat/prompts.py"}


def test_sb3_internals_live_in_one_module():
    """Private stable-baselines3 attributes are touched in agents/sb3.py only."""
    private = re.compile(r"\.(_n_updates|_last_obs|_last_episode_starts|_last_original_obs|_setup_model)\b")
    users = {str(p.relative_to(ROOT)) for p, text in _sources().items() if private.search(text)}
    assert users <= {"agents/sb3.py"}


def test_worlds_are_asked_not_branched_on():
    """Code outside the world definitions asks the world for its services instead of comparing a
    name with a world's (``world == "shapes"``, ``name != "in256"``, ``in ("in256", "in512")``)."""
    from adanat.presets import world_names

    names = "|".join(world_names())
    literal = rf"""["']({names})["']"""
    branch = re.compile(rf"(==|!=)\s*{literal}|{literal}\s*(==|!=)|\bin\s*[(\[{{]\s*{literal}")
    allowed = {"adanat/presets.py", "adanat/worlds/shapes.py", "adanat/pretrain/shapes.py"}
    users = {str(p.relative_to(ROOT)) for p, text in _sources().items() if branch.search(text)}
    assert users - allowed == set()
    assert branch.search('if world == "shapes":') and branch.search("if w in ('in256', 'in512'):")
