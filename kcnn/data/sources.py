"""The in-memory sources `load()` reads: the bundled digits, NumPy arrays and `.npz`
files, and what they share with image folders (`folder_source`): the stratified
split and the checks of pixels and labels (TFDS datasets are `tfds_source`'s)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kcnn.data.preprocessing import _adapt_array, _channel_stats, _check_pixels
from kcnn.data.splits import _MemorySplit
from kcnn.data.statistics import _input_statistics, _memory_sample

DIGITS_IMAGE_SIZE = (32, 32)


#: Used for TFDS datasets whose images have no fixed size (e.g. tf_flowers), and for
#: a folder without a readable image (which is refused later).
DEFAULT_VARIABLE_IMAGE_SIZE = (224, 224)


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
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> dict[str, _MemorySplit | None]:
    """Carves test (if none given) then validation (if none given), stratified by class.

    The test split is drawn first from each class, so it never depends on
    `validation_split`. The carved splits are views of `x`, whose rows are reordered
    in place (`x` must be the caller's own array, not the user's)."""
    if x_test is None and x_val is None:
        test_idx, val_idx, train_idx = _stratified_split(y, (test_split, validation_split), seed)
    elif x_test is None:
        test_idx, train_idx = _stratified_split(y, (test_split,), seed)
    elif x_val is None:
        val_idx, train_idx = _stratified_split(y, (validation_split,), seed)
    else:
        train_idx = np.arange(len(y))
    if len(train_idx) == 0:
        raise ValueError(f"Not enough examples to leave a training split. Received: {len(x)} examples")
    carved = {"test": test_idx if x_test is None else (), "validation": val_idx if x_val is None else (), "train": train_idx}
    order = np.concatenate([np.asarray(idx, np.int64) for idx in carved.values()])
    _permute_rows(x, order)
    y = y[order]
    # A fraction too small to take one example per class gives no split.
    splits, start = {}, 0
    for name, idx in carved.items():
        end = start + len(idx)
        splits[name] = _MemorySplit(x[start:end], y[start:end]) if end > start else None
        start = end
    if x_test is not None:
        splits["test"] = _MemorySplit(x_test, y_test)
    if x_val is not None:
        splits["validation"] = _MemorySplit(x_val, y_val)
    return {"train": splits["train"], "validation": splits["validation"], "test": splits["test"]}


def _permute_rows(x: np.ndarray, order: np.ndarray) -> None:
    """Reorders the rows of `x` in place, `x[k]` becoming the old `x[order[k]]`: the
    splits carved from a pool become consecutive views of its one array, not copies
    (which held the decoded images twice while they were made). One row of scratch
    memory; each cycle of the permutation is followed once."""
    done = np.zeros(len(order), bool)
    scratch = np.empty_like(x[:1])
    for start in range(len(order)):
        if done[start]:
            continue
        done[start] = True
        if order[start] == start:
            continue
        scratch[0] = x[start]
        k = start
        while order[k] != start:
            x[k] = x[order[k]]
            k = int(order[k])
            done[k] = True
        x[k] = scratch[0]


def _finish_memory(splits: dict, *, class_names, image_size, channels, name, source_sizes, skipped=()) -> dict:
    train = splits["train"]
    return {
        **splits,
        "class_names": [str(c) for c in class_names],
        "image_size": image_size,
        "channels": channels,
        "name": name,
        "stats": lambda: _channel_stats(train.x),
        "statistics": _input_statistics(_memory_sample(train.x), source_sizes),
        "skipped": [dict(entry) for entry in skipped],
    }


def _check_classes(labels: np.ndarray) -> None:
    """A classifier needs two classes in its training labels."""
    found = np.unique(labels)
    if len(found) < 2:
        raise ValueError(
            "A classifier needs at least 2 classes; the training images have one. "
            f"Received: labels {found.tolist()}"
        )


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
    _check_pixels(x, what)
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
    _check_classes(y)
    if y_test is not None:
        unseen = sorted(set(np.unique(y_test).tolist()) - set(np.unique(y).tolist()))
        if unseen:
            raise ValueError(
                f"`y_test` holds classes the training labels have not: {unseen}; a model cannot learn them, "
                "and their test images would count as errors. "
                f"Received: y_test with labels {np.unique(y_test).tolist()}, y with labels {np.unique(y).tolist()}"
            )
    num_classes = int(y.max()) + 1
    if class_names is None:
        found = np.unique(y).tolist()
        if len(found) != num_classes:
            raise ValueError(
                f"Expected class labels 0..k-1: the labels found are {found} ({len(found)} classes), "
                f"which would make a {num_classes}-class model. Relabel them 0..{len(found) - 1}, or pass one "
                f"class name per label index up to {num_classes - 1} (`class_names`, a dict/.npz entry, of "
                f"{num_classes} names) if that is intended. Received: labels up to {num_classes - 1}"
            )
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
