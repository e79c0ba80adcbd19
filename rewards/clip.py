"""CLIP reward: cosine similarity between an image and its text (open-clip): the prompt of its
class (``prompt.format(class_name)``) in a class world, the episode's own prompt in a text world."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from adanat.clip_score import ClipSimilarity, load_clip

__all__ = ["ClipReward", "load_clip"]


class ClipReward:
    """``cos(image_embedding, text_embedding(texts[label]))`` per image.

    :param model: an open-clip ``CLIP`` model (frozen).
    :param tokenizer: open-clip tokenizer for the model.
    :param texts: the text of each label: one prompt per class (class worlds) or the prompt of
        each prompt id (text worlds).
    """

    name = "clip"

    def __init__(
        self, model: nn.Module, tokenizer: Callable[[list[str]], Tensor], texts: Sequence[str]
    ) -> None:
        self.similarity = ClipSimilarity(model, tokenizer, texts)

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.similarity(images, labels)  # (B,)
