"""Image files: which files a path names, and decoding one to uint8 pixels on the
0..255 scale (16-bit grey scaled, Pillow's decompression-bomb limit kept)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kcnn.data.preprocessing import preprocess_images

#: File extensions (case-insensitive) read from image folders, all decoded by Pillow
#: (TIFF is one TensorFlow's decoders do not read). Other files in a folder are named
#: in a warning, not read.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# PIL modes that hold a single grey channel.
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decodes an image file to a uint8 `(height, width, channels)` array.

    Grey images (PIL modes 1, L, LA, I, I;16, F) give one channel, anything
    else three (RGB; alpha is dropped). 16-bit grey images (PIL modes I;16 and
    I, e.g. 16-bit PNGs) are scaled to 0..255 (divided by 257), not clipped.
    JPEG EXIF orientation is applied.

    Args:
        path: image file (any format Pillow reads).

    Returns:
        uint8 NumPy array of shape `(height, width, 1 or 3)`.

    Raises:
        ValueError: if the file cannot be read or decoded, or has more pixels than
            Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`).
    """
    try:
        return _decode_file(path)
    except _DECODE_ERRORS as error:
        raise ValueError(
            f"Could not read an image from {os.fspath(path)!r}: {error}. Received: path={os.fspath(path)!r}"
        ) from error


def read_images(paths: Sequence[str | os.PathLike], preprocessing: Mapping[str, Any]) -> np.ndarray:
    """Reads image files and applies a dataset's preprocessing.

    Args:
        paths: image files.
        preprocessing: `Dataset.preprocessing`.

    Returns:
        float32 NumPy array of shape `(len(paths), height, width, channels)`.

    Raises:
        ValueError: if a file cannot be decoded (a predictor should hear about
            it, unlike training, which skips such files).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return preprocess_images([load_image(path) for path in paths], preprocessing)


def image_files(path: str | os.PathLike) -> list[str]:
    """The image files a path names: the file itself, or the image files directly
    in a folder (by extension, `IMAGE_EXTENSIONS`; hidden files and sub-folders
    skipped, other files named in a warning), sorted by name.

    Args:
        path: an image file or a folder of image files.

    Returns:
        The file paths, as strings.

    Raises:
        ValueError: if the path does not exist, or the folder holds no image file.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise ValueError(f"Expected an image file or a folder of images. Received: path={path!r} (no such file or folder)")
    files, others = _by_extension(sorted(entry.path for entry in os.scandir(path) if entry.is_file()))
    if not files:
        holds = f"{len(others)} other file(s), e.g. {os.path.basename(others[0])!r}" if others else "none"
        raise ValueError(
            f"Expected image files ({', '.join(IMAGE_EXTENSIONS)}) directly in the folder (sub-folders are not read). "
            f"Received: path={path!r}, which holds {holds}"
        )
    _warn_not_images(path, others, stacklevel=3)
    return files


def _by_extension(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """(image files, other files) of `paths` by extension; hidden files in neither."""
    images, others = [], []
    for path in paths:
        name = os.path.basename(path)
        if not name.startswith("."):
            (images if name.lower().endswith(IMAGE_EXTENSIONS) else others).append(path)
    return images, others


def _warn_not_images(root: str, others: Sequence[str], *, stacklevel: int) -> None:
    """Names the files under `root` that are not read, having no image extension."""
    if not others:
        return
    shown = ", ".join(repr(path) for path in others[:5]) + (", ..." if len(others) > 5 else "")
    warnings.warn(
        f"Not read under {root!r}: {len(others)} file(s) without an image extension ({', '.join(IMAGE_EXTENSIONS)}): "
        f"{shown}",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


# Decoding failures of a single (corrupt, truncated, unsupported, too large) file.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, MemoryError)


# The EXIF tag of the orientation a decoder applies (`PIL.ImageOps.exif_transpose`).
_EXIF_ORIENTATION = 0x0112


# PIL modes of 16-bit grey images (PNG's 16-bit grey opens as I;16, older files as I).
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def _open_image(path: str | os.PathLike):
    """`PIL.Image.open`, with Pillow's decompression-bomb errors as ValueErrors
    that name the file's size, and images over Pillow's warning limit refused
    too (their decoding costs gigabytes; raising `PIL.Image.MAX_IMAGE_PIXELS`, or
    setting it to None, lets them through, as it does for Pillow itself)."""
    from PIL import Image

    try:
        image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Raised by Pillow over twice its limit (or over it, where warnings are errors).
        raise ValueError(f"{error} (PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,})") from error
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit and width * height > limit:
        image.close()
        raise ValueError(
            f"{width}x{height} = {width * height:,} pixels is over Pillow's decompression-bomb limit "
            f"PIL.Image.MAX_IMAGE_PIXELS = {limit:,}; raise that limit to read it"
        )
    return image


def _decode_file(path: str | os.PathLike) -> np.ndarray:
    from PIL import ImageOps

    with _open_image(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in _WIDE_GRAY_MODES:
            # Pillow's convert("L") clips 16-bit values at 255 (most of an image's
            # pixels); 65535 / 257 = 255 maps the range exactly.
            wide = np.asarray(image, dtype=np.int64)
            if wide.size and (wide.min() < 0 or wide.max() > 65535):
                raise ValueError(
                    f"expected 16-bit grey pixels (0..65535) in a mode {image.mode} image, "
                    f"found {wide.min()}..{wide.max()}"
                )
            array = np.round(wide / 257.0).astype(np.uint8)
        else:
            array = np.asarray(image.convert("L" if image.mode in _GRAY_MODES else "RGB"))
    return array[..., None] if array.ndim == 2 else array


def _read_header(path: str | os.PathLike) -> tuple[str, int, int]:
    """(PIL mode, height, width) of an image file as decoding will give it, from its
    header alone (no pixels decoded)."""
    with _open_image(path) as image:
        mode, (width, height) = image.mode, image.size
        # Decoding applies the EXIF orientation; 5..8 turn the image sideways.
        if image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
            width, height = height, width
    return mode, height, width
