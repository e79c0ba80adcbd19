"""Smoke test of ``benchmarks/generation.py``: the quick table and the images/s table run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "generation.py"


@pytest.mark.e2e
def test_generation_benchmark_quick_with_throughput():
    args = ["--quick", "--device", "cpu", "--large-preset", "tiny", "--throughput", "1,2"]
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "reuse: FLOP ratio" in out.stdout
    rows = out.stdout.split("images/s")[1].strip().splitlines()[1:]  # after the header line
    assert [int(r.split()[0]) for r in rows] == [1, 2]
    assert all(float(v) > 0 for r in rows for v in r.split()[1:])


def test_large_flops_count_attention_and_head(capsys):
    """The ENAT-L FLOP lines on the tiny preset: attention counted, the head formula exact."""
    bench = load_script(SCRIPT)
    with torch.no_grad():
        counts, gens = bench.large_flops("tiny", torch.device("cpu"))
    assert "official" in capsys.readouterr().out
    for k in ("reuse", "no reuse"):
        assert counts[k].attention > 0 and counts[k].of("ENAT") == counts[k].total
        # our head runs at masked positions of both branches: tokens x the per-token formula
        masked = 2 * int(gens[k].num_masked[:, :-1].sum())
        cfg = bench.model_preset("tiny").generator
        assert counts[k].of("ENAT.mlm_layer") == masked * bench.head_flops_per_token(cfg)
    assert counts["no reuse"].total > counts["reuse"].total
    assert counts["decoder"].total > 0 and counts["decoder"].attention == 0


@pytest.mark.e2e
def test_pretrain_benchmark_quick():
    script = SCRIPT.parent / "pretrain.py"
    out = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    table = [r.split() for r in out.stdout.splitlines()]
    rows = {r[0]: r[1:] for r in table if len(r) == 4 and r[0] in ("float32", "bfloat16")}
    assert set(rows) == {"float32", "bfloat16"}
    assert all(float(v) > 0 for v in rows["float32"][:2] + rows["bfloat16"][:2])
    assert "bfloat16 speed-up:" in out.stdout


@pytest.mark.e2e
def test_rollout_benchmark_quick():
    """The rollout benchmark runs the trained policy's construction (make_ppo) on the env core."""
    script = SCRIPT.parent / "rollout.py"
    out = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    cases = [line.split()[0] for line in out.stdout.splitlines() if line.endswith("x") and "ms" not in line]
    assert "bare" in cases and "rollout," in cases
    assert "policy FLOPs (actor + critic, every step)" in out.stdout


def test_uvit_cost_counts_the_whole_sequence_every_step(capsys):
    """The U-ViT row: every step runs all tokens of both branches (no reuse), attention included."""
    bench = load_script(SCRIPT)
    count = bench.uvit_cost("uvit-tiny", torch.device("cpu"), 1, enat_flops=10**9)
    assert "uvit-tiny, T=8" in capsys.readouterr().out
    assert count.attention > 0 and count.of("UViTNAT") == count.total
    cfg = bench.model_preset("uvit-tiny").generator
    qkv_per_token = 2 * cfg.width * 3 * cfg.width  # one block's qkv projection, per token
    tokens = 2 * 8 * (cfg.seq_len + 1)  # both branches, 8 steps, the class token included
    assert count.of("UViTNAT.in_blocks.0.attn.qkv") == tokens * qkv_per_token


def _shares(block: str) -> dict[str, tuple[float, float]]:
    """``{phase: (seconds, share %)}`` of one breakdown table (its lines up to ``total`` included)."""
    out = {}
    for line in block.splitlines()[1:]:
        m = re.fullmatch(r"(.+?)\s+([\d.]+) \(\s*([\d.]+)%\)", line.strip())
        assert m, line
        out[m.group(1)] = (float(m.group(2)), float(m.group(3)))
        if m.group(1) == "total":
            return out
    raise AssertionError("no total line")


@pytest.mark.e2e
def test_training_benchmark_quick():
    """The real training step (shipped shapes weights) against bare generation: the table is sane."""
    script = SCRIPT.parent / "training.py"
    # one thread: two threads on two shared cores made this run 10x slower (OpenMP workers spin)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("machine: ") and "torch" in lines[0] and "threads" in lines[0]
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["row", "episodes/update"])
    row = lines[head + 1].split()
    assert row[:4] == ["1", "16", "8", "256"] and row[4] == "float32"
    loop, bare, ratio, replay, ratio_replay = (float(v) for v in row[-5:])
    assert loop > 0 and bare > 0 and replay > 0 and 0 < ratio <= 2 and 0 < ratio_replay <= 2
    assert ratio == pytest.approx(loop / bare, abs=0.01)
    assert ratio_replay == pytest.approx(loop / replay, abs=0.01)
    text = out.stdout
    phases = _shares(text[text.index("loop, s per update (share)") :])
    assert {"generator forwards", "policy forwards", "PPO backward + loss", "discriminator round"} <= set(
        phases
    )
    assert {"evaluation", "FID selection", "checkpoint"} <= set(phases)
    total = phases.pop("total")[0]
    assert sum(share for _, share in phases.values()) == pytest.approx(100, abs=1.0)
    assert sum(s for s, _ in phases.values()) == pytest.approx(total, rel=0.01, abs=0.005)
    assert total == pytest.approx(16 / loop, rel=0.02)  # episodes per update / episodes per second
    for title, rate in (("bare", bare), ("bare*", replay)):
        bare_phases = _shares(text[text.index(f"{title}, s per update (share)") :])
        assert "generator forwards" in bare_phases and "decode" in bare_phases
        assert bare_phases.pop("total")[0] == pytest.approx(16 / rate, rel=0.02)
        assert sum(share for _, share in bare_phases.values()) == pytest.approx(100, abs=1.0)
