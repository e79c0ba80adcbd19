"""ENAT: official parity, strict loading of the official key lists, ragged rows."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import DATA, fixture_tensors, random_enat

from adanat.checkpoints import CheckpointError, load_generator
from adanat.models.enat import ENAT, ReuseState
from adanat.presets import generator_config


@pytest.fixture(scope="module")
def parity():
    sd, t = fixture_tensors("enat_tiny_parity.safetensors")
    model = ENAT(generator_config("enat-tiny-fixture")).eval()
    model.load_state_dict(sd, strict=True)
    return model, t


def test_fixture_config_matches_preset():
    from safetensors import safe_open

    with safe_open(str(DATA / "enat_tiny_parity.safetensors"), "pt") as f:
        meta = f.metadata()
    cfg = generator_config("enat-tiny-fixture")
    assert int(meta["width"]) == cfg.width and int(meta["heads"]) == cfg.heads
    assert int(meta["encoder_layers"]) == cfg.encoder_layers
    assert int(meta["decoder_layers"]) == cfg.decoder_layers
    assert int(meta["mask_token_id"]) == cfg.mask_id and int(meta["null_class_index"]) == cfg.null_class


@torch.no_grad()
def test_plain_forward_matches_official(parity):
    model, t = parity
    out = model(t["ids"], t["labels"])
    assert (out.logits - t["plain_logits"]).abs().max() <= 1e-5
    assert (out.state.feat - t["plain_feat"]).abs().max() <= 1e-5
    prev = model(t["prev_ids"], t["labels"])
    assert (prev.logits - t["prev_logits"]).abs().max() <= 1e-5
    assert (prev.state.feat - t["prev_feat"]).abs().max() <= 1e-5


@torch.no_grad()
def test_reuse_forward_matches_official(parity):
    model, t = parity
    prev = ReuseState(t["prev_feat"], t["prev_ids"] == model.config.mask_id)
    out = model(t["ids"], t["labels"], prev)
    assert (out.logits - t["reuse_logits"]).abs().max() <= 1e-5
    assert (out.state.feat - t["reuse_feat"]).abs().max() <= 1e-5
    # reuse really changes the result (the fixture is not degenerate)
    assert (out.logits - t["plain_logits"]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["enat_l_in256", "enat_l_in512", "enat_b_in256"])
def test_official_key_lists_load_strictly(name):
    spec = json.loads((DATA / f"{name}_state_dict.json").read_text())
    sd = {k: torch.empty(shape, device="meta") for k, shape in spec["tensors"].items()}
    model = load_generator(sd, generator_config(name.replace("_", "-")), device="meta")
    assert sum(p.numel() for p in model.parameters()) == spec["num_parameters"]
    # strict: one key too many or too few is refused with the key named
    sd.pop("norm.bias")
    with pytest.raises(CheckpointError, match=r"norm\.bias"):
        load_generator(sd, generator_config(name.replace("_", "-")), device="meta")


def test_preset_sizes_follow_paper():
    for size in ("in256", "in512"):
        s, b, l_ = (generator_config(f"enat-{m}-{size}") for m in "sbl")
        assert (s.encoder_layers, s.decoder_layers, s.width, s.heads) == (15, 1, 366, 6)
        assert (b.encoder_layers, b.decoder_layers, b.width, b.heads) == (15, 1, 768, 8)
        assert (l_.encoder_layers, l_.decoder_layers, l_.width, l_.heads) == (22, 2, 1024, 16)
        assert s.grid == (16 if size == "in256" else 32)


def _random_ids(gen, rows, length, k, masked_counts):
    ids = torch.randint(0, k, (rows, length), generator=gen)
    for r, m in enumerate(masked_counts):
        pos = torch.randperm(length, generator=gen)[:m]
        ids[r, pos] = k
    return ids


@torch.no_grad()
def test_ragged_rows_equal_rows_alone(tiny_enat):
    cfg = tiny_enat.config
    gen = torch.Generator().manual_seed(1)
    counts = [60, 33, 1, 64, 0]
    ids = _random_ids(gen, len(counts), cfg.seq_len, cfg.codebook_size, counts)
    labels = torch.tensor([0, 3, 9, cfg.null_class, 5])
    out = tiny_enat(ids, labels)
    for r in range(len(counts)):
        alone = tiny_enat(ids[r : r + 1], labels[r : r + 1])
        assert (out.logits[r] - alone.logits[0]).abs().max() <= 1e-5
        assert (out.state.feat[r] - alone.state.feat[0]).abs().max() <= 1e-5


@torch.no_grad()
def test_ragged_reuse_rows_equal_rows_alone(tiny_enat):
    cfg = tiny_enat.config
    gen = torch.Generator().manual_seed(2)
    prev_counts = [64, 50, 40, 20, 64]
    prev_ids = _random_ids(gen, 5, cfg.seq_len, cfg.codebook_size, prev_counts)
    labels = torch.tensor([1, 2, cfg.null_class, 4, 7])
    prev = tiny_enat(prev_ids, labels).state
    # reveal a different number of tokens per row (0 for row 2, all for row 4)
    ids = prev_ids.clone()
    for r, reveal in enumerate([5, 30, 0, 19, 64]):
        masked = (prev_ids[r] == cfg.mask_id).nonzero().squeeze(1)
        pick = masked[torch.randperm(len(masked), generator=gen)[:reveal]]
        ids[r, pick] = torch.randint(0, cfg.codebook_size, (len(pick),), generator=gen)
    out = tiny_enat(ids, labels, prev)
    for r in range(5):
        alone = tiny_enat(ids[r : r + 1], labels[r : r + 1], prev.select(slice(r, r + 1)))
        assert (out.logits[r] - alone.logits[0]).abs().max() <= 1e-5
        assert (out.state.feat[r] - alone.state.feat[0]).abs().max() <= 1e-5


@torch.no_grad()
def test_equal_counts_take_the_uniform_path(parity, monkeypatch):
    """With equal counts no attention mask is built (the official computation); a ragged batch
    builds masks, and its rows still agree with the uniform batch's."""
    import adanat.models.enat as enat

    masks = []

    def recording(query, keys):
        mask = real(query, keys)
        masks.append(mask)
        return mask

    real = enat.attention_mask
    monkeypatch.setattr(enat, "attention_mask", recording)
    model, t = parity
    prev = ReuseState(t["prev_feat"], t["prev_ids"] == model.config.mask_id)
    out = model(t["ids"], t["labels"], prev)
    assert len(masks) == 2 and masks == [None, None]  # encoder and decoder: the uniform path
    masks.clear()
    # embed the same rows in a ragged batch: outputs must not change
    extra_ids = t["ids"][:1].clone()
    extra_ids[0, (extra_ids[0] != model.config.mask_id).nonzero()[0]] = model.config.mask_id
    ragged_prev = ReuseState.cat([prev, ReuseState(t["prev_feat"][:1], extra_ids == 16)])
    ragged = model(torch.cat([t["ids"], extra_ids]), torch.cat([t["labels"], t["labels"][:1]]), ragged_prev)
    assert len(masks) == 2 and all(m is not None and m.shape[0] == 4 for m in masks)  # padded path
    assert (ragged.logits[:3] - out.logits).abs().max() <= 1e-5
    assert (ragged.state.feat[:3] - out.state.feat).abs().max() <= 1e-5


