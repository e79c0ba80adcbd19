"""The ``shapes`` data set: determinism, splits, value ranges, class balance."""

from __future__ import annotations

import pytest
import torch

from adanat.worlds.shapes import CLASSES, ShapesDataset, render


def test_items_are_deterministic_per_seed_and_index():
    a, b = ShapesDataset("train", 100), ShapesDataset("train", 100)
    for i in (0, 7, 99):
        assert torch.equal(a[i][0], b[i][0])
    assert not torch.equal(a[3][0], a[13][0])  # same class, other index
    assert torch.equal(a[5][0], render(0, 5, 5))


def test_splits_differ():
    train, held = ShapesDataset("train", 20), ShapesDataset("heldout", 20)
    assert all(not torch.equal(train[i][0], held[i][0]) for i in range(20))


def test_images_and_labels():
    ds = ShapesDataset("heldout", 30)
    labels = [ds[i][1] for i in range(30)]
    assert labels == [i % len(CLASSES) for i in range(30)]
    img = ds[4][0]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    assert float(img.std()) > 0.02  # not a blank image


def test_every_class_renders_a_visible_shape():
    # the shape covers a reasonable share of the image in every class
    for k in range(len(CLASSES)):
        with_shape = render(3, k, k)
        assert with_shape.shape == (3, 32, 32)
        assert float((with_shape - with_shape.mean(dim=(1, 2), keepdim=True)).abs().mean()) > 0.01


def test_bad_split_and_index():
    with pytest.raises(ValueError, match="unknown split"):
        ShapesDataset("test")
    with pytest.raises(IndexError):
        ShapesDataset("train", 5)[5]


def test_render_cache_is_keyed_by_the_world(tmp_path, monkeypatch):
    """Cached images are reused for the same world and never for a changed one."""
    import adanat.worlds.shapes as world
    from adanat.pretrain.shapes import render_split, world_fingerprint

    images, labels = render_split("heldout", 12, tmp_path)
    assert torch.equal(images[3], (ShapesDataset("heldout", 12)[3][0] * 255).round().to(torch.uint8))
    assert torch.equal(labels, torch.arange(12) % len(CLASSES))
    assert len(list(tmp_path.glob("heldout-*-12.safetensors"))) == 1
    before = world_fingerprint("heldout")
    monkeypatch.setattr(world, "BACKGROUND", tuple((1 - r, 1 - g, 1 - b) for r, g, b in world.BACKGROUND))
    assert world_fingerprint("heldout") != before
    changed, _ = render_split("heldout", 12, tmp_path)
    assert not torch.equal(changed, images)
    assert len(list(tmp_path.glob("heldout-*-12.safetensors"))) == 2


def test_token_cache_is_keyed_by_the_world(tmp_path, monkeypatch):
    """The generator's cached training tokens are redone when the world changes, even with the
    same tokenizer file."""
    import adanat.worlds.shapes as world
    from adanat.models.vqgan import MaskGITVQGAN
    from adanat.pretrain.shapes import ShapesPretrainer, ShapesPretraining

    cfg = ShapesPretraining.tiny()
    pre = ShapesPretrainer(cfg, tmp_path / "run", tmp_path / "out", "test")
    torch.manual_seed(0)
    pre._write("tokenizer", MaskGITVQGAN(cfg.tokenizer).state_dict(), cfg.tokenizer, {}, 0.0)
    tokens, _ = pre.tokens()
    assert tokens.shape == (cfg.train_images, 64)
    assert torch.equal(pre.tokens()[0], tokens)  # cached
    monkeypatch.setattr(world, "BACKGROUND", tuple((1 - r, 1 - g, 1 - b) for r, g, b in world.BACKGROUND))
    assert not torch.equal(pre.tokens()[0], tokens)
    assert len(list((tmp_path / "run" / "data").glob("tokens-*"))) == 2
