"""``adanat import-policy``: an AdaNAT policy checkpoint as a policy folder of our own format.

Reads the actor AdaNAT evaluates (``model['policy_old.actor.*']``) with ``weights_only=True`` and
writes ``policy.safetensors`` + ``policy.json``, which ``adanat sample/eval --policy DIR`` use
with AdaNAT's action mapping (sigmoid of the mask-ratio action, softplus of the others; with
``--heuristic``, the release's ``--heu 1`` residual on its hand-made schedule), its
token-selection rule and its observation (the generator's full features and the step index).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adanat.cli.common import UsageError, positive_int
from adanat.outputs import check_output_dir, check_writable


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-policy",
        help="import an AdaNAT policy checkpoint (ckpt_*.pth) as a policy folder",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("checkpoint", type=Path, help="AdaNAT policy checkpoint (read with weights_only=True)")
    p.add_argument("--out", type=Path, required=True, help="policy folder to write (new or empty)")
    p.add_argument("--steps", "-T", type=positive_int, default=8, help="T the policy was trained for")
    p.add_argument(
        "--heuristic",
        action="store_true",
        help="add the actions to the release's hand-made schedule (its --heu 1, the CC3M recipe)",
    )
    p.add_argument("--grid", type=positive_int, default=16, help="token grid side of its generator")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Read the checkpoint, write the policy folder."""
    from adanat.agents.adanat_policy import export_release_policy, load_release_actor
    from adanat.assets import sha256_of
    from adanat.outputs import staged_dir

    if args.steps < 2:
        raise UsageError("--steps must be >= 2")
    check_output_dir(args.out)
    check_writable(args.out, "--out")
    actor = load_release_actor(args.checkpoint, args.grid)
    source = f"{args.checkpoint.name} (sha256 {sha256_of(args.checkpoint)}), model['policy_old.actor.*']"
    with staged_dir(args.out) as stage:
        export_release_policy(stage, actor, args.steps, args.heuristic, source)
    print(f"wrote {args.out}: AdaNAT policy, features {actor.in_channels}, T={args.steps}")
    return 0
