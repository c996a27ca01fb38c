"""The three kinds of split a source loads, each giving the `tf.data` elements its
pipeline batches: held in memory (uint8 images), streamed from image files, read from
TFDS.

Each can read a *share* of every batch only: `share(rows, n)` says which rows of a
batch of `n` this process keeps (a worker of a multi-worker cluster, whose strategy
gives it those rows, `kcnn.train.distribute.worker_share`). The other rows are not
gathered or decoded; they hold zeros, which the strategy drops.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from kcnn.data.preprocessing import _adapt_images

AUTOTUNE = tf.data.AUTOTUNE

# Elements shuffled together in TFDS sources (a shuffle buffer over a cached split, a
# window of encoded images in a split read afresh each epoch, whose files are shuffled
# too); in-memory and streamed folder sources always get a full shuffle since they only
# shuffle indices.
_TFDS_SHUFFLE_BUFFER = 10_000


def _owned(elements: tf.data.Dataset, batch_size: int, size: int, share: Callable) -> tf.data.Dataset:
    """`(element, kept)` for each element of a stream that is batched by `batch_size`
    afterwards: whether its row of its batch is one `share` keeps."""

    def with_row(position, element):
        first = position // batch_size * batch_size
        n = tf.minimum(tf.constant(batch_size, tf.int64), size - first)
        return element, share(position - first, n)

    return elements.enumerate().map(with_row)


def _zeros_unless(kept: tf.Tensor, read: Callable, shape) -> tf.Tensor:
    """`read()` for a row this process keeps, else a uint8 image of zeros."""
    return tf.cond(kept, read, lambda: tf.zeros(shape, tf.uint8))


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

    def batches(self, indices: tf.data.Dataset, share: Callable | None = None) -> tf.data.Dataset:
        """`(uint8 images, int32 labels)` batches of the rows in each batch of
        `indices` (an int64 dataset of index vectors), gathered in parallel; with a
        `share`, only its rows (zeros elsewhere)."""
        labels = tf.constant(self.y)
        shape = self.x.shape[1:]

        def gather(i):
            if share is None:
                images = tf.numpy_function(self.x.take, [i, 0], tf.uint8, stateful=False)
            else:
                n = tf.size(i, out_type=tf.int64)
                images = tf.numpy_function(self._take_kept, [i, share(tf.range(n), n)], tf.uint8, stateful=False)
            return tf.ensure_shape(images, [None, *shape]), tf.gather(labels, i)

        return indices.map(gather, num_parallel_calls=AUTOTUNE)

    def _take_kept(self, indices: np.ndarray, kept: np.ndarray) -> np.ndarray:
        images = np.zeros((len(indices), *self.x.shape[1:]), np.uint8)
        images[kept] = self.x.take(indices[kept], axis=0)
        return images


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
        dataset), decoded in parallel, in order.

        A file that fails to decode now (it passed the header check at load time)
        stops the iteration with an error naming it: dropping it would leave the
        split's length unknown, and with it the epochs `fit` counts (a resumed run,
        or a cluster, would read other batches than one uninterrupted process) and
        the rows of each batch that a worker of a cluster reads.
        """
        labels = tf.constant(self.y)
        return indices.map(lambda i: (self._read(i), tf.gather(labels, i)), num_parallel_calls=AUTOTUNE)

    def owned_images(self, indices: tf.data.Dataset) -> tf.data.Dataset:
        """`images` of `(index, kept)` elements (`_owned`): only the files kept are
        read, the others are zeros."""
        labels = tf.constant(self.y)

        def read(i, kept):
            return _zeros_unless(kept, lambda: self._read(i), self.shape), tf.gather(labels, i)

        return indices.map(read, num_parallel_calls=AUTOTUNE)

    def _read(self, i: tf.Tensor) -> tf.Tensor:
        # Only the file's decoding runs in Python (Pillow releases the GIL); the resize
        # is the in-memory path's own, in the graph.
        path = tf.gather(tf.constant(self.paths), i)
        return self._adapt(tf.numpy_function(self._read_file, [path], tf.uint8))

    def _read_file(self, path: bytes) -> np.ndarray:
        path = path.decode()
        try:
            return self.read_file(path)
        except Exception as error:  # Any decoding failure, named: tf.data reports it without the file.
            raise ValueError(
                f"Could not read an image from {path!r} (streamed; it passed the header check when the folder was "
                f"loaded): {error}. Repair or replace it, or load the folder with stream=False, which skips and names "
                "unreadable files up front."
            ) from error

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
    the files' order. A split that is not cached also has `encoded()`, a new reader of
    its `(encoded image, label)` elements (for a training split, with the files in
    another order at each iteration, seeded), which `decode(encoded, label)` makes
    `ds`'s elements."""

    def __init__(
        self,
        ds: tf.data.Dataset,
        size: int,
        uncached: tf.data.Dataset | None = None,
        *,
        encoded: Callable[[], tf.data.Dataset] | None = None,
        decode: Callable | None = None,
        files_shuffled: bool = False,
    ):
        self.ds = ds
        self.size = size
        self.uncached = ds if uncached is None else uncached
        self.encoded = encoded
        self.decode = decode
        self.files_shuffled = files_shuffled

    def elements(self, *, shuffle: bool, seed: int, batch_size: int, share: Callable | None = None) -> tf.data.Dataset:
        """The elements to batch by `batch_size`, shuffled anew at each iteration of the
        result (seeded) when `shuffle`; with a `share`, only the images of its rows are
        decoded where they are still encoded.

        Read afresh (`encoded`), the files come in a new order, then windows of
        `_TFDS_SHUFFLE_BUFFER` encoded images each in a new order, decoded after. A
        `Dataset.shuffle` buffer would create its input's iterator only when first
        read, so an iteration started and dropped (as `fit` does at each epoch's end,
        and a resumed run for each epoch done) would not move the files' order on,
        and a resumed run would read other orders than an uninterrupted one; here
        every random draw is made when an iteration starts. Cached: a shuffle buffer
        over the cache, whose order is fixed.
        """
        if share is None and not shuffle:
            return self.ds
        if self.encoded is None or shuffle != self.files_shuffled:
            ds = self.ds
            if shuffle:
                ds = ds.shuffle(min(self.size, _TFDS_SHUFFLE_BUFFER) or 1, seed=seed, reshuffle_each_iteration=True)
            return ds
        ds = self.encoded()
        if shuffle:
            ds = _window_shuffle(ds, min(self.size, _TFDS_SHUFFLE_BUFFER) or 1, seed)
            ds = ds.apply(tf.data.experimental.assert_cardinality(self.size))
        if share is None:
            return ds.map(self.decode, num_parallel_calls=AUTOTUNE)
        shape = self.ds.element_spec[0].shape

        def decode_kept(element, kept):
            encoded, label = element
            return _zeros_unless(kept, lambda: self.decode(encoded, label)[0], shape), tf.cast(label, tf.int32)

        return _owned(ds, batch_size, self.size, share).map(decode_kept, num_parallel_calls=AUTOTUNE)


def _window_shuffle(ds: tf.data.Dataset, window: int, seed: int) -> tf.data.Dataset:
    """`ds` with each window of `window` consecutive elements in a new order at each
    iteration: stateless permutations, keyed by a stream drawn when the iteration
    starts."""
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def permute(batch, key):
        order = tf.argsort(tf.random.stateless_uniform(tf.shape(batch[1])[:1], key))
        return tf.nest.map_structure(lambda t: tf.gather(t, order), batch)

    return tf.data.Dataset.zip(ds.batch(window), keys).map(permute).unbatch()
