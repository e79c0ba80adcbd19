"""Smoke test of ``scripts/results.py``: the eval and report stages on the fixed schedules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_script

SCRIPT = Path(__file__).parents[1] / "scripts" / "results.py"


@pytest.mark.e2e
def test_eval_and_report_stages(tmp_path):
    work, grids, doc = tmp_path / "work", tmp_path / "grids", tmp_path / "results.md"
    common = ["--work", str(work), "--grids", str(grids), "--doc", str(doc), "--n", "20"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outputs = {}
    for stage in ("eval", "report"):
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "--stage", stage, *common], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs[stage] = done.stdout
    # fixed schedules are evaluated; searched schedules and policies not there yet are skipped
    assert sorted(p.name for p in (work / "eval").iterdir()) == [
        "t4-autonat-shapes-t4.json", "t4-cosine.json", "t4-enat.json", "t8-autonat-l-t8.json",
        "t8-autonat-shapes-t8.json", "t8-cosine.json", "t8-enat.json",
    ]  # fmt: skip
    assert "skipping adanat-adversarial-seed0 at T=4" in outputs["eval"]
    assert "skipping adanat-classifier-seed0 at T=8" in outputs["eval"]
    report = json.loads((work / "eval" / "t8-enat.json").read_text())
    assert report["config"]["n"] == 20 and report["config"]["steps"] == 8
    text = doc.read_text()
    assert "## T = 4" in text and "## T = 8" in text
    fid = report["metrics"]["frechet_inception_distance"]
    assert f"| enat | {fid:.2f} |" in text
    assert (grids / "t8-autonat-l-t8.png").stat().st_size > 0
    # finished evaluations are not run again
    again = subprocess.run(
        [sys.executable, str(SCRIPT), "--stage", "eval", *common], capture_output=True, text=True, env=env
    )
    assert again.returncode == 0 and "adanat eval" not in again.stdout


def test_policy_rows_wait_for_finished_runs_and_use_the_selected_policy(tmp_path):
    results = load_script(SCRIPT)
    run = results.policy_dir(tmp_path, 4, "adversarial", 0)
    (run / "checkpoint").mkdir(parents=True)
    (run / "policy").mkdir()
    state = {"episodes": 256, "config": {"episodes": 512}}
    (run / "checkpoint" / "state.json").write_text(json.dumps(state))
    assert not results.trained_policy(run).is_dir()  # unfinished: skipped by the eval stage
    state["episodes"] = 512
    (run / "checkpoint" / "state.json").write_text(json.dumps(state))
    assert results.trained_policy(run) == run / "policy"  # no selection kept: the final policy
    (run / "best").mkdir()
    (run / "best.json").write_text(json.dumps({"fid": 2.5, "base_fid": 3.0, "updates": 32, "images": 1000}))
    assert results.trained_policy(run) == run / "best"
    rows = {name: policy for name, policy, _ in results.rows(tmp_path, 4)}
    assert rows["adanat-adversarial-seed0"] == str(run / "best")
    text = results._selection([{"config": {"policy": str(run / "best")}}])
    assert "`policy-t4-adversarial-seed0` update 32 (selection FID 2.50, base 3.00, 1000 images)" in text


def test_policy_rows_name_their_training_settings(tmp_path):
    results = load_script(SCRIPT)
    config = {
        "env": {
            "reward": "adversarial",
            "action_scale": 1.0,
            "reward_options": {"discriminator": {"updates_per_round": 20}, "minibatch_std": 4},
        },
        "episodes": 16384,
        "episodes_per_update": 128,
        "std_schedule": [[0, 0.6], [32, 0.3], [500, 0.1]],
        "action_cost": 0.0,
    }
    reports = []
    for seed in (0, 1):
        run = results.policy_dir(tmp_path, 4, "adversarial", seed)
        (run / "checkpoint").mkdir(parents=True)
        (run / "checkpoint" / "state.json").write_text(json.dumps({"episodes": 16384, "config": config}))
        reports.append({"config": {"policy": str(run / "best")}})
    text = results._settings(reports)  # the seeds share their settings: named once
    assert text == (
        "Training settings: 16,384 episodes (128 PPO updates), action scale 1.0, exploration std 0.6 "
        "from update 0, 0.3 from update 32, 0.1 from update 500 (not reached), action cost 0.0, "
        "20 discriminator updates a round, minibatch-std groups 4."
    )
    config["env"] = {**config["env"], "reward": "classifier"}
    state = results.policy_dir(tmp_path, 4, "adversarial", 1) / "checkpoint" / "state.json"
    state.write_text(json.dumps({"episodes": 16384, "config": config}))
    first, second = results._settings(reports).split("; ")  # they differ now: both named
    assert "discriminator" in first and "discriminator" not in second and second.endswith("action cost 0.0.")
