"""``scripts/shapes_report.py --from-json``: rewrites the text from earlier numbers, refuses others."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "shapes_report.py"
SHIPPED = ROOT / "docs" / "shapes_metrics.json"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


@pytest.mark.e2e
def test_from_json_rewrites_the_report_from_numbers_of_the_shipped_weights(tmp_path):
    out = run("--from-json", str(SHIPPED), "--docs", str(tmp_path))
    assert out.returncode == 0, out.stderr
    doc = (tmp_path / "shapes.md").read_text()
    enat = json.loads(SHIPPED.read_text())["rows"]["enat T=8"]
    assert f"| enat T=8 | {enat['frechet_inception_distance']:.3f} |" in doc
    assert "continuing the weights" in doc  # the generator's chain of starts
    # training time is counted apart for runs off the CPU, each named with its device
    entry = json.loads((ROOT / "adanat" / "assets" / "shapes" / "manifest.json").read_text())["models"]
    entry, devices = entry["generator"], set()
    while entry:
        devices |= {entry["device"]} if "device" in entry else set()
        entry = entry.get("init", {})
    for device in devices:
        assert f" s on {device} |" in doc and f"` on {device}" in doc
    assert json.loads((tmp_path / "shapes_metrics.json").read_text()) == json.loads(SHIPPED.read_text())


@pytest.mark.e2e
def test_from_json_refuses_numbers_of_other_weights_with_one_line(tmp_path):
    data = json.loads(SHIPPED.read_text())
    data["weights"]["generator"] = "0" * 64
    (tmp_path / "old.json").write_text(json.dumps(data))
    (tmp_path / "shapes.md").write_text("kept")
    out = run("--from-json", str(tmp_path / "old.json"), "--docs", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "not measured on the shipped weights" in out.stderr
    assert (tmp_path / "shapes.md").read_text() == "kept"
    data = json.loads(SHIPPED.read_text())
    del data["rows"]
    (tmp_path / "cut.json").write_text(json.dumps(data))
    cut = run("--from-json", str(tmp_path / "cut.json"), "--docs", str(tmp_path))
    assert cut.returncode == 2 and "needs n, seed, rows" in cut.stderr
    assert (tmp_path / "shapes.md").read_text() == "kept"
    missing = run("--from-json", str(tmp_path / "nope.json"), "--docs", str(tmp_path))
    assert missing.returncode == 2 and missing.stderr.startswith("error: --from-json")
