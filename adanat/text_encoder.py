"""The CLIP text tower that conditions a text-to-image generator (AdaNAT's CC3M model).

The generator reads the last hidden states ``(B, 77, W)`` of the 77-token prompt (padded with id
0, after the final LayerNorm; the empty prompt's states are the unconditional context), and
AdaNAT's discriminator reads the projected pooled embedding (the end-of-text token's state times
``text_projection``, L2-normalised). The official pipeline ran the transformers
``CLIPTextModelWithProjection`` of ``laion/CLIP-ViT-bigG-14-laion2B-39B-b160k`` with
``pad_token_id = 0``; this module builds the same tower from open-clip's own modules and loads
open-clip or transformers state dicts into it (``docs/text_to_image.md``, "The text encoder",
records where the two agree and differ).

Weights are never downloaded: they come from a user file (read without pickle) or, for
ViT-bigG-14, from a file already in the local Hugging Face cache. Every failure is a
:class:`TextEncoderError` with a one-line message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, _build_text_tower
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import TextTransformer
from torch import Tensor, nn

from adanat.checkpoints import CheckpointError, key_mismatch, read_state_dict

DEFAULT_ARCH = "ViT-bigG-14"
"""open-clip architecture of AdaNAT's CC3M text encoder (pretrained tag ``laion2b_s39b_b160k``)."""

HF_REPOS = {DEFAULT_ARCH: "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"}
"""Hugging Face repos whose cached open-clip weights are looked for, by architecture."""

CACHE_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
"""The open-clip weight files of a Hugging Face repo, in the order they are looked for."""

PAD_ID = 0
"""The padding id (open-clip's tokenizer pads with 0, the token ``!``; AdaNAT set the transformers
tokenizer's ``pad_token_id`` to 0 to match)."""


class TextEncoderError(ValueError):
    """A text encoder that cannot be built or whose weights are missing, unreadable or do not fit."""


class TextEncoderSpec(Protocol):
    """What :func:`load_text_encoder` reads of a preset (:class:`adanat.presets.TextEncoderPreset`)."""

    arch: str | None
    hf_repo: str | None
    embed_dim: int | None
    text_cfg: dict[str, Any] | None


@dataclass(frozen=True)
class TextStates:
    """A batch of prompts as the text tower sees them.

    :param hidden: ``(B, 77, W)`` float32 last hidden states (after the final LayerNorm).
    :param pooled: ``(B, E)`` float32 projected end-of-text state (not normalised).
    """

    hidden: Tensor
    pooled: Tensor

    def normalized(self) -> Tensor:
        """``(B, E)`` the pooled embedding L2-normalised (what AdaNAT's discriminator reads)."""
        return F.normalize(self.pooled, dim=-1)  # (B, E)

    def __len__(self) -> int:
        return self.hidden.shape[0]


@dataclass(frozen=True)
class TextEncoderConfig:
    """A CLIP text tower: open-clip's text config and output size.

    :param text_cfg: keyword arguments of open-clip's ``CLIPTextCfg``.
    :param embed_dim: ``E``, the width of the projected pooled embedding.
    :param quick_gelu: the tower uses QuickGELU (OpenAI's models) instead of exact GELU.
    :param arch: the open-clip architecture it came from (None: an inline config).
    :param hf_repo: the Hugging Face repo whose cached weights are used when no file is given.
    :param projection: the tower has ``text_projection`` (False: ``pooled`` is the unprojected
        end-of-text state, ``E == W``; a transformers ``CLIPTextModel`` file).
    :param name: the preset it came from (for messages).
    """

    text_cfg: dict[str, Any]
    embed_dim: int
    quick_gelu: bool = False
    arch: str | None = None
    hf_repo: str | None = None
    projection: bool = True
    name: str = field(default="", compare=False)

    @classmethod
    def from_arch(cls, arch: str = DEFAULT_ARCH, hf_repo: str | None = None) -> TextEncoderConfig:
        """The text tower of open-clip architecture ``arch`` (``ViT-bigG-14``)."""
        cfg = open_clip.get_model_config(arch)
        if cfg is None or "text_cfg" not in cfg:
            raise TextEncoderError(f"unknown open-clip architecture {arch!r} for the text encoder")
        return cls(
            text_cfg=dict(cfg["text_cfg"]),
            embed_dim=int(cfg["embed_dim"]),
            quick_gelu=bool(cfg.get("quick_gelu", False)),
            arch=arch,
            hf_repo=hf_repo or HF_REPOS.get(arch),
        )

    @classmethod
    def of(cls, spec: str | TextEncoderConfig | TextEncoderSpec) -> TextEncoderConfig:
        """An architecture name, a config, or a preset (``arch``, or ``text_cfg`` and ``embed_dim``)."""
        if isinstance(spec, TextEncoderConfig):
            return spec
        if isinstance(spec, str):
            return cls.from_arch(spec)
        name = str(getattr(spec, "name", ""))
        if spec.arch is not None:
            return replace(cls.from_arch(spec.arch, spec.hf_repo), name=name)
        if spec.text_cfg is None or spec.embed_dim is None:
            raise TextEncoderError(f"text encoder {name or spec!r}: no arch and no text_cfg/embed_dim")
        return cls(text_cfg=dict(spec.text_cfg), embed_dim=int(spec.embed_dim), name=name)

    @property
    def label(self) -> str:
        """How messages name this tower."""
        return self.arch or self.name or "inline text tower"


