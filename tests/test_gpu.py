"""GPU checks (``pytest -m slow`` on a machine with CUDA)."""

from __future__ import annotations

import pytest
import torch
from helpers import fixture_tensors

from adanat.models.enat import ENAT, ReuseState
from adanat.presets import generator_config
from adanat.rng import row_rngs
from adanat.sampling import NATSampler, ScheduleController
from adanat.schedules import load_schedule

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@torch.no_grad()
def test_parity_on_cuda():
    sd, t = fixture_tensors("enat_tiny_parity.safetensors")
    model = ENAT(generator_config("enat-tiny-fixture")).eval()
    model.load_state_dict(sd)
    model = model.cuda()
    t = {k: v.cuda() for k, v in t.items()}
    torch.backends.cuda.matmul.allow_tf32 = False
    prev = ReuseState(t["prev_feat"], t["prev_ids"] == 16)
    out = model(t["ids"], t["labels"], prev)
    assert (out.logits - t["reuse_logits"]).abs().max() <= 1e-4
    plain = model(t["ids"], t["labels"])
    assert (plain.logits - t["plain_logits"]).abs().max() <= 1e-4


@torch.no_grad()
def test_generation_on_cuda_is_reproducible(tiny_enat):
    model = tiny_enat.cuda()
    ctrl = ScheduleController(load_schedule("enat", steps=8))
    labels = torch.arange(4, device="cuda")
    f32, b16 = NATSampler(model), NATSampler(model, precision="bfloat16")
    a = f32.generate(labels, ctrl, 8, row_rngs(0, 4, "cuda"))
    b = f32.generate(labels, ctrl, 8, row_rngs(0, 4, "cuda"))
    assert torch.equal(a.ids, b.ids)
    c = b16.generate(labels, ctrl, 8, row_rngs(0, 4, "cuda"))
    assert c.ids.shape == a.ids.shape and int((c.ids == model.config.mask_id).sum()) == 0
    d = b16.generate(labels, ctrl, 8, row_rngs(0, 4, "cuda"))
    assert torch.equal(c.ids, d.ids)
