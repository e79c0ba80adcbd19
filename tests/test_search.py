"""AutoNAT schedule search: parameterisation, the SGD update, resuming, and the CLI."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from adanat.cli import main
from adanat.schedules import Schedule, cosine_schedule, load_schedule
from adanat.search import (
    SearchConfig,
    SearchError,
    SearchState,
    clamp,
    parameter_names,
    probe_sizes,
    probe_steps,
    run_search,
    schedule_to_vector,
    vector_to_schedule,
    write_results,
)


def test_vector_round_trip_and_sizes():
    s = cosine_schedule(4)
    theta = schedule_to_vector(s)
    assert len(theta) == len(parameter_names(4)) == 4 * 4 - 2
    assert parameter_names(2) == [
        "mask_ratio[0]",
        "remask_temp[0]",
        *[f"{g}[{k}]" for g in ("sampling_temp", "guidance") for k in (0, 1)],
    ]
    back = vector_to_schedule(theta, 4, "cosine")
    assert back == s


def test_clamp_and_probes():
    theta = [1.5, -0.2, -3.0, 0.0, 2.0, -1.0]  # T=2: ratio, remask, 2 sampling, 2 guidance
    assert clamp(theta, 2) == [0.99, 1e-4, 1e-4, 1e-4, 2.0, 1e-4]
    assert probe_sizes(SearchConfig(steps=2), tokens=64)[:2] == [1 / 64, 0.1]
    assert probe_sizes(SearchConfig(steps=2), tokens=256)[0] == 0.01
    deltas = probe_sizes(SearchConfig(steps=3), tokens=64)
    theta = [0.99, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]  # T=3
    assert probe_steps(theta, deltas, 3) == [-1 / 64, 1 / 64, *[0.1] * 8]


def test_a_ratio_at_its_bound_is_probed_backwards(tmp_path):
    cfg = SearchConfig(steps=2, updates=1, lr_ratio=0.05, lr_other=0.05)
    target = [0.5, 1.0, 2.0, 1.5, 0.5, 2.0]
    calls: list[Schedule] = []
    start = SearchState(config=asdict(cfg), theta=[0.99, 1.0, 1.0, 1.0, 0.0, 0.0], velocity=[0.0] * 6)
    start.save(tmp_path)
    state = run_search(cfg, tmp_path, _quadratic(target, calls), tokens=64)
    d = 1 / 64
    assert schedule_to_vector(calls[1])[0] == pytest.approx(0.99 - d)  # a valid schedule below the bound
    backward = 2 * (0.99 - 0.5) - d  # (f(0.99 - d) - f(0.99)) / -d for the quadratic
    assert state.theta[0] == pytest.approx(0.99 - 0.05 * backward)


def _quadratic(target: list[float], calls: list[Schedule]):
    def fid(schedule: Schedule) -> float:
        calls.append(schedule)
        theta = schedule_to_vector(schedule)
        return 10.0 + sum((a - b) ** 2 for a, b in zip(theta, target, strict=True))

    return fid


def test_one_update_is_forward_differences_with_momentum(tmp_path):
    cfg = SearchConfig(steps=2, updates=2, lr_ratio=0.05, lr_other=0.05, momentum=0.5)
    start = clamp(schedule_to_vector(cosine_schedule(2)), 2)
    target = [0.3, 1.0, 2.0, 1.5, 0.5, 2.0]
    calls: list[Schedule] = []
    state = run_search(cfg, tmp_path, _quadratic(target, calls), tokens=64)
    assert len(calls) == 2 * (1 + 6)  # a base point and one probe per parameter, per update
    deltas = probe_sizes(cfg, 64)
    g0 = [2 * (p - t) + d for p, t, d in zip(start, target, deltas, strict=True)]  # exact forward difference
    theta1 = [p - 0.05 * g for p, g in zip(start, g0, strict=True)]
    assert state.log[1]["theta"] == pytest.approx(theta1)
    g1 = [2 * (p - t) + d for p, t, d in zip(theta1, target, deltas, strict=True)]
    v1 = [0.5 * a + b for a, b in zip(g0, g1, strict=True)]
    assert state.theta == pytest.approx(clamp([p - 0.05 * v for p, v in zip(theta1, v1, strict=True)], 2))
    assert state.log[1]["fid"] < state.log[0]["fid"]
    assert state.best["update"] == 1


class _Stop(Exception):
    pass


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    cfg = SearchConfig(steps=2, updates=3, lr_ratio=0.05, lr_other=0.05)
    target = [0.3, 1.0, 2.0, 1.5, 0.5, 2.0]
    whole = run_search(cfg, tmp_path / "a", _quadratic(target, []), tokens=64)

    calls: list[Schedule] = []
    quad = _quadratic(target, calls)

    def flaky(schedule: Schedule) -> float:
        if len(calls) == 10:  # stop in the middle of the second update
            raise _Stop
        return quad(schedule)

    with pytest.raises(_Stop):
        run_search(cfg, tmp_path / "b", flaky, tokens=64)
    saved = SearchState.load(tmp_path / "b")
    assert saved.update == 1 and len(saved.probes) == 10 - 7 - 1
    resumed = run_search(cfg, tmp_path / "b", _quadratic(target, calls), tokens=64)
    assert len(calls) == 3 * 7  # nothing measured twice
    assert resumed.theta == whole.theta and resumed.log == [
        {**e, "seconds": r["seconds"]} for e, r in zip(whole.log, resumed.log, strict=True)
    ]
    with pytest.raises(SearchError, match="other settings"):
        run_search(SearchConfig(steps=2, updates=3, seed=5), tmp_path / "b", quad, tokens=64)


def test_write_results_picks_lowest_fid(tmp_path):
    cfg = SearchConfig(steps=2, updates=2, lr_ratio=0.05, lr_other=0.05, name="autonat-test-t2")
    state = run_search(cfg, tmp_path, _quadratic([0.3, 1.0, 2.0, 1.5, 0.5, 2.0], []), tokens=64)
    sched_path, log_path = write_results(state, tmp_path, "test")
    s = load_schedule(sched_path, steps=2)
    assert schedule_to_vector(s) == pytest.approx(state.best["theta"])
    assert [e["update"] for e in json.loads(log_path.read_text())["updates"]] == [0, 1]


def test_cli_search_runs_and_continues(tmp_path, capsys):
    out = tmp_path / "search"
    args = [
        "search",
        "--steps",
        "2",
        "--samples",
        "20",
        "--batch-size",
        "20",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert main([*args, "--updates", "1"]) == 0
    first = json.loads((out / "log.json").read_text())["updates"]
    # off a terminal, one line per FID (T=2: 4T-1 = 7 measurements per update)
    printed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("search ")]
    assert [ln.split(" elapsed ")[0] for ln in printed] == [f"search {i}/7" for i in range(1, 8)]
    assert printed[0].endswith(f"fid update 0: base {first[0]['fid']:.3f}")
    assert len(first) == 1 and first[0]["fid"] > 0
    assert main([*args, "--updates", "2"]) == 0  # continues from the saved state
    second = json.loads((out / "log.json").read_text())["updates"]
    assert len(second) == 2 and second[0]["fid"] == first[0]["fid"]
    schedule = load_schedule(out / "schedule.json", steps=2)
    assert schedule.name == "autonat-shapes-t2"
    assert main([*args, "--updates", "2", "--seed", "3"]) == 2  # another setting, same folder
    assert main(["search", "--steps", "1", "--out", str(tmp_path / "x")]) == 2
    assert main(["search", "--lr-ratio", "nan", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("adanat search: error:") for e in err)


def test_a_search_for_a_release_rule_measures_and_keeps_that_rule(tmp_path):
    """``--rule autonat``: every FID of the search is of a schedule with AutoNAT's token-selection
    rule, and the written schedule carries it (the default stays ours)."""
    cfg = SearchConfig(steps=2, updates=1, rule="autonat")
    calls: list[Schedule] = []
    state = run_search(cfg, tmp_path, _quadratic([0.3, 1.0, 2.0, 1.5, 0.5, 2.0], calls), tokens=64)
    assert len(calls) == 7 and {s.rule for s in calls} == {"autonat"}
    sched_path, _ = write_results(state, tmp_path, "test")
    assert load_schedule(sched_path, steps=2).rule == "autonat"
    assert SearchConfig().rule == "enat"
    with pytest.raises(SearchError, match="unknown token-selection rule"):
        SearchConfig(rule="maskgit")
