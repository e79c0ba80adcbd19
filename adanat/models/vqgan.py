"""MaskGIT VQGAN tokenizer (the PyTorch port of the JAX release used by MAGE, ENAT and AdaNAT).

Structure follows the released key list: convolutional encoder/decoder with GroupNorm and swish,
average-pool downsampling in the encoder, nearest-neighbour upsampling plus a convolution in the
decoder, no attention, and nearest-code quantisation with no pre/post-quantisation convolutions.
The port's quirk is kept: when a residual block changes the channel count, its 1x1
``nin_shortcut`` is applied to the block's output and added to it (not to the input).

Public API: images in ``[0, 1]``; ``encode`` gives ``(B, h, w)`` ids, ``decode`` gives images
clamped to ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class VQGANConfig:
    """Sizes of a MaskGIT VQGAN.

    :param ch: base channel count.
    :param ch_mult: channel multiplier per resolution level (one downsampling between levels).
    :param num_res_blocks: residual blocks per level.
    :param z_channels: channels of the latent grid (equal to the code dimension).
    :param codebook_size: number of codes.
    :param num_groups: GroupNorm groups (32 in the release).
    :param patch_local: encode every ``f x f`` patch on its own (``f`` the downsampling factor), so
        a token's code depends on its own pixels only and identical patches get identical codes.
        Off in the release, whose encoder sees (and GroupNorm-normalises over) the whole image;
        on for the ``shapes`` tokenizer (see ``adanat/pretrain/shapes.py`` for the measurement).
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    codebook_size: int = 1024
    num_groups: int = 32
    patch_local: bool = False

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, ch, eps=1e-6)


class ResnetBlock(nn.Module):
    """Pre-activation residual block; bias-free convolutions as in the release."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(cout, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, Cout, H, W)
        h = self.conv2(F.silu(self.norm2(h)))  # (B, Cout, H, W)
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(h)  # the port's quirk: shortcut of the output
        return x + h


class Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: a list of residual blocks (and an upsampler in the decoder)."""

    def __init__(self, blocks: list[ResnetBlock], upsample: Upsample | None = None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if upsample is not None:
            self.upsample = upsample


class _Mid(nn.Module):
    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch, groups)
        self.block_2 = ResnetBlock(ch, ch, groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.block_1(x))


class Encoder(nn.Module):
    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        self.patch = cfg.downsample_factor if cfg.patch_local else 0
        g = cfg.num_groups
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1, bias=False)
        chans = [cfg.ch * m for m in (1, *cfg.ch_mult)]
        self.down = nn.ModuleList()
        for lvl in range(len(cfg.ch_mult)):
            cin, cout = chans[lvl], chans[lvl + 1]
            blocks = [ResnetBlock(cin if i == 0 else cout, cout, g) for i in range(cfg.num_res_blocks)]
            self.down.append(_Level(blocks))
        self.mid = _Mid(chans[-1], g)
        self.norm_out = _norm(chans[-1], g)
        self.conv_out = nn.Conv2d(chans[-1], cfg.z_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` -> latents ``(B, z, H/f, W/f)``."""
        return self._patchwise(x) if self.patch else self._whole(x)

    def _whole(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)  # (B, ch, H, W)
        for lvl, level in enumerate(self.down):
            for block in level.block:
                h = block(h)
            if lvl != len(self.down) - 1:
                h = F.avg_pool2d(h, 2)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, z, h, w)

    def _patchwise(self, x: Tensor) -> Tensor:
        """Every ``f x f`` patch through the encoder as an image of its own."""
        b, c, hh, ww = x.shape
        f = self.patch
        h, w = hh // f, ww // f
        p = (
            x.reshape(b, c, h, f, w, f).permute(0, 2, 4, 1, 3, 5).reshape(b * h * w, c, f, f)
        )  # (B*h*w, 3, f, f)
        z = self._whole(p)  # (B*h*w, z, 1, 1)
        return z.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()  # (B, z, h, w)


class Decoder(nn.Module):
    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        g = cfg.num_groups
        top = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, top, 3, padding=1)
        self.mid = _Mid(top, g)
        levels: list[_Level] = []
        cin = top
        for lvl in reversed(range(len(cfg.ch_mult))):
            cout = cfg.ch * cfg.ch_mult[lvl]
            blocks = [ResnetBlock(cin if i == 0 else cout, cout, g) for i in range(cfg.num_res_blocks)]
            levels.insert(0, _Level(blocks, Upsample(cout) if lvl != 0 else None))
            cin = cout
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(cin, g)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))  # (B, C, h, w)
        for lvl in reversed(range(len(self.up))):
            level = self.up[lvl]
            for block in level.block:
                h = block(h)
            if lvl != 0:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, H, W)


class Quantizer(nn.Module):
    """Nearest-code lookup against the codebook ``embedding`` (K, z)."""

    def __init__(self, codebook_size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, dim)

    def ids(self, z: Tensor) -> Tensor:
        """``z`` (B, z, h, w) -> ids (B, h, w)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (B*h*w, z)
        e = self.embedding.weight  # (K, z)
        dist = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()  # (N, K)
        return dist.argmin(dim=1).reshape(b, h, w)

    def lookup(self, ids: Tensor) -> Tensor:
        """ids (B, h, w) -> code vectors (B, z, h, w)."""
        return self.embedding(ids).permute(0, 3, 1, 2).contiguous()


class MaskGITVQGAN(nn.Module):
    """The MaskGIT VQGAN: ``encode`` images to ids, ``decode`` ids to images, both in ``[0, 1]``."""

    def __init__(self, config: VQGANConfig | None = None) -> None:
        super().__init__()
        self.config = config or VQGANConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.quantize = Quantizer(self.config.codebook_size, self.config.z_channels)

    def encode(self, images: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] -> token ids ``(B, H/f, W/f)``."""
        return self.quantize.ids(self.encoder(images))

    def decode_raw(self, ids: Tensor) -> Tensor:
        """Token ids ``(B, h, w)`` -> decoder output ``(B, 3, H, W)`` before clamping."""
        return self.decoder(self.quantize.lookup(ids))

    def decode(self, ids: Tensor) -> Tensor:
        """Token ids ``(B, h, w)`` -> images ``(B, 3, H, W)`` clamped to [0, 1]."""
        return self.decode_raw(ids).clamp(0.0, 1.0)
