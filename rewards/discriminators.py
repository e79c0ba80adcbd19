"""Conditional discriminators: a small conv net for ``shapes``, DINO-projected for ImageNet and CC3M.

Both return logits ``(B, N)`` and the image's logit is their mean: one whole-image logit for the
conv net, one per token and head for the projected one. Conditioning is by projection: a logit
adds the inner product of its feature with an embedding of the condition (Miyato & Koyama 2018),
as in the projected discriminator AdaNAT uses. The embedding is a class table for class labels,
or :class:`PromptProjection` (a linear map of the prompt's normalised pooled CLIP text embedding,
as AdaNAT's CC3M discriminator conditions on CLIP text features) for prompt ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

if TYPE_CHECKING:
    from adanat.prompts import PromptBank


class PromptProjection(nn.Module):
    """The condition embedding of prompt ids: ``Linear(E, dim)`` of the prompts' normalised pooled
    text embeddings ``(B, E)`` from the bank (which is not part of the state dict)."""

    def __init__(self, bank: PromptBank, dim: int) -> None:
        super().__init__()
        self.bank = bank
        self.proj = nn.Linear(bank.encoder.embed_dim, dim)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, ids: Tensor) -> Tensor:
        return self.proj(self.bank.pooled(ids).to(self.proj.weight.device))  # (B, dim)


def condition_embedding(
    num_classes: int, dim: int, prompts: PromptBank | None = None, std: float | None = None
) -> nn.Module:
    """A class table (``num_classes`` x ``dim``, drawn with ``std`` when given), or the
    projection of the prompts' text."""
    if prompts is not None:
        return PromptProjection(prompts, dim)
    embed = nn.Embedding(num_classes, dim)
    if std is not None:
        nn.init.normal_(embed.weight, std=std)
    return embed


@dataclass(frozen=True)
class ConvDiscriminatorConfig:
    widths: tuple[int, ...] = (32, 64, 128, 128)
    num_classes: int = 10
    spectral_norm: bool = False  # with it, logits stay near 0 and learning at lr 1e-4 is slow
    group: int = 0  # images per minibatch-std group (0: off); see ConvDiscriminator


class ConvDiscriminator(nn.Module):
    """Projection discriminator for small images that judges the whole image.

    Stride-2 convs (the first at stride 1) reduce the image to a small map, a linear layer reads
    the whole map into one feature ``phi``, and the image's single logit is
    ``w . phi + embed(label) . phi / sqrt(C)``. An earlier version gave one logit per location of
    an 8 x 8 map, each seeing an 11-pixel window: a policy could then raise its reward with
    crisp local edges while the shape, and so the class, got worse (FID doubled on ``shapes``).

    With ``config.group = G`` the last map gains one channel, the mean std of its features over
    each group of G consecutive images (Karras et al. 2018, minibatch standard deviation): an image's
    logit then also depends on how varied its group is, so a set that lost variety is visible to
    the discriminator even where each image alone looks real. The group shrinks to ``gcd(B, G)``
    for batches that ``G`` does not divide.
    """

    def __init__(self, config: ConvDiscriminatorConfig, image_size: int = 32) -> None:
        super().__init__()
        self.config = config
        sn = spectral_norm if config.spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        c_in, side = 3, image_size
        for i, c in enumerate(config.widths):
            stride = 1 if i == 0 else 2
            layers += [sn(nn.Conv2d(c_in, c, 3, stride, 1)), nn.LeakyReLU(0.2)]
            c_in, side = c, (side - 1) // stride + 1
        self.body = nn.Sequential(*layers)
        extra = 1 if config.group else 0
        self.read = sn(nn.Linear((c_in + extra) * side * side, c_in))
        self.out = sn(nn.Linear(c_in, 1))
        self.embed = condition_embedding(config.num_classes, c_in, std=0.02)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        """Logits ``(B, 1)`` for images ``(B, 3, H, W)`` in [0, 1] and labels ``(B,)``."""
        h = self.body(images * 2 - 1)  # (B, C, h, w)
        if self.config.group:
            h = torch.cat([h, group_std(h, self.config.group)], 1)  # (B, C + 1, h, w)
        h = h.flatten(1)  # (B, (C [+ 1]) * h * w)
        phi = F.leaky_relu(self.read(h), 0.2)  # (B, C)
        proj = (phi * self.embed(labels)).sum(1, keepdim=True) / math.sqrt(phi.shape[1])  # (B, 1)
        return self.out(phi) + proj  # (B, 1)


