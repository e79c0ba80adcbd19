"""Sampler step and generation loop: per-sample controls, reproducibility, schedule adherence."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from adanat.rng import row_rngs
from adanat.sampling import Controls, GenerationState, NATSampler, ScheduleController, select_tokens
from adanat.schedules import Schedule, load_schedule


class PerRowController:
    """A different (fixed) schedule for each row: exercises ragged masked counts."""

    def __init__(self, schedules: list[Schedule]) -> None:
        self.tables = torch.stack([s.tensor() for s in schedules])  # (B, T, 4)

    def __call__(self, state: GenerationState) -> Controls:
        rows = self.tables[: state.ids.shape[0], state.step]
        return Controls.from_tensor(rows.to(state.ids.device))


def _controls(b, mask_ratio=0.5, sampling_temp=1.0, remask_temp=1.0, guidance=0.0):
    f = lambda v: torch.full((b,), float(v))  # noqa: E731
    return Controls(f(mask_ratio), f(sampling_temp), f(remask_temp), f(guidance))


def test_schedule_batch_equals_rows_alone(tiny_enat, tiny_vqgan):
    labels = torch.tensor([0, 1, 2, 3, 9])
    ctrl = ScheduleController(load_schedule("enat", steps=6))
    batch = NATSampler(tiny_enat, tiny_vqgan).generate(labels, ctrl, 6, row_rngs(7, 5))
    for r in range(5):
        alone = NATSampler(tiny_enat, tiny_vqgan).generate(
            labels[r : r + 1], ctrl, 6, row_rngs(7, 1, offset=r)
        )
        assert torch.equal(alone.ids[0], batch.ids[r])
        assert torch.equal(alone.trace[0], batch.trace[r])
        assert (alone.images[0] - batch.images[r]).abs().max() <= 1e-5


def test_per_sample_schedules_equal_rows_alone(tiny_enat):
    schedules = [
        load_schedule("cosine", steps=5),
        load_schedule("enat", steps=5),
        Schedule("flat", (0.9, 0.7, 0.5, 0.3, 0.0), (2.0,) * 5, (0.5,) * 5, (1.0,) * 5),
        Schedule("fast", (0.2, 0.1, 0.05, 0.01, 0.0), (0.5,) * 5, (3.0,) * 5, (4.0,) * 5),
    ]
    labels = torch.tensor([4, 4, 8, 1])
    batch = NATSampler(tiny_enat).generate(labels, PerRowController(schedules), 5, row_rngs(3, 4))
    L = tiny_enat.config.seq_len
    # rows really are ragged: after step 0 the masked counts differ
    assert batch.num_masked[:, 1].tolist() == [60, 60, 57, 12]
    for r, s in enumerate(schedules):
        alone = NATSampler(tiny_enat).generate(
            labels[r : r + 1], ScheduleController(s), 5, row_rngs(3, 1, offset=r)
        )
        assert torch.equal(alone.ids[0], batch.ids[r])
        assert torch.equal(alone.num_masked[0], batch.num_masked[r])
        expected = [L] + [math.floor(L * m) for m in s.mask_ratio]
        assert batch.num_masked[r].tolist() == expected


def test_revealed_counts_follow_the_schedule(tiny_enat):
    s = load_schedule("autonat-l-t8", steps=8)
    assert s.rule == "autonat"  # the release's rule: at least one token stays masked per step
    out = NATSampler(tiny_enat).generate(torch.arange(3), ScheduleController(s), 8, row_rngs(0, 3))
    L = tiny_enat.config.seq_len
    expected = [L] + [math.floor(L * m) for m in s.mask_ratio]
    assert out.num_masked.tolist() == [[*expected[:-1], 1]] * 3  # ... the image is the last sample
    ours = NATSampler(tiny_enat).generate(
        torch.arange(3), ScheduleController(replace(s, rule="enat")), 8, row_rngs(0, 3)
    )
    assert ours.num_masked.tolist() == [expected] * 3
    assert out.trace.shape == (3, 8, 4)
    assert torch.allclose(out.trace[0], s.tensor())
    assert int((out.ids == tiny_enat.config.mask_id).sum()) == 0
    assert int(out.ids.max()) < tiny_enat.config.codebook_size


def test_every_step_reveals_at_least_one(tiny_enat):
    # a schedule that never lowers the mask ratio: the clamp still reveals one token per step
    s = Schedule("stuck", (0.99, 0.99, 0.99, 0.0), (1.0,) * 4, (1.0,) * 4, (0.0,) * 4)
    out = NATSampler(tiny_enat).generate(torch.tensor([0]), ScheduleController(s), 4, row_rngs(0, 1))
    assert out.num_masked[0].tolist() == [64, 63, 62, 61, 0]


def test_fixed_seeds_reproduce(tiny_enat, tiny_vqgan):
    ctrl = ScheduleController(load_schedule("cosine", steps=4))
    labels = torch.tensor([1, 5])
    a = NATSampler(tiny_enat, tiny_vqgan).generate(labels, ctrl, 4, row_rngs(11, 2))
    b = NATSampler(tiny_enat, tiny_vqgan).generate(labels, ctrl, 4, row_rngs(11, 2))
    c = NATSampler(tiny_enat, tiny_vqgan).generate(labels, ctrl, 4, row_rngs(12, 2))
    assert torch.equal(a.ids, b.ids) and torch.equal(a.images, b.images)
    assert not torch.equal(a.ids, c.ids)
    # one generator for the whole batch is reproducible too
    d = NATSampler(tiny_enat).generate(labels, ctrl, 4, torch.Generator().manual_seed(5))
    e = NATSampler(tiny_enat).generate(labels, ctrl, 4, torch.Generator().manual_seed(5))
    assert torch.equal(d.ids, e.ids)


def test_controller_sees_this_steps_features(tiny_enat):
    seen = []

    def ctrl(state: GenerationState) -> Controls:
        seen.append((state.step, state.features.shape, int((state.ids == 64).sum())))
        return _controls(state.ids.shape[0], mask_ratio=0.5)

    NATSampler(tiny_enat).generate(torch.tensor([0, 1]), ctrl, 3, row_rngs(0, 2))
    assert seen == [(0, (2, 64, 64), 128), (1, (2, 64, 64), 64), (2, (2, 64, 64), 62)]


def test_guidance_zero_ignores_the_unconditional_branch():
    gen = torch.Generator().manual_seed(0)
    ids = torch.full((2, 16), 8)
    ids[:, :4] = torch.tensor([1, 2, 3, 4])
    cond = torch.randn(2, 16, 8, generator=gen)
    c = _controls(2, mask_ratio=0.25, guidance=0.0)
    a = select_tokens(ids, cond, torch.randn(2, 16, 8), c, row_rngs(0, 2), mask_id=8)
    b = select_tokens(ids, cond, torch.randn(2, 16, 8), c, row_rngs(0, 2), mask_id=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # visible tokens are kept and never re-masked
    assert torch.equal(a[0][:, :4], ids[:, :4]) and torch.equal(a[1][:, :4], ids[:, :4])
    assert (a[0] == 8).sum(dim=1).tolist() == [4, 4]


def test_guidance_formula_and_greedy_limits():
    """Near-zero sampling temperature samples the argmax of cond + w (cond - uncond); with zero
    re-masking noise the least confident tokens are the ones re-masked."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.full((1, 10), 5)
    cond, uncond = torch.randn(1, 10, 5, generator=gen), torch.randn(1, 10, 5, generator=gen)
    c = _controls(1, mask_ratio=0.3, sampling_temp=1e-4, remask_temp=0.0, guidance=2.0)
    nxt, sampled = select_tokens(ids, cond, uncond, c, row_rngs(0, 1), mask_id=5)
    guided = cond + 2.0 * (cond - uncond)
    assert torch.equal(sampled, guided.argmax(-1))
    conf = guided.log_softmax(-1).max(-1).values[0]
    assert set((nxt[0] == 5).nonzero().squeeze(1).tolist()) == set(conf.argsort()[:3].tolist())


