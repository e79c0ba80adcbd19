"""The generator's training batches and the previous-step state of the reuse path."""

from __future__ import annotations

import copy

import pytest
import torch

from adanat.models.enat import ENAT
from adanat.presets import generator_config
from adanat.pretrain.generator import (
    GeneratorTraining,
    make_optimizer,
    masked_batch,
    previous_state,
    previous_step,
    train_generator,
    train_step,
)


def _model() -> ENAT:
    torch.manual_seed(0)
    return ENAT(generator_config("enat-shapes-tiny")).eval()


def _batch(model: ENAT) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.config.codebook_size, (6, model.config.seq_len), generator=gen)
    labels = torch.arange(6) % 10
    inputs, _, y = masked_batch(tokens, labels, model, GeneratorTraining(beta_a=3, beta_b=3), gen)
    return inputs, y


def test_masked_batch_masks_one_count_per_batch():
    model = _model()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.config.codebook_size, (8, 64), generator=gen)
    inputs, targets, y = masked_batch(tokens, torch.arange(8), model, GeneratorTraining(), gen)
    masked = (inputs == model.config.mask_id).sum(1)  # (B,)
    assert (masked == masked[0]).all() and 1 <= int(masked[0]) <= 63
    assert ((targets != -100) == (inputs == model.config.mask_id)).all()
    assert torch.equal(targets[targets != -100], tokens[inputs == model.config.mask_id])
    assert ((y == torch.arange(8)) | (y == model.config.null_class)).all()  # dropped to null or kept


def test_previous_step_remasks_visible_tokens_only():
    model = _model()
    inputs, _ = _batch(model)
    was = inputs == model.config.mask_id  # (B, L)
    for seed, u in ((0, 0.4963), (3, 0.0043)):  # the first draw of each seed is the fraction u
        prev = previous_step(inputs, model.config.mask_id, torch.Generator().manual_seed(seed))
        now = prev == model.config.mask_id  # (B, L)
        assert (now >= was).all() and torch.equal(prev[~now], inputs[~now])
        remasked = (now & ~was).sum(1)  # (B,)
        assert torch.equal(remasked, ((~was).sum(1).double() * u).round().long())


def test_previous_state_chain_one_is_the_published_path():
    model = _model()
    inputs, y = _batch(model)
    cfg = GeneratorTraining()
    a = previous_state(model, inputs, y, cfg, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        b = model(previous_step(inputs, model.config.mask_id, gen), y).state
    assert torch.equal(a.feat, b.feat) and torch.equal(a.masking, b.masking)


def test_previous_state_chain_runs_nested_steps_with_reuse():
    model = _model()
    inputs, y = _batch(model)
    one, chain = GeneratorTraining(), GeneratorTraining(reuse_chain=4)
    differ = 0
    for seed in range(6):
        a = previous_state(model, inputs, y, one, torch.Generator().manual_seed(seed))
        b = previous_state(model, inputs, y, chain, torch.Generator().manual_seed(seed))
        # the same previous step (same first draws), reached through a chain or encoded at once
        assert torch.equal(a.masking, b.masking)
        assert (b.masking >= (inputs == model.config.mask_id)).all()
        with torch.no_grad():
            model(inputs, y, b)  # a valid reuse state for the current step
        differ += int(not torch.allclose(a.feat, b.feat))
    assert differ >= 3  # depth 1 of 4 gives the same features; deeper chains do not


def test_bfloat16_step_follows_the_float32_step():
    """Same weights and draws: the bfloat16 autocast step (reuse path included) gives nearly the same
    loss and moves the weights the same way, while weights, optimiser and EMA stay float32."""
    base = _model().train()
    data = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, base.config.codebook_size, (64, base.config.seq_len), generator=data)
    labels = torch.arange(64) % 10
    out = {}
    for precision in ("float32", "bfloat16"):
        cfg = GeneratorTraining(batch_size=16, warmup=1, reuse_prob=1.0, reuse_chain=2, precision=precision)
        model, ema = copy.deepcopy(base), copy.deepcopy(base).eval().requires_grad_(False)
        opt, gen = make_optimizer(model, cfg), torch.Generator().manual_seed(4)
        torch.manual_seed(5)  # the same dropout masks
        losses = [float(train_step(model, ema, opt, tokens, labels, cfg, gen, i)[0]) for i in range(3)]
        assert all(p.dtype == torch.float32 for p in [*model.parameters(), *ema.parameters()])
        delta = torch.cat(
            [(p - q).flatten() for p, q in zip(model.parameters(), base.parameters(), strict=True)]
        )
        out[precision] = losses, delta
    (l32, d32), (l16, d16) = out["float32"], out["bfloat16"]
    assert l32 == pytest.approx(l16, abs=1e-3) and l32 != l16  # close, but autocast did run
    assert float(torch.nn.functional.cosine_similarity(d32, d16, dim=0).detach()) > 0.99  # measured 0.9993


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        GeneratorTraining(precision="float16")


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 32, (50, 64), generator=gen), torch.arange(50) % 10  # (N, L), (N,)


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """A huge (finite) learning rate: the weights and then the loss turn NaN; training stops at the
    next check, the checkpoint of step 2 stays as it was, nothing non-finite is written."""
    from adanat.pretrain.run import NonFiniteError, TrainingRun

    tokens, labels = _data()
    torch.manual_seed(0)
    model = ENAT(generator_config("enat-shapes-tiny"))
    train_generator(
        model, tokens, labels, TrainingRun(tmp_path, 2, 2), GeneratorTraining(steps=2, batch_size=8, warmup=1)
    )
    good = (tmp_path / "checkpoint.pt").read_bytes()
    huge = GeneratorTraining(steps=6, batch_size=8, warmup=1, lr=1e30)
    with pytest.raises(NonFiniteError, match=r"the last good checkpoint \(step 2\) stays in .*checkpoint.pt"):
        train_generator(model, tokens, labels, TrainingRun(tmp_path, 6, 2), huge)
    assert (tmp_path / "checkpoint.pt").read_bytes() == good


