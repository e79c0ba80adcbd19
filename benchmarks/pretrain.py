"""Generator training step time, float32 against bfloat16 autocast, measured side by side in one run.

The step is the real one (``adanat.pretrain.generator.train_step``: batch, masks, the reuse path
through the EMA model with probability 0.5, forward, backward, AdamW, EMA) on an ENAT of the
``shapes`` size with random weights and random tokens, so no trained weights are needed. Both
precisions start from the same weights and draw the same batches; the rows alternate so that
other load on the machine falls on both alike.

    python benchmarks/pretrain.py            # batch 128, 3 rounds of 6 steps
    python benchmarks/pretrain.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from dataclasses import replace

import torch

from adanat.cli import resolve_device
from adanat.models.enat import ENAT
from adanat.precision import PRECISIONS
from adanat.presets import generator_config
from adanat.pretrain.generator import GeneratorTraining, make_optimizer, train_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="enat-shapes", help="generator preset (random weights)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=6, help="timed steps per precision and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny preset, batch 8, 2 steps, 1 round")
    args = p.parse_args()
    if args.quick:
        args.preset, args.batch_size, args.steps, args.rounds = "enat-shapes-tiny", 8, 2, 1
    device = resolve_device(args.device)
    torch.manual_seed(0)
    config = generator_config(args.preset)
    base = ENAT(config).to(device)
    data = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.codebook_size, (4096, config.grid**2), generator=data)  # (N, L)
    labels = torch.randint(0, config.num_classes, (4096,), generator=data)  # (N,)
    cfg = GeneratorTraining(batch_size=args.batch_size, steps=10_000, warmup=1)

    runs = {}
    for precision in PRECISIONS:
        model = copy.deepcopy(base).train()
        ema = copy.deepcopy(base).eval().requires_grad_(False)
        opt = make_optimizer(model, cfg)
        runs[precision] = (
            model,
            ema,
            opt,
            replace(cfg, precision=precision),
            torch.Generator().manual_seed(1),
        )

    def timed(precision: str, steps: int, start: int) -> tuple[float, float]:
        model, ema, opt, c, gen = runs[precision]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for i in range(steps):
            loss, _, _ = train_step(model, ema, opt, tokens, labels, c, gen, start + i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0, float(loss)

    seconds = {k: 0.0 for k in PRECISIONS}
    losses = {}
    for precision in PRECISIONS:  # warm-up: kernels, allocator, first reuse states
        timed(precision, 2, 0)
    for r in range(args.rounds):
        for precision in PRECISIONS:
            dt, losses[precision] = timed(precision, args.steps, 2 + r * args.steps)
            seconds[precision] += dt
    n = args.steps * args.rounds
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, device {device}")
    print(f"cpu capability: {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}")
    print(f"generator {args.preset}, batch {args.batch_size}, {n} steps per precision")
    print(f"{'precision':>10s} {'s/step':>8s} {'samples/s':>10s} {'last loss':>10s}")
    for precision in PRECISIONS:
        step = seconds[precision] / n
        print(f"{precision:>10s} {step:8.3f} {args.batch_size / step:10.1f} {losses[precision]:10.3f}")
    print(f"bfloat16 speed-up: {seconds['float32'] / seconds['bfloat16']:.2f}x")


if __name__ == "__main__":
    main()
