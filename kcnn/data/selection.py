"""Class selection and few-shot sampling: a `Dataset` of some classes of a source,
with a fixed number of labelled images per class."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from kcnn.data.augment import _parse_augment
from kcnn.data.dataset import Dataset, _build, _load_splits
from kcnn.data.pipeline import _check_batch_size
from kcnn.data.preprocessing import _channel_stats, _parse_normalize
from kcnn.data.splits import _MemorySplit
from kcnn.data.statistics import image_statistics

# The `load` arguments `few_shot` passes on when it reads a source itself.
_SOURCE_OPTIONS = ("image_size", "channels", "test_split", "data_dir", "download")
# Elements read per step from a streamed (TFDS) split.
_STREAM_BATCH = 256
# Marks an argument not given: for a Dataset source, its own setting applies.
_OWN = object()


def few_shot(
    source: Any,
    classes: Sequence[int | str] | None = None,
    *,
    per_class: int | None,
    validation_per_class: int = 0,
    seed: int = 1337,
    batch_size: Any = _OWN,
    augment: Any = _OWN,
    normalize: Any = _OWN,
    shuffle: Any = _OWN,
    **load_options: Any,
) -> Dataset:
    """A few labelled images of chosen classes: the few-shot version of a source.

    The training pool of the source (its training split and its own validation
    split, if any; nothing is carved out for validation) gives, for each chosen
    class, `validation_per_class` validation images and then `per_class` training
    images, drawn at random with `seed`. The validation images are drawn first, so
    they do not change with `per_class`. The test split is the source's test split
    (its own, or `test_split` carved out as `load` does) restricted to the chosen
    classes. Labels are renumbered 0..k-1 in the order of `classes`.

    Streamed (TFDS) sources are read once, keeping only the chosen images (and the
    test images of the chosen classes) in memory.

    Example:
        >>> target = few_shot("digits", classes=[5, 6, 7, 8, 9], per_class=3, validation_per_class=20)
        >>> target.class_names, target.num_train, target.num_validation
        (['5', '6', '7', '8', '9'], 15, 100)

    Args:
        source: a `Dataset` made by `load` (its decoded images are reused), or
            anything `load` accepts.
        classes: the classes to keep (at least 2), as class indices of the source
            or class names, in the order of their new labels. None: every class.
        per_class: training images per class; None keeps every image of the class
            that is not drawn for validation (a class selection, not few-shot).
        validation_per_class: validation images per class (0: no validation split).
        seed: seeds the draw (and the shuffling and augmentation of the result).
        batch_size, augment, normalize, shuffle: as `load`'s; default: the
            `Dataset`'s own when `source` is one, else `load`'s defaults.
        **load_options: when `source` is not a `Dataset`, more `load` arguments
            among `image_size`, `channels`, `test_split`, `data_dir`, `download`.

    Returns:
        A `Dataset` whose `name` is the source's.

    Raises:
        ValueError: on invalid arguments, an unknown class, or a class with fewer
            than `per_class + validation_per_class` images in the training pool
            (every such class is named, with its count).
    """
    for name, value, minimum in (("per_class", per_class, 1), ("validation_per_class", validation_per_class, 0)):
        if value is None and name == "per_class":
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
    seed = int(seed)

    if isinstance(source, Dataset):
        if source._source is None:
            raise ValueError("Expected a Dataset made by `kcnn.data.load`. Received: a Dataset built otherwise")
        if load_options:
            raise ValueError(
                "A Dataset is already loaded: `few_shot` takes no `load` arguments with it. "
                f"Received: {sorted(load_options)}"
            )
        own = source._source
        splits = own["splits"]
        settings = {"batch_size": source.batch_size, **{k: own[k] for k in ("normalization", "augment", "shuffle")}}
    else:
        unknown = sorted(set(load_options) - set(_SOURCE_OPTIONS))
        if unknown:
            raise ValueError(f"Unknown arguments {unknown}; `few_shot` passes on {list(_SOURCE_OPTIONS)} to `load`.")
        splits = _load_splits(
            source,
            image_size=load_options.get("image_size"),
            channels=load_options.get("channels"),
            validation_split=0.0,
            test_split=load_options.get("test_split", 0.2),
            seed=seed,
            cache=False,  # Read once here; the result is in memory.
            data_dir=load_options.get("data_dir"),
            download=load_options.get("download", False),
        )
        settings = {"batch_size": 32, "normalization": "unit", "augment": None, "shuffle": True}
    if batch_size is not _OWN:
        _check_batch_size(batch_size)
        settings["batch_size"] = batch_size
    if normalize is not _OWN:
        settings["normalization"] = _parse_normalize(normalize)
    if augment is not _OWN:
        settings["augment"] = _parse_augment(augment)
    if shuffle is not _OWN:
        settings["shuffle"] = bool(shuffle)

    names = list(splits["class_names"])
    chosen = _resolve_classes(classes, names)
    relabel = np.full(len(names), -1, np.int64)
    relabel[chosen] = np.arange(len(chosen))
    wanted = None if per_class is None else per_class + validation_per_class
    pool = [split for split in (splits["train"], splits["validation"]) if split is not None]
    picked = _draw(pool, relabel, wanted, seed)

    short = [
        (names[c], c, len(keys))
        for c, (keys, _) in zip(chosen, picked)
        if len(keys) < (validation_per_class + 1 if wanted is None else wanted)
    ]
    if short:
        need = (
            f"{wanted} images of each class (per_class={per_class} + validation_per_class={validation_per_class})"
            if wanted is not None
            else f"more than validation_per_class={validation_per_class} images of each class"
        )
        listed = ", ".join(f"{name!r} (label {c}): {n}" for name, c, n in short)
        raise ValueError(
            f"`few_shot` needs {need} in the training pool of {splits['name']!r}; these classes have fewer: {listed}. "
            f"Received: per_class={per_class!r}, validation_per_class={validation_per_class!r}"
        )

    parts = {"train": ([], []), "validation": ([], [])}
    for label, (_, images) in enumerate(picked):
        for split, chunk in (("validation", images[:validation_per_class]), ("train", images[validation_per_class:])):
            parts[split][0].append(chunk)
            parts[split][1].append(np.full(len(chunk), label, np.int32))
    x_train, y_train = (np.concatenate(v) for v in parts["train"])
    x_val, y_val = (np.concatenate(v) for v in parts["validation"])
    test = _restrict(splits["test"], relabel)

    statistics = {**splits["statistics"], **image_statistics(x_train)}  # The source's sizes, these images' pixels.
    selected = {
        "train": _MemorySplit(x_train, y_train),
        "validation": _MemorySplit(x_val, y_val) if len(x_val) else None,
        "test": test,
        "class_names": [names[c] for c in chosen],
        "image_size": splits["image_size"],
        "channels": splits["channels"],
        "name": splits["name"],
        "stats": lambda: _channel_stats(x_train),
        "statistics": statistics,
        "skipped": splits.get("skipped", []),
    }
    return _build(
        selected,
        normalization=settings["normalization"],
        augment=settings["augment"],
        shuffle=settings["shuffle"],
        seed=seed,
        batch_size=settings["batch_size"],
    )


def _resolve_classes(classes, names) -> list[int]:
    if classes is None:
        return list(range(len(names)))
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, range, np.ndarray)):
        raise ValueError(f"`classes` must be a sequence of class indices or names. Received: classes={classes!r}")
    chosen = []
    for c in classes:
        if isinstance(c, str):
            if c not in names:
                raise ValueError(f"Unknown class name {c!r}; the classes are {names}. Received: classes={list(classes)!r}")
            index = names.index(c)
        elif isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= c < len(names):
            index = int(c)
        else:
            raise ValueError(
                f"Expected class indices in [0, {len(names)}) or class names. Received: {c!r} in classes={list(classes)!r}"
            )
        if index in chosen:
            raise ValueError(f"Class {names[index]!r} is chosen twice. Received: classes={list(classes)!r}")
        chosen.append(index)
    if len(chosen) < 2:
        # One class makes a "classifier" that is always right and learns nothing.
        raise ValueError(f"A classifier needs at least 2 classes. Received: classes={list(classes)!r}")
    return chosen


def _elements(split):
    """(uint8 images, labels) of a split, in its order, in chunks."""
    if isinstance(split, _MemorySplit):
        for start in range(0, split.size, _STREAM_BATCH):
            yield split.x[start : start + _STREAM_BATCH], split.y[start : start + _STREAM_BATCH]
    else:
        yield from split.uncached.batch(_STREAM_BATCH).as_numpy_iterator()


def _draw(pool, relabel, wanted, seed) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each new label, `wanted` images of its class drawn uniformly without
    replacement (all of them when `wanted` is None), in a random order.

    Every image gets a random key, drawn in pool order from one seeded generator;
    a class keeps its `wanted` smallest keys. One pass, memory bounded by the
    images kept, and the same draw whether the pool is in memory or streamed.
    """
    rng = np.random.default_rng(seed)
    kept: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0), None) for _ in range(int(relabel.max()) + 1)]
    for split in pool:
        for x, y in _elements(split):
            keys = rng.random(len(y))
            new = relabel[np.asarray(y, np.int64)]
            for label in np.unique(new[new >= 0]):
                mine = new == label
                old_keys, old_images = kept[label]
                keys_all = np.concatenate([old_keys, keys[mine]])
                images_all = x[mine] if old_images is None else np.concatenate([old_images, x[mine]])
                if wanted is not None and len(keys_all) > wanted:
                    best = np.argpartition(keys_all, wanted - 1)[:wanted]
                    keys_all, images_all = keys_all[best], images_all[best]
                kept[label] = (keys_all, images_all)
    out = []
    for keys, images in kept:
        order = np.argsort(keys, kind="stable")
        out.append((keys[order], images[order] if images is not None else np.zeros((0,), np.uint8)))
    return out


def _restrict(split, relabel) -> _MemorySplit | None:
    """The images of a split whose class is kept, relabelled, in memory."""
    if split is None:
        return None
    xs, ys = [], []
    for x, y in _elements(split):
        new = relabel[np.asarray(y, np.int64)]
        keep = new >= 0
        xs.append(x[keep])
        ys.append(new[keep].astype(np.int32))
    if not xs or not sum(len(y) for y in ys):
        return None
    return _MemorySplit(np.concatenate(xs), np.concatenate(ys))
