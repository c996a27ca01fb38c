"""The built-in training augmentations (`AUGMENT_POLICIES`): whole-pixel shifts and
horizontal flips, drawn with stateless random ops from one key per batch, so that they
are a function of (seed, epoch, batch) in any process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

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
    only_masks = " ('crop' zooms an image with its mask: segmentation data only)" if augment == "crop" else ""
    raise ValueError(
        f"`augment` must be True, False, one of {AUGMENT_POLICIES} or a callable (e.g. a Keras layer){only_masks}. "
        f"Received: augment={augment!r}"
    )


class _Policy:
    """A built-in augmentation policy (`AUGMENT_POLICIES`): `policy(x, key)` moves
    (and for "flip" mirrors) each image of a float32 NHWC batch, drawing with
    stateless random ops from the batch's `key` (two int64).

    `policy(x, key, rows=rows, n=n)` augments rows `rows` of a batch of `n` images,
    `x` holding those rows only, exactly as `policy` on the whole batch would: the
    draws are made for the `n` images and those of `rows` kept (a worker of a cluster
    augments its share of each global batch so)."""

    def __init__(self, policy: str, seed: int):
        self.policy = policy
        # The key stream's own seed, apart from the shuffle's (same seed, same
        # Philox stream otherwise).
        self.stream_seed = int(np.random.SeedSequence([seed % 2**32, 0xA06]).generate_state(1)[0])

    def __call__(self, x: tf.Tensor, key: tf.Tensor, *, rows: tf.Tensor | None = None, n: tf.Tensor | None = None) -> tf.Tensor:
        if rows is None:
            n, rows = tf.shape(x)[0], None
        shift_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        x = _shift(x, shift_key, _SHIFT_FRACTION, n=n, rows=rows)
        if self.policy == "flip":
            flip = _kept(tf.random.stateless_uniform([n], flip_key) < 0.5, rows)
            x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
        return x


def _kept(draws: tf.Tensor, rows: tf.Tensor | None) -> tf.Tensor:
    """The draws of the rows kept (all of them when `rows` is None)."""
    return draws if rows is None else tf.gather(draws, rows)


def _shift(x: tf.Tensor, key: tf.Tensor, fraction: float, *, n: tf.Tensor, rows: tf.Tensor | None) -> tf.Tensor:
    """Translates each image of an NHWC batch by its own whole number of pixels,
    uniform in [-m, m] with m = floor(fraction * size) per axis, zero fill (drawn for
    `n` images, of which `x` holds `rows`)."""
    shape = tf.shape(x)
    offsets = []
    for axis, axis_key in zip((1, 2), tf.unstack(tf.random.experimental.stateless_split(key, 2)), strict=True):
        most = tf.cast(tf.floor(fraction * tf.cast(shape[axis], tf.float32)), tf.int32)
        drawn = tf.random.stateless_uniform([n], axis_key, minval=-most, maxval=most + 1, dtype=tf.int32)
        offsets.append(tf.cast(_kept(drawn, rows), tf.float32))
    dy, dx = offsets
    ones, zeros = tf.ones([shape[0]]), tf.zeros([shape[0]])
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
