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
        num_classes=official.get("num_classes"),
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
