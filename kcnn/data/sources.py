"""The in-memory sources `load()` reads: the bundled digits, NumPy arrays and `.npz`
files, and image folders (TFDS datasets are `tfds_source`'s)."""

from __future__ import annotations

import collections
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kcnn.data.pipeline import _MemorySplit
from kcnn.data.preprocessing import (
    _DECODE_ERRORS,
    _GRAY_MODES,
    IMAGE_EXTENSIONS,
    _adapt_array,
    _adapt_images,
    _channel_stats,
    _decode_file,
)
from kcnn.data.statistics import _input_statistics, _memory_sample

DIGITS_IMAGE_SIZE = (32, 32)


#: Used for TFDS datasets whose images have no fixed size (e.g. tf_flowers), and for
#: a folder without a readable image (which is refused later).
DEFAULT_VARIABLE_IMAGE_SIZE = (224, 224)


# The EXIF tag of the orientation a decoder applies (`PIL.ImageOps.exif_transpose`).
_EXIF_ORIENTATION = 0x0112


def _stratified_split(y: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Splits indices per class: part k gets round(n_class * fractions[k]).

    Parts are taken in order from one seeded permutation per class and the
    remainder is returned last, so earlier parts do not depend on later
    fractions. Indices within each part are sorted (source order).
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        start = 0
        for k, fraction in enumerate(fractions):
            count = int(round(len(idx) * fraction))
            parts[k].append(idx[start : start + count])
            start += count
        parts[-1].append(idx[start:])
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def _memory_splits(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    *,
    validation_split: float,
    test_split: float,
    seed: int,
) -> dict[str, _MemorySplit | None]:
    """Carves test (if none given) then validation, stratified by class."""
    if x_test is None:
        test_idx, val_idx, train_idx = _stratified_split(y, (test_split, validation_split), seed)
        test = _MemorySplit(x[test_idx], y[test_idx]) if len(test_idx) else None
    else:
        val_idx, train_idx = _stratified_split(y, (validation_split,), seed)
        test = _MemorySplit(x_test, y_test)
    if len(train_idx) == 0:
        raise ValueError(f"Not enough examples to leave a training split. Received: {len(x)} examples")
    return {
        "train": _MemorySplit(x[train_idx], y[train_idx]),
        # A fraction too small to take one example per class gives no split.
        "validation": _MemorySplit(x[val_idx], y[val_idx]) if len(val_idx) else None,
        "test": test,
    }


def _finish_memory(splits: dict, *, class_names, image_size, channels, name, source_sizes) -> dict:
    train = splits["train"]
    return {
        **splits,
        "class_names": [str(c) for c in class_names],
        "image_size": image_size,
        "channels": channels,
        "name": name,
        "stats": lambda: _channel_stats(train.x),
        "statistics": _input_statistics(_memory_sample(train.x), source_sizes),
    }


def _load_digits(*, image_size, channels, validation_split, test_split, seed) -> dict:
    from sklearn.datasets import (
        load_digits,  # Deferred: only this source needs scikit-learn.
    )

    digits = load_digits()
    size = image_size or DIGITS_IMAGE_SIZE
    channels = channels or 1
    # 0..16 intensities -> the 0..255 pixel scale every source shares, so new
    # digit images (e.g. PNGs) can be preprocessed like any other image.
    x = _adapt_array((digits.images * (255.0 / 16.0)).astype(np.float32)[..., None], size, channels)
    y = digits.target.astype(np.int32)
    splits = _memory_splits(
        x, y, None, None, validation_split=validation_split, test_split=test_split, seed=seed
    )
    return _finish_memory(
        splits, class_names=range(10), image_size=size, channels=channels, name="digits", source_sizes=[(8, 8)]
    )


def _prepare_x(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or len(x) == 0:
        raise ValueError(
            f"Expected `{what}` as a non-empty NHW or NHWC array with 1, 3 or 4 channels. "
            f"Received: {what} with shape {x.shape}"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"Expected `{what}` to be numeric. Received: dtype={x.dtype}")
    return x


def _prepare_y(y: Any, n: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"Expected `{what}` as {n} integer class indices, shape ({n},). "
            f"Received: {what} with shape {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) and not (
        np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)
    ):
        raise ValueError(f"Expected `{what}` to hold integer class indices. Received: dtype={y.dtype}")
    if len(y) and y.min() < 0:
        raise ValueError(f"Expected `{what}` to hold class indices >= 0. Received: minimum {y.min()}")
    return y.astype(np.int32)


def _load_arrays(source: Any, *, name, image_size, channels, validation_split, test_split, seed) -> dict:
    class_names = None
    if isinstance(source, Mapping):
        keys = set(source)
        if {"x", "y"} <= keys:
            x, y, x_test, y_test = source["x"], source["y"], None, None
        elif {"x_train", "y_train"} <= keys:
            x, y = source["x_train"], source["y_train"]
            x_test, y_test = source.get("x_test"), source.get("y_test")
            if (x_test is None) != (y_test is None):
                raise ValueError(
                    f"Expected both `x_test` and `y_test` or neither. Received keys: {sorted(keys)}"
                )
        else:
            raise ValueError(
                "Expected arrays under keys 'x'/'y' or 'x_train'/'y_train' (+ optional 'x_test'/'y_test'). "
                f"Received keys: {sorted(keys)}"
            )
        if "class_names" in keys:
            class_names = [str(c) for c in np.asarray(source["class_names"]).tolist()]
    elif len(source) == 2 and all(isinstance(s, (tuple, list)) and len(s) == 2 for s in source):
        (x, y), (x_test, y_test) = source  # The keras.datasets layout.
    elif len(source) == 2:
        (x, y), x_test, y_test = source, None, None
    else:
        raise ValueError(
            f"Expected (x, y) or ((x, y), (x_test, y_test)). Received: a sequence of length {len(source)}"
        )

    x = _prepare_x(x, "x")
    y = _prepare_y(y, len(x), "y")
    if x_test is not None:
        x_test = _prepare_x(x_test, "x_test")
        y_test = _prepare_y(y_test, len(x_test), "y_test")
        if x_test.shape[1:-1] != x.shape[1:-1] and image_size is None:
            raise ValueError(
                f"Expected `x_test` images of the training size {x.shape[1:3]} (or pass image_size). "
                f"Received: x_test with shape {x_test.shape}"
            )
    num_classes = int(max(y.max(), -1 if y_test is None else y_test.max())) + 1
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    elif len(class_names) < num_classes:
        raise ValueError(
            f"Expected at least {num_classes} class names for labels up to {num_classes - 1}. "
            f"Received: {len(class_names)} class_names"
        )

    native_size = (int(x.shape[1]), int(x.shape[2]))
    size = image_size or native_size
    native = 1 if x.shape[-1] == 1 else 3
    channels = channels or native
    x = _adapt_array(x, size, channels)
    if x_test is not None:
        # The test images must share the training scale decision ([0, 1]
        # floats vs 0..255), so they are adapted with the same rule.
        x_test = _adapt_array(x_test, size, channels)
    splits = _memory_splits(
        x, y, x_test, y_test, validation_split=validation_split, test_split=test_split, seed=seed
    )
    return _finish_memory(
        splits, class_names=class_names, image_size=size, channels=channels, name=name, source_sizes=[native_size]
    )


def _list_class_folders(root: str) -> tuple[list[str], list[list[str]]]:
    class_names = sorted(
        entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")
    )
    if not class_names:
        raise ValueError(
            "Expected a directory with one sub-directory of images per class. "
            f"Received: source={root!r}, which has no sub-directories"
        )
    files = []
    for name in class_names:
        folder = os.path.join(root, name)
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found.extend(
                os.path.join(dirpath, f)
                for f in sorted(filenames)
                if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
            )
        if not found:
            raise ValueError(
                f"Expected every class folder to contain images ({', '.join(IMAGE_EXTENSIONS)}). "
                f"Received: class folder {folder!r} with no images"
            )
        files.append(found)
    return class_names, files


def _median_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    if not sizes:
        return None
    heights, widths = np.median(np.asarray(sizes, np.float64), axis=0)
    return int(round(heights)), int(round(widths))


def _warn_mixed_sizes(root: str, sizes: Sequence[tuple[int, int]], size: tuple[int, int]) -> None:
    """Warns when a folder's images are not all of one size: every image is resized
    to `size`, which stretches those of another aspect ratio and can hide a stray
    image (one 640x480 photo among 28x28 digits)."""
    counts = collections.Counter(sizes)
    if len(counts) < 2:
        return
    common = counts.most_common(5)
    shown = ", ".join(f"{h}x{w} ({n})" for (h, w), n in common)
    if len(counts) > len(common):
        shown += f" and {len(counts) - len(common)} other sizes ({sum(counts.values()) - sum(n for _, n in common)})"
    warnings.warn(
        f"The images under {root!r} differ in size: {len(counts)} sizes (height x width (images)): {shown}. "
        f"All are resized to {size[0]}x{size[1]}; pass image_size (--image-size) to choose the size.",
        UserWarning,
        stacklevel=5,  # The caller of `kcnn.data.load`.
    )


def _load_folder(root: str, *, image_size, channels, validation_split, test_split, seed) -> dict:
    from PIL import Image

    class_names, files = _list_class_folders(root)
    # Headers first (cheap, no pixel decoding): the default size and channel
    # count must be known before decoding so every image is adapted once.
    bad: list[str] = []
    readable: list[list[str]] = []
    any_color = False
    sizes: list[tuple[int, int]] = []
    for paths in files:
        ok = []
        for path in paths:
            try:
                with Image.open(path) as image:
                    mode, (width, height) = image.mode, image.size
                    # Decoding applies the EXIF orientation; 5..8 turn the image sideways.
                    if image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                        width, height = height, width
            except _DECODE_ERRORS:
                bad.append(path)
                continue
            any_color = any_color or mode not in _GRAY_MODES
            sizes.append((height, width))
            ok.append(path)
        readable.append(ok)
    size = image_size or _median_size(sizes) or DEFAULT_VARIABLE_IMAGE_SIZE
    channels = channels or (3 if any_color else 1)
    _warn_mixed_sizes(root, sizes, size)

    images, labels = [], []
    for label, (name, paths) in enumerate(zip(class_names, readable, strict=True)):
        count = 0
        for path in paths:
            try:
                image = _decode_file(path)
            except _DECODE_ERRORS:  # Truncated data behind a valid header.
                bad.append(path)
                continue
            images.append(_adapt_images(image[None], size, channels).numpy()[0])
            labels.append(label)
            count += 1
        if count == 0:
            raise ValueError(
                f"Expected every class folder to contain readable images. "
                f"Received: class folder {os.path.join(root, name)!r} whose images all failed to decode"
            )
    if bad:
        shown = ", ".join(repr(p) for p in bad[:5]) + (", ..." if len(bad) > 5 else "")
        warnings.warn(
            f"Skipped {len(bad)} unreadable image file(s) under {root!r}: {shown}",
            UserWarning,
            stacklevel=4,  # The caller of `kcnn.data.load`.
        )
    x = np.stack(images)
    y = np.asarray(labels, np.int32)
    splits = _memory_splits(
        x, y, None, None, validation_split=validation_split, test_split=test_split, seed=seed
    )
    return _finish_memory(
        splits, class_names=class_names, image_size=size, channels=channels, name=root, source_sizes=sizes
    )