def group_std(h: Tensor, group: int) -> Tensor:
    """The minibatch-std channel ``(B, 1, h, w)`` of a feature map ``(B, C, h, w)``: each
    image's value is the std of every feature over its group of ``gcd(B, group)`` consecutive
    images, averaged over features."""
    b, _, hh, ww = h.shape
    g = math.gcd(b, group)
    std = h.view(b // g, g, -1).var(1, unbiased=False).add(1e-8).sqrt().mean(1)  # (B / g,)
    return std.repeat_interleave(g)[:, None, None, None].expand(b, 1, hh, ww)  # (B, 1, h, w)


class _Head(nn.Module):
    """A projected-discriminator head on one layer's tokens ``(B, D, N)``."""

    def __init__(self, dim: int, width: int, cmap: int) -> None:
        super().__init__()
        self.inp = spectral_norm(nn.Conv1d(dim, width, 1))
        self.res = spectral_norm(nn.Conv1d(width, width, 9, padding=4, padding_mode="circular"))
        self.out = spectral_norm(nn.Conv1d(width, cmap, 1))

    def forward(self, x: Tensor, cmap: Tensor) -> Tensor:
        h = F.leaky_relu(self.inp(x), 0.2)  # (B, W, N)
        h = (F.leaky_relu(self.res(h), 0.2) + h) / math.sqrt(2)  # (B, W, N)
        return (self.out(h) * cmap[:, :, None]).sum(1) / math.sqrt(cmap.shape[1])  # (B, N)


class ProjectedDiscriminator(nn.Module):
    """Heads on frozen ViT features (patch embedding and a few blocks), class-projected.

    :param backbone: a timm ``VisionTransformer`` (DINO ViT-S/16 for ImageNet); kept frozen.
    :param hooks: indices of the blocks whose outputs the heads read (the patch embedding is
        always read too).
    :param input_size: images are resized to this before the backbone.
    :param prompts: condition on the text of prompt ids (then ``num_classes`` is unused).
    """

    def __init__(
        self,
        backbone: nn.Module,
        hooks: tuple[int, ...] = (2, 5, 8, 11),
        num_classes: int = 1000,
        width: int = 64,
        cmap: int = 64,
        input_size: int = 224,
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] = (0.229, 0.224, 0.225),
        prompts: PromptBank | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.hooks, self.input_size = hooks, input_size
        dim = backbone.embed_dim
        self.heads = nn.ModuleList([_Head(dim, width, cmap) for _ in range(len(hooks) + 1)])
        self.embed = condition_embedding(num_classes, cmap, prompts)
        self.register_buffer("mean", torch.tensor(mean)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(std)[None, :, None, None], persistent=False)

    def train(self, mode: bool = True) -> ProjectedDiscriminator:
        super().train(mode)
        self.backbone.eval()  # frozen, always in eval mode
        return self

    def features(self, images: Tensor) -> list[Tensor]:
        """Token features ``(B, D, N)`` at the patch embedding and each hooked block."""
        x = F.interpolate(images, size=self.input_size, mode="area")  # (B, 3, S, S)
        x = (x - self.mean) / self.std
        vit = self.backbone
        x = vit.patch_embed(x)  # (B, N, D)
        x = vit._pos_embed(x)  # (B, P + N, D) with the prefix (CLS) tokens
        prefix = vit.num_prefix_tokens
        out = [x]
        for i, block in enumerate(vit.blocks):
            x = block(x)
            if i in self.hooks:
                out.append(x)
        # the CLS token is added to every patch token, then dropped
        return [(t[:, prefix:] + t[:, :1]).transpose(1, 2) for t in out]

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        """Logits ``(B, heads * N)`` for images ``(B, 3, H, W)`` in [0, 1] and labels ``(B,)``."""
        cmap = self.embed(labels)  # (B, C)
        return torch.cat([h(f, cmap) for h, f in zip(self.heads, self.features(images), strict=True)], 1)


DINO_MODEL = "vit_small_patch16_224.dino"


def dino_backbone(weights: Path | None = None) -> nn.Module:
    """The frozen DINO ViT-S/16 from a user file (safetensors or a weights-only torch file),
    or from the Hugging Face cache timm uses. Never downloads."""
    import timm

    from adanat.checkpoints import read_state_dict

    model = timm.create_model(DINO_MODEL, pretrained=False, num_classes=0)
    if weights is None:
        from huggingface_hub import try_to_load_from_cache

        repo = model.pretrained_cfg.get("hf_hub_id") or "timm/vit_small_patch16_224.dino"
        cached = try_to_load_from_cache(repo, "model.safetensors")
        if not isinstance(cached, str):
            raise FileNotFoundError(
                f"DINO weights are not in the timm cache ({repo}); pass --dino PATH "
                "(a model.safetensors of vit_small_patch16_224.dino)"
            )
        weights = Path(cached)
    state = read_state_dict(Path(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or [k for k in unexpected if not k.startswith("head")]:
        raise ValueError(f"{weights} is not a ViT-S/16 state dict (missing {missing[:3]})")
    return model