def test_episode_methods_are_the_generation_loop(tiny_enat, tiny_vqgan):
    """start / advance / finish driven by hand equal generate(), and each step's forward is the
    generator's guided forward of the ids entering it (with the previous step's state)."""
    sampler = NATSampler(tiny_enat, tiny_vqgan)
    labels = torch.tensor([2, 3])
    c = _controls(2, mask_ratio=0.8, guidance=1.5)
    episode = sampler.start(labels, 3, row_rngs(0, 2))
    first = tiny_enat.guided_forward(torch.full((2, 64), 64), labels)
    assert torch.equal(episode.features, first.features)
    assert episode.features.shape == (2, 64, tiny_enat.feature_dim)
    cond_state, uncond_state = first.state
    assert not torch.allclose(cond_state.feat, uncond_state.feat)  # each branch keeps its own state
    applied = sampler.advance(episode, c)
    assert episode.step == 1 and torch.equal(applied.mask_ratio, c.mask_ratio)
    again = tiny_enat.guided_forward(episode.ids, labels, first.state)
    assert torch.equal(episode.features, again.features)
    sampler.advance(episode, c)
    last = sampler.advance(episode, c)
    assert episode.done and last.mask_ratio.tolist() == [0.0, 0.0]  # the last step reveals all
    with pytest.raises(RuntimeError, match="finished"):
        sampler.advance(episode, c)
    by_hand = sampler.finish(episode)
    loop = sampler.generate(labels, lambda _s: c, 3, row_rngs(0, 2))
    assert torch.equal(by_hand.ids, loop.ids) and torch.equal(by_hand.images, loop.images)
    assert torch.equal(by_hand.trace, loop.trace) and by_hand.num_masked[:, 1].tolist() == [51, 51]


