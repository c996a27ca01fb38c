"""The `tf.data` pipelines: decode once and cache, shuffle, batch, augment in
parallel, prefetch."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kcnn.data.preprocessing import _adapt_images, _normalize

AUTOTUNE = tf.data.AUTOTUNE


#: Built-in augmentation policies, applied to training batches only.
#: "shift": random translation of each image by a whole number of pixels, up to
#: 12.5% of the height/width (4 px on a 32x32 image, the classic pad-4-and-crop),
#: zero (black) fill; safe for digits and text. "flip": "shift" plus random
#: horizontal flips (half the images), for natural images (CIFAR, flowers).
#: `augment=True` means "shift". Both are deterministic: the same seed gives the
#: same shifts and flips for the same epoch and batch, in any process.
AUGMENT_POLICIES = ("shift", "flip")

# The largest shift, as a fraction of the height/width.
_SHIFT_FRACTION = 0.125


# Elements shuffled together in TFDS sources (a shuffle buffer over a cached split, a
# window of encoded images in a split read afresh each epoch, whose files are shuffled
# too); in-memory and streamed folder sources always get a full shuffle since they only
# shuffle indices.
_TFDS_SHUFFLE_BUFFER = 10_000

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


class _MemorySplit:
    """A split held in memory as uint8 NHWC images and int32 labels.

    The images stay this one NumPy array: batches are gathered from it in a
    `tf.numpy_function`, and converted to float32 only then. A `tf.constant` of them
    would be a second copy (and, while it is made, a third), and a large constant in
    a `tf.data` graph that is serialized (tf.distribute) meets protobuf's 2 GB limit.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x = x
        self.y = y.astype(np.int32)
        self.size = len(x)

    def batches(self, indices: tf.data.Dataset) -> tf.data.Dataset:
        """`(uint8 images, int32 labels)` batches of the rows in each batch of
        `indices` (an int64 dataset of index vectors), gathered in parallel."""
        labels = tf.constant(self.y)
        shape = self.x.shape[1:]

        def gather(i):
            images = tf.numpy_function(self.x.take, [i, 0], tf.uint8, stateful=False)
            return tf.ensure_shape(images, [None, *shape]), tf.gather(labels, i)

        return indices.map(gather, num_parallel_calls=AUTOTUNE)


class _FileSplit:
    """A split streamed from image files: their paths and labels in memory, each
    image read (`read_file(path)` -> uint8 HWC, 1 or 3 channels, any size: Pillow,
    as the in-memory path reads it) and adapted to `shape` when a batch needs it."""

    def __init__(self, paths: np.ndarray, labels: np.ndarray, read_file: Callable, shape: tuple[int, int, int]):
        self.paths = np.asarray(paths, dtype=str)
        self.y = np.asarray(labels, np.int32)
        self.size = len(self.paths)
        self.read_file = read_file
        self.shape = tuple(shape)

    def images(self, indices: tf.data.Dataset) -> tf.data.Dataset:
        """`(uint8 image, int32 label)` elements of the files at `indices` (an int64
        dataset), decoded in parallel, in order; a file that fails to decode now
        (it passed the header check at load time) is skipped with a warning."""
        paths = tf.constant(self.paths)
        labels = tf.constant(self.y)

        def read(i):
            # Only the file's decoding runs in Python (Pillow releases the GIL); the
            # resize is the in-memory path's own, in the graph.
            image = tf.numpy_function(lambda path: self.read_file(path.decode()), [tf.gather(paths, i)], tf.uint8)
            return self._adapt(image), tf.gather(labels, i)

        return indices.map(read, num_parallel_calls=AUTOTUNE).ignore_errors(log_warning=True)

    def _adapt(self, image: tf.Tensor) -> tf.Tensor:
        """`_adapt_images` of one decoded image whose size and channels are known
        only when it runs: the branch of its channel count, resized unless it has
        the training size already (as the in-memory path, which sees them)."""
        height, width, channels = self.shape

        def with_channels(count):
            x = tf.ensure_shape(image, [None, None, count])

            def as_is():
                return _adapt_images(tf.ensure_shape(x, [height, width, count])[None], (height, width), channels)[0]

            def resized():
                return _adapt_images(x[None], (height, width), channels)[0]

            same = tf.reduce_all(tf.equal(tf.shape(x)[:2], [height, width]))
            return tf.cond(same, as_is, resized)

        adapted = tf.cond(tf.equal(tf.shape(image)[-1], 1), lambda: with_channels(1), lambda: with_channels(3))
        return tf.ensure_shape(adapted, self.shape)

    @property
    def uncached(self) -> tf.data.Dataset:
        """The split's elements in order (as `_TFDSSplit.uncached`, for `few_shot`)."""
        return self.images(tf.data.Dataset.range(self.size))


