"""Segmentation splits held in memory (images and their masks) and how they are
carved and described: the in-memory segmentation sources' common part (arrays, the
synthetic scenes, image/mask folders)."""

from __future__ import annotations

import numpy as np

from kcnn.data.preprocessing import _channel_stats
from kcnn.data.splits import _MemorySplit
from kcnn.data.statistics import _input_statistics, _memory_sample


class _MaskSplit(_MemorySplit):
    """A split held in memory: uint8 NHWC images and uint8 NHW masks (a quarter of int32)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x = x
        self.y = np.asarray(y, np.uint8)
        self.size = len(x)


def _random_splits(parts, *, validation_split, test_split, seed):
    """Carves test (if the source has none) then validation (if none) at random: a
    seeded permutation, test first, so the test set depends on `seed` and `test_split`
    only. `parts` maps "train" (and "test", "validation") to `(images, masks)`."""
    x, y = parts["train"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    start = 0
    chosen = {}
    for split, fraction in (("test", test_split), ("validation", validation_split)):
        if split in parts:
            chosen[split] = parts[split]
            continue
        count = int(round(len(x) * fraction))
        taken = np.sort(order[start : start + count])
        start += count
        chosen[split] = (x[taken], y[taken]) if count else None
    rest = np.sort(order[start:])
    if not len(rest):
        raise ValueError(f"Not enough examples to leave a training split. Received: {len(x)} examples")
    chosen["train"] = (x[rest], y[rest])
    return {split: None if pair is None else _MaskSplit(*pair) for split, pair in chosen.items()}


def _finish_splits(splits, *, class_names, image_size, channels, name, source_sizes, palette=None) -> dict:
    train = splits["train"]
    return {
        **splits,
        "class_names": list(class_names),
        "image_size": tuple(image_size),
        "channels": channels,
        "name": name,
        "stats": lambda: _channel_stats(train.x),
        "statistics": _input_statistics(_memory_sample(train.x), source_sizes),
        "palette": palette,
    }
