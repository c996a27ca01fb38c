"""The folder source of segmentation datasets: image/mask pairs.

    root/images/cat_1.jpg   root/masks/cat_1.png      (classes.txt: optional)
    root/images/cat_2.jpg   root/masks/cat_2.png

or `root/train/`, `root/test/` and/or `root/val/` (`validation/`, `valid/`), each
holding `images/` and `masks/`: the source's own splits. An image and its mask share
their file name up to the extension (and their sub-folder under `images/` and
`masks/`). Masks are palette or grey PNGs of class indices (`kcnn.data.masks`); an
optional `classes.txt` beside `images/` names the classes, one per line, in label order.

Nothing is dropped: an image without a mask, a mask without an image, two files of one
name, an image and mask of different sizes, a file that cannot be read and a mask value
outside the classes are each an error that counts them and names the files.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Sequence

import numpy as np

from kcnn.data.files import _DECODE_ERRORS, _GRAY_MODES, IMAGE_EXTENSIONS, _decode_file, _open_image, _read_header
from kcnn.data.folder_source import _median_size, _split_folders, _subfolders, _warn_mixed_sizes
from kcnn.data.mask_splits import _finish_splits, _random_splits
from kcnn.data.masks import check_classes, load_mask, remap_ignored, resize_masks
from kcnn.data.preprocessing import _adapt_images
from kcnn.data.sources import DEFAULT_VARIABLE_IMAGE_SIZE

IMAGES_FOLDER = "images"
MASKS_FOLDER = "masks"
#: The optional file beside `images/` that names the classes, one per line.
CLASSES_FILE = "classes.txt"
# Files named in an error message, at most.
_SHOWN = 5


def is_pair_folder(root: str | os.PathLike) -> bool:
    """Whether `root` holds image/mask pairs: `images/` and `masks/`, or a `train/` folder
    that holds them."""
    names = set(_subfolders(root))
    if {IMAGES_FOLDER, MASKS_FOLDER} <= names:
        return True
    train = os.path.join(root, "train")
    return "train" in names and {IMAGES_FOLDER, MASKS_FOLDER} <= set(_subfolders(train))


def _pair_split_folders(root: str) -> dict[str, str]:
    """{split: folder holding images/ and masks/} of a pair folder."""
    names = _subfolders(root)
    if {IMAGES_FOLDER, MASKS_FOLDER} <= set(names):
        others = sorted(set(names) - {IMAGES_FOLDER, MASKS_FOLDER})
        if others:
            raise ValueError(
                f"Expected a folder of image/mask pairs to hold {IMAGES_FOLDER}/ and {MASKS_FOLDER}/ only (or train/, test/, "
                f"val/ folders that each hold both); it also holds {others}. Received: source={root!r}"
            )
        return {"train": root}
    folders = _split_folders(root)
    for folder in folders.values():
        missing = [name for name in (IMAGES_FOLDER, MASKS_FOLDER) if not os.path.isdir(os.path.join(folder, name))]
        if missing:
            raise ValueError(
                f"Expected every split folder of image/mask pairs to hold {IMAGES_FOLDER}/ and {MASKS_FOLDER}/. "
                f"Received: {folder!r} without {', '.join(m + '/' for m in missing)}"
            )
    return folders


def _files_by_stem(folder: str) -> dict[str, list[str]]:
    """The image files under `folder` (recursively), by path relative to it without extension."""
    found: dict[str, list[str]] = collections.defaultdict(list)
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.join(dirpath, name)
                found[os.path.splitext(os.path.relpath(path, folder))[0]].append(path)
    return dict(found)


def _list_pairs(folder: str) -> list[tuple[str, str]]:
    """(image, mask) paths of a split folder, sorted by name.

    Raises:
        ValueError: no images, images without masks, masks without images, or two
            files of one name; the message counts them and names the first few.
    """
    images = _files_by_stem(os.path.join(folder, IMAGES_FOLDER))
    masks = _files_by_stem(os.path.join(folder, MASKS_FOLDER))
    problems = []
    for what, files in (("images", images), ("masks", masks)):
        twice = sorted(paths for paths in files.values() if len(paths) > 1)
        if twice:
            problems.append(f"{len(twice)} {what} share a name with another file: {_show([' and '.join(map(repr, p)) for p in twice], quote=False)}")
    lonely = sorted(set(images) - set(masks))
    if lonely:
        problems.append(f"{len(lonely)} image(s) have no mask in {MASKS_FOLDER}/: {_show([images[k][0] for k in lonely])}")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        problems.append(f"{len(orphans)} mask(s) have no image in {IMAGES_FOLDER}/: {_show([masks[k][0] for k in orphans])}")
    if problems:
        raise ValueError(
            "Expected one mask per image, of the same file name up to the extension: " + "; ".join(problems) + ". "
            f"Received: source folder {folder!r} with {len(images)} image and {len(masks)} mask names"
        )
    if not images:
        raise ValueError(
            f"Expected images ({', '.join(IMAGE_EXTENSIONS)}) in {IMAGES_FOLDER}/. Received: {os.path.join(folder, IMAGES_FOLDER)!r} with none"
        )
    return [(images[key][0], masks[key][0]) for key in sorted(images)]


def _load_pair_folder(root, *, image_size, channels, validation_split, test_split, seed, ignore_value, class_names) -> dict:
    listed = {split: _list_pairs(folder) for split, folder in _pair_split_folders(root).items()}
    # Headers first (no pixels decoded): the sizes must match, and the default size and
    # channel count be known, before anything is decoded.
    unreadable, mismatched, sizes, any_color = [], [], {}, False
    for split, pairs in listed.items():
        sizes[split] = []
        for image_path, mask_path in pairs:
            try:
                mode, height, width = _read_header(image_path)
                with _open_image(mask_path) as mask:
                    mask_width, mask_height = mask.size
            except _DECODE_ERRORS as error:
                unreadable.append(f"{image_path!r} or {mask_path!r} ({type(error).__name__}: {error})")
                continue
            any_color = any_color or mode not in _GRAY_MODES
            sizes[split].append((height, width))
            if (height, width) != (mask_height, mask_width):
                mismatched.append(f"{_relative(image_path, root)!r} {height}x{width} and its mask {mask_height}x{mask_width}")
    _refuse(unreadable, "files cannot be read", root)
    _refuse(mismatched, "images differ in size from their masks (height x width)", root)
    every_size = [size for split_sizes in sizes.values() for size in split_sizes]
    size = image_size or _median_size(every_size) or DEFAULT_VARIABLE_IMAGE_SIZE
    channels = channels or (3 if any_color else 1)
    _warn_mixed_sizes(root, every_size, size)
    if class_names is None and os.path.isfile(os.path.join(root, CLASSES_FILE)):
        with open(os.path.join(root, CLASSES_FILE), encoding="utf-8") as file:
            class_names = [line.strip() for line in file if line.strip()]

    parts, names, palette = {}, {}, None
    for split, pairs in listed.items():
        images, masks = [], []
        for image_path, mask_path in pairs:
            try:
                image = _decode_file(image_path)
                mask, mask_palette = load_mask(mask_path)
            except _DECODE_ERRORS as error:  # Truncated data behind a valid header, a colour mask, ...
                unreadable.append(f"{image_path!r} or {mask_path!r} ({type(error).__name__}: {error})")
                continue
            palette = palette or mask_palette
            images.append(_adapt_images(image[None], size, channels).numpy()[0])
            masks.append(remap_ignored(mask, ignore_value))
        if not unreadable:
            parts[split] = (np.stack(images), masks)
            names[split] = [_relative(mask_path, root) for _, mask_path in pairs]
    _refuse(unreadable, "files cannot be read", root)
    class_names = check_classes(class_names, {split: (masks, names[split]) for split, (_, masks) in parts.items()})
    for split, (images, masks) in parts.items():
        parts[split] = (images, np.concatenate([resize_masks(m[None], size) for m in masks]))
    splits = _random_splits(parts, validation_split=validation_split, test_split=test_split, seed=seed)
    return _finish_splits(
        splits,
        class_names=class_names,
        image_size=size,
        channels=channels,
        name=root,
        source_sizes=sizes["train"],
        palette=palette[: len(class_names)] if palette else None,
    )


def _refuse(problems: Sequence[str], what: str, root: str) -> None:
    if problems:
        raise ValueError(f"{len(problems)} {what}: {_show(problems, quote=False)}. Received: source={root!r}")


def _show(items: Sequence[str], *, quote: bool = True) -> str:
    shown = ", ".join(repr(item) if quote else item for item in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _relative(path: str, root: str) -> str:
    return os.path.relpath(path, root)