def test_finish_before_the_last_step_is_refused(tiny_enat):
    sampler = NATSampler(tiny_enat)
    episode = sampler.start(torch.tensor([0]), 2, row_rngs(0, 1))
    with pytest.raises(RuntimeError, match="step 0 of 2"):
        sampler.finish(episode)


def test_without_reuse_every_step_encodes_every_visible_token(tiny_enat):
    labels, ctrl = torch.tensor([1, 4]), ScheduleController(load_schedule("cosine", steps=4))
    reuse = NATSampler(tiny_enat, reuse=True).generate(labels, ctrl, 4, row_rngs(5, 2))
    fresh = NATSampler(tiny_enat, reuse=False).generate(labels, ctrl, 4, row_rngs(5, 2))
    assert reuse.num_masked.tolist() == fresh.num_masked.tolist()  # the same schedule
    assert not torch.equal(reuse.ids, fresh.ids)  # ... computed differently from step 1 on


def test_schedule_controller_checks_steps(tiny_enat):
    ctrl = ScheduleController(load_schedule("autonat-l-t8", steps=8))
    with pytest.raises(ValueError, match="8 steps"):
        NATSampler(tiny_enat).generate(torch.tensor([0]), ctrl, 4, row_rngs(0, 1))


class TextConditionedStub(torch.nn.Module):
    """A tiny NAT of the second kind the protocol promises: text states ``(B, tokens, width)`` as
    the condition, the empty prompt as the null condition, and no reuse (state always None)."""

    seq_len, grid, mask_id, feature_dim, num_classes, reuses_state = 16, 4, 8, 6, None, False

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Parameter(torch.randn(9, 6, generator=gen))  # (K+1, D)
        self.text = torch.nn.Parameter(torch.randn(3, 6, generator=gen))  # (width, D)
        self.head = torch.nn.Parameter(torch.randn(6, 8, generator=gen))  # (D, K)
        self.empty = torch.zeros(5, 3)  # the empty prompt's states (tokens, width)
        self.states_seen: list[object] = []

    def null_condition(self, cond: torch.Tensor) -> torch.Tensor:
        return self.empty.expand_as(cond)  # (B, tokens, width)

    def guided_forward(self, ids, cond, state=None):
        from adanat.generator import GuidedOutput

        self.states_seen.append(state)
        b = ids.shape[0]
        c = torch.cat([cond, self.null_condition(cond)]).mean(1) @ self.text  # (2B, D)
        h = self.embed[torch.cat([ids, ids])] + c[:, None]  # (2B, L, D)
        logits = h @ self.head  # (2B, L, K)
        return GuidedOutput(logits[:b], logits[b:], h[:b], None)


def test_a_text_conditioned_generator_without_reuse_plugs_into_the_sampler():
    stub = TextConditionedStub()
    prompts = torch.randn(3, 5, 3, generator=torch.Generator().manual_seed(1))  # (B, tokens, width)
    ctrl = ScheduleController(load_schedule("cosine", steps=4))
    batch = NATSampler(stub).generate(prompts, ctrl, 4, row_rngs(2, 3))
    assert stub.states_seen == [None] * 4  # no reuse: every step runs the whole sequence
    assert batch.num_masked[:, 0].tolist() == [16] * 3 and batch.num_masked[:, -1].tolist() == [0] * 3
    for r in range(3):
        alone = NATSampler(stub).generate(prompts[r : r + 1], ctrl, 4, row_rngs(2, 1, offset=r))
        assert torch.equal(alone.ids[0], batch.ids[r])
    other = NATSampler(stub).generate(prompts.flip(0), ctrl, 4, row_rngs(2, 3))
    assert not torch.equal(other.ids[0], batch.ids[0])  # the condition matters


