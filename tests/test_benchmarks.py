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
