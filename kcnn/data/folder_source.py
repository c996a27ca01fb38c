"""The image-folder source of `load()`: one sub-folder of images per class, or
train/ (test/, val/) split folders that each hold them; unreadable files are
skipped and named."""

from __future__ import annotations

import collections
import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np

from kcnn.data import pipeline
from kcnn.data.files import (
    _DECODE_ERRORS,
    _GRAY_MODES,
    IMAGE_EXTENSIONS,
    _by_extension,
    _decode_file,
    _read_header,
    _warn_not_images,
)
from kcnn.data.preprocessing import _adapt_images, _channel_stats
from kcnn.data.sources import DEFAULT_VARIABLE_IMAGE_SIZE, _finish_memory, _memory_splits
from kcnn.data.splits import _FileSplit
from kcnn.data.statistics import _input_statistics

logger = logging.getLogger("kcnn")

# Sub-folders of an image folder that hold splits (each with class sub-folders), not
# classes: train/ is the training pool, test/ and one validation folder the source's
# own splits.
_TRAIN_FOLDER = "train"
_TEST_FOLDER = "test"
_VALIDATION_FOLDERS = ("val", "validation", "valid")


def _subfolders(root: str) -> list[str]:
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))


def _list_class_folders(root: str) -> tuple[list[str], list[list[str]]]:
    class_names = _subfolders(root)
    if not class_names:
        raise ValueError(
            "Expected a directory with one sub-directory of images per class. "
            f"Received: source={root!r}, which has no sub-directories"
        )
    files, others = [], []
    for name in class_names:
        folder = os.path.join(root, name)
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            images, not_images = _by_extension([os.path.join(dirpath, f) for f in sorted(filenames)])
            found.extend(images)
            others.extend(not_images)
        if not found:
            raise ValueError(
                f"Expected every class folder to contain images ({', '.join(IMAGE_EXTENSIONS)}). "
                f"Received: class folder {folder!r} with no images"
            )
        files.append(found)
    _warn_not_images(root, others, stacklevel=6)  # The caller of `kcnn.data.load`.
    return class_names, files


def _split_folders(root: str) -> dict[str, str]:
    """{split: folder} of an image folder: `{"train": root}` for class sub-folders,
    or the split sub-folders of a root holding train/ and test/ and/or val/
    (validation/, valid/), each with class sub-folders.

    Raises:
        ValueError: for split folders next to other folders, two validation
            folders, or split folders without train/.
    """
    names = _subfolders(root)
    validation = [name for name in names if name in _VALIDATION_FOLDERS]
    splits = [name for name in names if name in (_TRAIN_FOLDER, _TEST_FOLDER, *_VALIDATION_FOLDERS)]
    if not splits or (splits == [_TRAIN_FOLDER] and len(names) > 1):
        # Class folders (one of them may be a class called "train", as in CIFAR-100).
        return {"train": root}
    layout = "Expected either one sub-folder of images per class, or train/ (and test/, val/) folders that each hold them"
    others = sorted(set(names) - set(splits))
    if others:
        raise ValueError(
            f"{layout}: this folder has split folders {splits} next to other folders {others}. "
            f"Received: source={root!r}"
        )
    if _TRAIN_FOLDER not in splits:
        raise ValueError(f"{layout}: this folder has split folders {splits} but no train/ folder. Received: source={root!r}")
    if len(validation) > 1:
        raise ValueError(f"{layout}: this folder has two validation folders {validation}. Received: source={root!r}")
    folders = {"train": os.path.join(root, _TRAIN_FOLDER)}
    if validation:
        folders["validation"] = os.path.join(root, validation[0])
    if _TEST_FOLDER in splits:
        folders["test"] = os.path.join(root, _TEST_FOLDER)
    return folders


