"""Model selection by FID: AdaNAT keeps the policy whose images score the lowest FID, not the last
one, because the adversarial reward keeps moving and its value is not comparable across rounds.

At each periodic evaluation :class:`FidSelection` generates ``n`` images from fixed seeds with the
policy's mean action, measures FID against reference statistics, and exports the policy to
``best/`` when it beats every earlier one. ``best.json`` records the update, the FID, and the
base schedule's FID on the same seeds (measured once), so a run can be judged at a glance.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from adanat.agents.export import ExportedActor, ExportedMeta, export_policy, mean_controller
from adanat.distributed import Shard
from adanat.envs.core import NATCore
from adanat.evaluation import SampleSpec, controller_fid
from adanat.metrics import FeatureSpace, FidStatistics
from adanat.outputs import write_text_atomic
from adanat.sampling import Controller, ScheduleController


@dataclass
class FidScore:
    """One evaluation: this policy's FID, the best so far, and the base schedule's."""

    fid: float
    best_fid: float
    base_fid: float
    improved: bool


class FidSelection:
    """Keeps ``run_dir/best/`` as the policy with the lowest FID of ``n`` images (seed ``seed``)."""

    def __init__(
        self,
        core: NATCore,
        space: FeatureSpace,
        reference: FidStatistics,
        n: int,
        seed: int,
        run_dir: Path,
        batch_size: int | None = None,
        shard: Shard | None = None,
    ) -> None:
        if n < 2:
            raise ValueError(f"FID selection needs at least 2 images, got {n}")
        self.core, self.space, self.reference, self.n, self.seed = core, space, reference, n, seed
        self.folder, self.record = run_dir / "best", run_dir / "best.json"
        self.batch_size = batch_size or core.num_rows
        self.shard = shard or Shard()  # under torchrun: every process scores its share
        saved = json.loads(self.record.read_text()) if self.record.is_file() else {}
        self.best = float(saved.get("fid", math.inf))
        self.base = saved.get("base_fid")

    def _fid(self, controller: Controller) -> float:
        spec = SampleSpec(self.n, self.core.steps, self.seed, self.batch_size)
        return controller_fid(self.core.sampler, controller, self.space, self.reference, spec, self.shard)

    @torch.no_grad()
    def score(self, actor: ExportedActor, meta: ExportedMeta, updates: int, episodes: int) -> FidScore:
        """FID of the policy now; exports it to ``best/`` if it is the lowest so far."""
        if self.base is None:
            self.base = self._fid(ScheduleController(self.core.mapping.base))
        fid = self._fid(mean_controller(actor, meta, self.core.prompts))
        improved = fid < self.best
        if improved:
            self.best = fid
        if improved and self.shard.is_main:  # only the leader writes
            export_policy(self.folder, actor, meta)
            record = {
                "fid": fid,
                "base_fid": self.base,
                "updates": updates,
                "episodes": episodes,
                "images": self.n,
                "seed": self.seed,
                "feature_space": self.space.name,
            }
            write_text_atomic(self.record, json.dumps(record, indent=2) + "\n")
        return FidScore(fid=fid, best_fid=self.best, base_fid=float(self.base), improved=improved)


def world_selection(
    core: NATCore,
    world: str,
    n: int,
    seed: int,
    run_dir: Path,
    statistics: Path | None = None,
    inception: Path | None = None,
    shard: Shard | None = None,
) -> FidSelection:
    """Model selection in ``world``'s feature space against its ``selection`` reference (the
    ``shapes`` reference split, so the held-out split stays for the final evaluation; on ImageNet
    the statistics file, which must then be given)."""
    from adanat.metrics import MetricsError, ReferenceRequest
    from adanat.presets import world_preset

    w = world_preset(world)
    space = w.metric_space(inception).to(core.device)
    request = ReferenceRequest(n, w.image_size, core.device, statistics)
    try:
        reference = w.reference("selection", space, request)
    except MetricsError as e:
        raise ValueError(f"--select-fid on {world}: {e}") from None
    return FidSelection(core, space, reference.stats, n, seed, run_dir, shard=shard)
