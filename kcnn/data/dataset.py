"""`Dataset`, and the loading of a classification source as batched, preprocessed
`tf.data` splits (`kcnn.data.load` dispatches to it; see `kcnn.data` for the sources,
the preprocessing and the split policy)."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from kcnn.data.augment import _make_augmenter, _parse_augment
from kcnn.data.folder_source import _load_folder
from kcnn.data.pipeline import _check_batch_size, _pipeline
from kcnn.data.preprocessing import (
    PREPROCESSING_VERSION,
    _parse_image_size,
    _parse_normalize,
)
from kcnn.data.sources import _load_arrays, _load_digits
from kcnn.data.tfds_source import _load_tfds


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
        input_statistics: JSON-serializable facts about the training images
            that say what input the model expects (see
            `kcnn.data.image_statistics`, which computes the same for new
            images): `{"version": 1, "images": n, "mean": [c], "std": [c],
            "border_mean": [c], "border": b, "source_size": [h, w],
            "source_aspect": w / h}`. Means are per channel on the 0..255 scale,
            of the images as stored for training (resized, channel-adapted,
            before normalization and augmentation), from `n` of them (at most
            `statistics.MEMORY_SAMPLE` evenly spaced ones, for TFDS the first
            `statistics.TFDS_SAMPLE`); `border_mean` is over the pixels within
            `b` of the edge (dark for white-on-black digits). `source_size`
            and `source_aspect` are the median height/width and width/height
            of the source images before resizing (arrays and fixed-size TFDS
            datasets: their native size).
        skipped_files: the image files of a folder source that were not read, in
            the order met, as JSON-serializable `{"path": str, "reason": str}`
            dicts (the reason is the error, e.g. `"UnidentifiedImageError: cannot
            identify image file ..."` or Pillow's decompression-bomb limit); a
            warning names them at load time. Empty for other sources.
        streaming: whether the images are read from their files as batches need
            them (an image folder above `IN_MEMORY_LIMIT` decoded bytes, or
            `stream=True`), rather than held decoded in memory.
    """

    #: "classification"; `kcnn.data.segmentation.SegmentationDataset` says "segmentation".
    task: ClassVar[str] = "classification"

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
    input_statistics: dict[str, Any] | None = None
    skipped_files: list[dict[str, str]] = dataclasses.field(default_factory=list)
    streaming: bool = False
    # Rebuilds the pipelines from the already decoded/cached data: (batch size, share).
    _rebuild: Callable[[int, Callable | None], Dataset] | None = dataclasses.field(default=None, repr=False, compare=False)
    # The share of every batch the pipelines read (`for_worker`), or None: all of it.
    _share: Callable | None = dataclasses.field(default=None, repr=False, compare=False)
    # The decoded splits and how they were loaded, for `few_shot` on a Dataset.
    _source: dict[str, Any] | None = dataclasses.field(default=None, repr=False, compare=False)

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
        return self._rebuild(batch_size, self._share)

    def for_worker(self, share: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> Dataset:
        """The same batches, of which this process reads only its share: the data of
        one worker of a multi-worker cluster, under a strategy that gives it those
        rows of every (global) batch (`kcnn.train.distribute.worker_share` says which;
        `kcnn.train.fit` applies it). The training and validation splits, which
        `fit` distributes; the test split stays whole.

        Only the rows of the share are gathered, decoded (streamed folders, TFDS
        splits read afresh each epoch), augmented and normalized; the other rows are
        zeros, which the strategy drops (the pipelines shard by data,
        `tf.data.experimental.AutoShardPolicy.DATA`). The shuffle and the
        augmentation draws are those of the whole batch, so the workers together
        see what one process would. A streamed file that fails to decode stops the
        iteration, naming it (one process skips it).

        Args:
            share: `share(rows, n)`: for int64 row numbers of a batch of `n` rows,
                whether this process keeps them (a bool tensor of `rows`' shape).

        Returns:
            A new `Dataset`.
        """
        if self._rebuild is None:
            raise ValueError("This Dataset was not created by `kcnn.data.load()` and cannot be shared out.")
        return self._rebuild(self.batch_size, share)

    def restarted(self) -> Dataset:
        """Returns the same data in new pipelines, without decoding again: their
        shuffling and augmentation start at epoch 1 again.

        The training split draws its order and augmentation afresh at each iteration,
        counting from the pipeline's creation: a model trained on a `Dataset` another
        model trained on first sees other epochs than it would in a new process. A
        Dataset not created by `kcnn.data.load()` is returned as it is.
        """
        return self if self._rebuild is None else self._rebuild(self.batch_size, self._share)

    def reshuffled(self, seed: int) -> Dataset:
        """Returns the same splits (the same training, validation and test images) in
        new pipelines whose shuffling and augmentation draw from `seed`, without
        decoding again.

        `load`'s seed seeds the split and the shuffling together; this keeps the split
        and changes the rest, so that runs repeated with other seeds are scored on the
        same validation and test images (`kcnn.tune.finish`'s repeats).

        Raises:
            ValueError: for a Dataset not created by `kcnn.data.load()`, or a `seed`
                that is not an int.
        """
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
        if self._source is None:
            raise ValueError("This Dataset was not created by `kcnn.data.load()` and cannot be reshuffled.")
        own = self._source
        data = _build(
            own["splits"], normalization=own["normalization"], augment=own["augment"], shuffle=own["shuffle"],
            seed=int(seed), batch_size=self.batch_size,
        )  # fmt: skip
        return data if self._share is None else data.for_worker(self._share)


def load_classification(
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
    default_image_size: int | Sequence[int] | None = None,
) -> Dataset:
    """`kcnn.data.load` of a classification source (its arguments and errors are
    documented there): the splits read, checked and built into pipelines."""
    _check_batch_size(batch_size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
    normalization = _parse_normalize(normalize)
    policy = _parse_augment(augment)
    if stream not in (True, False, "auto"):
        raise ValueError(f"`stream` must be True, False or 'auto'. Received: stream={stream!r}")
    splits = _load_splits(
        source,
        stream=stream,
        image_size=image_size,
        channels=channels,
        validation_split=validation_split,
        test_split=test_split,
        seed=seed,
        cache=cache,
        data_dir=data_dir,
        download=download,
        default_image_size=default_image_size,
    )
    return _build(
        splits, normalization=normalization, augment=policy, shuffle=shuffle, seed=int(seed), batch_size=batch_size
    )


def _check_split_arguments(image_size, channels, validation_split, test_split, seed, cache) -> dict[str, Any]:
    """Checks the arguments every source takes (`image_size` parsed already); returns
    the keywords the sources' readers take."""
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(
            "`channels` must be 1 (grey), 3 (RGB) or None (the source's own). "
            f"Received: channels={channels!r}"
        )
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
    if not isinstance(cache, (bool, str, os.PathLike)):
        raise ValueError(f"`cache` must be a bool or a file path. Received: cache={cache!r}")

    return dict(
        image_size=image_size,
        channels=channels,
        validation_split=float(validation_split),
        test_split=float(test_split),
        seed=seed,
    )


def _load_splits(
    source,
    *,
    image_size,
    channels,
    validation_split,
    test_split,
    seed,
    cache,
    data_dir,
    download,
    stream="auto",
    default_image_size=None,
) -> dict[str, Any]:
    """Checks the source's arguments and reads it: the splits of adapted uint8
    images plus what describes them (class names, size, channels, name, statistics)."""
    size_given = image_size is not None
    image_size = _parse_image_size(image_size) or _parse_image_size(default_image_size)
    common = _check_split_arguments(image_size, channels, validation_split, test_split, seed, cache)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        local = os.path.expanduser(path)
        if path == "digits":
            splits = _load_digits(**common)
        elif os.path.isdir(local):
            splits = _load_folder(local, stream=stream, warn_sizes=not size_given, **common)
        elif local.lower().endswith(".npz"):
            if not os.path.isfile(local):
                raise ValueError(f"Expected an existing .npz file. Received: source={path!r} (no such file)")
            with np.load(local, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            splits = _load_arrays(arrays, name=local, **common)
        elif os.path.exists(local):
            raise ValueError(
                "Expected a directory of class sub-folders or an .npz file (or 'digits', a TFDS name, arrays). "
                f"Received: source={path!r}, a file"
            )
        elif _looks_like_path(path):
            # Never a TFDS name: TFDS would look it up on the network first.
            raise ValueError(
                "Expected an existing directory of class sub-folders, or an .npz file. "
                f"Received: source={path!r} (no such directory or file)"
            )
        else:
            splits = _load_tfds(path, data_dir=data_dir, download=download, cache=cache, **common)
    elif isinstance(source, (tuple, list, Mapping)):
        splits = _load_arrays(source, name="arrays", **common)
    else:
        raise ValueError(
            "Expected `source` to be 'digits', a TFDS name, a directory, an .npz path, (x, y) arrays "
            f"or a dict of arrays. Received: source of type {type(source).__name__}"
        )

    return splits


def _looks_like_path(text: str) -> bool:
    """Whether a source string that names nothing on disk was meant as a path, not a
    TFDS name (`name`, `name:version`, `name/config`, `namespace:name`): absolute or
    home-relative, starting with ".", with a backslash or a trailing separator, whose
    first component is an existing folder (a typo further down), or with characters
    no TFDS name has ("my-pets", "pets.v2")."""
    if os.path.isabs(text) or text.startswith((".", "~")) or "\\" in text or text.endswith(("/", os.sep)):
        return True
    first = text.split("/")[0]
    return os.path.isdir(first) or not all(_TFDS_NAME.fullmatch(part) for part in first.split(":"))


# A TFDS builder name or namespace, or a version ("3.0.2", "3.*.*").
_TFDS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*|[0-9][0-9.*]*")


def _preprocessing(splits, normalization) -> dict[str, Any]:
    """The preprocessing dict (`Dataset.preprocessing`) of loaded splits."""
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
    return preprocessing


def _build(splits, *, normalization, augment, shuffle, seed, batch_size) -> Dataset:
    """The `Dataset` of loaded splits: its preprocessing dict and pipelines."""
    preprocessing = _preprocessing(splits, normalization)
    augmenter = _make_augmenter(augment, seed)

    def build(batch: int, share: Callable | None = None) -> Dataset:
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
                # The test split stays whole: a run evaluates it outside the strategy.
                share=None if split == "test" else share,
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
            input_statistics=copy.deepcopy(splits["statistics"]),
            skipped_files=copy.deepcopy(splits.get("skipped", [])),
            streaming=bool(splits.get("streaming", False)),
            _rebuild=build,
            _share=share,
            _source={"splits": splits, "normalization": normalization, "augment": augment, "shuffle": shuffle, "seed": seed},
        )

    return build(batch_size)
