"""The policy network of the AdaNAT release, under its parameter names, to run its trained policies.

AdaNAT's actor (``PolicyNet`` of its release) reads the generator's full features ``(B, L, C)`` on
a square token grid and the step index ``(B,)`` and gives the four raw actions (pre-activations,
in the release's order: mask ratio, re-masking temperature, sampling temperature, guidance):

* an input linear ``C -> H`` (``x_embedder``; absent when ``C == H``);
* a sinusoidal step embedding (256 frequencies, ``[cos ; sin]``) through ``Linear, SiLU, Linear``;
* AdaLN (LayerNorm without affine, eps 1e-6, ``x (1 + scale) + shift`` with ``shift, scale`` from
  ``SiLU, Linear`` of the step embedding) on the tokens;
* the tokens as a grid: depthwise 3x3 stride-2 conv, GELU, 1x1 conv to 128, GELU, flatten;
* ``Linear -> 1024``, AdaLN, GELU, ``Linear -> 512``, AdaLN, GELU, ``Linear -> 4`` (exact GELU).

:func:`load_release_actor` reads the actor that AdaNAT evaluates (``model['policy_old.actor.*']``
of its checkpoint) without pickle, :func:`load_release_critic` its critic (the same network with
one output, ``model['policy_old.critic.*']``). An imported policy is a folder of our own
(:func:`export_release_policy`: ``policy.safetensors`` + ``policy.json``, and ``critic.safetensors``
when the checkpoint has a critic), which ``adanat sample/eval --policy`` run and ``adanat train
--init-policy`` fine-tunes (the result is a folder of the same format).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adanat.checkpoints import CheckpointError, check_keys, read_state_dict
from adanat.envs.actions import heuristic_preactivations, release_controls
from adanat.sampling import Controls, GenerationState

__all__ = [
    "RELEASE_FORMAT",
    "ReleaseActor",
    "ReleaseMeta",
    "ReleasePolicyController",
    "ReleaseTrunk",
    "export_release_policy",
    "heuristic_preactivations",
    "load_release_actor",
    "load_release_critic",
    "load_release_policy",
    "read_release_meta",
    "release_controls",
    "saved_release_critic",
]

RELEASE_PREFIX = "policy_old.actor."  # the copy of the actor AdaNAT evaluates
CRITIC_PREFIX = "policy_old.critic."  # its critic, the same network with one output
FREQUENCIES = 256
TRUNK_WIDTH = 512  # the width before the last linear


class StepEmbedder(nn.Module):
    """Sinusoidal embedding of the step index through a two-layer SiLU MLP (``mlp.0``, ``mlp.2``)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQUENCIES, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, step: Tensor) -> Tensor:
        half = FREQUENCIES // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=step.device) / half)  # (F/2,)
        angles = step.float()[:, None] * freqs[None]  # (B, F/2)
        return self.mlp(torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1))  # (B, H)


class AdaLN(nn.Module):
    """LayerNorm without affine, modulated by ``shift, scale = Linear(SiLU(c))``."""

    def __init__(self, dim: int, cond: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)  # (B, D) each
        if x.dim() == 3:
            shift, scale = shift[:, None], scale[:, None]
        return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale) + shift


class ReleaseTrunk(nn.Module):
    """AdaNAT's policy network up to its last linear: features ``(B, L, C)`` and steps ``(B,)``
    -> ``(B, 512)`` (the features extractor of a fine-tuned policy, :mod:`adanat.agents.finetune`).

    :param in_channels: feature width ``C`` of the generator (768 for AutoNAT-L).
    :param hidden: hidden size ``H`` (512 in the release).
    :param grid: side of the token grid (16: the release's convolutions are sized for it).
    """

    def __init__(self, in_channels: int, hidden: int = 512, grid: int = 16) -> None:
        super().__init__()
        self.in_channels, self.hidden, self.grid = in_channels, hidden, grid
        self.x_embedder = nn.Linear(in_channels, hidden) if in_channels != hidden else nn.Identity()
        self.t_embedder = StepEmbedder(hidden)
        self.adaLN1 = AdaLN(hidden, hidden)
        self.dw_conv = nn.Conv2d(hidden, hidden, 3, stride=2, padding=1, groups=hidden)
        self.pw_conv = nn.Conv2d(hidden, 128, 1)
        side = (grid + 1) // 2
        self.linear1 = nn.Linear(128 * side * side, 1024)
        self.adaLN2 = AdaLN(1024, hidden)
        self.linear2 = nn.Linear(1024, TRUNK_WIDTH)
        self.adaLN3 = AdaLN(TRUNK_WIDTH, hidden)

    def forward(self, features: Tensor, step: Tensor) -> Tensor:
        return self.trunk(features, step)

    def trunk(self, features: Tensor, step: Tensor) -> Tensor:
        """The ``(B, 512)`` input of the last linear."""
        c = self.t_embedder(step)  # (B, H)
        x = self.adaLN1(self.x_embedder(features), c)  # (B, L, H)
        b, _, h = x.shape
        x = x.transpose(1, 2).reshape(b, h, self.grid, self.grid)  # (B, H, g, g)
        x = F.gelu(self.pw_conv(F.gelu(self.dw_conv(x))))  # (B, 128, g/2, g/2)
        x = F.gelu(self.adaLN2(self.linear1(x.flatten(1)), c))  # (B, 1024)
        x = F.gelu(self.adaLN3(self.linear2(x), c))  # (B, 512)
        return x


