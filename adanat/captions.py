"""Image-caption pairs: where a text world's episode prompts and its real images come from.

Two layouts are read (``--captions PATH``):

* a **TSV** file with a header row naming a ``caption`` column and an image column (``image``,
  ``path``, ``file`` or ``filepath``), image paths relative to the file's folder, as CC3M's and
  MS-COCO's caption lists are commonly converted (the URL lists of the releases need their
  images downloaded first: img2dataset); blank lines and rows with an empty caption are left out;
* a **folder** of images, each with its caption in a ``.txt`` file of the same stem next to it
  (img2dataset's ``files`` output), searched recursively.

Pair ``i``'s caption is prompt ``i`` of the run's :class:`~adanat.prompts.PromptBank`, so a
real image's label is the id of its own caption and a fake image's label the id of the prompt it
was generated from: the discriminator sees both with their text.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from adanat.metrics import FeatureSpace, Reference, ReferenceRequest

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
IMAGE_COLUMNS = ("image", "path", "file", "filepath")


class CaptionError(ValueError):
    """A caption source that cannot be read."""


@dataclass(frozen=True)
class CaptionSet:
    """Captions and their image files, pair ``i`` at index ``i``."""

    captions: tuple[str, ...]
    images: tuple[Path, ...]
    source: Path

    def __len__(self) -> int:
        return len(self.captions)

    @staticmethod
    def read(path: Path) -> CaptionSet:
        """The pairs of a TSV file or a folder (see the module docstring)."""
        path = Path(path)
        if path.is_dir():
            pairs = _folder_pairs(path)
        elif path.is_file():
            pairs = _tsv_pairs(path)
        else:
            raise CaptionError(f"--captions {path} does not exist")
        if not pairs:
            raise CaptionError(f"--captions {path} holds no image-caption pair")
        return CaptionSet(tuple(c for c, _ in pairs), tuple(p for _, p in pairs), path)


def _folder_pairs(root: Path) -> list[tuple[str, Path]]:
    pairs = []
    for image in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        text = image.with_suffix(".txt")
        if text.is_file():
            caption = text.read_text(encoding="utf-8", errors="replace").strip()
            if caption:
                pairs.append((caption, image))
    return pairs


def _tsv_pairs(path: Path) -> list[tuple[str, Path]]:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError) as e:
        raise CaptionError(f"cannot read --captions {path}: {e}") from None
    if not rows:
        raise CaptionError(f"--captions {path} is empty")
    header = [h.strip().lower() for h in rows[0]]
    column = next((header.index(c) for c in IMAGE_COLUMNS if c in header), None)
    if "caption" not in header or column is None:
        raise CaptionError(
            f"--captions {path}: the header row needs a 'caption' column and an image column "
            f"({', '.join(IMAGE_COLUMNS)}); got {rows[0]}"
        )
    cap = header.index("caption")
    pairs = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):  # a blank line
            continue
        if len(row) <= max(cap, column):
            raise CaptionError(f"--captions {path}: line {line} has {len(row)} columns")
        image = path.parent / row[column].strip()
        if not image.is_file():
            raise CaptionError(f"--captions {path}: line {line}: image {image} not found")
        if row[cap].strip():  # an uncaptioned image is left out, as in a folder
            pairs.append((row[cap].strip(), image))
    return pairs


class CaptionedImages:
    """Real images of a :class:`CaptionSet` for a discriminator: resized (shorter side),
    centre-cropped to ``size``, flipped at random; the label of an image is its pair's index
    (the id of its caption in the prompt bank). Implements
    :class:`~adanat.rewards.real_images.RealImages`."""

    def __init__(self, captions: CaptionSet, size: int) -> None:
        from torchvision import transforms

        self.captions, self.size = captions, size
        self.transform = transforms.Compose(
            [transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()]
        )

    def image(self, i: int) -> Tensor:
        """Image ``(3, size, size)`` in [0, 1] of pair ``i``."""
        from PIL import Image

        path = self.captions.images[i]
        try:
            with Image.open(path) as im:
                return self.transform(im.convert("RGB"))
        except OSError as e:  # PIL's UnidentifiedImageError included
            raise CaptionError(f"captioned image {path} cannot be read: {e}") from None

    def sample(self, n: int, generator: torch.Generator, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, len(self.captions), (n,), generator=generator)  # (n,)
        flip = torch.rand(n, generator=generator) < 0.5  # (n,)
        if keep is not None:
            idx, flip = idx[keep], flip[keep]
        if not len(idx):
            return torch.empty(0, 3, 0, 0), torch.empty(0, dtype=torch.int64)
        images = torch.stack([self.image(i) for i in idx.tolist()])  # (k, 3, S, S)
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return images, idx


def caption_reference(captions: CaptionSet, space: FeatureSpace, request: ReferenceRequest) -> Reference:
    """The FID reference of the first ``request.n`` images of ``captions`` (all of them when it
    holds fewer), centre-cropped to the generated size: features gathered as the generated ones
    are (each process computes its own batches)."""
    from adanat.metrics import FidStatistics, Reference, features_of_batches
    from adanat.outputs import to_uint8

    images = CaptionedImages(captions, request.image_size)
    n = min(request.n, len(captions))
    if n < 2:
        raise CaptionError(f"--captions {captions.source}: a FID reference needs >= 2 images, got {n}")

    def render(rows: range) -> Tensor:
        return to_uint8(torch.stack([images.image(i) for i in rows]))  # (b, 3, S, S)

    feats = features_of_batches(space, n, render, request.shard, request.device, request.batch_size)  # (n, F)
    return Reference(FidStatistics.of(feats), feats, f"captioned images {captions.source}, {n} images")
