"""Generation cost, measured side by side in one run on the machine at hand.

Prints, per image at T steps with guidance (both branches):

* computation reuse vs no reuse on the same model: FLOPs and wall time, and how much of the
  FLOP saving shows up as wall-time speed-up (target >= 0.9);
* per-sample (ragged) schedules vs one shared schedule: FLOPs and wall time (target <= 1.10x),
  beside the per-row loop that ragged batching replaces;
* FLOPs of one ENAT-L in256 T=8 generation with guidance at batch 1 (random weights),
  generator and VQ decoder apart, next to the official model's counts and the paper's 0.3 TFLOPs.

FLOPs come from :func:`adanat.flops.count_flops`: ``torch.utils.flop_counter.FlopCounterMode``
with the CPU attention kernel counted (torch counts it as 0), 2 FLOPs per multiply-add; the MAC
column halves it (papers often call MACs "FLOPs").

The official ENAT-L in256 counts 0.507 TFLOPs with reuse, 0.890 without and 0.187 for the VQ
decoder. Ours are lower by the token head only: the official code computes logits at every
position, ours at the masked ones (the only ones a sampler reads), which saves 4.2 MFLOPs per
visible token, step and branch: 1,248 of them, 0.005 TFLOPs. ``large_flops`` prints that and the
sums, which match: 0.502 + 0.005 = 0.507 with reuse, 0.884 + 0.005 = 0.890 without (attention is
0.0105 and 0.0220 of those; torch's counter alone, which counts the CPU attention kernel as 0,
gave 0.492 and 0.862).

    python benchmarks/generation.py                # defaults: enat-s-in256, batch 8, T=8
    python benchmarks/generation.py --quick        # tiny model, for a smoke run
    python benchmarks/generation.py --throughput 16,64,256   # + ENAT-L images/s (GPU)

``--throughput`` adds images per second of ``--large-preset`` (ENAT-L in256 by default; random
weights), T=8 with guidance and the VQ decoder, at each batch size, in float32 and under
bfloat16 autocast.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch

from adanat.flops import FlopCount, count_flops
from adanat.models.enat import ENAT, ENATConfig
from adanat.models.vqgan import MaskGITVQGAN
from adanat.presets import generator_config, model_preset
from adanat.rng import row_rngs
from adanat.sampling import (
    Controller,
    Controls,
    Generation,
    GenerationState,
    NATSampler,
    ScheduleController,
)
from adanat.schedules import Schedule, load_schedule

PAPER_ENAT_L_T8_TFLOPS = 0.3
# the official ENAT-L in256 code's counts, guided T=8 at batch 1 (TFLOPs, 2 per multiply-add)
OFFICIAL_ENAT_L_TFLOPS = {"reuse": 0.507, "no reuse": 0.890, "decoder": 0.187}


class JitteredSchedule:
    """Per-sample controller: each row's mask ratios are the base ones shifted by its own offset,
    so rows carry different numbers of masked and newly revealed tokens at every step."""

    def __init__(self, base: Schedule, batch: int, spread: float, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        table = base.tensor().expand(batch, -1, -1).clone()  # (B, T, 4)
        offsets = (torch.rand(batch, 1, generator=gen) * 2 - 1) * spread  # (B, 1)
        table[:, :-1, 0] = (table[:, :-1, 0] + offsets).clamp(0.0, 0.99)
        self.table = table

    def __call__(self, state: GenerationState) -> Controls:
        rows = self.table[: state.ids.shape[0], state.step]  # (B, 4)
        return Controls.from_tensor(rows.to(state.ids.device))


def random_enat(name: str | ENATConfig, device: torch.device, seed: int = 0) -> ENAT:
    """An ENAT (preset name or config) with random weights and non-zero modulation (all paths active)."""
    torch.manual_seed(seed)
    model = ENAT(generator_config(name) if isinstance(name, str) else name)
    for block in model.blocks:
        torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.02)
    return model.eval().to(device)


def wall_times(
    cases: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Fastest of ``repeats`` rounds per case, after a warm-up round (the minimum is the least
    disturbed estimate for deterministic code on a shared machine); the cases are interleaved
    within each round so that drift hits them alike."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(repeats + 1):
        for k, fn in cases.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def run(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    model = random_enat(args.preset, device)
    cfg = model.config
    steps, b = args.steps, args.batch
    base = load_schedule("enat", steps=steps)
    shared = ScheduleController(base)
    ragged = JitteredSchedule(base, b, spread=args.spread, seed=1)
    labels = torch.arange(b, device=device) % cfg.num_classes

    def gen(controller: Controller, reuse: bool = True, rows: torch.Tensor = labels, off: int = 0):
        sampler = NATSampler(model, reuse=reuse)
        return sampler.generate(rows, controller, steps, row_rngs(0, len(rows), device, off))

    def per_row_loop():
        for r in range(b):
            row_ctrl = ScheduleController(_row_schedule(ragged, r))
            gen(row_ctrl, rows=labels[r : r + 1], off=r)

    cases = {
        "shared schedule, reuse": lambda: gen(shared),
        "shared schedule, no reuse": lambda: gen(shared, reuse=False),
        "per-sample schedules (ragged batch)": lambda: gen(ragged),
        "per-sample schedules (loop over rows)": per_row_loop,
    }
    flops = {k: count_flops(fn).total / b for k, fn in cases.items()}
    times = {k: t / b for k, t in wall_times(cases, args.repeats, device).items()}

    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"device {device}{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, "
        f"torch {torch.__version__}"
    )
    print(
        f"model: {args.preset} (random weights), batch {b}, T={steps}, guidance on (2 branches), "
        f"ragged mask-ratio spread +-{args.spread}"
    )
    print()
    print(f"{'case':40s} {'GFLOPs/img':>11s} {'GMACs/img':>10s} {'ms/img':>9s}")
    for k in cases:
        print(f"{k:40s} {flops[k] / 1e9:11.3f} {flops[k] / 2e9:10.3f} {times[k] * 1e3:9.1f}")
    print()
    flop_ratio = flops["shared schedule, no reuse"] / flops["shared schedule, reuse"]
    speedup = times["shared schedule, no reuse"] / times["shared schedule, reuse"]
    print(
        f"reuse: FLOP ratio (no reuse / reuse) {flop_ratio:.2f}x, wall-time speed-up {speedup:.2f}x, "
        f"speed-up / FLOP ratio {speedup / flop_ratio:.2f} (target >= 0.90)"
    )
    ragged_ratio = times["per-sample schedules (ragged batch)"] / times["shared schedule, reuse"]
    loop_ratio = times["per-sample schedules (loop over rows)"] / times["shared schedule, reuse"]
    ragged_flops = flops["per-sample schedules (ragged batch)"] / flops["shared schedule, reuse"]
    print(
        f"ragged: time vs shared schedule {ragged_ratio:.2f}x (target <= 1.10), "
        f"FLOPs vs shared {ragged_flops:.2f}x; "
        f"per-row loop {loop_ratio:.2f}x"
    )

    if args.quick:
        print("(--quick: a tiny model, where per-op overhead dominates; the targets are for the default run)")
    if not args.skip_large:
        print()
        large = large_flops(args.large_preset, device)[0]
        print()
        uvit_cost(args.uvit_preset, device, max(1, args.repeats // 2), large["reuse"].of("ENAT"))


def uvit_cost(name: str, device: torch.device, repeats: int, enat_flops: int | None = None) -> FlopCount:
    """FLOPs and time per image of a U-ViT NAT preset (AutoNAT-L in256 by default; random weights),
    guided T=8 at batch 1 with ``autonat-l-t8`` (AutoNAT's rule), beside ENAT-L's FLOPs: it runs
    the whole sequence at every step, context token included, where ENAT encodes the new tokens."""
    from adanat.models.uvit import UViTNAT

    preset = model_preset(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = UViTNAT(preset.generator).eval().to(device)
    schedule = ScheduleController(load_schedule("autonat-l-t8", steps=8))
    labels = torch.tensor([207 % (model.num_classes or 1)], device=device)  # (1,)

    def once() -> Generation:
        return NATSampler(model).generate(labels, schedule, 8, row_rngs(0, 1, device))

    with torch.no_grad():
        count = count_flops(once)
        seconds = wall_times({"uvit": once}, repeats, device)["uvit"]
    flops = count.of("UViTNAT")
    beside = "" if enat_flops is None else f"; {flops / enat_flops:.2f}x ENAT-L's with reuse"
    print(
        f"{name}, T=8, guidance, batch 1 (random weights): generator {flops / 1e12:.3f} TFLOPs "
        f"(attention {count.attention / 1e12:.4f}), {1e3 * seconds:.0f} ms/image on {device.type}{beside}"
    )
    return count


def _row_schedule(ctrl: JitteredSchedule, row: int) -> Schedule:
    t = ctrl.table[row]
    return Schedule("row", *(tuple(t[:, j].tolist()) for j in range(4)))


def preset_models(name: str, device: torch.device) -> tuple[ENAT, MaskGITVQGAN, ScheduleController, int]:
    """Model preset ``name`` with random weights: generator, tokenizer, its ENAT sampler at T=8
    and the token grid side."""
    preset = model_preset(name)
    model = random_enat(preset.generator, device)
    tokenizer = MaskGITVQGAN(preset.tokenizer).eval().to(device)
    schedule = ScheduleController(load_schedule("enat", steps=8, variant=preset.enat_variant))
    return model, tokenizer, schedule, preset.generator.grid


def head_flops_per_token(config: ENATConfig) -> int:
    """FLOPs of the token head at one position: ``fc`` (D x D) and the tied word table (D x (K+1))."""
    d = config.width
    return 2 * d * d + 2 * d * (config.codebook_size + 1)


def large_flops(name: str, device: torch.device) -> tuple[dict[str, FlopCount], dict[str, Generation]]:
    """FLOPs of one guided T=8 generation at batch 1 with random weights, generator and decoder
    apart, beside the official code's counts (which run the head at every position).

    :return: the counts (``reuse``, ``no reuse``, ``decoder``) and the two generations.
    """
    model, tokenizer, schedule, grid = preset_models(name, device)
    labels = torch.tensor([207 % model.config.num_classes], device=device)  # (1,)
    out: dict[str, Generation] = {}
    top = type(model).__name__

    def gen_once(reuse: bool) -> Generation:
        return NATSampler(model, reuse=reuse).generate(labels, schedule, 8, row_rngs(0, 1, device))

    gen = count_flops(lambda: out.setdefault("reuse", gen_once(True)))
    dec = count_flops(lambda: tokenizer.decode(out["reuse"].ids.reshape(1, grid, grid)))
    noreuse = count_flops(lambda: out.setdefault("no reuse", gen_once(False)))
    rows = {
        "generator (reuse)": (gen.of(top), gen.attention, OFFICIAL_ENAT_L_TFLOPS["reuse"]),
        "generator (no reuse)": (noreuse.of(top), noreuse.attention, OFFICIAL_ENAT_L_TFLOPS["no reuse"]),
        # ``decode`` is not ``forward``: the counter names the decoder's top module ``Decoder``
        "VQ decoder": (dec.total, dec.attention, OFFICIAL_ENAT_L_TFLOPS["decoder"]),
    }
    total = gen.of(top) + dec.total
    print(f"{name}, T=8, guidance, batch 1 (random weights), attention included:")
    print(f"  {'':22s} {'TFLOPs':>7s} {'TMACs':>7s} {'attention':>9s} {'official':>8s}")
    for k, (f, att, off) in rows.items():
        print(f"  {k:22s} {f / 1e12:7.3f} {f / 2e12:7.3f} {att / 1e12:9.4f} {off:8.3f}")
    print(
        f"  {'total':22s} {total / 1e12:7.3f} {total / 2e12:7.3f} "
        f"(paper: {PAPER_ENAT_L_T8_TFLOPS} TFLOPs with the VQ decoder)"
    )
    per_token = head_flops_per_token(model.config)
    print(
        f"  head ({per_token / 1e6:.2f} MFLOPs a token): official at every position, ours at masked ones; "
        "ours + visible ones:"
    )
    for k in ("reuse", "no reuse"):
        # visible positions at each step's input, both branches: where only the official head runs
        visible = 2 * int((model.config.seq_len - out[k].num_masked[:, :-1]).sum())
        ours = rows[f"generator ({k})"][0]
        print(
            f"    {k:8s} {ours / 1e12:.3f} + {visible} visible tokens (steps x branches) "
            f"x {per_token / 1e6:.2f} MFLOPs = {(ours + visible * per_token) / 1e12:.3f} TFLOPs "
            f"(official {OFFICIAL_ENAT_L_TFLOPS[k]:.3f})"
        )
    return {"reuse": gen, "no reuse": noreuse, "decoder": dec}, out


def throughput(name: str, batches: list[int], device: torch.device, repeats: int) -> None:
    """Images per second of a guided T=8 generation plus VQ decoding with model preset ``name``
    (random weights), per batch size and precision."""
    model, tokenizer, schedule, _ = preset_models(name, device)

    def images(b: int, precision: str) -> Callable[[], object]:
        labels = torch.arange(b, device=device) % model.config.num_classes  # (B,)

        def fn() -> object:  # the library's path: --precision of sample, eval, train_policy
            gens = row_rngs(0, b, device)
            sampler = NATSampler(model, tokenizer, precision)
            return sampler.generate(labels, schedule, 8, gens).images

        return fn

    print(f"{name}, T=8, guidance, VQ decoding included (random weights): images/s")
    print(f"{'batch':>6s} {'float32':>9s} {'bf16 autocast':>14s}")
    for b in batches:
        cases = {"fp32": images(b, "float32"), "bf16": images(b, "bfloat16")}
        t = wall_times(cases, repeats, device)
        print(f"{b:6d} {b / t['fp32']:9.1f} {b / t['bf16']:14.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="enat-s-in256", help="generator preset for the timing table")
    p.add_argument("--large-preset", default="enat-l-in256")
    p.add_argument("--uvit-preset", default="autonat-l-in256", help="U-ViT NAT preset beside ENAT-L")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--spread", type=float, default=0.05, help="per-row mask-ratio jitter")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-large", action="store_true", help="skip the ENAT-L FLOP count")
    p.add_argument("--quick", action="store_true", help="tiny model, one repeat, no ENAT-L")
    p.add_argument("--throughput", default=None, metavar="B1,B2,..", help="--large-preset images/s")
    args = p.parse_args()
    if args.quick:
        args.preset, args.repeats, args.skip_large, args.batch = "enat-tiny", 1, True, 4
    run(args)
    if args.throughput:
        print()
        batches = [int(b) for b in args.throughput.split(",")]
        throughput(args.large_preset, batches, torch.device(args.device), max(1, args.repeats // 2))


if __name__ == "__main__":
    main()
