"""Smoke test of ``benchmarks/generation.py``: the quick table and the images/s table run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "generation.py"


def test_generation_benchmark_quick_with_throughput():
    args = ["--quick", "--device", "cpu", "--large-preset", "tiny", "--throughput", "1,2"]
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "reuse: FLOP ratio" in out.stdout
    rows = out.stdout.split("images/s")[1].strip().splitlines()[1:]  # after the header line
    assert [int(r.split()[0]) for r in rows] == [1, 2]
    assert all(float(v) > 0 for r in rows for v in r.split()[1:])


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
