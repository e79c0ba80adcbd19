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

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adanat.checkpoints import CheckpointError, check_keys, read_state_dict

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
        self.grid = grid
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
    hidden = actor["t_embedder.mlp.0.weight"].shape[0]
    in_channels = actor["x_embedder.weight"].shape[1] if "x_embedder.weight" in actor else hidden
    module = ReleaseActor(in_channels, hidden, grid)
    check_keys(module, actor, "policy")
    module.load_state_dict({k: v.float() for k, v in actor.items()}, strict=True)
    return module.eval().requires_grad_(False)
