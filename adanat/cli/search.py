"""``adanat search``: AutoNAT's schedule search (SGD on FID by finite differences), resumable.

Run the same command again to continue a stopped search from its folder; a larger ``--updates``
extends a finished one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adanat.cli.common import (
    Target,
    UsageError,
    model_options,
    positive_int,
    prompt_options,
    resolve_device,
    sampler_options,
    seed_int,
)
from adanat.configs import Flag, add_flags
from adanat.outputs import check_writable
from adanat.progress import StepProgress
from adanat.sampling import ScheduleController
from adanat.schedules import SELECTION_RULES, Schedule
from adanat.search import SearchConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        parents=[model_options(), sampler_options(), prompt_options()],
        help="AutoNAT schedule search (SGD on FID by finite differences); resumable",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--steps", "-T", type=positive_int, default=None, help="T (default: the world's)")
    flags = add_flags(
        p,
        SearchConfig,
        [
            Flag("updates", type=positive_int),
            Flag("samples", type=positive_int),
            Flag("seed", type=seed_int),
            "lr_ratio",
            "lr_other",
            "delta_ratio",
            "delta_other",
            "momentum",
            Flag("name", default=None, default_help="autonat-PRESET-tT"),
            Flag("rule", choices=list(SELECTION_RULES)),
        ],
    )
    p.add_argument("--out", type=Path, help="search folder (default runs/search-NAME)")
    p.add_argument("--reference", type=Path, help="FID statistics .npz (required for in256/in512/cc3m)")
    p.add_argument("--inception", type=Path, help="torch-fidelity Inception-v3 weights")
    p.set_defaults(run=run, search_flags=flags)


def _check_folder(out: Path) -> None:
    """A search folder is new, empty, or an earlier search's (it holds ``state.json``)."""
    check_writable(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not (out / "state.json").is_file():
        raise UsageError(f"--out {out} holds files but no search (state.json); choose a new folder")


def run(args: argparse.Namespace) -> int:
    """Search (or continue), then write ``schedule.json`` and ``log.json``."""
    from adanat import evaluation, search
    from adanat.metrics import ReferenceRequest
    from adanat.weights import load_models

    target = Target.of(args.preset)
    steps = target.steps(args.steps)
    prompts = target.prompts(args)  # text-to-image: the FIDs' images cycle over these
    target.check_reference(args.reference)
    values = args.search_flags.values(args)
    name = values.pop("name", None) or f"autonat-{args.preset}-t{steps}"
    from adanat.prompts import prompts_digest

    digest = None if prompts is None else prompts_digest(prompts)
    cfg = SearchConfig(
        steps=steps, name=name, precision=args.precision, reuse=args.reuse, prompts_sha256=digest, **values
    )
    out = args.out or Path("runs") / f"search-{name}"
    _check_folder(out)
    state = search.start_state(cfg, out)  # refuses a folder searched with other settings
    device = resolve_device(args.device)
    models = load_models(args.preset, args.generator, args.tokenizer, device, args.text_encoder)
    bank = None if prompts is None else models.prompt_bank(prompts)
    sampler = models.sampler(cfg.precision, cfg.reuse, bank)
    space = target.metric_space(args.inception).to(device)
    request = ReferenceRequest(
        cfg.samples, target.preset.image_size, device, args.reference, batch_size=args.batch_size
    )
    reference = target.reference("search", space, request).stats  # shapes: the "reference" split
    spec = evaluation.SampleSpec(cfg.samples, steps, cfg.seed, args.batch_size)

    def fid(schedule: Schedule) -> float:
        return evaluation.controller_fid(sampler, ScheduleController(schedule), space, reference, spec)

    per_update = 4 * steps - 1
    total = cfg.updates * per_update
    # measurements past a smaller budget (a search resumed with fewer updates) count as done
    done = min(total, state.update * per_update + (state.base_fid is not None) + len(state.probes))
    with StepProgress("search", total, completed=done, every=1) as progress:
        final = search.run_search(
            cfg,
            out,
            fid,
            sampler.generator.seq_len,
            lambda what, value: progress.advance(1, fid=f"{what} {value:.3f}"),
        )
    source = (
        f"AutoNAT search on {args.preset} at T={steps}: {cfg.updates} updates, {cfg.samples} samples per "
        f"FID, seed {cfg.seed}, on {device.type} (adanat search; the random streams, so the FIDs, "
        "depend on the device type)"
    )
    sched_path, log_path = search.write_results(final, out, source)
    best = final.best or {}
    lowest = f"lowest FID {best.get('fid', float('nan')):.3f} at update {best.get('update')}"
    print(f"{lowest}; wrote {sched_path} and {log_path}")
    return 0
