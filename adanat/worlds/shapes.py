"""``shapes``: a procedural, class-conditional 32x32 RGB image data set generated on the fly.

Each image shows one shape of its class (circle, square, triangle, star, plus, ring, crescent,
half-disk, double bar, L-corner) at a random position, scale and rotation, in one of six palette
colours, on one of four solid background colours, and in one image of five with a small
distractor blob or stroke.
Image ``i`` of a split is a pure function of ``(split seed, i)``; its class is ``i % 10``.
Shapes are rasterised from signed distance functions with one pixel of anti-aliasing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from adanat.metrics import FeatureSpace, Reference, ReferenceRequest

CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "plus",
    "ring",
    "crescent",
    "half-disk",
    "double-bar",
    "corner",
)
IMAGE_SIZE = 32

# split name -> seed; "train" for training, "heldout" for evaluation, "reference" a second real
# set of the held-out kind (the FID floor is heldout vs reference)
SPLIT_SEEDS: dict[str, int] = {"train": 0, "heldout": 1, "reference": 2}


def _generator(seed: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _grid() -> tuple[Tensor, Tensor]:
    c = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5
    return c[None, :].expand(IMAGE_SIZE, -1), c[:, None].expand(-1, IMAGE_SIZE)  # x, y (H, W)


def _box(px: Tensor, py: Tensor, hx: float, hy: float) -> Tensor:
    dx, dy = px.abs() - hx, py.abs() - hy
    outside = torch.sqrt(dx.clamp_min(0) ** 2 + dy.clamp_min(0) ** 2)
    return outside + torch.maximum(dx, dy).clamp_max(0)


def _polygon(px: Tensor, py: Tensor, points: list[tuple[float, float]]) -> Tensor:
    """Signed distance to a simple polygon (negative inside)."""
    d = torch.full_like(px, float("inf"))
    inside = torch.zeros_like(px, dtype=torch.bool)
    n = len(points)
    for i in range(n):
        (ax, ay), (bx, by) = points[i], points[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        wx, wy = px - ax, py - ay
        t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0, 1)
        d = torch.minimum(d, torch.hypot(wx - t * ex, wy - t * ey))
        crosses = ((py >= ay) != (py >= by)) & (px < ax + (py - ay) * ex / (ey if ey else 1e-9))
        inside ^= crosses
    return torch.where(inside, -d, d)


def shape_sdf(kind: int, px: Tensor, py: Tensor, r: float) -> Tensor:
    """Signed distance (pixels, negative inside) of class ``kind`` of size ``r`` at the origin."""
    name = CLASSES[kind]
    if name == "circle":
        return torch.hypot(px, py) - r
    if name == "square":
        return _box(px, py, 0.8 * r, 0.8 * r)
    if name == "triangle":
        pts = [
            (r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))
        ]
        return _polygon(px, py, pts)
    if name == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.5 * r
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        return _polygon(px, py, pts)
    if name == "plus":
        return torch.minimum(_box(px, py, r, 0.3 * r), _box(px, py, 0.3 * r, r))
    if name == "ring":
        return (torch.hypot(px, py) - 0.75 * r).abs() - 0.25 * r
    if name == "crescent":
        return torch.maximum(torch.hypot(px, py) - r, -(torch.hypot(px - 0.55 * r, py) - 0.8 * r))
    if name == "half-disk":
        return torch.maximum(torch.hypot(px, py + 0.3 * r) - r, -(py + 0.3 * r))
    if name == "double-bar":
        return torch.minimum(_box(px, py - 0.5 * r, r, 0.22 * r), _box(px, py + 0.5 * r, r, 0.22 * r))
    if name == "corner":
        return torch.minimum(_box(px + 0.35 * r, py, 0.25 * r, r), _box(px, py - 0.75 * r, r * 0.6, 0.25 * r))
    raise ValueError(f"unknown shape class {kind}")


# Colours come from small palettes, so that the information a generator must learn is mostly
# geometric (which shape, where, how large, how turned) rather than colour noise: with 8 x 8 tokens
# of 4 x 4 pixels every colour pair multiplies the codes an edge needs, and shaded backgrounds
# (gradients, stripes) spent half of a 128-code book on background shades in an earlier version.
FOREGROUND: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.15, 0.15),  # red
    (0.95, 0.90, 0.20),  # yellow
    (0.20, 0.75, 0.25),  # green
    (0.15, 0.80, 0.85),  # cyan
    (0.20, 0.35, 0.90),  # blue
    (0.95, 0.95, 0.95),  # white
)
BACKGROUND: tuple[tuple[float, float, float], ...] = (
    (0.10, 0.12, 0.25),  # navy
    (0.18, 0.18, 0.18),  # charcoal
    (0.10, 0.25, 0.15),  # forest
    (0.75, 0.68, 0.50),  # sand
)


def _pick(g: torch.Generator, palette: tuple[tuple[float, float, float], ...]) -> Tensor:
    return torch.tensor(palette[int(torch.randint(0, len(palette), (1,), generator=g))])  # (3,)


def _background(g: torch.Generator, x: Tensor, y: Tensor) -> Tensor:
    """A solid background in one of the background colours."""
    return _pick(g, BACKGROUND)[:, None, None].expand(3, *x.shape).clone()  # (3, H, W)


def render(seed: int, index: int, label: int) -> Tensor:
    """Image ``(3, 32, 32)`` in [0, 1] of class ``label`` for ``(seed, index)``."""
    g = _generator(seed, index)
    x, y = _grid()
    image = _background(g, x, y)  # (3, H, W)
    # a distractor in 1 image of 5: a small blob or a short stroke, drawn under the main shape
    if float(torch.rand(1, generator=g)) < 0.2:
        cx, cy = (torch.rand(2, generator=g) * IMAGE_SIZE).tolist()
        col = _pick(g, FOREGROUND)
        if float(torch.rand(1, generator=g)) < 0.5:
            sdf = torch.hypot(x - cx, y - cy) - (1.0 + 1.5 * float(torch.rand(1, generator=g)))
        else:
            a = float(torch.rand(1, generator=g)) * math.pi
            px = (x - cx) * math.cos(a) + (y - cy) * math.sin(a)
            py = -(x - cx) * math.sin(a) + (y - cy) * math.cos(a)
            sdf = _box(px, py, 2.5 + 2 * float(torch.rand(1, generator=g)), 0.6)
        alpha = (0.5 - sdf).clamp(0, 1)  # (H, W)
        image = image * (1 - alpha) + col[:, None, None] * alpha
    # the main shape: a palette colour that stands out, random scale, rotation and position
    r = 10.0 + 3.0 * float(torch.rand(1, generator=g))
    angle = float(torch.rand(1, generator=g)) * 2 * math.pi
    margin = r * 0.9
    cx, cy = (margin + torch.rand(2, generator=g) * (IMAGE_SIZE - 2 * margin)).tolist()
    k = int(torch.randint(0, len(FOREGROUND), (1,), generator=g))
    bg_mean = image.mean(dim=(1, 2))  # (3,)
    while (torch.tensor(FOREGROUND[k]) - bg_mean).abs().sum() < 0.6:  # visible against the background
        k = (k + 1) % len(FOREGROUND)
    col = torch.tensor(FOREGROUND[k])  # (3,)
    px = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
    py = -(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)
    alpha = (0.5 - shape_sdf(label, px, py, r)).clamp(0, 1)  # (H, W)
    return image * (1 - alpha) + col[:, None, None] * alpha


@dataclass
class ShapesDataset(Dataset):
    """``size`` images of a split; item ``i`` is ``(image (3, 32, 32) in [0, 1], i % 10)``."""

    split: str = "train"
    size: int = 50_000

    def __post_init__(self) -> None:
        if self.split not in SPLIT_SEEDS:
            raise ValueError(f"unknown split {self.split!r}; known: {', '.join(SPLIT_SEEDS)}")

    @property
    def seed(self) -> int:
        return SPLIT_SEEDS[self.split]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        label = index % len(CLASSES)
        return render(self.seed, index, label), label


# --- the world's reference and quality numbers (its metric network's feature space) ---------


def real_images(split: str, n: int) -> Tensor:
    """``n`` uint8 images ``(n, 3, 32, 32)`` of a split."""
    from adanat.outputs import to_uint8

    ds = ShapesDataset(split, n)
    return to_uint8(torch.stack([ds[i][0] for i in range(n)]))


@torch.no_grad()
def shapes_reference(space: FeatureSpace, split: str, request: ReferenceRequest) -> Reference:
    """Features of ``request.n`` real images of ``split`` (sharded like the generated ones: each
    process renders only its own batches)."""
    from adanat.metrics import FidStatistics, Reference, features_of_batches
    from adanat.outputs import to_uint8

    n = request.n
    ds = ShapesDataset(split, n)

    def render(rows: range) -> Tensor:
        return to_uint8(torch.stack([ds[i][0] for i in rows]))  # (b, 3, H, W)

    feats = features_of_batches(space, n, render, request.shard, request.device, request.batch_size)  # (n, F)
    return Reference(FidStatistics.of(feats), feats, f"shapes {split} split, {n} images")


def shapes_quality(images: Tensor, labels: Tensor, reference: Tensor, seed: int = 0) -> dict[str, float]:
    """FID, IS, precision, recall (metric-network space) and class accuracy of uint8 ``images``
    ``(N, 3, H, W)`` with ``labels`` ``(N,)`` against uint8 ``reference`` images."""
    from adanat.assets import load_metric_network
    from adanat.metrics import fidelity_metrics, register_shapes_extractor
    from adanat.models.classifier import accuracy

    out = fidelity_metrics(images, reference, register_shapes_extractor(), seed=seed)
    out["class_accuracy"] = accuracy(load_metric_network(), images, labels)
    return out


def shapes_floor(n: int, seed: int = 0) -> dict[str, float]:
    """Real-vs-real numbers: the held-out split against the reference split."""
    held, ref = real_images("heldout", n), real_images("reference", n)
    return shapes_quality(ref, torch.arange(n) % len(CLASSES), held, seed)
