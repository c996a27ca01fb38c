"""TFDS datasets with masks, as segmentation sources: `oxford_iiit_pet`'s trimaps, when
the dataset is prepared locally (or `download=True` may fetch it).

`TFDS_MASKS` says, per dataset, which feature holds the mask and what its values mean.
The Oxford-IIIT Pet trimaps mark each pixel 1 (pet), 2 (background) or 3 (the
unclassified border between them, Parkhi et al. 2012): kcnn's classes are background (0)
and pet (1), the border `IGNORE_LABEL`. A mask value the table does not list, or a mask
of another size than its image, stops the pipeline with an error that names the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from kcnn.data import pipeline
from kcnn.data.masks import IGNORE_LABEL
from kcnn.data.pipeline import AUTOTUNE
from kcnn.data.preprocessing import _adapt_images
from kcnn.data.sources import DEFAULT_VARIABLE_IMAGE_SIZE
from kcnn.data.splits import _TFDSSplit
from kcnn.data.statistics import TFDS_SAMPLE, _input_statistics, _memory_sample
from kcnn.data.tfds_source import _open_builder, _slices, _split_stats, _tfds_ways_out

logger = logging.getLogger("kcnn")


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """How a TFDS dataset stores masks: the feature, and each stored value's class
    index (or `IGNORE_LABEL`)."""

    feature: str
    class_names: tuple[str, ...]
    values: Mapping[int, int]


#: The TFDS datasets kcnn reads masks from.
TFDS_MASKS = {
    # Parkhi, Vedaldi, Zisserman, Jawahar, "Cats and Dogs", CVPR 2012: trimaps
    # 1 = pet, 2 = background, 3 = border (not classified).
    "oxford_iiit_pet": MaskSpec("segmentation_mask", ("background", "pet"), {1: 1, 2: 0, 3: IGNORE_LABEL}),
}


def _load_mask_tfds(name, *, data_dir, download, cache, image_size, channels, validation_split, test_split, seed) -> dict:
    del seed  # TFDS slices are fixed; the seed drives shuffling and augmentation.
    spec = TFDS_MASKS.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, ["shapes", *TFDS_MASKS], n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown segmentation source {name!r}.{hint} Expected 'shapes', a folder of image/mask pairs (images/ and "
            f"masks/), segmentation arrays, or a TFDS dataset with masks: {', '.join(TFDS_MASKS)}. Received: source={name!r}"
        )
    builder, folder, received = _open_builder(name, data_dir, download)
    available = set(builder.info.splits.keys()) or {"train", "test"}  # unprepared or mocked: the norm
    num_train = builder.info.splits["train"].num_examples if "train" in builder.info.splits else None
    has_test = "test" in available
    train_spec, val_spec, test_spec = _slices(num_train, (validation_split, 0.0 if has_test else test_split))
    wanted = {k: v for k, v in (("train", train_spec), ("validation", val_spec), ("test", "test" if has_test else test_spec)) if v}
    try:
        loaded = builder.as_dataset(split=list(wanted.values()), shuffle_files=False)
    except AssertionError as error:  # TFDS's way of saying "not prepared".
        raise ValueError(
            f"The TFDS dataset {name!r} is not prepared in {folder!r} (data_dir; TFDS's default is "
            f"~/tensorflow_datasets) and downloading is off. {_tfds_ways_out(name, folder)} {received}"
        ) from error
    image_shape = tuple(builder.info.features["image"].shape)
    size = image_size or (image_shape[:2] if None not in image_shape[:2] else DEFAULT_VARIABLE_IMAGE_SIZE)
    size = (int(size[0]), int(size[1]))
    channels = channels or (1 if image_shape[2] == 1 else 3)
    table = np.full(256, -1, np.int32)
    for value, label in spec.values.items():
        table[value] = label
    table = tf.constant(table)
    expected = ", ".join(str(v) for v in sorted(spec.values))

    def adapt(example):
        image, stored = example["image"], example[spec.feature][..., 0]
        file_name = example.get("file_name", tf.constant("(no file name)"))
        same = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(stored)[:2]))
        size_check = tf.debugging.Assert(
            same, [f"{name}: a mask differs in size from its image (height, width):", file_name, tf.shape(image)[:2], tf.shape(stored)[:2]]
        )
        labels = tf.gather(table, tf.cast(stored, tf.int32))
        value_check = tf.debugging.Assert(
            tf.reduce_all(labels >= 0),
            [f"{name}: a mask holds values other than {expected}:", file_name, tf.boolean_mask(stored, labels < 0)],
            summarize=10,
        )
        with tf.control_dependencies([size_check, value_check]):
            adapted = _adapt_images(image[None], size, channels)[0]
            mask = tf.image.resize(labels[None, ..., None], size, method="nearest")[0, ..., 0]
        adapted.set_shape((*size, channels))
        return adapted, tf.ensure_shape(tf.cast(mask, tf.uint8), size)

    splits = {"train": None, "validation": None, "test": None}
    for split, raw in zip(wanted, loaded, strict=True):
        uncached = ds = raw.map(adapt, num_parallel_calls=AUTOTUNE)
        decoded_bytes = max(int(uncached.cardinality()), 0) * size[0] * size[1] * (channels + 1)
        if cache is True and decoded_bytes > pipeline.IN_MEMORY_LIMIT:
            logger.info("%s[%s]: above kcnn.data.IN_MEMORY_LIMIT decoded: not cached in memory", name, split)
        elif cache:
            ds = ds.cache() if cache is True else ds.cache(os.fspath(cache) + f".{split}")
        count = int(ds.cardinality())
        if count < 0:
            count = int(raw.reduce(np.int64(0), lambda n, _: n + 1))  # counted undecoded
        splits[split] = _TFDSSplit(ds, count, uncached)

    first = loaded[0].take(TFDS_SAMPLE).map(lambda example: (adapt(example)[0], tf.shape(example["image"])[:2]))
    batch = next(first.batch(TFDS_SAMPLE).as_numpy_iterator(), None)
    if batch is None:
        raise ValueError(f"Not enough examples to leave a training split. Received: {name!r} with split {train_spec!r} empty")
    sample, shapes = batch

    return {
        **splits,
        "class_names": list(spec.class_names),
        "image_size": size,
        "channels": channels,
        "name": name,
        "stats": lambda: _split_stats(splits["train"], channels),
        "statistics": _input_statistics(_memory_sample(sample), [tuple(s) for s in shapes]),
        "palette": None,
    }
