"""Cheap statistics of the training images, saying what input a model expects:
mean pixel, border brightness (polarity) and the source images' typical size.

`Dataset.input_statistics` holds them for the training split, computed once at load
time from the adapted uint8 images already in memory (a bounded sample of them, and
for TFDS of the first images read); `image_statistics()` computes the same figures
for new images, so a predictor can compare the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

STATISTICS_VERSION = 1

#: In-memory sources: the statistics are of at most this many training images,
#: evenly spaced (all of them below it). Enough for a mean to 0.1 grey level.
MEMORY_SAMPLE = 10_000

#: TFDS sources: the first images read from the training split, decoded once more
#: for this (JPEG decoding is what costs).
TFDS_SAMPLE = 256


def border_width(height: int, width: int) -> int:
    """Width in pixels of the border `image_statistics` averages: 1/16 of the
    shorter side (2 px at 32x32, 14 px at 224x224), at least 1."""
    return max(1, int(round(min(height, width) / 16)))


def image_statistics(images: Any) -> dict[str, Any]:
    """Mean pixel and border mean of images on the 0..255 scale.

    Args:
        images: NHWC (or a single HWC) array of pixels on the 0..255 scale, e.g.
            uint8 images adapted to a dataset's size and channels (see
            `kcnn.data.preprocess_images` with `normalization="none"`).

    Returns:
        `{"images": n, "mean": [c], "std": [c], "border_mean": [c], "border": b}`:
        per-channel mean and standard deviation of every pixel, and per-channel mean
        of the pixels within `b = border_width(h, w)` of the edge (a dark-background
        digit has a dark border, a photo of a digit on paper a light one).
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or not len(x) or x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"Expected a non-empty NHWC batch of images. Received: images with shape {x.shape}")
    n, height, width, channels = x.shape
    b = border_width(height, width)
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    inner_total = np.zeros(channels)
    # Chunked in float64: exact sums without a float copy of the whole array.
    for start in range(0, n, 1024):
        chunk = x[start : start + 1024].astype(np.float64)
        total += chunk.sum((0, 1, 2))
        total_sq += np.square(chunk).sum((0, 1, 2))
        inner_total += chunk[:, b : height - b, b : width - b].sum((0, 1, 2))
    pixels = n * height * width
    inner = n * max(height - 2 * b, 0) * max(width - 2 * b, 0)
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - np.square(mean), 0.0))
    border_mean = (total - inner_total) / max(pixels - inner, 1)
    return {
        "images": int(n),
        "mean": _rounded(mean),
        "std": _rounded(std),
        "border_mean": _rounded(border_mean),
        "border": b,
    }


def _input_statistics(sample: np.ndarray, source_sizes: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """`Dataset.input_statistics` from a sample of adapted uint8 training images and
    the (height, width) of source images before resizing (one per image, or one for
    all when the source has a fixed size)."""
    sizes = np.asarray(source_sizes, np.float64).reshape(-1, 2)
    return {
        "version": STATISTICS_VERSION,
        **image_statistics(sample),
        # The median, not the first image's or the mean: one odd photo does not move it.
        "source_size": [int(round(np.median(sizes[:, 0]))), int(round(np.median(sizes[:, 1])))],
        "source_aspect": round(float(np.median(sizes[:, 1] / sizes[:, 0])), 3),
    }


def _memory_sample(x: np.ndarray) -> np.ndarray:
    """At most `MEMORY_SAMPLE` images of `x`, evenly spaced (a view when it can)."""
    if len(x) <= MEMORY_SAMPLE:
        return x
    return x[np.linspace(0, len(x) - 1, MEMORY_SAMPLE).round().astype(np.int64)]


def _rounded(values) -> list[float]:
    return [round(float(v), 2) for v in values]
