"""Schedules: the published numbers, the formulas, JSON round trips and bad input."""

from __future__ import annotations

import json
import math

import pytest
from helpers import DATA

from adanat.schedules import (
    Schedule,
    ScheduleError,
    builtin_schedule_names,
    cosine_schedule,
    load_schedule,
)


def test_builtins_are_listed():
    assert {"cosine", "enat", "autonat-l-t8"} <= set(builtin_schedule_names())


def test_autonat_matches_the_published_strategy():
    published = json.loads((DATA / "schedules.json").read_text())["autonat_l_t8"]
    s = load_schedule("autonat-l-t8", steps=8)
    assert s.steps == 8
    assert list(s.mask_ratio) == [*published["mask_ratio"], 0.0]
    assert list(s.remask_temp) == [*published["remask_temp"], 0.0]
    assert list(s.sampling_temp) == published["sampling_temp"]
    assert list(s.guidance) == published["cfg_scale"]


def test_autonat_refuses_other_step_counts():
    with pytest.raises(ScheduleError, match="8 steps only"):
        load_schedule("autonat-l-t8", steps=4)


@pytest.mark.parametrize(("variant", "cfg", "samp"), [("in256", 2.5, 6.0), ("in512", 3.5, 4.0)])
def test_enat_sampler_formula(variant, cfg, samp):
    s = load_schedule("enat", steps=8, variant=variant)
    for k in range(8):
        r = (k + 1) / 8
        if k < 7:
            assert s.mask_ratio[k] == pytest.approx(math.cos(math.pi / 2 * r))
        assert s.remask_temp[k] == pytest.approx(1.5 * (1 - r))
        assert s.sampling_temp[k] == pytest.approx(max(samp * (1 - r), 1e-3))
        assert s.guidance[k] == pytest.approx(cfg * k / 8)
    assert s.mask_ratio[-1] == 0.0 and s.guidance[0] == 0.0


def test_cosine_any_steps():
    for t in (1, 4, 12):
        s = load_schedule("cosine", steps=t)
        assert s.steps == t and s.mask_ratio[-1] == 0.0
        assert all(a > b for a, b in zip(s.mask_ratio[:-1], s.mask_ratio[1:], strict=True))


def test_json_round_trip(tmp_path):
    s = cosine_schedule(5)
    path = tmp_path / "s.json"
    s.save(path)
    data = json.loads(path.read_text())
    assert len(data["mask_ratio"]) == 4 and len(data["guidance"]) == 5
    assert load_schedule(path, steps=5) == s
    assert load_schedule(path) == s
    with pytest.raises(ScheduleError, match="5 steps only"):
        load_schedule(path, steps=6)


def test_tensor_layout():
    s = load_schedule("autonat-l-t8", steps=8)
    t = s.tensor()
    assert t.shape == (8, 4)
    assert t[0, 0].item() == pytest.approx(s.mask_ratio[0])
    assert t[7, 3].item() == pytest.approx(s.guidance[7])


def _fixed(**change: object) -> str:
    """A valid two-step fixed schedule's JSON with ``change`` applied."""
    data = {"kind": "fixed", "steps": 2, "mask_ratio": [0.5], "remask_temp": [1.0]}
    data |= {"sampling_temp": [1.0, 1.0], "guidance": [0.0, 2.0], **change}
    return json.dumps(data)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"kind": "fixed", "sampling_temp": [1, 1]}', "missing field 'mask_ratio'"),
        ('{"kind": "nope"}', "unknown kind"),
        (
            '{"mask_ratio": [1.5], "remask_temp": [1], "sampling_temp": [1, 1], "guidance": [0, 0]}',
            r"\[0, 1\)",
        ),
        (
            '{"mask_ratio": [0.5], "remask_temp": [1], "sampling_temp": [1, 0], "guidance": [0, 0]}',
            r"sampling_temp must lie in \(0, 1000\]",
        ),
        (_fixed(guidance=[0, "2"]), "guidance must be a number, got '2'"),
        (_fixed(guidance=[0, None]), "guidance must be a number, got None"),
        (_fixed(extra=1), "unknown key 'extra'"),
        (_fixed(steps=2.7), "steps must be a whole number >= 1, got 2.7"),
        (_fixed(guidance=[0, -50]), r"guidance must lie in \[0, 100\]"),
        (_fixed(sampling_temp=[1e38, 1]), r"sampling_temp must lie in \(0, 1000\]"),
        (_fixed(remask_temp=[1e38]), r"remask_temp must lie in \[0, 1000\]"),
        (_fixed(mask_ratio=True), "mask_ratio must be a list of numbers"),
    ],
)
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ScheduleError, match=match):
        load_schedule(path)


def test_unknown_name():
    with pytest.raises(ScheduleError, match="built-ins"):
        load_schedule("nonexistent-schedule")


def test_last_step_must_reveal_all():
    with pytest.raises(ScheduleError, match="reveal all"):
        Schedule("x", (0.5, 0.2), (1.0, 1.0), (1.0, 0.0), (0.0, 0.0))