class ReleaseActor(ReleaseTrunk):
    """AdaNAT's actor: features ``(B, L, C)`` and steps ``(B,)`` -> raw actions ``(B, 4)``; with
    ``out=1``, its critic (values ``(B, 1)``). Sizes as :class:`ReleaseTrunk`'s."""

    def __init__(self, in_channels: int, hidden: int = 512, grid: int = 16, out: int = 4) -> None:
        super().__init__(in_channels, hidden, grid)
        self.linear3 = nn.Linear(TRUNK_WIDTH, out)

    def forward(self, features: Tensor, step: Tensor) -> Tensor:
        return self.linear3(self.trunk(features, step))  # (B, out)


def _load_release_network(path: str | Path, prefix: str, grid: int, out: int) -> ReleaseActor | None:
    state = read_state_dict(path)  # unwraps {'model': ...}
    net = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not net:
        return None
    step_in, first = net.get("t_embedder.mlp.0.weight"), net.get("x_embedder.weight", torch.zeros(0, 0))
    if step_in is None or step_in.dim() != 2 or first.dim() != 2:
        what = "an AdaNAT actor's" if out == 4 else "an AdaNAT critic's"
        raise CheckpointError(f"{path}: its {prefix}* tensors are not {what}")
    hidden = step_in.shape[0]
    in_channels = first.shape[1] if "x_embedder.weight" in net else hidden
    with torch.random.fork_rng(devices=[]):  # building layers must not move the global RNG
        module = ReleaseActor(in_channels, hidden, grid, out)
    check_keys(module, net, "policy")
    try:
        module.load_state_dict({k: v.float() for k, v in net.items()}, strict=True)
    except RuntimeError as e:  # a shape that does not fit
        raise CheckpointError(f"{path}: its {prefix}* tensors do not fit one network: {e}") from None
    return module.eval().requires_grad_(False)


def load_release_actor(path: str | Path, grid: int = 16) -> ReleaseActor:
    """The evaluated actor of an AdaNAT policy checkpoint (``{'model': {...}}``, read with
    ``weights_only=True``), sized from its weights, in float32 and eval mode."""
    actor = _load_release_network(path, RELEASE_PREFIX, grid, 4)
    if actor is None:
        raise CheckpointError(f"{path} holds no AdaNAT actor ({RELEASE_PREFIX}* keys)")
    return actor


def load_release_critic(path: str | Path, grid: int = 16) -> ReleaseActor | None:
    """The critic beside that actor (``model['policy_old.critic.*']``, one output), or None when
    the checkpoint holds none."""
    return _load_release_network(path, CRITIC_PREFIX, grid, 1)


# -- the imported policy as a folder and as a controller -------------------------------------

RELEASE_FORMAT = "adanat-release-policy/1"
WEIGHTS, CRITIC, META = "policy.safetensors", "critic.safetensors", "policy.json"


