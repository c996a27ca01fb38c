"""Segmentation datasets: images with one class label per pixel, as batched `tf.data`
splits of `(images, masks)`, through the same preprocessing, pipeline and split policy
as the classification sources (`kcnn.data`).

Sources (`kcnn.data.load(source, task="segmentation")`, or without `task` for those
that say what they are):

* `"shapes"`: `SHAPES_SCENES` synthetic scenes (`kcnn.data.synthetic_scenes`: circles,
  squares and triangles on textured backgrounds, exact masks), drawn at `image_size`
  (default 64x64) from a fixed seed: the same dataset everywhere, offline.
* arrays: a dict with `x` (NHWC or NHW images) and `y` (NHW integer masks), or
  `x_train`/`y_train` (and `x_test`/`y_test`), optionally `class_names`; or `(x, y)`.
* a folder of image/mask pairs (`kcnn.data.mask_folder`): `images/` and `masks/` with
  matching file names, or `train/`, `test/`, `val/` folders that each hold both.
* a prepared TFDS dataset with masks: `oxford_iiit_pet`'s trimaps
  (`kcnn.data.mask_tfds`).

Masks hold class indices `0..classes-1` and `IGNORE_LABEL` (255) for pixels without a
label; a source's own ignore value (`ignore_value`) is mapped to it. Images are resized
as classification images are (bilinear, antialiased); masks with nearest neighbours,
so every label stays a label. Mask values outside the classes are refused, with how
many pixels of which masks. Augmentation is geometric and joint
(`kcnn.data.joint_augment`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from kcnn.data.dataset import Dataset, _preprocessing
from kcnn.data.joint_augment import CastMasks, make_joint_augmenter
from kcnn.data.mask_splits import _finish_splits, _random_splits
from kcnn.data.masks import IGNORE_LABEL, check_classes, default_palette, remap_ignored, resize_masks
from kcnn.data.pipeline import _check_batch_size, _pipeline
from kcnn.data.preprocessing import _adapt_array, _parse_image_size, _parse_normalize
from kcnn.data.scenes import SHAPES_IMAGE_SIZE, SHAPES_SCENES, SHAPES_SEED, synthetic_scenes
from kcnn.data.sources import _prepare_x

TASKS = ("classification", "segmentation")


@dataclasses.dataclass(frozen=True)
class SegmentationDataset(Dataset):
    """A loaded segmentation dataset: a `kcnn.data.Dataset` whose splits hold
    `(images, masks)` batches, masks int32 `(batch, height, width)` of class indices
    and `ignore_label`.

    Attributes (beyond `Dataset`'s):
        ignore_label: the mask value of pixels without a label (`IGNORE_LABEL`).
        palette: one `[r, g, b]` per class, for pictures of masks: the source's own
            palette (palette PNG masks), else PASCAL VOC's (`default_palette`).
    """

    task: ClassVar[str] = "segmentation"
    ignore_label: int = IGNORE_LABEL
    palette: list[list[int]] = dataclasses.field(default_factory=list)


def wants_segmentation(source: Any, task: str | None) -> bool:
    """Whether `kcnn.data.load` reads `source` as a segmentation dataset: `task` says so,
    or (`task=None`) the source does: "shapes", a folder of image/mask pairs, arrays
    whose labels are masks.

    Raises:
        ValueError: an unknown `task`, or `task="classification"` for a source that
            holds masks only.
    """
    from kcnn.data.mask_folder import is_pair_folder

    if task not in (None, *TASKS):
        raise ValueError(f"`task` must be None (the source's own), 'classification' or 'segmentation'. Received: task={task!r}")
    if task == "segmentation":
        return True
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        holds_masks = path == "shapes" or (os.path.isdir(path) and is_pair_folder(path))
    else:
        holds_masks = _mask_arrays(source) is not None
    if holds_masks and task == "classification":
        raise ValueError(
            "A classifier needs one label per image; this source has a mask per image (a segmentation dataset: "
            f"train a segmentation model on it). Received: source={_describe(source)}, task='classification'"
        )
    return holds_masks


def load_segmentation(
    source: Any = "shapes",
    *,
    image_size: int | Sequence[int] | None = None,
    channels: int | None = None,
    batch_size: int = 32,
    validation_split: float = 0.1,
    test_split: float = 0.2,
    seed: int = 1337,
    augment: Any = False,
    normalize: bool | str | None = True,
    cache: bool | str = True,
    shuffle: bool = True,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    stream: bool | str = "auto",
    ignore_value: int | None = IGNORE_LABEL,
    class_names: Sequence[str] | None = None,
) -> SegmentationDataset:
    """Loads a segmentation dataset (see the module docstring for the sources).

    The arguments are `kcnn.data.load`'s, plus:
        ignore_value: the value of unlabelled pixels in the source's masks (folders
            and arrays), mapped to `IGNORE_LABEL`; None: every value is a class.
        class_names: the classes, in label order (default: a folder's `classes.txt`,
            one name per line, or an arrays dict's `class_names`, else "0", "1", ...
            up to the largest label found).

    `augment` takes `SEGMENTATION_AUGMENT_POLICIES` or `fn(images, masks) -> (images,
    masks)`; `stream` must be "auto" or False (segmentation sources are held in memory,
    TFDS ones cached as `cache` says).

    Returns:
        A `SegmentationDataset`.
    """
    from kcnn.data.dataset import _check_split_arguments

    _check_batch_size(batch_size)
    normalization = _parse_normalize(normalize)
    if stream is True:
        raise ValueError("Segmentation sources are read into memory (or a TFDS cache); `stream=True` is for image folders of classes. Received: stream=True")
    if ignore_value is not None and (isinstance(ignore_value, bool) or not isinstance(ignore_value, (int, np.integer)) or not 0 <= ignore_value <= 255):
        raise ValueError(f"`ignore_value` must be a mask value 0..255 or None. Received: ignore_value={ignore_value!r}")
    common = _check_split_arguments(_parse_image_size(image_size), channels, validation_split, test_split, seed, cache)
    augmenter = make_joint_augmenter(augment, common["seed"])
    options = dict(ignore_value=ignore_value, class_names=class_names)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path == "shapes":
            scenes = synthetic_scenes(SHAPES_SCENES, image_size=common["image_size"] or SHAPES_IMAGE_SIZE, seed=SHAPES_SEED)
            splits = _load_mask_arrays(scenes, name="shapes", **common, **options)
        elif os.path.isdir(path):
            from kcnn.data.mask_folder import _load_pair_folder

            splits = _load_pair_folder(path, **common, **options)
        elif path.lower().endswith(".npz"):
            if not os.path.isfile(path):
                raise ValueError(f"Expected an existing .npz file. Received: source={path!r} (no such file)")
            with np.load(path, allow_pickle=False) as npz:
                splits = _load_mask_arrays({key: npz[key] for key in npz.files}, name=path, **common, **options)
        else:
            from kcnn.data.mask_tfds import _load_mask_tfds

            splits = _load_mask_tfds(path, data_dir=data_dir, download=download, cache=cache, **common)
    else:
        splits = _load_mask_arrays(source, name="arrays", **common, **options)
    return _build_segmentation(splits, normalization=normalization, augmenter=augmenter, shuffle=shuffle, seed=common["seed"], batch_size=batch_size)


# --------------------------------------------------------------------------
# Arrays (and the splitting, checks and resizing every in-memory source shares).


def _mask_arrays(source: Any) -> tuple[Any, Any, Any, Any] | None:
    """`(x, y, x_test, y_test)` of an arrays source whose labels are masks (NHW, or
    NHW1), else None."""
    if isinstance(source, Mapping):
        if {"x", "y"} <= set(source):
            x, y, x_test, y_test = source["x"], source["y"], None, None
        elif {"x_train", "y_train"} <= set(source):
            x, y, x_test, y_test = source["x_train"], source["y_train"], source.get("x_test"), source.get("y_test")
        else:
            return None
    elif isinstance(source, (tuple, list)) and len(source) == 2 and not all(isinstance(s, (tuple, list)) for s in source):
        (x, y), x_test, y_test = source, None, None
    elif isinstance(source, (tuple, list)) and len(source) == 2:
        (x, y), (x_test, y_test) = source
    else:
        return None
    shape = np.shape(y)
    return (x, y, x_test, y_test) if len(shape) >= 3 else None


def _load_mask_arrays(source, *, name, image_size, channels, validation_split, test_split, seed, ignore_value, class_names):
    arrays = _mask_arrays(source)
    if arrays is None:
        raise ValueError(
            "Expected segmentation arrays: a dict with 'x' and 'y' (or 'x_train'/'y_train'), or (x, y), where y holds "
            f"one (height, width) mask per image. Received: {_describe(source)}"
        )
    x, y, x_test, y_test = arrays
    if (x_test is None) != (y_test is None):
        raise ValueError("Expected both `x_test` and `y_test` or neither.")
    if class_names is None and isinstance(source, Mapping) and "class_names" in source:
        class_names = [str(c) for c in np.asarray(source["class_names"]).tolist()]
    parts = {"train": (x, y)} if x_test is None else {"train": (x, y), "test": (x_test, y_test)}
    images, masks = {}, {}
    for split, (xs, ys) in parts.items():
        what = "x" if split == "train" else "x_test"
        images[split] = _prepare_x(xs, what)
        masks[split] = _prepare_masks(ys, images[split], what="y" if split == "train" else "y_test", ignore_value=ignore_value)
    label = {"train": "y", "test": "y_test"}
    class_names = check_classes(
        class_names, {split: (masks[split], [f"{label[split]}[{i}]" for i in range(len(masks[split]))]) for split in parts}
    )
    native = tuple(int(v) for v in images["train"].shape[1:3])
    size = image_size or native
    channels = channels or (1 if images["train"].shape[-1] == 1 else 3)
    adapted = {split: (_adapt_array(images[split], size, channels), resize_masks(masks[split], size)) for split in parts}
    splits = _random_splits(adapted, validation_split=validation_split, test_split=test_split, seed=seed)
    return _finish_splits(splits, class_names=class_names, image_size=size, channels=channels, name=name, source_sizes=[native])


def _prepare_masks(y: Any, x: np.ndarray, *, what: str, ignore_value: int | None) -> np.ndarray:
    """Masks of an arrays source as uint8 NHW with `IGNORE_LABEL`, checked against the images."""
    y = np.asarray(y)
    if y.ndim == 4 and y.shape[-1] == 1:
        y = y[..., 0]
    if y.ndim != 3 or y.shape != x.shape[:3]:
        raise ValueError(
            f"Expected `{what}` to hold one mask per image, of the image's size: shape {x.shape[:3]}. "
            f"Received: {what} with shape {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) and not (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
        raise ValueError(f"Expected `{what}` to hold integer class indices. Received: dtype={y.dtype}")
    if y.size and (y.min() < 0 or y.max() > 255):
        raise ValueError(f"Expected `{what}` to hold class indices 0..255. Received: values {y.min()}..{y.max()}")
    return remap_ignored(y.astype(np.uint8), ignore_value)


# --------------------------------------------------------------------------
# The Dataset.


def _build_segmentation(splits, *, normalization, augmenter, shuffle, seed, batch_size) -> SegmentationDataset:
    classes = len(splits["class_names"])
    palette = [list(map(int, color)) for color in (splits.get("palette") or default_palette(classes))[:classes]]
    preprocessing = _preprocessing(splits, normalization)

    def build(batch: int, share: Callable | None = None) -> SegmentationDataset:
        pipelines = {
            split: None
            if splits[split] is None
            else _pipeline(
                splits[split],
                batch_size=batch,
                shuffle=shuffle and split == "train",
                seed=seed,
                preprocessing=preprocessing,
                augmenter=augmenter if split == "train" else CastMasks(),
                # The test split stays whole: a run evaluates it outside the strategy.
                share=None if split == "test" else share,
            )
            for split in ("train", "validation", "test")
        }
        return SegmentationDataset(
            train=pipelines["train"],
            validation=pipelines["validation"],
            test=pipelines["test"],
            num_classes=classes,
            class_names=list(splits["class_names"]),
            input_shape=(*preprocessing["image_size"], preprocessing["channels"]),
            num_train=splits["train"].size,
            num_validation=0 if splits["validation"] is None else splits["validation"].size,
            num_test=0 if splits["test"] is None else splits["test"].size,
            preprocessing=dict(preprocessing),
            batch_size=batch,
            name=splits["name"],
            input_statistics=copy.deepcopy(splits["statistics"]),
            _rebuild=build,
            palette=copy.deepcopy(palette),
        )

    return build(batch_size)


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if isinstance(source, Mapping):
        return f"a dict with keys {sorted(map(str, source))}"
    return f"a {type(source).__name__}"