@cache
def _tokenizer(context_length: int) -> SimpleTokenizer:
    return SimpleTokenizer(context_length=context_length)


class TextEncoder(nn.Module):
    """A frozen open-clip CLIP text tower (``self.tower``, an open-clip ``TextTransformer``).

    :param config: the tower's architecture; its weights are random until loaded
        (:func:`load_text_encoder`).
    """

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        cfg = dict(config.text_cfg)
        cfg["output_tokens"] = True  # the tower returns (pooled, hidden)
        if not config.projection:
            cfg["proj_type"] = "none"
        try:
            text_cfg = CLIPTextCfg(**cfg)
        except TypeError as e:
            raise TextEncoderError(f"text encoder {config.label}: bad text_cfg ({e})") from None
        unsupported = [
            what
            for what, bad in (
                ("a Hugging Face text model", bool(text_cfg.hf_model_name)),
                ("a class token", text_cfg.embed_cls),
                ("no causal mask", text_cfg.no_causal_mask),
                (f"pool_type {text_cfg.pool_type!r}", text_cfg.pool_type != "argmax"),
                ("a projection bias", text_cfg.proj_bias and config.projection),
            )
            if bad
        ]
        if unsupported:
            what = ", ".join(unsupported)
            raise TextEncoderError(f"text encoder {config.label}: unsupported text tower ({what})")
        tokenizer = _tokenizer(text_cfg.context_length)
        if text_cfg.vocab_size != len(tokenizer.encoder):
            raise TextEncoderError(
                f"text encoder {config.label}: vocab_size {text_cfg.vocab_size} does not fit open-clip's "
                f"tokenizer ({len(tokenizer.encoder)} tokens)"
            )
        self.config = config
        self.tokenizer = tokenizer
        self.tower: TextTransformer = _build_text_tower(config.embed_dim, text_cfg, config.quick_gelu)
        self.requires_grad_(False)
        self.train(False)

    @classmethod
    def from_config(cls, text_cfg: dict[str, Any], embed_dim: int, quick_gelu: bool = False) -> TextEncoder:
        """A tower with random weights from an open-clip text config (tests: width 32, 2 layers)."""
        return cls(TextEncoderConfig(text_cfg=dict(text_cfg), embed_dim=embed_dim, quick_gelu=quick_gelu))

    @classmethod
    def from_preset(cls, spec: str | TextEncoderConfig | TextEncoderSpec) -> TextEncoder:
        """A tower with random weights for an architecture name, config or preset
        (:meth:`TextEncoderConfig.of`); seed torch first for reproducible weights."""
        return cls(TextEncoderConfig.of(spec))

    def train(self, mode: bool = True) -> TextEncoder:
        """The tower is frozen: it stays in eval mode whatever ``mode`` says."""
        return super().train(False)

    @property
    def width(self) -> int:
        """``W``, the width of the hidden states."""
        return self.tower.width

    @property
    def embed_dim(self) -> int:
        """``E``, the width of the pooled embedding (``W`` for a tower without projection)."""
        proj = self.tower.text_projection
        return self.width if proj is None else proj.shape[1]

    @property
    def context_length(self) -> int:
        """Tokens per prompt (77)."""
        return self.tower.context_length

    @property
    def device(self) -> torch.device:
        return self.tower.token_embedding.weight.device

    def tokenize(self, prompts: Sequence[str]) -> Tensor:
        """``(B, 77)`` long token ids: start-of-text, the words (lower-cased, cut after 75 tokens),
        end-of-text, then padding id 0."""
        if isinstance(prompts, str):
            raise TypeError("tokenize takes a list of prompts, not one string")
        return self.tokenizer(list(prompts), context_length=self.context_length)  # (B, 77)

    def forward(self, tokens: Tensor) -> TextStates:
        """The states of token ids ``(B, 77)`` (float32 whatever the weights' dtype)."""
        if tokens.ndim != 2 or tokens.shape[1] != self.context_length or tokens.dtype != torch.long:
            got = f"{tuple(tokens.shape)} {tokens.dtype}"
            raise ValueError(f"text tokens must be (B, {self.context_length}) int64, got {got}")
        pooled, hidden = self.tower(tokens.to(self.device))  # (B, E), (B, 77, W)
        return TextStates(hidden=hidden.float(), pooled=pooled.float())

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], batch_size: int = 256) -> TextStates:
        """The states of ``prompts`` (no grad, on the module's device), ``batch_size`` at a time,
        in the weights' own precision whatever autocast the caller runs under (a prompt's states
        must not depend on which caller encoded it first)."""
        tokens = self.tokenize(prompts)  # (B, 77)
        if len(tokens) == 0:
            raise ValueError("encode needs at least one prompt")
        with torch.autocast(self.device.type, enabled=False):
            parts = [self(chunk) for chunk in tokens.split(batch_size)]
        return TextStates(
            hidden=torch.cat([p.hidden for p in parts]),  # (B, 77, W)
            pooled=torch.cat([p.pooled for p in parts]),  # (B, E)
        )


