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
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from kcnn.data.pipeline import (
    AUGMENT_POLICIES,
    _check_batch_size,
    _make_augmenter,
    _parse_augment,
    _pipeline,
    as_numpy,
)
from kcnn.data.preprocessing import (
    IMAGE_EXTENSIONS,
    NORMALIZATIONS,
    PREPROCESSING_VERSION,
    _parse_image_size,
    _parse_normalize,
    load_image,
    preprocess_images,
    read_images,
)
from kcnn.data.sources import _load_arrays, _load_digits, _load_folder, _load_tfds

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
