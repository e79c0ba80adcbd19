"""Installation layout: envs/, agents/, rewards/ import as adanat.* in editable and normal installs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("envs", "agents", "rewards")


def test_editable_install_maps_the_folders():
    import adanat

    if Path(adanat.__file__).resolve().parent != ROOT / "adanat":
        pytest.skip("adanat is not installed from this checkout in editable mode")
    import adanat.agents
    import adanat.envs
    import adanat.rewards

    for name, mod in zip(SUBPACKAGES, (adanat.envs, adanat.agents, adanat.rewards), strict=True):
        assert Path(mod.__file__).resolve() == ROOT / name / "__init__.py"


@pytest.mark.e2e
def test_normal_install_maps_the_folders(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    for name in SUBPACKAGES:
        assert (target / "adanat" / name / "__init__.py").is_file()
        assert not (target / name).exists()  # nothing generic at the top level
    assert (target / "adanat" / "py.typed").is_file()
    assert (target / "adanat" / "data" / "schedules" / "autonat-l-t8.json").is_file()
    assert (target / "adanat" / "data" / "presets.json").is_file()
    for sub in ("models", "worlds", "pretrain"):
        assert (target / "adanat" / sub / "__init__.py").is_file()
    for name in ("manifest.json", "metric.safetensors", "tokenizer.safetensors"):
        assert (target / "adanat" / "assets" / "shapes" / name).is_file()
    probe = (
        "import adanat.envs, adanat.agents, adanat.rewards, adanat.worlds.shapes, adanat.pretrain.run; "
        "print(adanat.envs.__file__)"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True,
        env={"PYTHONPATH": str(target)}, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()).resolve() == (target / "adanat" / "envs" / "__init__.py").resolve()
