"""FLOP counting with attention included.

``torch.utils.flop_counter.FlopCounterMode`` has formulas for the CUDA attention kernels but not
for the CPU one: on the CPU, ``scaled_dot_product_attention`` (with or without a mask) runs
``aten._scaled_dot_product_flash_attention_for_cpu``, which it counts as 0 FLOPs. This module
passes formulas for that kernel and its backward as ``custom_mapping`` of each counter it makes,
so nothing global changes.

Attention counts the two matrix products, ``4 * B * H * Lq * Lk * head_dim`` forward (2 FLOPs
per multiply-add, as the counter does everywhere), whatever the mask: the CPU kernel adds the
mask to the scores and so computes masked keys too. Causal attention is counted in full, as
torch's own attention formulas do. Softmax, scaling and the mask add are not counted (the
counter counts no element-wise op). PyTorch's math kernel, which the CPU takes only when asked
(``sdpa_kernel(SDPBackend.MATH)``, as bfloat16 pretraining does), decomposes into matrix products
that torch counts already.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

Shape = tuple[int, ...]

aten = torch.ops.aten


def attention_flops(query: Shape, key: Shape, value: Shape) -> int:
    """FLOPs of one attention forward: ``Q K^T`` and ``softmax(.) V``.

    :param query: ``(..., H, Lq, d)`` query shape (leading dims are batch).
    :param key: ``(..., Hk, Lk, d)`` key shape (``Hk`` may divide ``H``: grouped queries).
    :param value: ``(..., Hk, Lk, dv)`` value shape.
    :return: ``2 * (B*H) * Lq * Lk * (d + dv)``.
    """
    bh, lq, d = prod(query[:-2]), query[-2], query[-1]
    lk, dv = key[-2], value[-1]
    return 2 * bh * lq * lk * (d + dv)


def attention_backward_flops(query: Shape, key: Shape, value: Shape) -> int:
    """FLOPs of one attention backward, as torch counts its CUDA kernels: the recomputed scores
    and the four gradient products, ``2 * (B*H) * Lq * Lk * (3 d + 2 dv)``."""
    bh, lq, d = prod(query[:-2]), query[-2], query[-1]
    lk, dv = key[-2], value[-1]
    return 2 * bh * lq * lk * (3 * d + 2 * dv)


def _cpu_flash_forward(
    query: Shape, key: Shape, value: Shape, *args: Any, out_shape: Any = None, **kw: Any
) -> int:
    return attention_flops(query, key, value)


def _cpu_flash_backward(
    grad_out: Shape, query: Shape, key: Shape, value: Shape, *args: Any, out_shape: Any = None, **kw: Any
) -> int:
    return attention_backward_flops(query, key, value)


#: Formulas added to torch's registry (keys are op packets, values take shapes).
ATTENTION_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_forward,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
}


def flop_counter(display: bool = False) -> FlopCounterMode:
    """A ``FlopCounterMode`` that also counts the CPU attention kernels (a drop-in replacement)."""
    return FlopCounterMode(display=display, custom_mapping=ATTENTION_FORMULAS)


@dataclass(frozen=True)
class FlopCount:
    """FLOPs counted while a function ran (2 per multiply-add).

    :param total: every counted op.
    :param modules: FLOPs per module, by the counter's names: the top module is its class name
        (``ENAT``, ``MaskGITVQGAN``), submodules are dotted paths (``ENAT.blocks.0.attn``).
    :param ops: FLOPs per op (``aten.mm``, ``aten._scaled_dot_product_flash_attention_for_cpu``).
    """

    total: int
    modules: dict[str, int]
    ops: dict[str, int]

    @property
    def attention(self) -> int:
        """FLOPs of the attention kernels (every op whose name contains ``attention``). The math
        kernel (``sdpa_kernel(SDPBackend.MATH)``) runs as ``aten.bmm``: counted, but not here."""
        return sum(v for k, v in self.ops.items() if "attention" in k)

    def of(self, module: str) -> int:
        """FLOPs inside module ``module`` (0 when it did not run), e.g. ``of("ENAT")``."""
        return self.modules.get(module, 0)

    @staticmethod
    def from_counter(counter: FlopCounterMode) -> FlopCount:
        """Read a finished counter."""
        counts = counter.get_flop_counts()
        modules = {name: sum(ops.values()) for name, ops in counts.items() if name != "Global"}
        ops = {str(op): n for op, n in counts.get("Global", {}).items()}
        return FlopCount(total=counter.get_total_flops(), modules=modules, ops=ops)


def count_flops(fn: Callable[[], object]) -> FlopCount:
    """Run ``fn()`` once under :func:`flop_counter` and return what it counted."""
    with flop_counter() as counter:
        fn()
    return FlopCount.from_counter(counter)
