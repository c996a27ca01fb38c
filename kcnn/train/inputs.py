"""The model and the data of a run, each fitted to the other: a registered model is
built for the data, data is loaded at a built model's input size."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import keras

from kcnn import data as kdata
from kcnn.train import segmentation
from kcnn.train.config import TrainConfig
from kcnn.train.distribute import multi_worker_strategy, wants_multi_worker, worker_share
from kcnn.train.inference import check_compatible

# Families whose top flattens the last feature map: the input size fixes the width
# of the first dense layer, so they are trained at their own input size by default
# (LeNet-5 at 32x32 whatever the source; a 640x480 folder would make it a network of
# 174 million parameters).
_FIXED_SIZE_FAMILIES = ("mlp", "convnet", "lenet", "alexnet", "vgg")


def model_and_data(model, data, config, model_kwargs, data_options=None):
    """Builds the model from a name and loads the data, each fitted to the other.

    A registered name is built for the data: at `model_kwargs["input_shape"]` if
    given, else at `data_options["image_size"]` if given, else at the family's own
    input size when its top flattens (`_FIXED_SIZE_FAMILIES`), else at the source's
    native size (arrays, TFDS) or the family's default size (image folders, whose
    images rarely share one size). Channels are the source's own unless given. A
    built model takes the data at its input shape.
    """
    from kcnn import registry

    if isinstance(model, str):
        spec = registry.get_spec(model)
        kwargs = dict(model_kwargs or {})
        shape = kwargs.get("input_shape")
        default_size = None
        if spec.family in _FIXED_SIZE_FAMILIES or _is_folder(data):
            default_size = tuple(spec.default_input_shape[:2])
        data = load_data(
            data, config, input_shape=shape, data_options=data_options, default_image_size=default_size,
            task=segmentation.spec_task(spec),
        )  # fmt: skip
        kwargs.setdefault("input_shape", tuple(data.input_shape))
        kwargs.setdefault("classes", data.num_classes)
        model = spec.build(**kwargs)
        builder_arguments = {**spec.arguments, **kwargs, "input_shape": list(kwargs["input_shape"])}
    elif isinstance(model, keras.Model):
        if model_kwargs:
            raise ValueError(f"`model_kwargs` only apply when `model` is a registered name. Received: model_kwargs={model_kwargs!r}")
        data = load_data(
            data, config, input_shape=model.input_shape[1:], data_options=data_options, task=segmentation.model_task(model)
        )
        builder_arguments = None  # A built model does not record them.
    else:
        raise ValueError(f"`model` must be a keras.Model or a registered model name. Received: model={model!r}")
    check_compatible(model, data)
    return model, data, builder_arguments


def _is_folder(data) -> bool:
    return isinstance(data, (str, os.PathLike)) and os.path.isdir(data)


def load_data(
    data: Any,
    config: TrainConfig,
    *,
    input_shape=None,
    normalize: str | None = None,
    data_options: Mapping[str, Any] | None = None,
    default_image_size=None,
    task: str = "classification",
) -> kdata.Dataset:
    """The data of a run, batched by `config.batch_size`.

    The size and channels come from the model where it fixes them (`input_shape`),
    else from `data_options`, else `default_image_size` (size only), else the
    source's own. `data_options` that contradict the model are refused.

    Args:
        data: a `kcnn.data.Dataset` (re-batched, otherwise used as is) or a
            `kcnn.data.load` source, loaded with the config's batch size,
            augmentation and seed.
        config: a `TrainConfig`.
        input_shape: the model's `(height, width, channels)` (None entries: free),
            to load images at the model's size.
        normalize: the normalization the model needs (a fine-tuned model's base
            run's); None: `data_options["normalize"]`, else "unit".
        data_options: more `kcnn.data.load` arguments (`kcnn.data.DATA_OPTIONS`:
            `data_dir`, `download`, `image_size`, `channels`, ...), applied when
            `data` is loaded here.
        default_image_size: `(height, width)` when neither the model nor
            `data_options` sets the size (a model family's own size).
        task: the model's, "classification" or "segmentation" (a source such as
            `oxford_iiit_pet` is read for it: breeds or trimaps).

    Returns:
        A `kcnn.data.Dataset`; in a multi-worker cluster (`config` says so) the
        worker's share of it (`Dataset.for_worker`).

    Raises:
        ValueError: for invalid `data_options`, options that contradict the model,
            or `data_options` with a `Dataset` (already loaded).
    """
    data = _load(data, config, input_shape, normalize, data_options, default_image_size, task)
    if wants_multi_worker(config):
        # Each worker reads and decodes only the rows of each batch that it trains on.
        data = data.for_worker(worker_share(multi_worker_strategy()))
    return data


def _load(data, config, input_shape, normalize, data_options, default_image_size, task) -> kdata.Dataset:
    options = kdata.check_data_options(data_options)
    if isinstance(data, kdata.Dataset):
        if options:
            raise ValueError(
                "`data_options` apply when the data is loaded by name; a kcnn.data.Dataset is loaded already "
                f"(pass them to kcnn.data.load). Received: data_options={dict(data_options)!r}"
            )
        return data.with_batch_size(config.batch_size)
    height, width, channels = tuple(input_shape) if input_shape is not None else (None, None, None)
    if height and width:
        size = (int(height), int(width))
        _check_agrees("image_size", options.get("image_size"), size, "the model takes {0[0]}x{0[1]} images")
        options["image_size"] = size
    elif options.get("image_size") is None:
        options["default_image_size"] = default_image_size
    if channels:
        _check_agrees("channels", options.get("channels"), int(channels), "the model takes {0}-channel images")
        options["channels"] = int(channels)
    if normalize is not None:
        _check_agrees("normalize", options.get("normalize"), normalize, "the model was trained with normalize={0!r}")
        options["normalize"] = normalize
    options.setdefault("normalize", "unit")
    if task == "segmentation":
        options["task"] = task
    return kdata.load(
        data,
        batch_size=config.batch_size,
        augment=config.augment or False,
        seed=config.seed,
        **options,
    )


def _check_agrees(key, given, required, why):
    if given is not None and given != required:
        raise ValueError(
            f"`data_options[{key!r}]` contradicts the model: {why.format(required)}. Received: {key}={given!r}"
        )
