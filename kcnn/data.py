"""Image classification datasets as fast, reproducible `tf.data` pipelines.

`load()` turns any of these sources into a `Dataset` holding batched
train/validation/test `tf.data.Dataset`s of `(images, labels)`:

* `"digits"`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no
  network needed), resized to 32x32x1 by default. The offline default.
* any TFDS name (`"mnist"`, `"cifar10"`, `"tf_flowers"`, ...).
* a directory with one sub-directory of images per class.
* NumPy arrays: `(x, y)`, `((x, y), (x_test, y_test))`, a dict with `x`/`y`
  (or `x_train`/`y_train`/`x_test`/`y_test`) keys, or a path to such an `.npz`.

Every source goes through the same preprocessing, described by a small
JSON-serializable dict (`Dataset.preprocessing`) that `preprocess_images()` and
`read_images()` apply to new images, so a predictor sees exactly what the
model was trained on:

1. raw pixels on a 0..255 scale (uint8 as is; floats whose maximum is <= 1 are
   taken to be in [0, 1] and multiplied by 255; an alpha channel is dropped);
2. bilinear resize (antialiased) to `image_size`, when the size differs;
3. channel adaptation to `channels` (1 -> 3 repeats the grey level, 3 -> 1
   uses the ITU-R 601 luma weights of `tf.image.rgb_to_grayscale`);
4. rounding to uint8 (this is what the training pipeline stores in memory);
5. normalization (see `NORMALIZATIONS`).

Split policy: sources with their own test split keep it; otherwise a test split
of `test_split` (default 20%) is carved out. Sources with their own validation
split keep it; otherwise `validation_split` (default 10%) is carved out of the
training pool. Each fraction is of the pool it is carved from, so `"digits"`
is split 70/10/20. In-memory sources (digits, folders, arrays) are split
stratified by class with a NumPy generator seeded by `seed`; the test set is
drawn first from each class, so it depends only on `seed` and `test_split`,
never on `validation_split`, and accuracy figures stay comparable. TFDS
splits are carved with split slicing (contiguous, e.g. `train[:90%]` and
`train[90%:]`; TFDS shuffles examples when it prepares a dataset).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "AUGMENT_POLICIES",
    "IMAGE_EXTENSIONS",
    "NORMALIZATIONS",
    "Dataset",
    "as_numpy",
    "load",
    "load_image",
    "preprocess_images",
    "read_images",
]

AUTOTUNE = tf.data.AUTOTUNE

#: Normalization modes, applied after resizing, on the 0..255 pixel scale:
#: "unit" -> x / 255 in [0, 1]; "symmetric" -> x / 127.5 - 1 in [-1, 1];
#: "standardize" -> (x - mean) / std with per-channel mean/std of the training
#: split (stored in the preprocessing dict); "none" -> float32 0..255.
NORMALIZATIONS = ("unit", "symmetric", "standardize", "none")

#: Built-in augmentation policies, applied to training batches only.
#: "shift": random translation by up to 12.5% of the height/width (4 px on a
#: 32x32 image, the classic pad-4-and-crop), zero (black) fill; safe for
#: digits and text. "flip": "shift" plus random horizontal flips, for natural
#: images (CIFAR, flowers). `augment=True` means "shift".
AUGMENT_POLICIES = ("shift", "flip")

#: File extensions (case-insensitive) read from image folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

DIGITS_IMAGE_SIZE = (32, 32)
#: Used for TFDS datasets whose images have no fixed size (e.g. tf_flowers).
DEFAULT_VARIABLE_IMAGE_SIZE = (224, 224)
PREPROCESSING_VERSION = 1

# A few well-known TFDS names to suggest in the unknown-name error.
_POPULAR_TFDS = (
    "mnist",
    "fashion_mnist",
    "kmnist",
    "emnist",
    "cifar10",
    "cifar100",
    "svhn_cropped",
    "tf_flowers",
)
# PIL modes that hold a single grey channel.
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_VALIDATION_SPLIT_NAMES = ("validation", "val", "valid", "dev")
# Element-wise shuffle buffer for TFDS sources; in-memory sources always get
# a full shuffle since they only shuffle indices.
_TFDS_SHUFFLE_BUFFER = 10_000
# Images resized per eager call when preparing in-memory arrays, to bound the
# float32 working memory.
_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A loaded dataset: batched `tf.data` splits plus what describes them.

    Attributes:
        train: batched `(images, labels)` training split: images float32 NHWC,
            labels int32 class indices. Shuffled (seeded, reshuffled every
            epoch) and augmented when requested.
        validation: batched validation split, or None when
            `validation_split=0` and the source has none.
        test: batched test split, or None when `test_split=0` and the source
            has none.
        num_classes: number of classes.
        class_names: class names, indexed by label.
        input_shape: `(height, width, channels)` of the images.
        num_train: number of training examples.
        num_validation: number of validation examples (0 when None).
        num_test: number of test examples (0 when None).
        preprocessing: JSON-serializable dict for `preprocess_images()`:
            `{"version": 1, "image_size": [h, w], "channels": c,
            "normalization": "unit", "mean": None or [c floats],
            "std": None or [c floats], "resize": "bilinear",
            "antialias": True}`; mean/std are on the 0..255 scale and only set
            for "standardize".
        batch_size: the batch size of the three splits.
        name: the source, for display and metadata ("digits", "mnist", the
            folder or .npz path, or "arrays").
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset | None
    num_classes: int
    class_names: list[str]
    input_shape: tuple[int, int, int]
    num_train: int
    num_validation: int
    num_test: int
    preprocessing: dict[str, Any]
    batch_size: int = 32
    name: str = ""
    # Rebuilds the pipelines from the already decoded/cached data.
    _rebuild: Callable[[int], Dataset] | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def steps_per_epoch(self) -> int:
        """Number of training batches per epoch."""
        return math.ceil(self.num_train / self.batch_size)

    def with_batch_size(self, batch_size: int) -> Dataset:
        """Returns the same data batched differently, without decoding again.

        Args:
            batch_size: the new batch size (positive int).

        Returns:
            A new `Dataset` (self when the batch size is unchanged).
        """
        _check_batch_size(batch_size)
        if batch_size == self.batch_size:
            return self
        if self._rebuild is None:
            raise ValueError("This Dataset was not created by `kcnn.data.load()` and cannot be re-batched.")
        return self._rebuild(batch_size)


def load(
    source: Any = "digits",
    *,
    image_size: int | Sequence[int] | None = None,
    channels: int | None = None,
    batch_size: int = 32,
    validation_split: float = 0.1,
    test_split: float = 0.2,
    seed: int = 1337,
    augment: bool | str | Callable | None = False,
    normalize: bool | str | None = True,
    cache: bool | str = True,
    shuffle: bool = True,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> Dataset:
    """Loads an image classification dataset as batched `tf.data` pipelines.

    Args:
        source: `"digits"` (default), a TFDS dataset name, a directory of
            class sub-directories, a path to an `.npz` file, `(x, y)`,
            `((x, y), (x_test, y_test))`, or a dict with `x`/`y` or
            `x_train`/`y_train`(/`x_test`/`y_test`) arrays (an optional
            `class_names` entry names the classes). Arrays are NHW (grey) or
            NHWC, uint8 0..255 or float (0..1 if the maximum is <= 1, else
            0..255); labels are integer class indices of shape (N,) or (N, 1).
        image_size: target `(height, width)` or an int for square images.
            Default: 32x32 for digits, the native size for arrays and
            fixed-size TFDS datasets, 224x224 for variable-size TFDS datasets,
            and the size of the first readable image (in sorted order) for
            folders.
        channels: 1 (grey) or 3 (RGB). Default: the source's own (folders: 3
            if any image is in colour, else 1).
        batch_size: batch size of all splits.
        validation_split: fraction carved out of the training pool for
            validation when the source has no validation split. 0 -> none.
        test_split: fraction carved out for testing when the source has no
            test split. 0 -> none.
        seed: seeds the split, the shuffling and the augmentation. The same
            seed gives the same split and the same batch order.
        augment: False/None (none), True (= "shift"), one of
            `AUGMENT_POLICIES`, or a callable (e.g. a Keras layer, called with
            `training=True`) taking a float32 NHWC batch on the 0..255 pixel
            scale. Applied to the training split only.
        normalize: True (= "unit"), False/None (= "none") or one of
            `NORMALIZATIONS`.
        cache: TFDS sources only (other sources live in memory already):
            True caches the decoded, resized images in memory, a string caches
            them in that file, False re-reads them every epoch.
        shuffle: shuffle the training split (seeded, reshuffled each epoch).
        data_dir: TFDS data directory (default: TFDS's own).
        download: let TFDS download and prepare the dataset if needed.

    Returns:
        A `Dataset`.

    Raises:
        ValueError: on invalid arguments, an unknown dataset name, an empty
            image folder or class folder, or a TFDS dataset not prepared in
            `data_dir` while `download=False`.
    """
    image_size = _parse_image_size(image_size)
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(
            "`channels` must be 1 (grey), 3 (RGB) or None (the source's own). "
            f"Received: channels={channels!r}"
        )
    _check_batch_size(batch_size)
    for arg, value in (("validation_split", validation_split), ("test_split", test_split)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"`{arg}` must be a fraction in [0, 1). Received: {arg}={value!r}")
    if validation_split + test_split >= 1:
        raise ValueError(
            "`validation_split + test_split` must leave some training data (< 1). "
            f"Received: validation_split={validation_split!r}, test_split={test_split!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
    seed = int(seed)
    normalization = _parse_normalize(normalize)
    policy = _parse_augment(augment)
    if not isinstance(cache, (bool, str, os.PathLike)):
        raise ValueError(f"`cache` must be a bool or a file path. Received: cache={cache!r}")

    common = dict(
        image_size=image_size,
        channels=channels,
        validation_split=float(validation_split),
        test_split=float(test_split),
        seed=seed,
    )
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path == "digits":
            splits = _load_digits(**common)
        elif os.path.isdir(path):
            splits = _load_folder(path, **common)
        elif path.lower().endswith(".npz"):
            if not os.path.isfile(path):
                raise ValueError(f"Expected an existing .npz file. Received: source={path!r} (no such file)")
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            splits = _load_arrays(arrays, name=path, **common)
        else:
            splits = _load_tfds(path, data_dir=data_dir, download=download, cache=cache, **common)
    elif isinstance(source, (tuple, list, Mapping)):
        splits = _load_arrays(source, name="arrays", **common)
    else:
        raise ValueError(
            "Expected `source` to be 'digits', a TFDS name, a directory, an .npz path, (x, y) arrays "
            f"or a dict of arrays. Received: source of type {type(source).__name__}"
        )

    preprocessing = {
        "version": PREPROCESSING_VERSION,
        "image_size": [int(splits["image_size"][0]), int(splits["image_size"][1])],
        "channels": int(splits["channels"]),
        "normalization": normalization,
        "mean": None,
        "std": None,
        "resize": "bilinear",
        "antialias": True,
    }
    if normalization == "standardize":
        mean, std = splits["stats"]()
        preprocessing["mean"] = [float(v) for v in mean]
        preprocessing["std"] = [float(v) for v in std]
    augmenter = _make_augmenter(policy, seed)

    def build(batch: int) -> Dataset:
        pipelines = {}
        for split in ("train", "validation", "test"):
            base = splits[split]
            if base is None:
                pipelines[split] = None
                continue
            is_train = split == "train"
            pipelines[split] = _pipeline(
                base,
                batch_size=batch,
                shuffle=shuffle and is_train,
                seed=seed,
                preprocessing=preprocessing,
                augmenter=augmenter if is_train else None,
            )
        return Dataset(
            train=pipelines["train"],
            validation=pipelines["validation"],
            test=pipelines["test"],
            num_classes=len(splits["class_names"]),
            class_names=list(splits["class_names"]),
            input_shape=(*preprocessing["image_size"], preprocessing["channels"]),
            num_train=splits["train"].size,
            num_validation=0 if splits["validation"] is None else splits["validation"].size,
            num_test=0 if splits["test"] is None else splits["test"].size,
            preprocessing=dict(preprocessing),
            batch_size=batch,
            name=splits["name"],
            _rebuild=build,
        )

    return build(batch_size)


def preprocess_images(images: Any, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """Applies a dataset's preprocessing to raw images, as at training time.

    Args:
        images: a batch as one array, NHWC or NHW (grey), or a list of HWC/HW
            arrays, possibly of different sizes. Pixels are uint8 0..255, or
            float (0..1 if the maximum over the call is <= 1, else 0..255).
            A single image must be wrapped in a list.
        preprocessing: `Dataset.preprocessing` (or its JSON round trip).

    Returns:
        float32 NumPy array of shape `(N, height, width, channels)`.
    """
    size, channels = _check_preprocessing(preprocessing)
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("Expected at least one image. Received: images=[]")
        arrays = [_as_hwc(np.asarray(image)) for image in images]
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
        adapted = _adapt_array(array, size, channels)
    return _normalize(tf.convert_to_tensor(adapted), preprocessing).numpy()


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decodes an image file to a uint8 `(height, width, channels)` array.

    Grey images (PIL modes 1, L, LA, I, F) give one channel, anything else
    three (RGB; alpha is dropped). JPEG EXIF orientation is applied.

    Args:
        path: image file (any format Pillow reads).

    Returns:
        uint8 NumPy array of shape `(height, width, 1 or 3)`.

    Raises:
        ValueError: if the file cannot be read or decoded.
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


def as_numpy(split: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Materializes a batched `(images, labels)` split as NumPy arrays.

    Args:
        split: e.g. `dataset.test`. Iterating the training split yields one
            epoch, shuffled and augmented as configured.

    Returns:
        `(x, y)`: float32 NHWC images and int32 labels.
    """
    if not isinstance(split, tf.data.Dataset):
        raise ValueError(f"Expected a tf.data.Dataset such as `dataset.test`. Received: split={split!r}")
    xs, ys = [], []
    for x, y in split.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        element_spec = split.element_spec
        return (
            np.zeros((0, *element_spec[0].shape[1:]), np.float32),
            np.zeros((0,), np.int32),
        )
    return np.concatenate(xs), np.concatenate(ys)


# --------------------------------------------------------------------------
# Argument parsing.


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")


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


def _parse_augment(augment: Any) -> str | Callable | None:
    if augment is False or augment is None:
        return None
    if augment is True:
        return "shift"
    if isinstance(augment, str):
        if augment in AUGMENT_POLICIES:
            return augment
    elif callable(augment):
        return augment
    raise ValueError(
        f"`augment` must be True, False, one of {AUGMENT_POLICIES} or a callable (e.g. a Keras layer). "
        f"Received: augment={augment!r}"
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
    booleans are masks. Other integers are taken as 0..255 already.
    """
    floats = [a for a in arrays if np.issubdtype(a.dtype, np.floating) and a.size]
    if floats:
        return 255.0 if max(float(np.max(a)) for a in floats) <= 1.0 else 1.0
    return 255.0 if any(a.dtype == np.bool_ for a in arrays) else 1.0


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
    """Adapts a whole NHWC array in chunks; returns uint8 NHWC."""
    scale = _pixel_scale([x])
    out = np.empty((len(x), *size, channels), np.uint8)
    for start in range(0, len(x), _CHUNK):
        chunk = x[start : start + _CHUNK]
        if scale != 1.0:
            chunk = chunk.astype(np.float32) * scale
        elif chunk.dtype not in (np.uint8, np.float32):
            chunk = chunk.astype(np.float32)
        out[start : start + _CHUNK] = _adapt_images(chunk, size, channels).numpy()
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


# --------------------------------------------------------------------------
# Pipelines.


class _MemorySplit:
    """A split held in memory as uint8 NHWC images and int32 labels."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x = x
        self.y = y.astype(np.int32)
        self.size = len(x)


class _TFDSSplit:
    """A split read from TFDS as adapted, cached `(uint8 image, int32 label)` elements."""

    def __init__(self, ds: tf.data.Dataset, size: int):
        self.ds = ds
        self.size = size


def _pipeline(
    split: _MemorySplit | _TFDSSplit,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    preprocessing: Mapping[str, Any],
    augmenter: Callable | None,
) -> tf.data.Dataset:
    if isinstance(split, _MemorySplit):
        images = tf.constant(split.x)
        labels = tf.constant(split.y)
        # Shuffling indices (not images) gives a full shuffle without a second
        # copy of the data in a shuffle buffer, and one gather per batch.
        ds = tf.data.Dataset.range(split.size)
        if shuffle:
            ds = ds.shuffle(split.size, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
        ds = ds.map(lambda i: (tf.gather(images, i), tf.gather(labels, i)), num_parallel_calls=AUTOTUNE)
    else:
        ds = split.ds
        if shuffle:
            ds = ds.shuffle(
                min(split.size, _TFDS_SHUFFLE_BUFFER) or 1, seed=seed, reshuffle_each_iteration=True
            )
        ds = ds.batch(batch_size)

    def finish(x, y):
        x = tf.cast(x, tf.float32)
        if augmenter is not None:
            x = augmenter(x, training=True) if isinstance(augmenter, keras.layers.Layer) else augmenter(x)
            # A global mixed-precision policy would make layers return float16.
            x = tf.cast(x, tf.float32)
        return _normalize(x, preprocessing), y

    ds = ds.map(finish, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def _make_augmenter(policy: str | Callable | None, seed: int) -> Callable | None:
    if policy is None or callable(policy):
        return policy
    # Explicit float32 so a global mixed-precision policy cannot leak in.
    layers = [
        keras.layers.RandomTranslation(
            0.125,
            0.125,
            fill_mode="constant",
            fill_value=0.0,
            # Nearest keeps whole-pixel shifts, like padding and cropping.
            interpolation="nearest",
            seed=seed,
            dtype="float32",
        )
    ]
    if policy == "flip":
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 1, dtype="float32"))
    return keras.Sequential(layers, name=f"augment_{policy}")


# --------------------------------------------------------------------------
# In-memory sources: digits, arrays, folders.


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


def _finish_memory(splits: dict, *, class_names, image_size, channels, name) -> dict:
    train = splits["train"]
    return {
        **splits,
        "class_names": [str(c) for c in class_names],
        "image_size": image_size,
        "channels": channels,
        "name": name,
        "stats": lambda: _channel_stats(train.x),
    }


def _load_digits(*, image_size, channels, validation_split, test_split, seed) -> dict:
    from sklearn.datasets import load_digits  # Deferred: only this source needs scikit-learn.

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
    return _finish_memory(splits, class_names=range(10), image_size=size, channels=channels, name="digits")


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

    size = image_size or (int(x.shape[1]), int(x.shape[2]))
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
    return _finish_memory(splits, class_names=class_names, image_size=size, channels=channels, name=name)


# Decoding failures of a single (corrupt, truncated, unsupported) file.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, MemoryError)


def _decode_file(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        array = np.asarray(image.convert("L" if image.mode in _GRAY_MODES else "RGB"))
    return array[..., None] if array.ndim == 2 else array


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


def _load_folder(root: str, *, image_size, channels, validation_split, test_split, seed) -> dict:
    from PIL import Image

    class_names, files = _list_class_folders(root)
    # Headers first (cheap, no pixel decoding): the default size and channel
    # count must be known before decoding so every image is adapted once.
    bad: list[str] = []
    readable: list[list[str]] = []
    any_color = False
    first_size = None
    for paths in files:
        ok = []
        for path in paths:
            try:
                with Image.open(path) as image:
                    mode, (width, height) = image.mode, image.size
            except _DECODE_ERRORS:
                bad.append(path)
                continue
            any_color = any_color or mode not in _GRAY_MODES
            first_size = first_size or (height, width)
            ok.append(path)
        readable.append(ok)
    size = image_size or first_size or DEFAULT_VARIABLE_IMAGE_SIZE
    channels = channels or (3 if any_color else 1)

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
            stacklevel=3,
        )
    x = np.stack(images)
    y = np.asarray(labels, np.int32)
    splits = _memory_splits(
        x, y, None, None, validation_split=validation_split, test_split=test_split, seed=seed
    )
    return _finish_memory(splits, class_names=class_names, image_size=size, channels=channels, name=root)


# --------------------------------------------------------------------------
# TFDS.


def _unknown_name_error(name: str, builders: Sequence[str], reason: str = "") -> ValueError:
    known = ["digits", *builders]
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    popular = ", ".join(b for b in _POPULAR_TFDS if b in builders)
    detail = f" ({reason})" if reason else ""
    if os.sep in name or name.startswith("."):
        detail += " (no such directory or file either)"
    return ValueError(
        f"Unknown dataset {name!r}.{hint} Expected 'digits', one of the {len(builders)} TFDS names "
        f"(e.g. {popular}; see tfds.list_builders()), an existing directory of class sub-folders, "
        f"an .npz path or (x, y) arrays. Received: source={name!r}{detail}"
    )


def _slices(num: int | None, fractions: Sequence[float]) -> list[str | None]:
    """Split specs carving `fractions` off the end of "train", in order.

    Returns `[train_spec, *specs]`; a spec is None for an empty slice.
    Absolute indices when the size is known (exact), else whole percents.
    """
    if num is not None:
        counts = [int(round(num * f)) for f in fractions]
        bounds = [num - sum(counts)]
    else:
        counts = [int(round(100 * f)) for f in fractions]
        bounds = [100 - sum(counts)]
    for count in counts:
        bounds.append(bounds[-1] + count)
    unit = "" if num is not None else "%"
    specs: list[str | None] = [f"train[:{bounds[0]}{unit}]"]
    for k, fraction in enumerate(fractions):
        empty = fraction <= 0 or bounds[k] == bounds[k + 1]
        specs.append(None if empty else f"train[{bounds[k]}{unit}:{bounds[k + 1]}{unit}]")
    return specs


def _load_tfds(
    name, *, data_dir, download, cache, image_size, channels, validation_split, test_split, seed
) -> dict:
    import tensorflow_datasets as tfds  # Deferred: slow to import, only this source needs it.

    del seed  # TFDS slices are fixed; the seed only drives shuffling/augmentation.
    data_dir = None if data_dir is None else os.fspath(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise _unknown_name_error(name, tfds.list_builders()) from None
    except ValueError as error:  # Not even a valid TFDS name (e.g. a missing path).
        raise _unknown_name_error(name, tfds.list_builders(), reason=str(error).splitlines()[0]) from None
    if download:
        builder.download_and_prepare()
    info = builder.info
    keys = info.supervised_keys
    if not keys or len(keys) < 2 or not all(isinstance(k, str) for k in keys[:2]):
        raise ValueError(
            "Expected a TFDS dataset with (image, label) supervised keys. "
            f"Received: {name!r} with supervised_keys={keys!r}"
        )
    image_key, label_key = keys[0], keys[1]
    label_feature = info.features[label_key]
    class_names = getattr(label_feature, "names", None)
    if not class_names:
        raise ValueError(
            "Expected a TFDS dataset with a ClassLabel label. "
            f"Received: {name!r} with label feature {label_feature!r}"
        )
    image_shape = tuple(info.features[image_key].shape)
    if len(image_shape) != 3:
        raise ValueError(
            f"Expected a TFDS dataset of HWC images. Received: {name!r} with image shape {image_shape}"
        )

    # Unprepared or mocked datasets know no splits; train/test is the norm.
    available = set(info.splits.keys()) or {"train", "test"}
    if "train" not in available:
        raise ValueError(
            "Expected a TFDS dataset with a 'train' split. "
            f"Received: {name!r} with splits {sorted(available)}"
        )
    num_train = info.splits["train"].num_examples if "train" in info.splits else None
    val_name = next((s for s in _VALIDATION_SPLIT_NAMES if s in available), None)
    has_test = "test" in available
    carve_val = 0.0 if val_name else validation_split
    carve_test = 0.0 if has_test else test_split
    train_spec, val_spec, test_spec = _slices(num_train, (carve_val, carve_test))
    val_spec = val_name or val_spec
    test_spec = "test" if has_test else test_spec

    wanted = {k: v for k, v in (("train", train_spec), ("validation", val_spec), ("test", test_spec)) if v}
    try:
        loaded = builder.as_dataset(split=list(wanted.values()), as_supervised=True, shuffle_files=False)
    except AssertionError as error:  # TFDS's way of saying "not prepared".
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in data_dir={data_dir!r}; pass download=True "
            f"(needs network) or point data_dir at a prepared copy. Received: download={download!r}"
        ) from error

    size = image_size or (image_shape[:2] if None not in image_shape[:2] else DEFAULT_VARIABLE_IMAGE_SIZE)
    size = (int(size[0]), int(size[1]))
    native = image_shape[2]
    channels = channels or (1 if native == 1 else 3)

    def adapt(image, label):
        image = _adapt_images(image[None], size, channels)[0]
        image.set_shape((*size, channels))
        return image, tf.cast(label, tf.int32)

    splits: dict[str, Any] = {"train": None, "validation": None, "test": None}
    for split, ds in zip(wanted, loaded, strict=True):
        ds = ds.map(adapt, num_parallel_calls=AUTOTUNE)
        if cache:
            # Decoded and resized once; later epochs read uint8 from the cache.
            ds = ds.cache() if cache is True else ds.cache(os.fspath(cache) + f".{split}")
        count = int(ds.cardinality())
        if count < 0:
            count = int(ds.reduce(np.int64(0), lambda n, _: n + 1))
        splits[split] = _TFDSSplit(ds, count)

    def stats():
        # One pass over the (cached) training split; fills the cache as a
        # side effect, so the first epoch is no slower.
        total = np.zeros(channels)
        total_sq = np.zeros(channels)
        count = 0
        for x, _ in splits["train"].ds.batch(512).as_numpy_iterator():
            flat = x.reshape(-1, channels).astype(np.float64)
            total += flat.sum(0)
            total_sq += np.square(flat).sum(0)
            count += len(flat)
        return _finish_stats(total, total_sq, count)

    return {
        **splits,
        "class_names": list(class_names),
        "image_size": size,
        "channels": channels,
        "name": name,
        "stats": stats,
    }
