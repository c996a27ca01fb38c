"""Synthetic segmentation scenes: shapes of three classes on textured backgrounds, with
exact masks, drawn from a seed. The source `"shapes"` of `kcnn.data.load`; it needs no
file and no network.

Each scene has 1 to `max_shapes` shapes (circle, square, triangle; sizes, positions and
rotations at random, later shapes hiding earlier ones) on a background of random stripes
and noise. A shape's colour is random but kept apart from the background's, so its class
is told by its outline, not its colour: a network has to see shapes, and boundaries
decide the score. Image and mask are drawn from the same per-pixel coverage test (pixel
centres), so the mask is exact: every pixel has the class of the shape that coloured it.

The geometry is drawn in unit coordinates before anything that depends on the size, so
one seed gives the same scenes at every size (rasterized at that size).
"""

from __future__ import annotations

import numpy as np

#: The classes of `synthetic_scenes`, in label order.
SHAPES_CLASSES = ("background", "circle", "square", "triangle")
#: Scenes of the source "shapes" (`kcnn.data.load("shapes")`) and their default size.
SHAPES_SCENES = 2000
SHAPES_IMAGE_SIZE = (64, 64)
#: The seed of the source "shapes": one dataset everywhere (the split is `load`'s seed's).
SHAPES_SEED = 0

# Shape radius (centre to corner, or the circle's radius) as a fraction of the side.
_RADIUS = (0.12, 0.3)
# The least per-channel distance, on 0..255, between a shape's colour and the background's mean.
_CONTRAST = 60.0
# Standard deviation of the pixel noise (0..255).
_NOISE = 10.0


def synthetic_scenes(
    count: int = SHAPES_SCENES, *, image_size: int | tuple[int, int] = SHAPES_IMAGE_SIZE, seed: int = SHAPES_SEED, max_shapes: int = 4
) -> dict[str, np.ndarray | list[str]]:
    """Draws `count` scenes and their masks.

    Args:
        count: how many scenes.
        image_size: `(height, width)` or an int for square scenes.
        seed: the NumPy generator's seed; the same seed gives the same scenes.
        max_shapes: the most shapes in a scene (at least 1 each).

    Returns:
        A dict that `kcnn.data.load` takes as a segmentation source: `"x"` uint8
        `(count, height, width, 3)` images, `"y"` uint8 `(count, height, width)` masks
        of `SHAPES_CLASSES` indices, `"class_names"`.
    """
    for name, value in (("count", count), ("max_shapes", max_shapes), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if name == "seed" else 1):
            raise ValueError(f"`{name}` must be a{' non-negative' if name == 'seed' else ' positive'} int. Received: {name}={value!r}")
    height, width = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
    if height < 8 or width < 8:
        raise ValueError(f"`image_size` must be at least 8x8. Received: image_size={image_size!r}")
    rng = np.random.default_rng(seed)
    # -- the geometry and the colours, in unit coordinates (size-independent) --
    shapes = rng.integers(1, max_shapes + 1, count)
    present = np.arange(max_shapes)[None, :] < shapes[:, None]  # (count, max_shapes)
    kinds = rng.integers(1, len(SHAPES_CLASSES), (count, max_shapes))
    centres = rng.uniform(0.12, 0.88, (count, max_shapes, 2))
    radii = rng.uniform(*_RADIUS, (count, max_shapes))
    angles = rng.uniform(0.0, 2 * np.pi, (count, max_shapes))
    background = rng.uniform(50.0, 205.0, (count, 2, 3))  # two stripe colours
    stripe_angle = rng.uniform(0.0, np.pi, count)
    stripe_frequency = rng.uniform(2.0, 8.0, count)
    stripe_phase = rng.uniform(0.0, 2 * np.pi, count)
    offsets = rng.uniform(_CONTRAST, 120.0, (count, max_shapes, 3)) * rng.choice([-1.0, 1.0], (count, max_shapes, 3))
    noise_seed = int(rng.integers(2**32))

    rows = ((np.arange(height) + 0.5) / height).astype(np.float32)
    columns = ((np.arange(width) + 0.5) / width).astype(np.float32)
    y, x = np.meshgrid(rows, columns, indexing="ij")  # (height, width)
    # -- the shapes, in order: a later one covers an earlier one --
    owner = np.full((count, height, width), -1, np.int8)  # the slot that colours each pixel
    for slot in range(max_shapes):
        for kind in range(1, len(SHAPES_CLASSES)):
            drawn = np.flatnonzero(present[:, slot] & (kinds[:, slot] == kind))
            inside = _coverage(kind, centres[drawn, slot], radii[drawn, slot], angles[drawn, slot], x, y)
            owner[drawn] = np.where(inside, np.int8(slot), owner[drawn])
    scene = np.arange(count)[:, None, None]
    masks = np.where(owner >= 0, kinds[scene, owner], 0).astype(np.uint8)
    # -- the background: stripes between two colours; then the shapes' colours --
    along = x[None] * np.cos(stripe_angle)[:, None, None] + y[None] * np.sin(stripe_angle)[:, None, None]
    blend = 0.5 + 0.5 * np.sin(2 * np.pi * stripe_frequency[:, None, None] * along + stripe_phase[:, None, None])
    low, high = background[:, None, None, 0].astype(np.float32), background[:, None, None, 1].astype(np.float32)
    images = low + (high - low) * blend[..., None].astype(np.float32)
    colors = np.clip(background.mean(axis=1)[:, None, :] + offsets, 0.0, 255.0).astype(np.float32)
    images = np.where((owner >= 0)[..., None], colors[scene, np.maximum(owner, 0)], images)
    images += np.random.default_rng(noise_seed).standard_normal(images.shape, np.float32) * np.float32(_NOISE)
    return {
        "x": np.clip(np.rint(images), 0, 255).astype(np.uint8),
        "y": masks,
        "class_names": list(SHAPES_CLASSES),
    }


def _coverage(kind: int, centres, radii, angles, x, y) -> np.ndarray:
    """Which pixel centres `(x, y)` (unit coordinates, `(height, width)`) a shape of
    class `kind` covers, for each of the given shapes: `(shapes, height, width)`."""
    centres, radii, angles = (np.asarray(a, np.float32) for a in (centres, radii, angles))
    dx = x[None] - centres[:, 0, None, None]
    dy = y[None] - centres[:, 1, None, None]
    r = radii[:, None, None]
    if SHAPES_CLASSES[kind] == "circle":
        return dx * dx + dy * dy <= r * r
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    u = cos * dx + sin * dy  # coordinates in the shape's own rotated frame
    v = cos * dy - sin * dx
    if SHAPES_CLASSES[kind] == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= r / np.sqrt(np.float32(2.0))  # corners at distance r
    # An equilateral triangle with its corners at distance r: inside its three edges,
    # each at distance r / 2 from the centre, outward normals 120 degrees apart.
    inside = np.ones(dx.shape, bool)
    for k in range(3):
        theta = np.pi / 2 + k * 2 * np.pi / 3
        inside &= u * np.float32(np.cos(theta)) + v * np.float32(np.sin(theta)) <= r / 2
    return inside
