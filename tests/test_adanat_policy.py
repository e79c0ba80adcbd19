"""AdaNAT's released policy network: parity with the official actor and reading its checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import DATA
from safetensors.torch import load_file

from adanat.agents.adanat_policy import RELEASE_PREFIX, ReleaseActor, load_release_actor
from adanat.checkpoints import CheckpointError


def _fixture() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    t = load_file(str(DATA / "adanat_policy_parity.safetensors"))
    weights = {k[len("actor.") :]: v for k, v in t.items() if k.startswith("actor.")}
    return weights, t


def test_actions_equal_the_official_actor():
    """Weights stored in float16 hold the exact values; computed in float32 (<= 1e-5)."""
    weights, t = _fixture()
    actor = ReleaseActor(in_channels=24, hidden=32).eval()
    actor.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    with torch.no_grad():
        actions = actor(t["feat"], t["timestep"])
    assert actions.shape == (5, 4)
    assert (actions - t["actions"]).abs().max() <= 1e-5


def test_the_release_checkpoint_is_read_without_pickle(tmp_path):
    """The actor AdaNAT evaluates is model['policy_old.actor.*'] of its checkpoint."""
    weights, t = _fixture()
    ckpt = {
        "model": {
            **{RELEASE_PREFIX + k: v for k, v in weights.items()},
            **{"policy.actor." + k: torch.zeros_like(v) for k, v in weights.items()},  # the other copy
        },
        "step": 1000,
    }
    torch.save(ckpt, tmp_path / "ckpt_1000.pth")
    actor = load_release_actor(tmp_path / "ckpt_1000.pth")
    with torch.no_grad():
        assert (actor(t["feat"], t["timestep"]) - t["actions"]).abs().max() <= 1e-5
    torch.save({"model": {"policy.actor.x": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="holds no AdaNAT actor"):
        load_release_actor(tmp_path / "other.pth")


def test_the_released_key_list_fits_the_network():
    """AdaNAT's ImageNet-256 actor (feature width 768, hidden 512) loads strictly on the meta device."""
    spec = json.loads((DATA / "adanat_policy_in256_state_dict.json").read_text())
    actor = {k[len(RELEASE_PREFIX) :]: s for k, s in spec["tensors"].items() if k.startswith(RELEASE_PREFIX)}
    with torch.device("meta"):
        module = ReleaseActor(in_channels=768, hidden=512)
        state = {k: torch.empty(shape) for k, shape in actor.items()}
    module.load_state_dict(state, strict=True, assign=True)  # every key and shape, none left over