def _median_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The median height and width; of an even number of sizes the lower middle one
    (not their mean), so that one outlier cannot set the size even among two images."""
    if not sizes:
        return None
    ordered = np.sort(np.asarray(sizes, np.int64), axis=0)
    height, width = ordered[(len(ordered) - 1) // 2]
    return int(height), int(width)


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


#: Streamed folders: the training images decoded for the input statistics (and the
#: mean and std of normalize="standardize"), evenly spaced.
STREAM_SAMPLE = 512


def _load_folder(
    root: str, *, image_size, channels, validation_split, test_split, seed, stream="auto", warn_sizes=True
) -> dict:
    folders = _split_folders(root)
    listed = {split: _list_class_folders(folder) for split, folder in folders.items()}
    class_names = listed["train"][0]
    for split, (names, _) in listed.items():
        if names != class_names:
            split_name = os.path.basename(folders[split])
            extra = sorted(set(names) - set(class_names))
            missing = sorted(set(class_names) - set(names))
            differences = "; ".join(
                [f"{split_name!r} has {extra} that 'train' has not"] * bool(extra)
                + [f"{split_name!r} lacks {missing}"] * bool(missing)
            )
            raise ValueError(
                f"Expected the split folders to hold the same class folders: {differences}. "
                f"Received: source={root!r}"
            )
    if len(class_names) < 2:
        raise ValueError(
            "A classifier needs at least 2 classes: expected a class sub-folder of images per class. "
            f"Received: source={root!r} with the class folders {class_names}"
        )
    # Headers first (cheap, no pixel decoding): the default size and channel
    # count must be known before decoding so every image is adapted once.
    skipped: list[dict[str, str]] = []
    readable: dict[str, list[list[str]]] = {}
    any_color = False
    sizes: dict[str, list[tuple[int, int]]] = {}
    for split, (_, files) in listed.items():
        readable[split], sizes[split] = [], []
        for paths in files:
            ok = []
            for path in paths:
                try:
                    mode, height, width = _read_header(path)
                except _DECODE_ERRORS as error:
                    skipped.append(_skip(path, error))
                    continue
                any_color = any_color or mode not in _GRAY_MODES
                sizes[split].append((height, width))
                ok.append(path)
            readable[split].append(ok)
    every_size = [size for split_sizes in sizes.values() for size in split_sizes]
    size = image_size or _median_size(every_size) or DEFAULT_VARIABLE_IMAGE_SIZE
    channels = channels or (3 if any_color else 1)
    if warn_sizes:  # Not when the caller chose the size.
        _warn_mixed_sizes(root, every_size, size)
    decoded_bytes = len(every_size) * size[0] * size[1] * channels
    if stream is True or (stream == "auto" and decoded_bytes > pipeline.IN_MEMORY_LIMIT):
        logger.info(
            "%s: %d images, %.1f MiB decoded at %dx%dx%d: streamed from the files (above "
            "kcnn.data.IN_MEMORY_LIMIT, %.1f MiB)",
            root, len(every_size), decoded_bytes / 2**20, *size, channels, pipeline.IN_MEMORY_LIMIT / 2**20,
        )  # fmt: skip
        return _stream_folder(root, folders, class_names, readable, sizes, skipped, size, channels, validation_split, test_split, seed)

    arrays = {}
    for split, per_class in readable.items():
        paths = [path for paths in per_class for path in paths]
        labels = np.asarray([label for label, paths in enumerate(per_class) for _ in paths], np.int32)
        images, decoded = _decode_files(paths, size, channels, skipped)
        for label, name in enumerate(class_names):
            if not decoded[labels == label].any():
                raise ValueError(
                    f"Expected every class folder to contain readable images. "
                    f"Received: class folder {os.path.join(folders[split], name)!r} whose images all failed to decode"
                )
        arrays[split] = (images, labels[decoded])
    if skipped:
        shown = ", ".join(repr(entry["path"]) for entry in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(
            f"Skipped {len(skipped)} unreadable image file(s) under {root!r}: {shown} "
            "(Dataset.skipped_files says why)",
            UserWarning,
            stacklevel=4,  # The caller of `kcnn.data.load`.
        )
    x, y = arrays["train"]
    x_test, y_test = arrays.get("test", (None, None))
    x_val, y_val = arrays.get("validation", (None, None))
    splits = _memory_splits(
        x, y, x_test, y_test, x_val=x_val, y_val=y_val, validation_split=validation_split, test_split=test_split, seed=seed
    )
    return _finish_memory(
        splits,
        class_names=class_names,
        image_size=size,
        channels=channels,
        name=root,
        source_sizes=sizes["train"],
        skipped=skipped,
    )


def _decode_files(paths: Sequence[str], size: tuple[int, int], channels: int, skipped: list) -> tuple[np.ndarray, np.ndarray]:
    """The files decoded and adapted, in order, into one uint8 array made up front (its
    rows are the images held in memory, nothing else is), and the mask of the files
    decoded; a file that fails (truncated data behind a valid header) is added to
    `skipped`, its row left to the next file."""
    images = np.empty((len(paths), *size, channels), np.uint8)
    decoded = np.zeros(len(paths), bool)
    row = 0
    for index, path in enumerate(paths):
        try:
            image = _decode_file(path)
        except _DECODE_ERRORS as error:
            skipped.append(_skip(path, error))
            continue
        # At the size and channels already: `_adapt_images` would give it back as is.
        images[row] = image if image.shape == images.shape[1:] else _adapt_images(image[None], size, channels).numpy()[0]
        decoded[index] = True
        row += 1
    return images[:row], decoded


def _stream_folder(root, folders, class_names, readable, sizes, skipped, size, channels, validation_split, test_split, seed):
    """`_load_folder`'s result with `_FileSplit`s: the same splits (the same
    stratified draw, over file paths instead of decoded images), each image decoded
    when a batch needs it."""

    def decode(path):
        return _adapt_images(_decode_file(path)[None], size, channels).numpy()[0]

    listed = {}
    for split, per_class in readable.items():
        paths = [path for paths in per_class for path in paths]
        labels = [label for label, paths in enumerate(per_class) for _ in paths]
        listed[split] = (np.asarray(paths, dtype=str), np.asarray(labels, np.int32))
    shape = (*size, channels)
    while True:
        # Copies: the split reorders its pool in place, and a file of the sample that
        # fails to decode is dropped and the split drawn again, as if its header had failed.
        x, y = (a.copy() for a in listed["train"])
        x_test, y_test = listed.get("test", (None, None))
        x_val, y_val = listed.get("validation", (None, None))
        splits = _memory_splits(
            x, y, x_test, y_test, x_val=x_val, y_val=y_val, validation_split=validation_split, test_split=test_split, seed=seed
        )
        splits = {name: None if split is None else _FileSplit(split.x, split.y, _decode_file, shape) for name, split in splits.items()}
        train = splits["train"]
        chosen = np.unique(np.linspace(0, train.size - 1, min(train.size, STREAM_SAMPLE)).round().astype(np.int64))
        sample, failed = [], []
        for path in train.paths[chosen]:
            try:
                sample.append(decode(path))
            except _DECODE_ERRORS as error:  # Truncated data behind a valid header.
                failed.append(str(path))
                skipped.append(_skip(str(path), error))
        if not failed:
            break
        listed = {split: (paths[~np.isin(paths, failed)], labels[~np.isin(paths, failed)]) for split, (paths, labels) in listed.items()}
    sample = np.stack(sample)
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped)} unreadable image file(s) under {root!r} (Dataset.skipped_files says why)",
            UserWarning,
            stacklevel=4,
        )
    return {
        **splits,
        "class_names": [str(c) for c in class_names],
        "image_size": size,
        "channels": channels,
        "name": root,
        # From the sample: a pass over every file is a whole epoch of decoding.
        "stats": lambda: _channel_stats(sample),
        "statistics": _input_statistics(sample, sizes["train"]),
        "skipped": [dict(entry) for entry in skipped],
        "streaming": True,
    }


def _skip(path: str, error: BaseException) -> dict[str, str]:
    """An entry of `Dataset.skipped_files`: the file and why it was not read."""
    return {"path": path, "reason": f"{type(error).__name__}: {error}"}
