"""CLIP reward: cosine similarity between an image and a text prompt for its class (open-clip)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipReward:
    """``cos(image_embedding, text_embedding(prompt.format(class_name)))`` per image.

    :param model: an open-clip ``CLIP`` model (frozen).
    :param tokenizer: open-clip tokenizer for the model.
    :param class_names: one name per class index.
    :param prompt: prompt template with one ``{}`` for the class name.
    """

    name = "clip"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[[list[str]], Tensor],
        class_names: Sequence[str],
        prompt: str = "a photo of a {}",
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        size = model.visual.image_size
        self.image_size = size if isinstance(size, int) else int(size[0])
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        self.mean = torch.tensor(cfg.get("mean", OPENAI_MEAN))[None, :, None, None]
        self.std = torch.tensor(cfg.get("std", OPENAI_STD))[None, :, None, None]
        dev = next(model.parameters()).device
        with torch.no_grad():
            text = tokenizer([prompt.format(n) for n in class_names]).to(dev)
            self.text = F.normalize(model.encode_text(text).float(), dim=-1)  # (C, E)

    @torch.no_grad()
    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        dev = self.text.device
        x = F.interpolate(images.to(dev).float(), size=self.image_size, mode="bicubic", align_corners=False)
        x = (x.clamp(0, 1) - self.mean.to(dev)) / self.std.to(dev)  # (B, 3, S, S)
        emb = F.normalize(self.model.encode_image(x).float(), dim=-1)  # (B, E)
        return (emb * self.text[labels.to(dev)]).sum(-1).to(images.device)  # (B,)


def load_clip(model_name: str, weights: Path) -> tuple[nn.Module, Callable[[list[str]], Tensor]]:
    """An open-clip architecture by name with weights from a local file (never downloads)."""
    import open_clip

    from adanat.checkpoints import read_state_dict

    model = open_clip.create_model(model_name, pretrained=None)
    state = read_state_dict(weights)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model, open_clip.get_tokenizer(model_name)
