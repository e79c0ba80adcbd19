"""``adanat.flops``: the CPU attention kernel is counted, exactly, and nothing else changes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from adanat.flops import attention_flops, count_flops, flop_counter
from adanat.rng import row_rngs
from adanat.sampling import Controls, GenerationState, NATSampler
from adanat.schedules import cosine_schedule

CPU_FLASH = "aten._scaled_dot_product_flash_attention_for_cpu"


class SDPARecorder(TorchFunctionMode):
    """Records the shapes of every ``scaled_dot_product_attention`` call and whether it had a mask."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Size, torch.Size, torch.Size, bool]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            self.calls.append((q.shape, k.shape, v.shape, kwargs.get("attn_mask") is not None))
        return func(*args, **kwargs)

    def flops(self) -> int:
        """``4 B H Lq Lk hd`` summed over the calls (query and value head sizes are equal here)."""
        total = 0
        for q, k, v, _ in self.calls:
            assert q[-1] == v[-1]
            total += 4 * q[0] * q[1] * q[2] * k[2] * q[3]
        return total


class RaggedSchedule:
    """Cosine controls with each row's mask ratio shifted by its own offset (ragged rows)."""

    def __init__(self, steps: int, rows: int) -> None:
        table = cosine_schedule(steps).tensor().expand(rows, -1, -1).clone()  # (B, T, 4)
        table[:, :-1, 0] = (table[:, :-1, 0] + torch.linspace(-0.15, 0.15, rows)[:, None]).clamp(0, 0.99)
        self.table = table

    def __call__(self, state: GenerationState) -> Controls:
        return Controls.from_tensor(self.table[:, state.step])  # (B, 4)


@pytest.fixture
def qkv(tiny_preset):
    """Query (B=2, H, Lq=5, hd) and keys/values (B, H, Lk=9, hd) of the tiny ENAT's head layout."""
    cfg = tiny_preset.generator
    assert (cfg.heads, cfg.width) == (4, 64)  # H = 4, hd = 16 in the literals below
    gen = torch.Generator().manual_seed(0)
    hd = cfg.width // cfg.heads
    q = torch.randn(2, cfg.heads, 5, hd, generator=gen)  # (B, H, Lq, hd)
    k = torch.randn(2, cfg.heads, 9, hd, generator=gen)  # (B, H, Lk, hd)
    v = torch.randn(2, cfg.heads, 9, hd, generator=gen)  # (B, H, Lk, hd)
    return q, k, v


@pytest.mark.parametrize("masked", [False, True])
def test_cpu_attention_counted_exactly(qkv, masked):
    q, k, v = qkv
    mask = None
    if masked:  # key padding as in ENAT's ragged rows: row 0 has 6 valid keys of 9
        mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)  # (B, 1, 1, Lk)
        mask[0, ..., 6:] = False
    count = count_flops(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    expected = 4 * 2 * 4 * 5 * 9 * 16  # 4 B H Lq Lk hd: masked keys cost the kernel their FLOPs too
    assert expected == 23040
    assert count.ops == {CPU_FLASH: expected}
    assert count.total == count.attention == expected
    assert attention_flops(q.shape, k.shape, v.shape) == expected
    with FlopCounterMode(display=False) as plain:  # what this fixes: torch alone counts 0
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert plain.get_total_flops() == 0


def test_math_kernel_counted_once(qkv):
    """The math kernel decomposes into products torch counts: the same FLOPs, under ``aten.bmm``."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        count = count_flops(lambda: F.scaled_dot_product_attention(*qkv))
    assert count.ops == {"aten.bmm": 23040} and count.attention == 0


def test_cpu_attention_backward_counted(qkv):
    q, k, v = (t.clone().requires_grad_() for t in qkv)
    count = count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    # forward 2 products, backward 5 (recomputed scores and four gradients), as torch counts CUDA's
    assert count.ops == {CPU_FLASH: 23040, CPU_FLASH + "_backward": 57600}


def test_flop_counter_is_local(qkv):
    """The formulas live in each counter's mapping, not in torch's global registry."""
    from torch.utils.flop_counter import flop_registry

    assert torch.ops.aten._scaled_dot_product_flash_attention_for_cpu not in flop_registry
    with flop_counter() as counter:
        F.scaled_dot_product_attention(*qkv)
    assert counter.get_total_flops() == 23040
    assert torch.ops.aten._scaled_dot_product_flash_attention_for_cpu not in flop_registry


@pytest.mark.parametrize("reuse", [True, False])
def test_generation_adds_exactly_attention(tiny_enat, reuse):
    rows, steps = 3, 4
    labels = torch.arange(rows)  # (B,)

    def run() -> object:
        sampler = NATSampler(tiny_enat, reuse=reuse)
        return sampler.generate(labels, RaggedSchedule(steps, rows), steps, row_rngs(0, rows))

    with FlopCounterMode(display=False) as plain:
        run()
    with SDPARecorder() as calls:
        count = count_flops(run)
    masks = [m for *_, m in calls.calls]
    assert True in masks and False in masks  # ragged rows (key masks) and uniform ones both ran
    assert count.attention == calls.flops() > 0
    plain_attention = sum(n for op, n in plain.get_flop_counts()["Global"].items() if "attention" in str(op))
    assert count.total - plain.get_total_flops() == count.attention - plain_attention
    assert count.of("ENAT") == count.total  # everything counted runs inside the generator
    plain_enat = sum(plain.get_flop_counts()["ENAT"].values())
    assert count.of("ENAT") - plain_enat == count.attention - plain_attention
    assert count.of("ENAT.blocks.0.attn") > count.of("ENAT.blocks.0.attn.q") > 0
    assert count.of("missing") == 0
