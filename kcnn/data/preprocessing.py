"""The preprocessing every source goes through, and its application to new images:
0..255 pixels (checked: finite, within 0..255), resize, channel adaptation,
normalization (see `kcnn.data`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

#: Normalization modes, applied after resizing, on the 0..255 pixel scale:
#: "unit" -> x / 255 in [0, 1]; "symmetric" -> x / 127.5 - 1 in [-1, 1];
#: "standardize" -> (x - mean) / std with per-channel mean/std of the training
#: split (stored in the preprocessing dict); "none" -> float32 0..255.
NORMALIZATIONS = ("unit", "symmetric", "standardize", "none")


PREPROCESSING_VERSION = 1


# Images resized per eager call when preparing in-memory arrays, to bound the
# float32 working memory.
_CHUNK = 1024


def preprocess_images(images: Any, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """Applies a dataset's preprocessing to raw images, as at training time.

    Args:
        images: a batch as one array, NHWC or NHW (grey), or a list of HWC/HW
            arrays, possibly of different sizes. Pixels are on the 0..255 scale:
            uint8, other integers within 0..255, or floats (0..1 if the maximum
            over the call is <= 1, else 0..255). A single image must be wrapped
            in a list.
        preprocessing: `Dataset.preprocessing` (or its JSON round trip).

    Returns:
        float32 NumPy array of shape `(N, height, width, channels)`.

    Raises:
        ValueError: for an invalid preprocessing dict, images of another shape, or
            pixels that are NaN, infinite or outside 0..255 (the message says how
            many and where).
    """
    size, channels = _check_preprocessing(preprocessing)
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("Expected at least one image. Received: images=[]")
        arrays = [_as_hwc(np.asarray(image)) for image in images]
        for index, array in enumerate(arrays):
            _check_pixels(array[None], f"images[{index}]", first_index=index)
        # One scale decision for the whole call, as for a training array.
        scale = _pixel_scale(arrays)
        adapted = np.concatenate(
            [
                _adapt_images(
                    a[None] if a.dtype == np.uint8 else a[None].astype(np.float32) * scale, size, channels
                )
                for a in arrays
            ]
        )
    else:
        array = np.asarray(images)
        if array.ndim == 3:
            array = array[..., None]
        if array.ndim != 4:
            raise ValueError(
                "Expected a batch of images as an NHWC or NHW array, or a list of images. "
                f"Received: images with shape {array.shape}"
            )
        _check_pixels(array, "images")
        adapted = _adapt_array(array, size, channels)
    return _normalize(tf.convert_to_tensor(adapted), preprocessing).numpy()


def _parse_image_size(image_size: Any) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in image_size)
    ):
        return int(image_size[0]), int(image_size[1])
    raise ValueError(
        f"`image_size` must be a positive int or a (height, width) pair. Received: image_size={image_size!r}"
    )


def _parse_normalize(normalize: Any) -> str:
    if normalize is True:
        return "unit"
    if normalize is False or normalize is None:
        return "none"
    if isinstance(normalize, str) and normalize in NORMALIZATIONS:
        return normalize
    raise ValueError(
        f"`normalize` must be True, False or one of {NORMALIZATIONS}. Received: normalize={normalize!r}"
    )


def _check_preprocessing(preprocessing: Any) -> tuple[tuple[int, int], int]:
    if not isinstance(preprocessing, Mapping) or not {"image_size", "channels", "normalization"} <= set(
        preprocessing
    ):
        raise ValueError(
            "Expected a preprocessing dict with 'image_size', 'channels' and 'normalization' keys "
            f"(`Dataset.preprocessing`). Received: preprocessing={preprocessing!r}"
        )
    size = _parse_image_size(
        tuple(preprocessing["image_size"])
        if isinstance(preprocessing["image_size"], list)
        else preprocessing["image_size"]
    )
    channels = preprocessing["channels"]
    if channels not in (1, 3):
        raise ValueError(f"Expected preprocessing['channels'] to be 1 or 3. Received: channels={channels!r}")
    normalization = preprocessing["normalization"]
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Expected preprocessing['normalization'] in {NORMALIZATIONS}. "
            f"Received: normalization={normalization!r}"
        )
    if normalization == "standardize":
        for key in ("mean", "std"):
            value = preprocessing.get(key)
            if not isinstance(value, (list, tuple)) or len(value) != channels:
                raise ValueError(
                    f"Expected preprocessing[{key!r}] to hold {channels} per-channel values "
                    "for 'standardize'. "
                    f"Received: {key}={value!r}"
                )
    return size, channels


# --------------------------------------------------------------------------
# Preprocessing shared by training pipelines and `preprocess_images`.


def _pixel_scale(arrays: Sequence[np.ndarray]) -> float:
    """Factor bringing non-uint8 pixels to the 0..255 scale, decided once per call.

    Floats whose maximum is <= 1 are the common "already scaled" convention;
    booleans are masks. Other integers are taken as 0..255 already. The pixels
    must have passed `_check_pixels`: one NaN would make the maximum NaN and
    the decision wrong for every image.
    """
    floats = [a for a in arrays if np.issubdtype(a.dtype, np.floating) and a.size]
    if floats:
        return 255.0 if max(float(np.max(a)) for a in floats) <= 1.0 else 1.0
    return 255.0 if any(a.dtype == np.bool_ for a in arrays) else 1.0


# How many bad pixels an error message locates.
_SHOWN_PIXELS = 3


def _check_pixels(x: np.ndarray, what: str, *, first_index: int = 0) -> None:
    """Refuses NaN or infinite pixels and pixels outside 0..255, naming how many
    and where (image index, row, column, channel of the first few).

    One NaN makes the pixel-scale decision (`_pixel_scale`) and every gradient
    NaN; values outside 0..255 would be clipped without a word (16-bit data,
    already normalized data).

    Args:
        x: NHWC array (uint8 and bool arrays pass without a look).
        what: the argument's name for the message (`x`, `x_test`, `images`).
        first_index: the image index of `x[0]` in the message.
    """
    if x.dtype in (np.uint8, np.bool_) or not x.size:
        return
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"Expected `{what}` to hold real pixel values (integers or floats). Received: dtype={x.dtype}")
    floating = np.issubdtype(x.dtype, np.floating)
    count = 0
    places: list[tuple[int, ...]] = []
    images: set[int] = set()
    low = high = None
    # In chunks: a boolean mask of a whole training array can be hundreds of MB.
    for start in range(0, len(x), _CHUNK):
        chunk = x[start : start + _CHUNK]
        if floating:
            bad = ~np.isfinite(chunk)
            if bad.any():
                count += int(bad.sum())
                found = np.argwhere(bad)
                images.update((found[:, 0] + start + first_index).tolist())
                places.extend(
                    (int(i) + start + first_index, *map(int, rest)) for i, *rest in found[: _SHOWN_PIXELS - len(places)]
                )
                continue
        if count:
            continue
        chunk_low, chunk_high = chunk.min(), chunk.max()
        low = chunk_low if low is None else min(low, chunk_low)
        high = chunk_high if high is None else max(high, chunk_high)
    if count:
        raise ValueError(
            f"`{what}` holds {count} NaN or infinite pixel value{'s' if count > 1 else ''}, "
            f"in {len(images)} image{'s' if len(images) > 1 else ''}: {_where(places, count)}. "
            "One such pixel spoils the pixel scale of the whole array and every gradient; "
            f"repair or drop those images. Received: {what} with {count} non-finite value{'s' if count > 1 else ''}"
        )
    if low >= 0 and high <= 255:
        return
    outside = 0
    for start in range(0, len(x), _CHUNK):
        chunk = x[start : start + _CHUNK]
        bad = (chunk < 0) | (chunk > 255)
        if bad.any():
            outside += int(bad.sum())
            found = np.argwhere(bad)[: _SHOWN_PIXELS - len(places)]
            places.extend((int(i) + start + first_index, *map(int, rest)) for i, *rest in found)
    if not floating and low >= 0 and high <= 65535:
        hint = " These look like 16-bit pixels: divide them by 257 (rounding) for the 0..255 scale."
    elif low < 0:
        hint = " Normalized pixels cannot be told apart from dark ones: pass the raw pixels."
    else:
        hint = ""
    raise ValueError(
        "Expected pixel values on the 0..255 scale (uint8, integers within 0..255, or floats in [0, 1] "
        f"or [0, 255]); values outside it would be clipped. `{what}` holds {outside} "
        f"pixel value{'s' if outside > 1 else ''} outside 0..255: {_where(places, outside)}.{hint} "
        f"Received: {what} with dtype {x.dtype}, minimum {low}, maximum {high}"
    )


def _where(places: Sequence[tuple[int, ...]], count: int) -> str:
    shown = ", ".join(f"image {i} at (row {r}, column {c}, channel {ch})" for i, r, c, ch in places)
    return shown + (f" and {count - len(places)} more" if count > len(places) else "")


def _as_hwc(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(
            "Expected an image of shape (height, width) or (height, width, channels). "
            f"Received: shape={image.shape}"
        )
    return image


def _adapt_images(images: Any, size: tuple[int, int], channels: int) -> tf.Tensor:
    """Pixels (0..255 scale) NHWC -> resized, channel-adapted uint8 NHWC.

    Works eagerly and inside `tf.data` graphs, so training and prediction
    share one implementation.
    """
    x = tf.cast(images, tf.float32)
    num_channels = x.shape[-1]
    if num_channels == 4:
        x = x[..., :3]
        num_channels = 3
    if num_channels not in (1, 3):
        raise ValueError(
            f"Expected images with 1, 3 or 4 channels. Received: images with shape {tuple(x.shape)}"
        )
    if tuple(x.shape[-3:-1]) != tuple(size):
        x = tf.image.resize(x, size, method="bilinear", antialias=True)
    if num_channels != channels:
        x = tf.image.rgb_to_grayscale(x) if channels == 1 else tf.image.grayscale_to_rgb(x)
    # uint8 takes a quarter of the memory of float32 in the cache; the
    # predictor rounds the same way, so both see identical inputs.
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def _adapt_array(x: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """Adapts a whole NHWC array in chunks; returns a new uint8 NHWC array."""
    if x.dtype == np.uint8 and x.shape[1:] == (*size, channels):
        return x.copy()  # Already adapted: TensorFlow's float32 working copies would stay in its allocator's pool.
    scale = _pixel_scale([x])
    out = np.empty((len(x), *size, channels), np.uint8)
    # At most ~16 MB of float32 per eager call (in or out), whatever the image sizes.
    pixels = max(int(np.prod(x.shape[1:])), size[0] * size[1] * max(channels, x.shape[-1]), 1)
    step = max(1, min(_CHUNK, (1 << 22) // pixels))
    for start in range(0, len(x), step):
        chunk = x[start : start + step]
        if scale != 1.0:
            chunk = chunk.astype(np.float32) * scale
        elif chunk.dtype not in (np.uint8, np.float32):
            chunk = chunk.astype(np.float32)
        out[start : start + step] = _adapt_images(chunk, size, channels).numpy()
    return out


def _normalize(x: tf.Tensor, preprocessing: Mapping[str, Any]) -> tf.Tensor:
    """uint8/float 0..255 NHWC -> normalized float32."""
    x = tf.cast(x, tf.float32)
    mode = preprocessing["normalization"]
    if mode == "unit":
        return x / 255.0
    if mode == "symmetric":
        return x / 127.5 - 1.0
    if mode == "standardize":
        mean = tf.constant(preprocessing["mean"], tf.float32)
        std = tf.constant(preprocessing["std"], tf.float32)
        return (x - mean) / std
    return x


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean/std of uint8 NHWC data, in float64 to avoid drift."""
    c = x.shape[-1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    count = 0
    for start in range(0, len(x), _CHUNK):
        chunk = x[start : start + _CHUNK].reshape(-1, c).astype(np.float64)
        total += chunk.sum(0)
        total_sq += np.square(chunk).sum(0)
        count += len(chunk)
    return _finish_stats(total, total_sq, count)


def _finish_stats(total: np.ndarray, total_sq: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    mean = total / max(count, 1)
    var = np.maximum(total_sq / max(count, 1) - np.square(mean), 0.0)
    # A constant channel would divide by zero; 1 grey level is a safe floor.
    return mean, np.maximum(np.sqrt(var), 1.0)
