"""The U-ViT NAT of AutoNAT/AdaNAT: parity with the official module, strict loads of the released
key lists, and the generator protocol through the sampler."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import DATA, fixture_tensors
from safetensors import safe_open

from adanat.models.uvit import UViTConfig, UViTNAT
from adanat.rng import row_rngs
from adanat.sampling import NATSampler, ScheduleController
from adanat.schedules import load_schedule


def _config(official: dict) -> UViTConfig:
    """Our config from the official one (fixture metadata or key-list config)."""
    return UViTConfig(
        grid=official["img_size"],
        width=official["embed_dim"],
        depth=official["depth"],
        heads=official["num_heads"],
        codebook_size=official["codebook_size"],
        num_classes=official["num_classes"] - 1 if official.get("num_classes") else None,  # null row
        clip_dim=official.get("clip_dim"),
        clip_tokens=official.get("num_clip_token"),
    )


def _fixture(name: str) -> tuple[UViTNAT, dict[str, torch.Tensor]]:
    with safe_open(str(DATA / name), "pt") as f:
        official = json.loads(f.metadata()["config"])
    state, tensors = fixture_tensors(name)
    model = UViTNAT(_config(official)).eval()
    model.load_state_dict(state, strict=True)
    return model, tensors


@pytest.mark.parametrize("name", ["uvit_cls_parity.safetensors", "uvit_t2i_parity.safetensors"])
def test_outputs_equal_the_official_module(name):
    """Rows with different masked counts (16 / 9 / 3 / 0 and 16 / 5 / 11) in one batch."""
    model, t = _fixture(name)
    counts = (t["ids"] == model.mask_id).sum(1).tolist()
    assert len(set(counts)) == len(counts)  # the rows really differ
    with torch.no_grad():
        out = model(t["ids"], t["context"])
    assert out.logits.shape == t["logits"].shape and out.feat.shape == t["feat"].shape
    assert (out.logits - t["logits"]).abs().max() <= 1e-5
    assert (out.feat - t["feat"]).abs().max() <= 1e-5


@pytest.mark.parametrize("key_list", ["autonat_l_in256_state_dict.json", "adanat_muse_cc3m_state_dict.json"])
def test_released_key_lists_load_strictly(key_list):
    """Every key and shape of the released files (AutoNAT-L ImageNet-256, AdaNAT's CC3M model),
    built on the meta device, loads strictly, with the released parameter count."""
    spec = json.loads((DATA / key_list).read_text())
    with torch.device("meta"):
        model = UViTNAT(_config(spec["config"]))
        state = {k: torch.empty(shape) for k, shape in spec["tensors"].items()}
    model.load_state_dict(state, strict=True, assign=True)
    assert sum(p.numel() for p in model.parameters()) == spec["num_parameters"]


def test_guided_forward_is_both_branches_of_one_forward():
    model, t = _fixture("uvit_cls_parity.safetensors")
    ids, labels = t["ids"], t["context"].clamp_max(model.num_classes - 1)  # real classes only
    with torch.no_grad():
        fwd = model.guided_forward(ids, labels)
        cond, uncond = model(ids, labels), model(ids, torch.full_like(labels, model.num_classes))
    assert fwd.state is None and not model.reuses_state
    torch.testing.assert_close(fwd.cond_logits, cond.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(fwd.uncond_logits, uncond.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(fwd.features, cond.feat, atol=1e-5, rtol=0)


def test_the_sampler_generates_with_either_condition():
    """Class ids and text states through the unchanged sampler; a row batched equals it alone."""
    ctrl = ScheduleController(load_schedule("cosine", steps=4))
    cls, _ = _fixture("uvit_cls_parity.safetensors")
    labels = torch.tensor([0, 3, 9])
    batch = NATSampler(cls).generate(labels, ctrl, 4, row_rngs(0, 3))
    alone = NATSampler(cls).generate(labels[1:2], ctrl, 4, row_rngs(0, 1, offset=1))
    assert torch.equal(batch.ids[1], alone.ids[0]) and int((batch.ids == cls.mask_id).sum()) == 0
    t2i, t = _fixture("uvit_t2i_parity.safetensors")
    with pytest.raises(RuntimeError, match="set_null_context"):
        NATSampler(t2i).generate(t["context"], ctrl, 4, row_rngs(0, 3))
    t2i.set_null_context(torch.zeros(7, 40))
    out = NATSampler(t2i).generate(t["context"], ctrl, 4, row_rngs(0, 3))
    assert out.ids.shape == (3, 16) and int(out.ids.max()) < 24


def test_load_generator_drops_position_id_buffers_and_checks_keys(tmp_path):
    """The CC3M release may hold ``*.position_ids`` buffers, which the loader drops; a file of
    another architecture is refused with the keys named."""
    from safetensors.torch import save_file

    from adanat.checkpoints import CheckpointError, load_generator

    model, _ = _fixture("uvit_t2i_parity.safetensors")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file({**state, "token_emb.position_ids": torch.arange(16)[None]}, str(tmp_path / "g.safetensors"))
    loaded = load_generator(tmp_path / "g.safetensors", model.config)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    cls, _ = _fixture("uvit_cls_parity.safetensors")
    with pytest.raises(CheckpointError, match="generator keys do not match the preset"):
        load_generator(tmp_path / "g.safetensors", cls.config)


@pytest.fixture(scope="module")
def uvit_weights(tmp_path_factory):
    """Random weights of the ``uvit-tiny`` preset (U-ViT NAT + the tiny VQGAN)."""
    from safetensors.torch import save_file

    from adanat.models.vqgan import MaskGITVQGAN
    from adanat.presets import model_preset

    folder = tmp_path_factory.mktemp("uvit")
    preset = model_preset("uvit-tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_file(UViTNAT(preset.generator).state_dict(), str(folder / "gen.safetensors"))
        save_file(MaskGITVQGAN(preset.tokenizer).state_dict(), str(folder / "tok.safetensors"))
    return folder


def test_sample_and_train_with_the_uvit_preset(uvit_weights, tmp_path, capsys):
    """A U-ViT preset is usable where a model preset is: ``adanat sample`` and policy training."""
    from helpers import tiny_model_args

    from adanat.agents.config import PolicyTraining
    from adanat.agents.trainer import PolicyTrainer
    from adanat.cli import main
    from adanat.envs.spec import EnvConfig

    args = [*tiny_model_args(uvit_weights), "--n", "3", "--steps", "8", "--policy", "autonat-l-t8"]
    args[1] = "uvit-tiny"
    assert main(["sample", *args, "--device", "cpu", "--out", str(tmp_path / "s")]) == 0
    meta = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert meta["labels"] == [0, 1, 2] and len(meta["controls"]["guidance"][0]) == 8
    env = EnvConfig(
        world="shapes",
        preset="uvit-tiny",
        generator=uvit_weights / "gen.safetensors",
        tokenizer=uvit_weights / "tok.safetensors",
        steps=2,
    )
    cfg = PolicyTraining(
        env=env, episodes=4, num_envs=4, episodes_per_update=4, eval_episodes=4, save_every=1
    )
    result = PolicyTrainer(cfg, tmp_path / "run").train()
    assert set(result) >= {"policy", "base"} and (tmp_path / "run" / "policy" / "policy.json").is_file()
    policy = json.loads((tmp_path / "run" / "policy" / "policy.json").read_text())
    assert policy["preset"] == "uvit-tiny" and policy["observation"]["width"] == 64


@pytest.mark.parametrize("observation", ["compact", "full"])
def test_the_env_over_a_uvit_passes_both_checkers(uvit_weights, observation):
    """The generation environment over a U-ViT NAT: gymnasium's and SB3's env checkers."""
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from adanat.envs import NATEnv
    from adanat.envs.spec import EnvConfig, build_core

    env = EnvConfig(
        world="shapes",
        preset="uvit-tiny",
        generator=uvit_weights / "gen.safetensors",
        tokenizer=uvit_weights / "tok.safetensors",
        steps=4,
        observation=observation,
    )
    assert not build_core(env, 1).sampler.generator.reuses_state
    gym_check_env(NATEnv(build_core(env, 1)), skip_render_check=True)
    sb3_check_env(NATEnv(build_core(env, 1)), warn=True)


@pytest.mark.slow
def test_the_released_autonat_l_file_loads_and_generates():
    """With ADANAT_AUTONAT_L=nnet_ema.pth (AutoNAT-L ImageNet-256): a strict load and two images'
    tokens at T=8 with its searched schedule and AutoNAT's rule."""
    import os

    from adanat.checkpoints import load_generator
    from adanat.presets import generator_config

    path = os.environ.get("ADANAT_AUTONAT_L")
    if not path:
        pytest.skip("set ADANAT_AUTONAT_L to AutoNAT-L's nnet_ema.pth")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_generator(path, generator_config("autonat-l-in256"), device)
    ctrl = ScheduleController(load_schedule("autonat-l-t8", steps=8))
    out = NATSampler(model).generate(torch.tensor([207, 360], device=device), ctrl, 8, row_rngs(0, 2, device))
    assert out.ids.shape == (2, 256) and int(out.ids.max()) < 1024
