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


def test_release_action_mapping_and_its_hand_made_residual():
    """sigmoid / softplus of the raw actions (release order: ratio, re-masking, sampling,
    guidance); with the --heu 1 residual, zero actions are the release's hand-made schedule."""
    import math

    import torch.nn.functional as F

    from adanat.agents.adanat_policy import release_controls

    raw = torch.tensor([[0.5, -1.0, 2.0, 0.3]])
    c = release_controls(raw, 2, 8, heuristic=False)
    assert c.rule == "adanat"
    torch.testing.assert_close(c.mask_ratio, torch.sigmoid(raw[:, 0]))
    torch.testing.assert_close(c.remask_temp, F.softplus(raw[:, 1]))
    torch.testing.assert_close(c.sampling_temp, F.softplus(raw[:, 2]))
    torch.testing.assert_close(c.guidance, F.softplus(raw[:, 3]))
    for k in range(8):
        h = release_controls(torch.zeros(1, 4), k, 8, heuristic=True)
        r = (k + 1 - 1e-3) / 8
        want = [math.cos(math.pi / 2 * r), 1.0, 1 - r, (k + 1e-3) / 8]  # ratio, sampling, remask, cfg
        assert h.stack()[0].tolist() == pytest.approx(want, abs=1e-5)


def _imported(tmp_path, heuristic: bool = False):
    from adanat.cli import main

    weights, _ = _fixture()
    torch.save({"model": {RELEASE_PREFIX + k: v for k, v in weights.items()}}, tmp_path / "ckpt.pth")
    args = ["import-policy", str(tmp_path / "ckpt.pth"), "--out", str(tmp_path / "policy"), "--steps", "4"]
    assert main([*args, *(["--heuristic"] if heuristic else [])]) == 0
    return tmp_path / "policy"


def test_an_imported_policy_drives_the_sampler(tmp_path):
    from helpers import random_enat

    from adanat.agents.adanat_policy import ReleasePolicyController, load_release_policy, release_controls
    from adanat.models.enat import ENATConfig
    from adanat.rng import row_rngs
    from adanat.sampling import GenerationState, NATSampler

    folder = _imported(tmp_path, heuristic=True)
    actor, meta = load_release_policy(folder)
    assert (
        meta["steps"] == 4 and meta["heuristic"] and meta["rule"] == "adanat" and "sha256" in meta["source"]
    )
    controller = ReleasePolicyController(actor, 4, True)
    _, t = _fixture()
    state = GenerationState(1, 4, torch.zeros(5, 256, dtype=torch.long), torch.zeros(5), t["feat"])
    with torch.no_grad():
        want = release_controls(actor(t["feat"], torch.ones(5, dtype=torch.long)), 1, 4, True)
    assert torch.equal(controller(state).stack(), want.stack())
    generator = random_enat(ENATConfig(1, 1, 24, 4, 16, 16, 10))  # its features: 24 on a 16x16 grid
    out = NATSampler(generator).generate(torch.arange(3), controller, 4, row_rngs(0, 3))
    assert out.trace.shape == (3, 4, 4) and int(out.ids.max()) < 16


def test_an_imported_policy_for_other_features_is_one_clear_line(tmp_path, capsys):
    """``adanat sample --policy`` checks the imported policy against the preset's generator."""
    from helpers import random_enat, tiny_model_args
    from safetensors.torch import save_file

    from adanat.cli import main
    from adanat.models.vqgan import MaskGITVQGAN
    from adanat.presets import model_preset

    folder = _imported(tmp_path)
    preset = model_preset("tiny")
    save_file(random_enat(preset.generator).state_dict(), str(tmp_path / "gen.safetensors"))
    save_file(MaskGITVQGAN(preset.tokenizer).state_dict(), str(tmp_path / "tok.safetensors"))
    args = ["sample", *tiny_model_args(tmp_path), "--policy", str(folder), "--out", str(tmp_path / "o")]
    assert main([*args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reads 24 features on a 16x16 grid; preset tiny gives 64 on 8x8" in err
    assert main(["import-policy", str(tmp_path / "gen.safetensors"), "--out", str(tmp_path / "p2")]) == 2
    assert "holds no AdaNAT actor" in capsys.readouterr().err and not (tmp_path / "p2").exists()


@pytest.mark.slow
def test_the_released_policy_file_imports(tmp_path):
    """With ADANAT_POLICY=ckpt_*.pth (AdaNAT's ImageNet-256 policy): import, then its actions on
    random features are finite and its metadata fits AutoNAT-L (768 features, 16x16 grid)."""
    import os

    from adanat.agents.adanat_policy import ReleasePolicyController, load_release_policy
    from adanat.cli import main
    from adanat.sampling import GenerationState

    path = os.environ.get("ADANAT_POLICY")
    if not path:
        pytest.skip("set ADANAT_POLICY to AdaNAT's ImageNet-256 policy checkpoint")
    assert main(["import-policy", path, "--out", str(tmp_path / "p")]) == 0
    actor, meta = load_release_policy(tmp_path / "p")
    assert (actor.in_channels, actor.grid) == (768, 16) and meta["steps"] == 8
    feats = torch.randn(2, 256, 768, generator=torch.Generator().manual_seed(0))
    controls = ReleasePolicyController(actor, 8, False)(GenerationState(0, 8, None, None, feats))
    assert torch.isfinite(controls.stack()).all() and controls.rule == "adanat"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"steps": "four"}, "whole numbers >= 1"),
        ({"steps": 1}, "steps must be >= 2"),
        ({"heuristic": "false"}, "heuristic true or false"),
        ({"grid": None}, "whole numbers >= 1"),
    ],
)
def test_a_damaged_imported_policy_is_one_clear_line(tmp_path, capsys, change, match):
    from adanat.cli import main

    folder = _imported(tmp_path)
    meta = json.loads((folder / "policy.json").read_text())
    (folder / "policy.json").write_text(json.dumps({**meta, **change}))
    capsys.readouterr()
    assert main(["sample", "--preset", "shapes", "--policy", str(folder), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a readable imported policy" in err and match in err


def test_a_foreign_actor_and_stochastic_sampling_are_refused(tmp_path, capsys):
    from adanat.cli import main

    torch.save({"model": {RELEASE_PREFIX + "x_embedder.weight": torch.zeros(3)}}, tmp_path / "odd.pth")
    assert main(["import-policy", str(tmp_path / "odd.pth"), "--out", str(tmp_path / "p")]) == 2
    assert "are not an AdaNAT actor's" in capsys.readouterr().err and not (tmp_path / "p").exists()
    folder = _imported(tmp_path)
    args = [
        "sample",
        "--preset",
        "shapes",
        "--policy",
        str(folder),
        "--stochastic",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    assert "--stochastic is not supported for an imported AdaNAT policy" in capsys.readouterr().err
