"""Segmentation masks: one class index per pixel, read from palette or grey image files,
checked against the classes (with counts and the masks' names), resized by nearest
neighbour, and drawn in colour (a mask PNG, an overlay on the image).

A mask is a uint8 `(height, width)` array of class indices `0..classes-1`, with
`IGNORE_LABEL` (255) for pixels that carry no label (a boundary, a "void" region, the
border an augmentation shifted in): the loss and the metrics skip them. Files hold the
indices as they are: a palette PNG (PIL mode "P", the PASCAL VOC convention: each
pixel's palette index is its class), a grey PNG (mode "L", or 16-bit grey, whose values
are the indices, never rescaled) or a two-level image (mode "1"). Colour masks are
refused unless their three channels are equal (grey saved as RGB); a colour-coded mask
(one colour per class) needs converting to indices first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from kcnn._files import atomic_path
from kcnn.data.files import _open_image

#: The mask value of pixels without a label. Sources whose files use another ignore
#: value are remapped to it when they are read, so the loss and the metrics know one.
IGNORE_LABEL = 255
#: At most this many classes: indices 0..254, below `IGNORE_LABEL`.
MAX_CLASSES = IGNORE_LABEL

# The colour of ignored pixels: PASCAL VOC's entry 255 (a light khaki).
_IGNORE_COLOR = (224, 224, 192)
# PIL modes whose pixel values are class indices as read.
_INDEX_MODES = frozenset({"P", "L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N"})
# Masks (files) named in an error message, at most.
_SHOWN = 5


def default_palette(classes: int) -> list[list[int]]:
    """The PASCAL VOC colour map: class 0 black, 1 dark red, 2 dark green, 3 olive, ...
    (the bits of the index interleaved into the high bits of R, G and B).

    Reference: the devkit of Everingham et al., "The PASCAL Visual Object Classes (VOC)
    Challenge", IJCV 2010 (`VOCdevkit/VOCcode/VOClabelcolormap.m`).

    Args:
        classes: how many colours.

    Returns:
        `classes` `[r, g, b]` lists of ints 0..255.
    """
    palette = []
    for index in range(classes):
        color = [0, 0, 0]
        value = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                color[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette.append(color)
    return palette


def load_mask(path: str | os.PathLike) -> tuple[np.ndarray, list[list[int]] | None]:
    """Reads a mask file as class indices.

    Args:
        path: a palette, grey or two-level image file (PNG for exact values).

    Returns:
        `(mask, palette)`: a uint8 `(height, width)` array of the pixel values as
        stored, and for a palette image its first 256 colours as `[r, g, b]` lists
        (else None).

    Raises:
        ValueError: for a file that cannot be read, a colour mask whose channels
            differ, or values above 255 (16-bit masks); the message names the file.
    """
    from PIL import ImageOps

    name = os.fspath(path)
    with _open_image(path) as image:
        image = ImageOps.exif_transpose(image)
        mode = image.mode
        palette = None
        if mode == "P":
            flat = image.getpalette() or []
            flat = flat + [0] * (768 - len(flat))
            palette = [flat[i : i + 3] for i in range(0, 768, 3)]
            values = np.asarray(image)
        elif mode in _INDEX_MODES:
            values = np.asarray(image, dtype=np.int64) if mode != "1" else np.asarray(image, dtype=np.uint8)
        elif mode == "LA":
            values = np.asarray(image.convert("L"))
        elif mode in ("RGB", "RGBA"):
            rgb = np.asarray(image.convert("RGB"))
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                raise ValueError(
                    f"Expected a mask of class indices (a palette or grey PNG); {name!r} is a colour image whose "
                    "channels differ: a colour-coded mask, which needs converting to one index per pixel. "
                    f"Received: mode {mode}"
                )
            values = rgb[..., 0]
        else:
            raise ValueError(
                f"Expected a mask of class indices (a palette or grey PNG). Received: {name!r} with image mode {mode}"
            )
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ValueError(
            f"Expected mask values 0..255 (class indices, {IGNORE_LABEL} for no label). "
            f"Received: {name!r} with values {values.min()}..{values.max()}"
        )
    return values.astype(np.uint8), palette


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """A mask in colour: each class its palette colour, ignored pixels light khaki.

    Args:
        mask: an integer `(height, width)` array of class indices (and `IGNORE_LABEL`).
        palette: one `[r, g, b]` per class.

    Returns:
        uint8 `(height, width, 3)`.
    """
    mask = np.asarray(mask)
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = np.asarray(palette, np.uint8)[:256]
    table[IGNORE_LABEL] = _IGNORE_COLOR
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"Expected class indices 0..255. Received: mask values {mask.min()}..{mask.max()}")
    return table[mask.astype(np.uint8)]


def mask_overlay(image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """The image with each labelled pixel tinted by its class colour.

    Args:
        image: uint8 `(height, width)` or `(height, width, 1 or 3)`, the mask's size.
        mask: `(height, width)` class indices; `IGNORE_LABEL` pixels stay untinted.
        palette: one `[r, g, b]` per class.
        alpha: the colour's weight, 0..1.

    Returns:
        uint8 `(height, width, 3)`.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[:2] != np.shape(mask):
        raise ValueError(
            f"Expected an image of the mask's size {np.shape(mask)}. Received: image of shape {image.shape}"
        )
    rgb = np.broadcast_to(image[..., :3], (*image.shape[:2], 3)).astype(np.float32)
    colors = colorize(mask, palette).astype(np.float32)
    labelled = (np.asarray(mask) != IGNORE_LABEL)[..., None]
    blended = np.where(labelled, (1.0 - alpha) * rgb + alpha * colors, rgb)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def save_mask(path: str | os.PathLike, mask: np.ndarray, palette: Sequence[Sequence[int]]) -> None:
    """Writes a mask as a palette PNG (atomically): it shows in colour and reads back,
    with `load_mask`, as the same class indices."""
    from PIL import Image

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"Expected a (height, width) mask. Received: shape {mask.shape}")
    colors = colorize(np.arange(256, dtype=np.uint8)[None], palette)[0]
    picture = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask, np.uint8).tobytes())
    picture.putpalette(colors.reshape(-1).tolist())
    with atomic_path(path) as temporary:
        picture.save(temporary, format="PNG")


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes a uint8 `(height, width, 3)` or grey image as a PNG (atomically)."""
    from PIL import Image

    image = np.asarray(image, np.uint8)
    with atomic_path(path) as temporary:
        Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image).save(temporary, format="PNG")


# --------------------------------------------------------------------------
# Checks of a source's masks.


def remap_ignored(masks: np.ndarray, ignore_value: int | None) -> np.ndarray:
    """`masks` with the source's `ignore_value` replaced by `IGNORE_LABEL` (and, when the
    source ignores another value, its 255s left to be refused as a class too many)."""
    if ignore_value is None or ignore_value == IGNORE_LABEL:
        return masks
    if np.any(masks == IGNORE_LABEL):
        raise ValueError(
            f"Masks with ignore_value={ignore_value} also hold {IGNORE_LABEL}, which kcnn reserves for pixels without a label; "
            f"relabel those pixels (at most {MAX_CLASSES} classes, 0..{MAX_CLASSES - 1}). Received: ignore_value={ignore_value}"
        )
    return np.where(masks == ignore_value, np.uint8(IGNORE_LABEL), masks)


def check_classes(class_names: Sequence[str] | None, masks: Mapping[str, tuple[Sequence[np.ndarray], Sequence[str]]]) -> list[str]:
    """The class names of a source, its masks checked against them.

    Args:
        class_names: the given names, or None: "0", "1", ... up to the largest value
            of the training masks, which must then hold every class from 0 up (a
            value past a gap is more likely a stray than a class).
        masks: `{split: (masks, names)}`: each split's masks (2D arrays of any
            sizes), and a name per mask (its file) for the messages.

    Raises:
        ValueError: fewer than 2 or more than `MAX_CLASSES` classes, or values
            outside the classes (`check_mask_values`).
    """
    if class_names is not None:
        names = [str(c) for c in class_names]
        if not 2 <= len(names) <= MAX_CLASSES:
            raise ValueError(f"Expected 2 to {MAX_CLASSES} class names. Received: {len(names)} class_names")
    else:
        found = np.zeros(256, bool)
        for mask in masks["train"][0]:
            found[np.unique(mask)] = True
        found[IGNORE_LABEL] = False
        count = int(np.argmin(found)) if not found.all() else 256  # the first value missing from 0 up
        if count < 2:
            raise ValueError(
                "A segmentation model needs at least 2 classes, labelled 0, 1, ...; the training masks hold "
                f"{np.flatnonzero(found).tolist() or 'no labelled pixel'}. Received: {len(masks['train'][0])} training masks"
            )
        names = [str(i) for i in range(count)]
    for split_masks, split_names in masks.values():
        check_mask_values(split_masks, len(names), split_names, inferred=class_names is None)
    return names


def check_mask_values(masks: Sequence[np.ndarray], classes: int, names: Sequence[str], *, inferred: bool = False) -> None:
    """Refuses mask values that are neither a class (`0..classes-1`) nor `IGNORE_LABEL`,
    saying which values, how many pixels, and in which masks (`names`, one per mask).

    Args:
        masks: the masks (2D arrays of any sizes, or one NHW array).
        classes: how many classes.
        names: one name per mask, for the message.
        inferred: the classes were counted from the masks (0 up to the first gap).
    """
    counts = np.zeros(256, np.int64)
    culprits = []
    for index, mask in enumerate(masks):
        bad = mask[(mask >= classes) & (mask != IGNORE_LABEL)]
        if bad.size:
            counts += np.bincount(bad, minlength=256)
            culprits.append(f"{names[index]!r} ({bad.size} pixels)")
    if not culprits:
        return
    found = ", ".join(f"{value} ({counts[value]} pixels)" for value in np.flatnonzero(counts))
    more = f" and {len(culprits) - _SHOWN} more" if len(culprits) > _SHOWN else ""
    how = (
        f"the training masks label classes 0..{classes - 1} with no gap, so larger values look like strays; pass "
        "class_names (or a classes.txt) to make them classes"
        if inferred
        else "pass more class_names (or classes.txt lines) to make them classes"
    )
    raise ValueError(
        f"Expected mask values 0..{classes - 1} (the {classes} classes) or {IGNORE_LABEL} (no label): "
        f"{len(culprits)} mask(s) hold other values: {', '.join(culprits[:_SHOWN])}{more}. {how.capitalize()}, or "
        f"ignore_value for the value of unlabelled pixels. Received: values {found}"
    )


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 NHW masks at `size` (height, width), by nearest neighbour: labels stay labels."""
    import tensorflow as tf

    if tuple(masks.shape[1:3]) == tuple(size):
        return masks
    out = np.empty((len(masks), *size), np.uint8)
    for start in range(0, len(masks), 1024):
        chunk = tf.convert_to_tensor(masks[start : start + 1024, ..., None])
        out[start : start + 1024] = tf.image.resize(chunk, size, method="nearest")[..., 0].numpy()
    return out
