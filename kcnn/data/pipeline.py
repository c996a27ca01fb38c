"""The `tf.data` pipelines: decode once and cache, shuffle, batch, augment in
parallel, prefetch (of the splits of `kcnn.data.splits`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kcnn.data.augment import _Policy
from kcnn.data.preprocessing import _normalize
from kcnn.data.splits import _FileSplit, _MemorySplit, _owned, _TFDSSplit

AUTOTUNE = tf.data.AUTOTUNE


#: Decoded bytes (uint8, at the training size: height x width x channels per image)
#: above which a source is not held in RAM: an image folder streams from its files
#: (decoded and resized in a parallel `tf.data` map, `Dataset.streaming`), a TFDS split
#: is not cached in RAM. 1 GiB: e.g. 21,000 images at 128x128x3, or 6,800 at 224x224x3.
#: Below it, the images are held once, as these uint8 bytes (the splits are views of
#: one array; batches are converted to float32 in the pipeline), so a load grows the
#: process by about that much.
IN_MEMORY_LIMIT = 1 << 30


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


def _pipeline(
    split: _MemorySplit | _FileSplit | _TFDSSplit,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    preprocessing: Mapping[str, Any],
    augmenter: Callable | None,
    share: Callable | None = None,
) -> tf.data.Dataset:
    """The batched `(float32 images, int32 labels)` pipeline of a split.

    With a `share` (`share(rows, n)`: the rows of a batch of `n` this process keeps),
    the batches are the same size, but only the kept rows are read, augmented and
    normalized, the others being zeros, and Keras' distribution is told to shard the
    batches by data (`AutoShardPolicy.DATA`), which keeps those rows: a worker of a
    cluster does its share of the work, and the batches, shuffle and augmentation
    draws stay those of one process.
    """
    if isinstance(split, _MemorySplit):
        # Shuffling indices (not images) gives a full shuffle without a second
        # copy of the data in a shuffle buffer, and one gather per batch.
        ds = tf.data.Dataset.range(split.size)
        if shuffle:
            ds = ds.shuffle(split.size, seed=seed, reshuffle_each_iteration=True)
        ds = split.batches(ds.batch(batch_size), share)
    elif isinstance(split, _FileSplit):
        # The same index order as in memory; each image decoded from its file.
        ds = tf.data.Dataset.range(split.size)
        if shuffle:
            ds = ds.shuffle(split.size, seed=seed, reshuffle_each_iteration=True)
        if share is None:
            ds = split.images(ds)
        else:
            ds = split.owned_images(_owned(ds, batch_size, split.size, share))
        ds = ds.batch(batch_size)
    else:
        ds = split.elements(shuffle=shuffle, seed=seed, batch_size=batch_size, share=share).batch(batch_size)

    # A segmentation split's augmenter transforms the images and masks of the whole
    # batch (its draws are the batch's), so a worker's share is taken after it.
    joint = getattr(augmenter, "joint", False)

    def finish(x, y, key=None):
        rows = n = None
        if share is not None and not joint:
            n = tf.shape(x, out_type=tf.int64)[0]
            rows = tf.where(share(tf.range(n), n))[:, 0]
            x = tf.gather(x, rows)
        x = tf.cast(x, tf.float32)
        if joint:  # segmentation: the masks move with the images
            x, y = augmenter(x, y, key)
        elif isinstance(augmenter, _Policy):
            x = augmenter(x, key, rows=rows, n=n)
        elif augmenter is not None:
            x = augmenter(x, training=True) if isinstance(augmenter, keras.layers.Layer) else augmenter(x)
            # A global mixed-precision policy would make layers return float16.
            x = tf.cast(x, tf.float32)
        x = _normalize(x, preprocessing)
        if rows is not None:
            x = tf.scatter_nd(rows[:, None], x, tf.concat([[n], tf.shape(x, out_type=tf.int64)[1:]], 0))
        return x, y

    if isinstance(augmenter, _Policy):
        # One stateless key per batch, from a stream that tf.data draws afresh (and
        # reproducibly) at every iteration of the split, as it reshuffles: the
        # augmentation is a function of (seed, epoch, batch), whatever order the
        # parallel map runs the batches in. Random layers drawing from a shared
        # state in that map gave each run other shifts.
        keys = tf.data.Dataset.random(seed=augmenter.stream_seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, keys).map(lambda batch, key: finish(*batch, key), num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.map(finish, num_parallel_calls=AUTOTUNE)
    if share is not None:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    return ds.prefetch(AUTOTUNE)
