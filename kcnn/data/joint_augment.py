"""Geometric augmentation of segmentation batches: one random transform per scene,
applied alike to the image (bilinear) and to its mask (nearest neighbour: a pixel's
label is always one of the labels the mask had, never a blend of two).

`SEGMENTATION_AUGMENT_POLICIES`:
- "shift": a translation by a whole number of pixels, up to 12.5% of the height and
  width (the classification policy's); the image's new border is black, the mask's
  `IGNORE_LABEL` (nothing is known there, so the loss and the metrics skip it).
- "flip": "shift", then a horizontal flip of half the scenes.
- "crop": a square-aspect crop of 60-100% of the side at a random place, scaled back to
  the full size (a zoom in: nothing outside the image is shown), then a horizontal flip
  of half the scenes.

Like the classification policies they are deterministic: each batch draws from its own
stateless key (`kcnn.data.pipeline`), so a seed gives the same transforms for the same
epoch and batch in any process.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from kcnn.data.augment import _SHIFT_FRACTION, _Policy
from kcnn.data.masks import IGNORE_LABEL

#: Built-in augmentation policies of segmentation datasets.
SEGMENTATION_AUGMENT_POLICIES = ("shift", "flip", "crop")

# The smallest crop of "crop", as a fraction of the side.
_CROP_FRACTION = 0.6


class JointPolicy(_Policy):
    """A built-in policy: `policy(images, masks, key)` -> both transformed alike.

    `images` float32 NHWC, `masks` integer NHW; returns float32 images and int32 masks.
    """

    joint = True  # `kcnn.data.pipeline` passes the masks along

    def __call__(self, images: tf.Tensor, masks: tf.Tensor, key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        shape = tf.shape(images)
        transforms = scene_transforms(self.policy, key, shape[0], shape[1], shape[2])
        return transform_pair(images, masks, transforms, inside=self.policy == "crop")


class JointCallable:
    """A user's augmentation `fn(images, masks) -> (images, masks)` (float32 NHWC images on
    the 0..255 scale, int32 NHW masks), with the pipeline's casts around it."""

    joint = True

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, images, masks, key=None):
        del key  # its randomness is its own
        images, masks = self.fn(images, tf.cast(masks, tf.int32))
        return tf.cast(images, tf.float32), tf.cast(masks, tf.int32)


class CastMasks:
    """No augmentation: the masks as int32 (they are held as uint8)."""

    joint = True

    def __call__(self, images, masks, key=None):
        return images, tf.cast(masks, tf.int32)


def make_joint_augmenter(policy, seed: int):
    """The augmenter of a segmentation dataset's training split for `augment` (None, a
    policy name or a callable); `CastMasks` for none."""
    if policy is None or policy is False:
        return CastMasks()
    if policy is True:
        policy = "shift"
    if isinstance(policy, str) and policy in SEGMENTATION_AUGMENT_POLICIES:
        return JointPolicy(policy, seed)
    if callable(policy) and not isinstance(policy, str):
        return JointCallable(policy)
    raise ValueError(
        f"`augment` of a segmentation dataset must be True, False, one of {SEGMENTATION_AUGMENT_POLICIES} or a "
        f"callable fn(images, masks) -> (images, masks). Received: augment={policy!r}"
    )


def scene_transforms(policy: str, key: tf.Tensor, n, height, width) -> tf.Tensor:
    """`[n, 8]` projective transforms (`tf.raw_ops.ImageProjectiveTransformV3`'s rows:
    output pixel (x, y) reads input point (a0 x + a2, b1 y + b2)), one per scene, drawn
    from `key`."""
    keys = tf.unstack(tf.random.experimental.stateless_split(key, 4))
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    ones = tf.ones([n])
    if policy == "crop":
        scale = tf.random.stateless_uniform([n], keys[0], minval=_CROP_FRACTION, maxval=1.0)
        # The crop's top-left corner (input pixels, edges at whole numbers), anywhere
        # that keeps the crop inside; a pixel centre maps to the crop's, scaled.
        left = tf.random.stateless_uniform([n], keys[1]) * w * (1.0 - scale)
        top = tf.random.stateless_uniform([n], keys[2]) * h * (1.0 - scale)
        a0, a2 = scale, left + 0.5 * scale - 0.5
        b1, b2 = scale, top + 0.5 * scale - 0.5
    else:
        offsets = []
        for size, axis_key in ((h, keys[0]), (w, keys[1])):
            most = tf.cast(tf.floor(_SHIFT_FRACTION * size), tf.int32)
            offsets.append(tf.cast(tf.random.stateless_uniform([n], axis_key, minval=-most, maxval=most + 1, dtype=tf.int32), tf.float32))
        dy, dx = offsets
        a0, a2 = ones, -dx
        b1, b2 = ones, -dy
    if policy in ("flip", "crop"):
        # Mirrored output: x -> (w - 1 - x) before the rest of the transform.
        flip = tf.random.stateless_uniform([n], keys[3]) < 0.5
        a2 = tf.where(flip, a0 * (w - 1.0) + a2, a2)
        a0 = tf.where(flip, -a0, a0)
    zeros = tf.zeros([n])
    return tf.stack([a0, zeros, a2, zeros, b1, b2, zeros, zeros], axis=1)


def transform_pair(images: tf.Tensor, masks: tf.Tensor, transforms: tf.Tensor, *, inside: bool = False):
    """Applies `transforms` to float32 NHWC `images` (bilinear) and integer NHW `masks`
    (nearest neighbour). Points outside the input read black and `IGNORE_LABEL`, or,
    with `inside` (transforms that stay within the image up to half a pixel), the
    nearest edge pixel."""
    fill_mode = "NEAREST" if inside else "CONSTANT"
    output_shape = tf.shape(images)[1:3]
    # The op's outputs have no static height and width; a model whose layers need them
    # (bilinear upsampling) gets them back.
    image_shape, mask_shape = images.shape, masks.shape
    images = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=output_shape,
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode=fill_mode,
    )
    masks = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(masks, tf.int32)[..., None],
        transforms=transforms,
        output_shape=output_shape,
        fill_value=float(IGNORE_LABEL),
        interpolation="NEAREST",
        fill_mode=fill_mode,
    )[..., 0]
    return tf.ensure_shape(images, image_shape), tf.ensure_shape(masks, mask_shape)