class _TFDSSplit:
    """A split read from TFDS as adapted, cached `(uint8 image, int32 label)` elements;
    `uncached` reads the same elements without filling the cache (for one pass), in
    the files' order. A training split that is not cached also has `encoded`: its
    `(encoded image, label)` elements with the files in another order at each
    iteration (seeded), which `decode(encoded, label)` makes `ds`'s elements."""

    def __init__(
        self,
        ds: tf.data.Dataset,
        size: int,
        uncached: tf.data.Dataset | None = None,
        *,
        encoded: tf.data.Dataset | None = None,
        decode: Callable | None = None,
    ):
        self.ds = ds
        self.size = size
        self.uncached = ds if uncached is None else uncached
        self.encoded = encoded
        self.decode = decode

    def shuffled(self, seed: int) -> tf.data.Dataset:
        """The elements shuffled anew at each iteration of the result (seeded).

        Read afresh (`encoded`): the files in a new order, then windows of
        `_TFDS_SHUFFLE_BUFFER` encoded images each in a new order, decoded after. A
        `Dataset.shuffle` buffer would create its input's iterator only when first
        read, so an iteration started and dropped (as `fit` does at each epoch's end,
        and a resumed run for each epoch done) would not move the files' order on,
        and a resumed run would read other orders than an uninterrupted one; here
        every random draw is made when an iteration starts. Cached: a shuffle buffer
        over the cache, whose order is fixed.
        """
        window = min(self.size, _TFDS_SHUFFLE_BUFFER) or 1
        if self.encoded is None:
            return self.ds.shuffle(window, seed=seed, reshuffle_each_iteration=True)
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def permute(batch, key):
            order = tf.argsort(tf.random.stateless_uniform(tf.shape(batch[1])[:1], key))
            return tf.nest.map_structure(lambda t: tf.gather(t, order), batch)

        shuffled = tf.data.Dataset.zip(self.encoded.batch(window), keys).map(permute).unbatch()
        shuffled = shuffled.apply(tf.data.experimental.assert_cardinality(self.size))
        return shuffled.map(self.decode, num_parallel_calls=AUTOTUNE)


def _pipeline(
    split: _MemorySplit | _FileSplit | _TFDSSplit,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    preprocessing: Mapping[str, Any],
    augmenter: Callable | None,
) -> tf.data.Dataset:
    # Multi-worker: this builds the whole global batch and Keras' automatic sharding gives
    # each worker its part, exact but every worker decodes every image. Explicit sharding
    # (undone) would, per worker, slice each batch of shuffled indices before `split.images`
    # or the gather, and slice the augmentation too: its draws come from one key per
    # *batch* (`_shift` draws [n] values), so a worker must draw for the global n and keep
    # its rows. Still to settle: how the partial last batch is split so the loss weights
    # match one process; passing a distribute_datasets_from_function dataset to Keras'
    # fit (steps then known only from the caller) and skipping epochs on resume; TFDS
    # splits shuffle a buffer, not indices, so only a post-shuffle element shard is exact.
    if isinstance(split, _MemorySplit):
        # Shuffling indices (not images) gives a full shuffle without a second
        # copy of the data in a shuffle buffer, and one gather per batch.
        ds = tf.data.Dataset.range(split.size)
        if shuffle:
            ds = ds.shuffle(split.size, seed=seed, reshuffle_each_iteration=True)
        ds = split.batches(ds.batch(batch_size))
    elif isinstance(split, _FileSplit):
        # The same index order as in memory; each image decoded from its file.
        ds = tf.data.Dataset.range(split.size)
        if shuffle:
            ds = ds.shuffle(split.size, seed=seed, reshuffle_each_iteration=True)
        ds = split.images(ds).batch(batch_size)
    else:
        ds = split.shuffled(seed) if shuffle else split.ds
        ds = ds.batch(batch_size)

    def finish(x, y, key=None):
        x = tf.cast(x, tf.float32)
        if isinstance(augmenter, _Policy):
            x = augmenter(x, key)
        elif augmenter is not None:
            x = augmenter(x, training=True) if isinstance(augmenter, keras.layers.Layer) else augmenter(x)
            # A global mixed-precision policy would make layers return float16.
            x = tf.cast(x, tf.float32)
        return _normalize(x, preprocessing), y

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
    return ds.prefetch(AUTOTUNE)


class _Policy:
    """A built-in augmentation policy (`AUGMENT_POLICIES`): `policy(x, key)` moves
    (and for "flip" mirrors) each image of a float32 NHWC batch, drawing with
    stateless random ops from the batch's `key` (two int64)."""

    def __init__(self, policy: str, seed: int):
        self.policy = policy
        # The key stream's own seed, apart from the shuffle's (same seed, same
        # Philox stream otherwise).
        self.stream_seed = int(np.random.SeedSequence([seed % 2**32, 0xA06]).generate_state(1)[0])

    def __call__(self, x: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        shift_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        x = _shift(x, shift_key, _SHIFT_FRACTION)
        if self.policy == "flip":
            flip = tf.random.stateless_uniform(tf.shape(x)[:1], flip_key) < 0.5
            x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
        return x


def _shift(x: tf.Tensor, key: tf.Tensor, fraction: float) -> tf.Tensor:
    """Translates each image of an NHWC batch by its own whole number of pixels,
    uniform in [-m, m] with m = floor(fraction * size) per axis, zero fill."""
    shape = tf.shape(x)
    n = shape[0]
    offsets = []
    for axis, axis_key in zip((1, 2), tf.unstack(tf.random.experimental.stateless_split(key, 2)), strict=True):
        most = tf.cast(tf.floor(fraction * tf.cast(shape[axis], tf.float32)), tf.int32)
        offsets.append(
            tf.cast(tf.random.stateless_uniform([n], axis_key, minval=-most, maxval=most + 1, dtype=tf.int32), tf.float32)
        )
    dy, dx = offsets
    ones, zeros = tf.ones([n]), tf.zeros([n])
    # Output pixel (r, c) reads input pixel (r - dy, c - dx); outside the image: 0.
    transforms = tf.stack([ones, zeros, -dx, zeros, ones, -dy, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )


def _make_augmenter(policy: str | Callable | None, seed: int) -> Callable | None:
    if policy is None or callable(policy):
        return policy
    return _Policy(policy, seed)