# -- state dicts --------------------------------------------------------------------------------

_OPEN_CLIP_IGNORED = ("visual.", "logit_scale", "logit_bias", "attn_mask")
_HF_IGNORED = ("vision_model.", "visual_projection.", "logit_scale", "logit_bias")
_HF_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)")
_HF_LAYER_PARTS = {
    "self_attn.out_proj.": "attn.out_proj.",
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
}
_HF_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


def state_dict_format(state_dict: dict[str, Tensor]) -> str:
    """``open_clip`` (a full CLIP or text-only state dict), ``open_clip_custom`` (a CustomTextCLIP's
    ``text.*``), ``adanat`` (a :class:`TextEncoder`'s own ``tower.*``), ``transformers``
    (CLIPModel, CLIPTextModel[WithProjection]) or ``unknown``."""
    if "token_embedding.weight" in state_dict:
        return "open_clip"
    for prefix, kind in (("text.", "open_clip_custom"), ("tower.", "adanat")):
        if prefix + "token_embedding.weight" in state_dict:
            return kind
    if any(k in state_dict for k in ("text_model.embeddings.token_embedding.weight", *_HF_TOP)):
        return "transformers"
    return "unknown"


def convert_state_dict(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The text keys of an open-clip, adanat or transformers CLIP state dict in the layout of open-clip's
    ``TextTransformer``, and each new key's name in the source (for messages). Image-tower keys
    and ``logit_scale`` are dropped; unknown text keys are kept as they are (so a strict check
    reports them)."""
    if all(k.startswith("module.") for k in state_dict):  # saved from a DistributedDataParallel
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    kind = state_dict_format(state_dict)
    if kind == "open_clip":
        out = {k: v for k, v in state_dict.items() if not k.startswith(_OPEN_CLIP_IGNORED)}
        return out, {k: k for k in out}
    if kind in ("open_clip_custom", "adanat"):
        prefix = "text." if kind == "open_clip_custom" else "tower."
        out = {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}
        return out, {k: prefix + k for k in out}
    if kind == "transformers":
        return _convert_transformers(state_dict)
    raise TextEncoderError("not a CLIP text tower state dict (no token_embedding weight found)")


def _convert_transformers(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    out: dict[str, Tensor] = {}
    names: dict[str, str] = {}
    qkv: dict[tuple[str, str], dict[str, tuple[str, Tensor]]] = {}  # (layer, weight|bias) -> q/k/v
    for src, value in state_dict.items():
        if src.startswith(_HF_IGNORED):
            continue
        key = src.removeprefix("text_model.")
        if key == "embeddings.position_ids":  # a buffer, not a weight
            continue
        if src == "text_projection.weight":  # Linear(W, E): (E, W); open-clip's parameter is (W, E)
            dst, value = "text_projection", value.t().contiguous()  # (W, E)
        elif key in _HF_TOP:
            dst = _HF_TOP[key]
        elif m := _HF_LAYER.fullmatch(key):
            layer, rest = m.groups()
            if qm := re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest):
                qkv.setdefault((layer, qm.group(2)), {})[qm.group(1)] = (src, value)
                continue
            part = next((p for p in _HF_LAYER_PARTS if rest.startswith(p)), None)
            dst = f"transformer.resblocks.{layer}." + (
                _HF_LAYER_PARTS[part] + rest.removeprefix(part) if part else rest
            )
        else:
            dst = src
        out[dst], names[dst] = value, src
    for (layer, kind), parts in qkv.items():
        dst = f"transformer.resblocks.{layer}.attn.in_proj_{kind}"
        missing = [p for p in "qkv" if p not in parts]
        if missing:
            prefix = next(iter(parts.values()))[0].rsplit(".self_attn.", 1)[0]
            raise TextEncoderError(f"missing {prefix}.self_attn.{missing[0]}_proj.{kind}")
        shapes = {tuple(parts[p][1].shape) for p in "qkv"}
        if len(shapes) != 1:
            raise TextEncoderError(f"{parts['q'][0]} and its k/v projections differ in shape")
        out[dst] = torch.cat([parts[p][1] for p in "qkv"])  # (3W, W) or (3W,)
        names[dst] = parts["q"][0].replace(".q_proj.", ".{q,k,v}_proj.")
    return out, names


def _check(encoder: TextEncoder, sd: dict[str, Tensor], names: dict[str, str], where: str) -> None:
    expected = {k: tuple(v.shape) for k, v in encoder.tower.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [names.get(k, k) for k in sd if k not in expected]
    label = encoder.config.label
    if missing == ["text_projection"] and not unexpected:
        raise TextEncoderError(
            f"{where} holds no text_projection (a transformers CLIPTextModel?): the pooled embedding needs "
            "it; give a CLIPTextModelWithProjection, CLIPModel or open-clip file"
        )
    if missing or unexpected:
        raise TextEncoderError(f"{where}: text keys do not fit {label}: {key_mismatch(missing, unexpected)}")
    for k, shape in expected.items():
        if tuple(sd[k].shape) != shape:
            raise TextEncoderError(
                f"{where}: tensor {names.get(k, k)} has shape {tuple(sd[k].shape)}, {label} expects {shape}"
            )


def cached_weights(config: TextEncoderConfig) -> Path:
    """A file of ``config.hf_repo`` already in the local Hugging Face cache (no download)."""
    hint = "pass --text-encoder PATH (an open-clip or transformers state dict; nothing is downloaded)"
    if config.hf_repo is None:
        raise TextEncoderError(f"no weights for text encoder {config.label}: {hint}")
    from huggingface_hub import constants, try_to_load_from_cache

    # read the environment now: huggingface_hub fixes its default cache folder when imported
    cache_dir = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if not cache_dir and os.environ.get("HF_HOME"):
        cache_dir = str(Path(os.environ["HF_HOME"]) / "hub")
    cache_dir = cache_dir or constants.HF_HUB_CACHE
    for filename in CACHE_FILES:
        try:
            found = try_to_load_from_cache(config.hf_repo, filename, cache_dir=cache_dir)
        except (ValueError, OSError):  # a malformed cache folder
            found = None
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    raise TextEncoderError(
        f"no weights for text encoder {config.label}: none given and none of {', '.join(CACHE_FILES)} of "
        f"{config.hf_repo} in the local Hugging Face cache ({cache_dir}); {hint}"
    )


def load_text_encoder(
    arch: str | TextEncoderConfig | TextEncoderSpec = DEFAULT_ARCH,
    weights: str | Path | dict[str, Tensor] | None = None,
    device: torch.device | str = "cpu",
    *,
    dtype: torch.dtype = torch.float32,
    projection: bool = True,
) -> TextEncoder:
    """The frozen text tower of ``arch`` (an open-clip architecture name, a config, or a preset)
    filled strictly from ``weights``.

    :param weights: an open-clip CLIP state dict (full or text-only) or a transformers CLIPModel /
        CLIPTextModelWithProjection one, as a ``.safetensors`` or ``weights_only`` torch file or a
        dict; None: the config's Hugging Face repo in the local cache (never downloaded); an
        inline config without a repo needs a file (a random tower is :meth:`TextEncoder.from_preset`).
    :param dtype: floating dtype of the weights (the states are float32 either way).
    :param projection: False accepts a file without ``text_projection`` (``pooled`` is then the
        unprojected end-of-text state).
    """
    config = TextEncoderConfig.of(arch)
    if not projection:
        config = replace(config, projection=False)
    if weights is None:  # refused when the config names no repo to look for
        weights = cached_weights(config)
    if isinstance(weights, dict):
        where, sd = "text encoder weights", weights
    else:
        where = f"text encoder weights {weights}"
        try:
            sd = read_state_dict(weights)
        except CheckpointError as e:
            raise TextEncoderError(str(e).replace("checkpoint", "text encoder weights", 1)) from None
    try:
        sd, names = convert_state_dict(sd)
    except TextEncoderError as e:
        raise TextEncoderError(f"{where}: {e}") from None
    with torch.device("meta"):
        encoder = TextEncoder(config)
    _check(encoder, sd, names, where)
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    encoder.tower.load_state_dict(sd, strict=True, assign=True)
    encoder.tower.attn_mask = encoder.tower.build_causal_mask()  # a non-persistent buffer, built on meta
    return encoder.to(device)
