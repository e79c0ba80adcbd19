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
of its checkpoint) without pickle.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adanat.checkpoints import CheckpointError, check_keys, read_state_dict
from adanat.sampling import Controls, GenerationState

RELEASE_PREFIX = "policy_old.actor."  # the copy of the actor AdaNAT evaluates
FREQUENCIES = 256


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


class ReleaseActor(nn.Module):
    """AdaNAT's actor: features ``(B, L, C)`` and steps ``(B,)`` -> raw actions ``(B, 4)``.

    :param in_channels: feature width ``C`` of the generator (768 for AutoNAT-L).
    :param hidden: hidden size ``H`` (512 in the release).
    :param grid: side of the token grid (16: the release's convolutions are sized for it).
    """

    def __init__(self, in_channels: int, hidden: int = 512, grid: int = 16, out: int = 4) -> None:
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
        self.linear2 = nn.Linear(1024, 512)
        self.adaLN3 = AdaLN(512, hidden)
        self.linear3 = nn.Linear(512, out)

    def forward(self, features: Tensor, step: Tensor) -> Tensor:
        c = self.t_embedder(step)  # (B, H)
        x = self.adaLN1(self.x_embedder(features), c)  # (B, L, H)
        b, _, h = x.shape
        x = x.transpose(1, 2).reshape(b, h, self.grid, self.grid)  # (B, H, g, g)
        x = F.gelu(self.pw_conv(F.gelu(self.dw_conv(x))))  # (B, 128, g/2, g/2)
        x = F.gelu(self.adaLN2(self.linear1(x.flatten(1)), c))  # (B, 1024)
        x = F.gelu(self.adaLN3(self.linear2(x), c))  # (B, 512)
        return self.linear3(x)  # (B, 4)


def load_release_actor(path: str | Path, grid: int = 16) -> ReleaseActor:
    """The evaluated actor of an AdaNAT policy checkpoint (``{'model': {...}}``, read with
    ``weights_only=True``), sized from its weights, in float32 and eval mode."""
    state = read_state_dict(path)  # unwraps {'model': ...}
    actor = {k[len(RELEASE_PREFIX) :]: v for k, v in state.items() if k.startswith(RELEASE_PREFIX)}
    if not actor:
        raise CheckpointError(f"{path} holds no AdaNAT actor ({RELEASE_PREFIX}* keys)")
    step_in, first = actor.get("t_embedder.mlp.0.weight"), actor.get("x_embedder.weight", torch.zeros(0, 0))
    if step_in is None or step_in.dim() != 2 or first.dim() != 2:
        raise CheckpointError(f"{path}: its {RELEASE_PREFIX}* tensors are not an AdaNAT actor's")
    hidden = step_in.shape[0]
    in_channels = first.shape[1] if "x_embedder.weight" in actor else hidden
    module = ReleaseActor(in_channels, hidden, grid)
    check_keys(module, actor, "policy")
    module.load_state_dict({k: v.float() for k, v in actor.items()}, strict=True)
    return module.eval().requires_grad_(False)


# -- AdaNAT's action mapping and the imported policy as a controller ---------------------------

RELEASE_FORMAT = "adanat-release-policy/1"


def heuristic_preactivations(step: int, steps: int) -> Tensor:
    """The hand-made schedule the release's ``--heu 1`` adds actions to, in pre-activation space
    and the release's order (ratio logit, re-masking, sampling, guidance softplus^-1), ``(4,)``."""
    r = (step + 1 - 1e-3) / steps
    ratio = torch.tensor(math.cos(math.pi / 2 * r))
    inverse_softplus = lambda y: y + torch.log(-torch.expm1(-y))  # noqa: E731
    return torch.stack(
        [
            torch.log(ratio) - torch.log1p(-ratio),
            inverse_softplus(torch.tensor(1 - r)),
            inverse_softplus(torch.tensor(1.0)),
            inverse_softplus(torch.tensor((step + 1e-3) / steps)),
        ]
    )  # (4,)


def release_controls(raw: Tensor, step: int, steps: int, heuristic: bool) -> Controls:
    """Controls of AdaNAT's raw actions ``(B, 4)`` (release order: ratio, re-masking temperature,
    sampling temperature, guidance): sigmoid of the first, softplus of the others, after adding
    :func:`heuristic_preactivations` when ``heuristic``; AdaNAT's token-selection rule."""
    a = raw.float()  # (B, 4)
    if heuristic:
        a = a + heuristic_preactivations(step, steps).to(a)  # (B, 4)
    ratio, remask, sampling, guidance = a.unbind(dim=1)  # (B,) each
    return Controls(
        torch.sigmoid(ratio), F.softplus(sampling), F.softplus(remask), F.softplus(guidance), rule="adanat"
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
    folder: Path, actor: ReleaseActor, steps: int, heuristic: bool, source: str
) -> None:
    """Write an imported policy in our own format: ``policy.safetensors`` + ``policy.json``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in actor.state_dict().items()}
    save_file(state, str(folder / "policy.safetensors"))
    meta = {
        "format": RELEASE_FORMAT,
        "in_channels": actor.in_channels,
        "hidden": actor.hidden,
        "grid": actor.grid,
        "steps": steps,
        "heuristic": heuristic,
        "rule": "adanat",
        "observation": "full features and the step index (AdaNAT's)",
        "source": source,
    }
    (folder / "policy.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_release_policy(folder: Path) -> tuple[ReleaseActor, dict[str, object]]:
    """An imported AdaNAT policy folder: its actor and metadata (no pickle)."""
    from safetensors.torch import load_file

    meta = json.loads((folder / "policy.json").read_text(encoding="utf-8"))
    sizes = {k: meta.get(k) for k in ("in_channels", "hidden", "grid", "steps")}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes.values()):
        raise ValueError(f"in_channels, hidden, grid and steps must be whole numbers >= 1, got {sizes}")
    if sizes["steps"] < 2 or not isinstance(meta.get("heuristic"), bool):
        raise ValueError("steps must be >= 2 and heuristic true or false")
    with torch.random.fork_rng(devices=[]):
        actor = ReleaseActor(sizes["in_channels"], sizes["hidden"], sizes["grid"])
    actor.load_state_dict(load_file(str(folder / "policy.safetensors")), strict=True)
    return actor.eval(), meta