def test_reuse_rejects_a_remasked_token(tiny_enat):
    cfg = tiny_enat.config
    ids = torch.full((1, cfg.seq_len), cfg.mask_id)
    ids[0, :10] = 3
    prev = tiny_enat(ids, torch.tensor([0])).state
    ids2 = ids.clone()
    ids2[0, 0] = cfg.mask_id  # was visible, masked again
    with pytest.raises(ValueError, match="visible before"):
        tiny_enat(ids2, torch.tensor([0]), prev)


def test_random_enat_has_nonzero_gates(tiny_enat):
    assert random_enat(tiny_enat.config).blocks[0].adaLN_modulation[1].weight.abs().sum() > 0


@torch.no_grad()
def test_masked_logits_only(tiny_enat):
    cfg = tiny_enat.config
    gen = torch.Generator().manual_seed(3)
    ids = _random_ids(gen, 3, cfg.seq_len, cfg.codebook_size, [10, 40, 64])
    labels = torch.tensor([1, 2, 3])
    full = tiny_enat(ids, labels)
    part = tiny_enat(ids, labels, masked_logits_only=True)
    masked = ids == cfg.mask_id
    assert (part.logits[masked] - full.logits[masked]).abs().max() <= 1e-5
    assert torch.equal(part.logits[~masked], torch.zeros_like(part.logits[~masked]))
    assert torch.equal(part.state.feat, full.state.feat)
