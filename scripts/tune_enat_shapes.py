"""Choose the ``shapes`` setting of the ENAT sampler by measurement (coordinate descent on FID).

    python scripts/tune_enat_shapes.py --n 1000 --steps 8

The ENAT sampler has three scalars (guidance, sampling temperature, re-masking temperature;
mask ratios are cosine). Starting from the published ImageNet-256 setting, each scalar in turn
is set to the value of its grid with the lowest FID (metric-network space, N generated vs N
held-out real, fixed seed), the others held. Prints every measurement and the chosen setting as
the JSON object to put under ``variants.shapes`` in ``adanat/data/schedules/enat.json``.
"""

from __future__ import annotations

import argparse
import json

import torch

from adanat.evaluation import SampleSpec, generate_samples
from adanat.sampling import ScheduleController
from adanat.schedules import enat_schedule
from adanat.weights import load_models
from adanat.worlds.shapes import real_images, shapes_quality

# searched in this order; the re-masking temperature first, because with a tokenizer that gives
# flat regions one code the generator is most confident about background tokens, and a low
# re-masking temperature then reveals background first and leaves no room for the shape
GRIDS = {
    "remask_temp": (1.5, 6.0, 20.0, 50.0),
    "sampling_temp": (0.5, 1.0, 3.0, 6.0),
    "guidance": (1.0, 2.0, 2.5, 3.0, 4.0, 6.0),
}
START = {"guidance": 2.5, "remask_temp": 1.5, "sampling_temp": 6.0}  # ENAT in256


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    models = load_models("shapes")
    reference = real_images("heldout", args.n)
    seen: dict[str, dict[str, float]] = {}

    def measure(setting: dict[str, float]) -> float:
        key = json.dumps(setting, sort_keys=True)
        if key not in seen:
            ctrl = ScheduleController(enat_schedule(args.steps, **setting))
            sampler = models.sampler()
            samples = generate_samples(sampler, ctrl, SampleSpec(args.n, args.steps, args.seed))
            q = seen[key] = shapes_quality(samples.images, samples.labels, reference, args.seed)
            fid, isc = q["frechet_inception_distance"], q["inception_score_mean"]
            print(f"{key}: FID {fid:.2f}  IS {isc:.2f}  acc {q['class_accuracy']:.3f}", flush=True)
        return seen[key]["frechet_inception_distance"]

    best = dict(START)
    for name, grid in GRIDS.items():
        best[name] = min(grid, key=lambda v: measure({**best, name: v}))
    print("chosen:", json.dumps(best))


if __name__ == "__main__":
    main()