def _release_reference(ids, cond, uncond, c, rngs, mask_id, rule):
    """The releases' step written from the spec, row by row (AutoNAT: nat_misc.generate; AdaNAT:
    its generation environment's step), on the same Gumbel draws as select_tokens."""
    from adanat.rng import gumbel, gumbel_packed

    b, length = ids.shape
    is_mask = ids == mask_id
    counts = is_mask.sum(1)
    noise = gumbel_packed(counts.tolist(), (cond.shape[-1],), rngs, ids.device)
    remask = gumbel(b, (length,), rngs, ids.device)
    out, start = [], 0
    for r in range(b):
        w, temp = float(c.guidance[r]), max(float(c.sampling_temp[r]), 1e-4)  # the releases' floor
        logp = torch.log_softmax(cond[r] + w * (cond[r] - uncond[r]), -1)  # (L, K)
        sampled, conf = ids[r].clone(), torch.full((length,), float("inf"))
        for j in is_mask[r].nonzero()[:, 0].tolist():
            tok = int((logp[j] / temp + noise[start]).argmax())
            sampled[j], conf[j] = tok, logp[j, tok]
            start += 1
        conf = conf + float(c.remask_temp[r]) * remask[r]
        n = math.floor(length * float(c.mask_ratio[r]))
        ordered = sorted(conf.tolist())
        if rule == "autonat":
            n = max(1, min(int(counts[r]) - 1, n))
            keep = conf <= ordered[n - 1]
        else:
            n = min(n, length - 1)
            keep = conf < ordered[n]
        out.append(torch.where(keep, mask_id, sampled))
    return torch.stack(out)


@pytest.mark.parametrize("rule", ["autonat", "adanat"])
def test_release_rules_equal_a_reference_written_from_the_spec(rule):
    gen = torch.Generator().manual_seed(3)
    ids = torch.full((4, 16), 8)
    ids[0, :5], ids[1, :12], ids[3, :15] = 1, 2, 3  # 11 / 4 / 16 / 1 masked
    cond, uncond = torch.randn(4, 16, 8, generator=gen), torch.randn(4, 16, 8, generator=gen)
    ratios = torch.tensor([0.5, 0.4, 0.05, 0.0])  # row 1 asks for more than it has; row 3 for none
    c = Controls(ratios, torch.tensor([1.0, 0.5, 2.0, 1e-5]), torch.tensor([1.0, 0.0, 3.0, 1.0]),
                 torch.tensor([0.0, 1.5, 2.0, 0.5]), rule=rule)  # fmt: skip
    got, _ = select_tokens(ids, cond, uncond, c, row_rngs(4, 4), mask_id=8)
    want = _release_reference(ids, cond, uncond, c, row_rngs(4, 4), 8, rule)
    assert torch.equal(got, want)
    counts = (got == 8).sum(1).tolist()
    if rule == "autonat":  # max(1, min(masked - 1, floor(L r))): 8, 3 (clamped), 1, 1 (never 0)
        assert counts == [8, 3, 1, 1]
    else:  # min(floor(L r), L - 1), no clamp to the masked count: row 1 keeps its 4 masked
        assert counts == [8, 4, 0, 0]


def test_a_schedule_carries_its_rule_to_the_sampler_and_the_action_mapping():
    from adanat.envs.actions import ActionMapping

    s = replace(load_schedule("cosine", steps=4), rule="adanat")
    assert Schedule(**{**s.__dict__}).rule == "adanat" and s.to_dict()["rule"] == "adanat"
    state = GenerationState(0, 4, torch.full((2, 16), 8), torch.tensor([0, 1]), torch.zeros(2, 16, 4))
    assert ScheduleController(s)(state).rule == "adanat"
    assert ActionMapping(s, 1.0).controls(torch.zeros(2, 4), 0).rule == "adanat"
    assert load_schedule("enat", steps=4).rule == "enat" and load_schedule("autonat-shapes-t8").rule == "enat"
