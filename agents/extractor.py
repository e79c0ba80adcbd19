"""The policy's features extractor, after AdaNAT's policy network, for any token grid.

Per-token LayerNorm and linear, AdaLN conditioned on the step, a depthwise stride-2 3x3 conv on
the token grid, a pointwise conv, then an MLP with AdaLN. Every AdaLN modulation starts at zero
(a plain LayerNorm). Used once for the actor and once for the critic (no shared weights). When
the observation holds a ``prompt`` embedding, a linear map of it (zero at the start) is added
to the step embedding that conditions every AdaLN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

from adanat.envs.observation import step_of


@dataclass(frozen=True)
class ExtractorConfig:
    hidden: int = 128  # per-token width
    conv_channels: int = 32  # after the pointwise conv
    mlp: int = 256
    features_dim: int = 128
    step_dim: int = 64  # step embedding

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class AdaLN(nn.Module):
    """LayerNorm without affine, modulated ``x (1 + scale) + shift`` by a condition vector."""

    def __init__(self, dim: int, cond: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mod = nn.Linear(cond, 2 * dim)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.mod(F.silu(c)).chunk(2, dim=-1)  # (B, dim) each
        if x.dim() == 3:
            shift, scale = shift[:, None], scale[:, None]
        return self.norm(x) * (1 + scale) + shift


def step_embedding(step: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding ``(B, dim)`` of integer steps ``(B,)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=step.device) / half)  # (half,)
    angle = step.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)  # (B, dim)


class AdaNATExtractor(BaseFeaturesExtractor):
    """Features ``(B, features_dim)`` from ``{"features": (B, N, D), "step": (B,) or one-hot}``.

    :param observation_space: the env's Dict space (``N`` must be a square number).
    """

    def __init__(self, observation_space: spaces.Dict, config: ExtractorConfig | None = None) -> None:
        cfg = config or ExtractorConfig()
        super().__init__(observation_space, cfg.features_dim)
        self.config = cfg
        tokens, width = observation_space["features"].shape
        self.grid = math.isqrt(tokens)
        if self.grid**2 != tokens:
            raise ValueError(f"features must lie on a square grid, got {tokens} tokens")
        self.step_mlp = nn.Sequential(
            nn.Linear(cfg.step_dim, cfg.step_dim), nn.SiLU(), nn.Linear(cfg.step_dim, cfg.step_dim)
        )
        self.inp_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.inp = nn.Linear(width, cfg.hidden)
        self.ada0 = AdaLN(cfg.hidden, cfg.step_dim)
        self.dw = nn.Conv2d(cfg.hidden, cfg.hidden, 3, stride=2, padding=1, groups=cfg.hidden)
        self.pw = nn.Conv2d(cfg.hidden, cfg.conv_channels, 1)
        side = (self.grid + 1) // 2
        self.fc1 = nn.Linear(cfg.conv_channels * side * side, cfg.mlp)
        self.ada1 = AdaLN(cfg.mlp, cfg.step_dim)
        self.fc2 = nn.Linear(cfg.mlp, cfg.features_dim)
        self.ada2 = AdaLN(cfg.features_dim, cfg.step_dim)
        self.prompt: nn.Linear | None = None
        if "prompt" in observation_space.spaces:
            self.prompt = nn.Linear(observation_space["prompt"].shape[0], cfg.step_dim)
            nn.init.zeros_(self.prompt.weight)
            nn.init.zeros_(self.prompt.bias)

    def forward(self, observations: dict[str, Tensor]) -> Tensor:
        feat = observations["features"].float()  # (B, N, D)
        b = feat.shape[0]
        c = self.step_mlp(step_embedding(step_of(observations), self.config.step_dim))  # (B, S)
        if self.prompt is not None:
            c = c + self.prompt(observations["prompt"].float())  # (B, S)
        x = self.ada0(self.inp(self.inp_norm(feat)), c)  # (B, N, H)
        x = x.transpose(1, 2).reshape(b, -1, self.grid, self.grid)  # (B, H, g, g)
        x = F.gelu(self.dw(x))  # (B, H, g/2, g/2)
        x = F.gelu(self.pw(x)).flatten(1)  # (B, C g^2/4)
        x = F.gelu(self.ada1(self.fc1(x), c))  # (B, M)
        return F.gelu(self.ada2(self.fc2(x), c))  # (B, features_dim)
