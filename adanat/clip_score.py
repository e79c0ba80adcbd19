"""CLIP image-text similarity (open-clip, weights by path): the ``clip`` reward and the CLIP score
of text-to-image evaluations.

``ClipSimilarity(images, ids)`` is the cosine similarity between each image's CLIP embedding and
the embedding of text ``ids[i]`` of its text list (class prompts for a class world, the prompts
themselves for a text world). A short list (up to ``PRECOMPUTED`` texts) is embedded once, up
front; a longer one (a caption file) on first use, the ``cache_size`` most recently used kept,
each computed in float32 outside any autocast, so a text's embedding never depends on the
order of requests. The CLIP score
of an evaluation is ``100 * mean(max(cos, 0))`` over its images, each against its own prompt.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PRECOMPUTED = 1024  # text lists up to this long are embedded at construction


class ClipSimilarity:
    """Cosine similarity of images with texts, by text id.

    :param model: an open-clip ``CLIP`` model (frozen).
    :param tokenizer: its open-clip tokenizer.
    :param texts: text ``i`` has id ``i``.
    :param cache_size: embeddings kept of a list longer than :data:`PRECOMPUTED`.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[[list[str]], Tensor],
        texts: Sequence[str],
        cache_size: int = 4096,
    ) -> None:
        self.model, self.tokenizer, self.texts = model.eval().requires_grad_(False), tokenizer, list(texts)
        size = model.visual.image_size
        self.image_size = size if isinstance(size, int) else int(size[0])
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        self.mean = torch.tensor(cfg.get("mean", OPENAI_MEAN))[None, :, None, None]
        self.std = torch.tensor(cfg.get("std", OPENAI_STD))[None, :, None, None]
        self.cache_size = cache_size
        self._text: OrderedDict[int, Tensor] = OrderedDict()
        if len(self.texts) <= PRECOMPUTED:
            self.cache_size = len(self.texts)
            self.text_embeddings(torch.arange(len(self.texts)))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def text_embeddings(self, ids: Tensor) -> Tensor:
        """``(B, E)`` normalised embeddings of the texts of ``ids`` ``(B,)``."""
        wanted = ids.tolist()
        missing = sorted({i for i in wanted if i not in self._text})
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            tokens = self.tokenizer([self.texts[i] for i in chunk]).to(self.device)  # (m, 77)
            with torch.autocast(self.device.type, enabled=False):
                emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1)  # (m, E)
            self._text.update(zip(chunk, [e.clone() for e in emb], strict=True))  # rows, not views
        for i in wanted:
            self._text.move_to_end(i)
        out = torch.stack([self._text[i] for i in wanted])  # (B, E)
        while len(self._text) > max(self.cache_size, len(set(wanted))):
            self._text.popitem(last=False)
        return out

    @torch.no_grad()
    def __call__(self, images: Tensor, ids: Tensor) -> Tensor:
        """``(B,)`` cosine similarities of images ``(B, 3, H, W)`` (float in [0, 1] or uint8)
        with the texts of ``ids`` ``(B,)``."""
        dev = self.device
        x = images.to(dev).float()
        if images.dtype == torch.uint8:
            x = x / 255
        x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False)  # (B, 3, S, S)
        x = (x.clamp(0, 1) - self.mean.to(dev)) / self.std.to(dev)
        emb = F.normalize(self.model.encode_image(x).float(), dim=-1)  # (B, E)
        return (emb * self.text_embeddings(ids)).sum(-1).to(images.device)  # (B,)


def clip_score(similarities: Tensor) -> float:
    """``100 * mean(max(cos, 0))`` of per-image similarities ``(N,)``."""
    return float(100 * similarities.double().clamp_min(0).mean())


def load_clip(model_name: str, weights: Path) -> tuple[nn.Module, Callable[[list[str]], Tensor]]:
    """An open-clip model with weights from a local file (never downloads): ``model_name`` is an
    open-clip architecture (``ViT-B-32``) or the path of an open-clip model config JSON
    (``embed_dim``, ``vision_cfg``, ``text_cfg``) for an architecture open-clip does not list."""
    import open_clip

    from adanat.checkpoints import read_state_dict

    if model_name.endswith(".json"):
        cfg = json.loads(Path(model_name).read_text(encoding="utf-8"))
        if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
            raise ValueError(
                f"{model_name} is not an open-clip model config (embed_dim, vision_cfg, text_cfg)"
            )
        try:
            model = open_clip.CLIP(**cfg)
        except (TypeError, KeyError, ValueError) as e:
            raise ValueError(f"{model_name} is not an open-clip model config: {e}") from None
        context = dict(cfg["text_cfg"]).get("context_length", 77)
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context)  # CLIP's BPE
    else:
        model = open_clip.create_model(model_name, pretrained=None)
        tokenizer = open_clip.get_tokenizer(model_name)
    state = read_state_dict(weights)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model, tokenizer