def test_a_nan_loss_stops_before_anything_is_saved(tmp_path, monkeypatch):
    """A loss that turns NaN at step 3 of 6 (patched into ``train_step``) stops the loop at its next
    check: no checkpoint, and the run folder holds nothing (no empty TensorBoard file either)."""
    from adanat.pretrain import generator as module
    from adanat.pretrain.run import NonFiniteError, TrainingRun

    real = module.train_step

    def nan_from_step_3(*args, **kwargs):
        loss, logits, targets = real(*args, **kwargs)
        step = args[-1]
        return (loss * float("nan") if step >= 3 else loss), logits, targets

    monkeypatch.setattr(module, "train_step", nan_from_step_3)
    tokens, labels = _data()
    torch.manual_seed(0)
    model = ENAT(generator_config("enat-shapes-tiny"))
    run = TrainingRun(tmp_path / "generator", 6)  # checks at the last step: logged and checkpointed
    with pytest.raises(
        NonFiniteError, match=r"generator: the loss became non-finite by step 6.*no checkpoint"
    ):
        module.train_generator(model, tokens, labels, run, GeneratorTraining(steps=6, batch_size=8, warmup=1))
    assert not (tmp_path / "generator").exists()


def test_a_non_finite_state_is_never_saved(tmp_path):
    from adanat.pretrain.run import NonFiniteError, TrainingRun

    run = TrainingRun(tmp_path / "stage", 4, 1)
    run.step = 1
    state = {
        "model": {"w": torch.tensor([1.0, float("inf")])},
        "optimizer": {"state": {0: {"m": torch.ones(2)}}},
    }
    with pytest.raises(NonFiniteError, match=r"model\.w of its state became non-finite by step 1"):
        run.save(state)
    assert not (tmp_path / "stage").exists()
    state["model"]["w"] = torch.ones(2)
    run.save(state)
    assert (tmp_path / "stage" / "checkpoint.pt").is_file() and run.saved_step == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("batch_size", 0),
        ("warmup", -1),
        ("reuse_chain", 0),
        ("lr", float("inf")),
        ("lr", float("nan")),
        ("lr", 0.0),
        ("p_uncond", 1.5),
    ],
)
def test_out_of_range_training_values_are_refused(field, value):
    with pytest.raises(ValueError, match=f"generator training: {field} must"):
        GeneratorTraining(**{field: value})
