"""``scripts/scaling.py``: the report of the scaling study from its evaluations and legs."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import load_script

SCRIPT = Path(__file__).parents[1] / "scripts" / "scaling.py"


def _eval(path: Path, fid: float, recall: float) -> None:
    metrics = {"frechet_inception_distance": fid, "recall": recall, "precision": 0.3, "class_accuracy": 0.9}
    path.write_text(json.dumps({"metrics": metrics}))


def test_report_gives_the_fid_ratio_to_the_best_fixed_schedule_per_milestone(tmp_path):
    scaling = load_script(SCRIPT)
    work, docs = tmp_path / "work", tmp_path / "docs"
    (work / "eval").mkdir(parents=True)
    _eval(work / "eval" / "t8-enat.json", 2.20, 0.85)
    _eval(work / "eval" / "t8-autonat-shapes-t8.json", 2.00, 0.84)  # the best fixed one
    _eval(work / "eval" / "t8-epu512-seed0-best-16384.json", 1.90, 0.84)
    _eval(work / "eval" / "t8-epu512-seed0-best-40960.json", 1.60, 0.85)
    leg = {"milestone": 16384, "seconds": 60, "machine": "test cpu, 2 cores", "device": "cpu", "command": "x"}
    (work / "runs.json").write_text(json.dumps({"t8-epu512-seed0": [leg]}))
    args = ["--stage", "report", "--steps", "8", "--epu", "512", "--seeds", "0", "--work", str(work)]
    assert scaling.main([*args, "--docs", str(docs), "--milestones", "16384", "40960"]) == 0
    text = (docs / "scaling.md").read_text()
    assert "Best fixed schedule: `autonat-shapes-t8`, FID 2.000, recall 0.840." in text
    assert "| t8-epu512-seed0 | 16,384 | 1.900 | 0.950x | 0.840 |" in text
    assert "| t8-epu512-seed0 | 40,960 | 1.600 | 0.800x | 0.850 |" in text
    assert "| t8-epu512-seed0 | 16,384 | 60 | test cpu, 2 cores | `x` |" in text
    assert (docs / "scaling.png").stat().st_size > 1000
