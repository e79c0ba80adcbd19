"""The learned policies shipped beside the fixed schedules: named like schedules, tied to the
shipped weights, checked against their manifest, and better than the searched AutoNAT schedule."""

from __future__ import annotations

import json
import shutil

import pytest

from adanat.assets import AssetError, asset_dir, read_manifest, sha256_of, verified_file
from adanat.cli import main
from adanat.policies import builtin_policy, builtin_policy_names, policy_entry

SHIPPED = ["adanat-shapes-t4", "adanat-shapes-t8"]


def test_shipped_policies_match_their_manifest_and_the_shipped_weights():
    assert builtin_policy_names() == SHIPPED
    root = asset_dir("shapes")
    weights = {m: sha256_of(verified_file(root, m)) for m in ("generator", "tokenizer")}
    for name in SHIPPED:
        folder = builtin_policy(name)  # sizes and sha256 checked
        meta = json.loads((folder / "policy.json").read_text())
        assert meta["world"] == "shapes" and meta["steps"] == int(name[-1])
        assert (meta["generator_sha256"], meta["tokenizer_sha256"]) == (
            weights["generator"],
            weights["tokenizer"],
        )
        entry = policy_entry(name)
        assert entry["command"].startswith("python scripts/train_policy.py")
        quality = entry["quality"]
        assert quality["policy"]["frechet_inception_distance"] < quality["base"]["frechet_inception_distance"]


def test_a_damaged_shipped_policy_is_refused_with_one_line(tmp_path, monkeypatch, capsys):
    root = tmp_path / "shapes"
    shutil.copytree(asset_dir("shapes"), root)
    target = root / policy_entry(SHIPPED[-1])["folder"] / "policy.safetensors"
    target.write_bytes(target.read_bytes()[:-1] + b"\0")
    monkeypatch.setattr("adanat.policies.asset_dir", lambda world: root)
    with pytest.raises(AssetError, match="is corrupt"):
        builtin_policy(SHIPPED[-1])
    out = tmp_path / "s"
    assert main(["sample", "--preset", "shapes", "--policy", SHIPPED[-1], "-n", "2", "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert read_manifest(root)["policies"]  # nothing rewritten


@pytest.mark.e2e
@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_policy_beats_the_searched_autonat_schedule(name, tmp_path):
    """FID on a fixed-seed 1,000-image evaluation (held-out reference, metric-network features),
    with the shipped policy named as a schedule would be."""
    steps = name[-1]
    fids = {}
    for policy in (name, f"autonat-shapes-t{steps}"):
        out = tmp_path / f"{policy}.json"
        args = [
            "eval",
            "--preset",
            "shapes",
            "--policy",
            policy,
            "--steps",
            steps,
            "-n",
            "1000",
            "--seed",
            "0",
        ]
        assert main([*args, "--batch-size", "250", "--out", str(out)]) == 0
        fids[policy] = json.loads(out.read_text())["metrics"]["frechet_inception_distance"]
    assert fids[name] < fids[f"autonat-shapes-t{steps}"], fids