@dataclass(frozen=True)
class ReleaseMeta:
    """``policy.json`` of a folder in AdaNAT's policy format (imported, or fine-tuned from one).

    :param in_channels: the actor's feature width.
    :param hidden: its hidden size.
    :param grid: its token grid side.
    :param steps: ``T`` it acts for.
    :param heuristic: its actions are added to the release's hand-made schedule (``--heu 1``).
    :param source: where the weights come from.
    :param critic: the folder also holds its critic (``critic.safetensors``).
    :param trained: for a policy fine-tuned by ``adanat train``: world, preset, generator,
        tokenizer (and text encoder) sha256, feature reuse and exploration std (``adanat sample``
        checks the weights and the reuse setting against them).
    """

    in_channels: int
    hidden: int
    grid: int
    steps: int
    heuristic: bool
    source: str
    critic: bool = False
    trained: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RELEASE_FORMAT,
            "in_channels": self.in_channels,
            "hidden": self.hidden,
            "grid": self.grid,
            "steps": self.steps,
            "heuristic": self.heuristic,
            "rule": "adanat",
            "observation": "full features and the step index (AdaNAT's)",
            "source": self.source,
            "critic": self.critic,
            **(self.trained or {}),
        }

    @staticmethod
    def from_dict(meta: dict[str, Any]) -> ReleaseMeta:
        """Checks the sizes, ``steps`` and ``heuristic``; keys besides the known ones are kept in
        ``trained``.

        :raises ValueError: a value out of place (one line).
        """
        if meta.get("format") != RELEASE_FORMAT:
            raise ValueError(f"not an AdaNAT-format policy (format {meta.get('format')!r})")
        sizes = {k: meta.get(k) for k in ("in_channels", "hidden", "grid", "steps")}
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes.values()):
            raise ValueError(f"in_channels, hidden, grid and steps must be whole numbers >= 1, got {sizes}")
        if sizes["steps"] < 2 or not isinstance(meta.get("heuristic"), bool):
            raise ValueError("steps must be >= 2 and heuristic true or false")
        if not isinstance(meta.get("critic", False), bool):
            raise ValueError("critic must be true or false")
        known = {*sizes, "format", "heuristic", "rule", "observation", "source", "critic"}
        trained = {k: v for k, v in meta.items() if k not in known}
        return ReleaseMeta(
            **sizes,
            heuristic=meta["heuristic"],
            source=str(meta.get("source", "")),
            critic=meta.get("critic", False),
            trained=trained or None,
        )


class ReleasePolicyController:
    """An imported AdaNAT policy as a :class:`~adanat.sampling.Controller`: it observes the
    generator's full features and the step index, as in the release, and acts with its mean."""

    def __init__(self, actor: ReleaseActor, steps: int, heuristic: bool) -> None:
        self.actor, self.steps, self.heuristic = actor, steps, heuristic

    @torch.no_grad()
    def __call__(self, state: GenerationState) -> Controls:
        if state.steps != self.steps:
            raise ValueError(
                f"the policy was imported for {self.steps} steps, generation asks for {state.steps}"
            )
        step = torch.full((state.features.shape[0],), state.step, device=state.features.device)  # (B,)
        raw = self.actor(state.features.float(), step)  # (B, 4)
        return release_controls(raw, state.step, state.steps, self.heuristic)


def export_release_policy(
    folder: Path, actor: ReleaseActor, meta: ReleaseMeta, critic: ReleaseActor | None = None
) -> None:
    """Write a policy in AdaNAT's format into ``folder``: ``policy.safetensors``, the critic's
    ``critic.safetensors`` when given (else none is left there), and ``policy.json`` last, each
    replaced atomically. The sizes in ``meta`` must be the actor's."""
    from safetensors.torch import save_file

    sizes = (actor.in_channels, actor.hidden, actor.grid)
    if sizes != (meta.in_channels, meta.hidden, meta.grid) or meta.critic != (critic is not None):
        raise ValueError(f"policy metadata {meta} does not describe the actor {sizes} and its critic")
    folder.mkdir(parents=True, exist_ok=True)
    nets = {WEIGHTS: actor, CRITIC: critic}
    for name, net in nets.items():
        if net is None:
            (folder / name).unlink(missing_ok=True)
            continue
        tmp = folder / f".{name}.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp))
        tmp.replace(folder / name)
    tmp = folder / f".{META}.tmp"
    tmp.write_text(json.dumps(meta.to_dict(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(folder / META)


def read_release_meta(folder: Path) -> ReleaseMeta:
    """``policy.json`` of an AdaNAT-format folder, checked (:meth:`ReleaseMeta.from_dict`).

    :raises OSError: it cannot be read. :raises ValueError: it is not JSON or out of place.
    """
    data = json.loads((folder / META).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{folder / META} must hold a JSON object")
    return ReleaseMeta.from_dict(data)


def _network(folder: Path, name: str, meta: ReleaseMeta, out: int) -> ReleaseActor:
    from safetensors.torch import load_file

    with torch.random.fork_rng(devices=[]):  # building layers must not move the global RNG
        net = ReleaseActor(meta.in_channels, meta.hidden, meta.grid, out)
    net.load_state_dict(load_file(str(folder / name)), strict=True)
    return net.eval()


def load_release_policy(folder: Path) -> tuple[ReleaseActor, dict[str, object]]:
    """An AdaNAT-format policy folder: its actor and metadata (no pickle)."""
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    return _network(folder, WEIGHTS, ReleaseMeta.from_dict(meta), 4), meta


def saved_release_critic(folder: Path, meta: ReleaseMeta) -> ReleaseActor | None:
    """The critic of an AdaNAT-format folder (``critic.safetensors``), or None when it has none."""
    return _network(folder, CRITIC, meta, 1) if meta.critic else None
