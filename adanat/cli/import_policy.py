"""``adanat import-policy``: an AdaNAT policy checkpoint as a policy folder of our own format.

Reads the actor AdaNAT evaluates (``model['policy_old.actor.*']``) with ``weights_only=True`` and
writes ``policy.safetensors`` + ``policy.json``, which ``adanat sample/eval --policy DIR`` use
with AdaNAT's action mapping (sigmoid of the mask-ratio action, softplus of the others; with
``--heuristic``, the release's ``--heu 1`` residual on its hand-made schedule), its
token-selection rule and its observation (the generator's full features and the step index).
Its critic (``model['policy_old.critic.*']``), when the checkpoint has one, goes to
``critic.safetensors``, the critic ``adanat train --init-policy DIR`` starts from.
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
    from adanat.agents.adanat_policy import (
        ReleaseMeta,
        export_release_policy,
        load_release_actor,
        load_release_critic,
    )
    from adanat.assets import sha256_of
    from adanat.outputs import staged_dir

    if args.steps < 2:
        raise UsageError("--steps must be >= 2")
    check_output_dir(args.out)
    check_writable(args.out, "--out")
    actor = load_release_actor(args.checkpoint, args.grid)
    critic = load_release_critic(args.checkpoint, args.grid)
    if critic is not None and (critic.in_channels, critic.hidden) != (actor.in_channels, actor.hidden):
        raise UsageError(f"{args.checkpoint}: its critic's sizes differ from its actor's")
    keys = "model['policy_old.actor.*']" + (", model['policy_old.critic.*']" if critic else "")
    source = f"{args.checkpoint.name} (sha256 {sha256_of(args.checkpoint)}), {keys}"
    meta = ReleaseMeta(
        actor.in_channels, actor.hidden, actor.grid, args.steps, args.heuristic, source, critic is not None
    )
    with staged_dir(args.out) as stage:
        export_release_policy(stage, actor, meta, critic)
    with_critic = " and its critic" if critic is not None else ""
    print(f"wrote {args.out}: AdaNAT policy{with_critic}, features {actor.in_channels}, T={args.steps}")
    return 0
