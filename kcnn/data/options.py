"""`data_options`: the `kcnn.data.load` arguments that `kcnn.train.fit`, `fine_tune`
and `kcnn.tune.search` pass on when they load a source by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kcnn.data.preprocessing import _parse_image_size

#: The `kcnn.data.load` arguments a `data_options` mapping may hold (`kcnn.train.fit`,
#: `kcnn.train.fine_tune`, `kcnn.tune.search`; the `--data-dir`, `--download`,
#: `--image-size` and `--channels` flags of `kcnn train`, `fine-tune` and `tune`).
DATA_OPTIONS = (
    "image_size",
    "channels",
    "data_dir",
    "download",
    "validation_split",
    "test_split",
    "normalize",
    "cache",
    "shuffle",
    "stream",
)

# `load` arguments that a training run sets from its TrainConfig.
_TRAINING_OWNS = {"batch_size": "config.batch_size", "seed": "config.seed", "augment": "config.augment"}


def check_data_options(data_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checks a `data_options` mapping: the `kcnn.data.load` arguments that
    `kcnn.train.fit`, `kcnn.train.fine_tune` and `kcnn.tune.search` pass on when
    they load the data themselves.

    Args:
        data_options: None or a mapping with keys of `DATA_OPTIONS`, e.g.
            `{"data_dir": "/data/tfds", "download": True, "image_size": 64}`.

    Returns:
        A new dict; `image_size`, when given, as a `(height, width)` tuple.

    Raises:
        ValueError: for a key that is not in `DATA_OPTIONS` (batch size, seed and
            augmentation come from the `TrainConfig`), an invalid `image_size`
            or `channels`.
    """
    if data_options is None:
        return {}
    if not isinstance(data_options, Mapping):
        raise ValueError(
            f"`data_options` must be a mapping of kcnn.data.load arguments. Received: data_options={data_options!r}"
        )
    options = dict(data_options)
    owned = sorted(set(options) & set(_TRAINING_OWNS))
    if owned:
        raise ValueError(
            f"`data_options` cannot set {owned}: the TrainConfig does "
            f"({', '.join(_TRAINING_OWNS[key] for key in owned)}). Received: data_options={data_options!r}"
        )
    unknown = sorted(set(options) - set(DATA_OPTIONS))
    if unknown:
        raise ValueError(
            f"Unknown `data_options` keys {unknown}; expected kcnn.data.load arguments among {list(DATA_OPTIONS)}. "
            f"Received: data_options={data_options!r}"
        )
    if options.get("image_size") is not None:
        options["image_size"] = _parse_image_size(options["image_size"])
    channels = options.get("channels")
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(f"`channels` must be 1 (grey), 3 (RGB) or None (the source's own). Received: channels={channels!r}")
    return options
