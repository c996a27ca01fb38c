"""`kcnn.data.load`: any source, for either task, as a `Dataset` of batched,
preprocessed `tf.data` splits (classification sources: `kcnn.data.dataset`;
segmentation sources: `kcnn.data.segmentation`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from kcnn.data import segmentation
from kcnn.data.dataset import Dataset, load_classification

__all__ = ["load"]


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
    stream: bool | str = "auto",
    task: str | None = None,
    default_image_size: int | Sequence[int] | None = None,
) -> Dataset:
    """Loads an image classification (or segmentation) dataset as batched `tf.data` pipelines.

    Args:
        source: `"digits"` (default), a TFDS dataset name, a directory of
            class sub-directories (or of `train/`, `test/`, `val/` folders of
            them: its own splits), a path to an `.npz` file, `(x, y)`,
            `((x, y), (x_test, y_test))`, or a dict with `x`/`y` or
            `x_train`/`y_train`(/`x_test`/`y_test`) arrays (an optional
            `class_names` entry names the classes). Arrays are NHW (grey) or
            NHWC, uint8 0..255, integers within 0..255 or float (0..1 if the
            maximum is <= 1, else 0..255), finite; labels are integer class
            indices 0..k-1 of shape (N,) or (N, 1), of at least 2 classes
            (labels with gaps need `class_names`: one name per index).
        image_size: target `(height, width)` or an int for square images.
            Default: 32x32 for digits, the native size for arrays and
            fixed-size TFDS datasets, 224x224 for variable-size TFDS datasets,
            and the median height and width of the images for folders (of an
            even count the lower middle one, so one outlier never sets it; a
            folder whose images differ in size gets a warning naming the
            sizes, unless `image_size` is given).
        channels: 1 (grey) or 3 (RGB). Default: the source's own (folders: 3
            if any image is in colour, else 1).
        batch_size: batch size of all splits.
        validation_split: fraction carved out of the training pool for
            validation when the source has no validation split. 0 -> none.
        test_split: fraction carved out for testing when the source has no
            test split. 0 -> none.
        seed: seeds the split, the shuffling and the augmentation. The same
            seed gives the same split, and the same batch order and built-in
            augmentation for each epoch (each iteration of the training split
            is the next epoch), in any process with the same TensorFlow global
            seed (or none): the shuffle and the augmentation keys are tf.data's
            seeded streams, which include that seed.
        augment: False/None (none), True (= "shift"), one of
            `AUGMENT_POLICIES` (deterministic for a seed, epoch and batch), or a
            callable (e.g. a Keras layer, called with `training=True`) taking a
            float32 NHWC batch on the 0..255 pixel scale (its randomness is its
            own). Applied to the training split only.
        normalize: True (= "unit"), False/None (= "none") or one of
            `NORMALIZATIONS`.
        cache: TFDS sources only (other sources live in memory already):
            True caches the decoded, resized images in memory, a string caches
            them in that file, False re-reads them every epoch.
        shuffle: shuffle the training split (seeded, reshuffled each epoch). A
            TFDS training split that is not cached (`cache=False`, or above
            `IN_MEMORY_LIMIT`) also reads its files in a new order each epoch and
            shuffles windows of 10,000 encoded images, decoding them after; a
            cached one is shuffled in a 10,000-image buffer over the cache.
        data_dir: TFDS data directory (default: TFDS's own).
        download: let TFDS download and prepare the dataset if needed.
        stream: image folders only: "auto" streams the images from their files
            (paths shuffled, each image decoded and resized in a parallel
            `tf.data` map, memory bounded whatever the folder's size) when the
            decoded images would take more than `IN_MEMORY_LIMIT` bytes, and
            decodes them into memory once otherwise; True or False forces one
            way. Both give the same batches (`Dataset.streaming` says which).
            Streamed, a file is decoded for the first time while training (but
            for the sample of `input_statistics`): one that fails then, its
            header having been read, stops the epoch with an error naming it
            (the split's length stays known, and with it the epochs `fit`
            counts); in memory it is skipped and named at load time.
        default_image_size: the size when `image_size` is None, in place of the
            source's own default (`kcnn.train.fit` passes a model family's input
            size this way). Unlike `image_size`, it is not the caller's choice: a
            folder whose images differ in size is still warned about.
        task: None (the source's own: "shapes", a folder of image/mask pairs and
            arrays of masks are segmentation sources, the rest classification),
            "classification" or "segmentation" (e.g. `oxford_iiit_pet`'s trimaps
            rather than its breeds): see `kcnn.data.segmentation`, whose
            `load_segmentation` takes the segmentation sources' own options.

    Returns:
        A `Dataset` (a `SegmentationDataset` for a segmentation source).

    Raises:
        ValueError: on invalid arguments, an unknown dataset name, an empty
            image folder or class folder, split folders that disagree on the
            classes, NaN/infinite pixels or pixels outside 0..255, labels that
            are not 0..k-1 (without `class_names`), a single class, test classes
            absent from training, or a TFDS dataset not prepared in `data_dir`
            while `download=False`.
    """
    if segmentation.wants_segmentation(source, task):
        return segmentation.load_segmentation(
            source, image_size=image_size, channels=channels, batch_size=batch_size, validation_split=validation_split,
            test_split=test_split, seed=seed, augment=augment, normalize=normalize, cache=cache, shuffle=shuffle,
            data_dir=data_dir, download=download, stream=stream,
        )  # fmt: skip
    return load_classification(
        source, image_size=image_size, channels=channels, batch_size=batch_size, validation_split=validation_split,
        test_split=test_split, seed=seed, augment=augment, normalize=normalize, cache=cache, shuffle=shuffle,
        data_dir=data_dir, download=download, stream=stream, default_image_size=default_image_size,
    )  # fmt: skip
