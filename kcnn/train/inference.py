"""Saved models: `load`, `evaluate` and `predict`, with the run's own preprocessing."""

from __future__ import annotations

import os
import pathlib
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from kcnn import data as kdata
from kcnn._files import load_keras_model
from kcnn.train import segmentation
from kcnn.train.compile import make_loss, make_metrics, outputs_logits
from kcnn.train.runs import MODEL_FILE, RunFolder

SPLITS = ("train", "validation", "test")


def load(path: str | os.PathLike) -> tuple[keras.Model, dict[str, Any]]:
    """Loads a saved model and its metadata.

    Args:
        path: a run folder, or a `.keras` file (its metadata.json, if any, is the one
            next to it).

    Returns:
        `(model, metadata)`; metadata is {} when there is no metadata.json.
    """
    path = pathlib.Path(path)
    model_path = path / MODEL_FILE if path.is_dir() else path
    if not model_path.is_file():
        raise ValueError(
            f"Expected a run folder holding {MODEL_FILE} or a .keras file. Received: path={os.fspath(path)!r}"
        )
    model = load_keras_model(
        model_path,
        advice="Use a copy of it or train the model again (a run whose checkpoint/ folder is still there resumes "
        "with `kcnn train --output FOLDER`, `fit(output=...)`, and writes it anew).",
    )
    try:
        metadata = RunFolder(model_path.parent).read_metadata() or {}
    except ValueError as error:  # kcnn._files.CorruptFileError, naming the file
        raise ValueError(
            f"{error}. It holds the run's preprocessing and class names, without which images would be "
            "misread: restore it from a copy, or load the model alone with keras.saving.load_model and "
            f"preprocess the images yourself. Received: path={os.fspath(path)!r}"
        ) from error
    return model, metadata


def resolve_model(model_or_path) -> tuple[keras.Model, dict[str, Any]]:
    """`(model, metadata)` of a Keras model (no metadata) or of a saved one (`load`)."""
    if isinstance(model_or_path, keras.Model):
        return model_or_path, {}
    if isinstance(model_or_path, (str, os.PathLike)):
        return load(model_or_path)
    raise ValueError(f"Expected a keras.Model, a run folder or a .keras path. Received: {model_or_path!r}")


#: The copies `inference_model` made, per model and precision: kept while the model lives.
_COMPUTE_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inference_model(model: keras.Model, mixed_precision: str = "auto") -> keras.Model:
    """The model that `predict` and `evaluate` run: `model` computing in the precision
    `mixed_precision` resolves to on this machine.

    "auto" resolves as training does (`kcnn.train.distribute.resolve_precision`): mixed
    bfloat16 on recent GPUs and on CPUs with bfloat16 units (AMX, AVX-512 BF16) for
    models of 1e8 MACs per image or more, float32 elsewhere. For a float32 model in
    float32 this is `model` itself. Otherwise it is a copy computing in it, with each
    batch normalization folded into the convolution before it (`kcnn.train.fold`):
    on 2 Sapphire Rapids cores such a copy predicts ResNet-50 at 64x64 about 2x
    faster than the unfolded bfloat16 model and about 2.7x faster than float32
    (`benchmarks/README.md`). Folding changes outputs by rounding only; it is left to
    reduced precision, whose own rounding is far larger, so that float32 outputs
    stay exactly the saved model's.

    Args:
        model: a functional Keras model.
        mixed_precision: "auto", "off", "mixed_float16" or "mixed_bfloat16", as
            `TrainConfig.mixed_precision`.

    Returns:
        `model` or its copy. The copy is made once per model and precision and takes
        `model`'s current weights at every call (about 0.08 s for ResNet-50), so a
        model trained further between calls predicts with its new weights.
    """
    from kcnn.train import distribute, fold  # TensorFlow's device queries, only here.

    copies = _COMPUTE_COPIES.setdefault(model, {})
    if mixed_precision not in copies:
        precision = distribute.resolve_precision(mixed_precision, model)
        if precision == "float32" and distribute.computes_in(model, precision):
            # None for `model` itself: a value that referred to its key would keep it alive.
            copies[mixed_precision] = None
        else:
            copies[mixed_precision] = fold.folded_copy(model, precision)
            return copies[mixed_precision][0]
    if copies[mixed_precision] is None:
        return model
    copy, pairs = copies[mixed_precision]
    fold.copy_weights(model, copy, pairs)
    return copy


def check_compatible(model: keras.Model, data: kdata.Dataset) -> None:
    """Checks that `data` fits `model`'s input and output.

    Raises:
        ValueError: on a different task (`kcnn.train.segmentation.check_task`), image
            shape or number of classes.
    """
    segmentation.check_task(model, data)
    expected = tuple(model.input_shape[1:])
    received = tuple(data.input_shape)
    if len(expected) != 3 or any(e is not None and e != r for e, r in zip(expected, received)):
        raise ValueError(
            f"The data's images do not fit `{model.name}`: it takes {expected}. "
            f"Received: images of shape {received} (pass image_size/channels to kcnn.data.load)"
        )
    classes = int(model.outputs[0].shape[-1])
    if classes != data.num_classes:
        raise ValueError(
            f"`{model.name}` has {classes} outputs but the data has {data.num_classes} classes; build the model "
            f"with classes={data.num_classes} or use kcnn.train.fine_tune. Received: {data.num_classes} classes"
        )


def load_data_for(metadata: Mapping[str, Any], source: Any = None, *, batch_size: int = 64) -> kdata.Dataset:
    """Loads data as a saved run saw it: its preprocessing and, for the run's own
    dataset, its split (the seed of its config).

    Args:
        metadata: a run's metadata.json contents.
        source: a `kcnn.data.load` source; default the run's dataset.
        batch_size: batch size of the splits.
    """
    if source is None:
        source = metadata.get("dataset", {}).get("name")
        if not source or source == "arrays":
            raise ValueError(
                "The run was trained on in-memory arrays, which cannot be reloaded by name: pass the data. "
                f"Received: dataset name {source!r}"
            )
    preprocessing = metadata["preprocessing"]
    data = kdata.load(
        source,
        image_size=tuple(preprocessing["image_size"]),
        channels=preprocessing["channels"],
        normalize=preprocessing["normalization"],
        batch_size=batch_size,
        seed=metadata.get("config", {}).get("seed", 1337),
        task=metadata.get("task"),
    )
    if data.preprocessing.get("mean") != preprocessing.get("mean") or data.preprocessing.get("std") != preprocessing.get("std"):
        raise ValueError(
            "The data's standardization statistics differ from the run's, so the model would see other inputs. "
            f"Received: mean={data.preprocessing.get('mean')}, run's mean={preprocessing.get('mean')}"
        )
    return data


def evaluate(model_or_path, data: Any = None, *, split: str = "test", mixed_precision: str = "auto") -> dict[str, float]:
    """Loss and accuracy of a model on a split of a dataset, with Keras' metrics.

    `loss` is the run's training loss (label-smoothed when its config says so), the
    quantity history.csv logs as `loss` / `val_loss`; `crossentropy` is the plain
    cross-entropy (history's `crossentropy` / `val_crossentropy`). A model without a
    run folder has no label smoothing: both are the same.

    Args:
        model_or_path: a Keras classifier, a run folder or a `.keras` file.
        data: a `kcnn.data.Dataset`, a `kcnn.data.load` source (loaded with the run's
            preprocessing), or None for the run's own dataset and split.
        split: "test", "validation" or "train".
        mixed_precision: the precision to compute in (`inference_model`): "auto"
            picks it as training does, and gives the figures a run's metadata.json
            records unless the run set another precision; "off" computes with the
            saved float32 model itself (figures within rounding of bfloat16 ones).

    Returns:
        `{"loss", "crossentropy", "accuracy", "examples"}`, plus "top5_accuracy" with
        more than 10 classes; for a segmentation model, pixel accuracy, "mean_iou",
        "class_iou" and "pixels" (`kcnn.train.segmentation.evaluate_segmentation`).
    """
    model, metadata = resolve_model(model_or_path)
    if split not in SPLITS:
        raise ValueError(f"`split` must be 'train', 'validation' or 'test'. Received: split={split!r}")
    if not isinstance(data, kdata.Dataset):
        if not metadata:
            raise ValueError(f"Pass a kcnn.data.Dataset to evaluate a model without a run folder. Received: data={data!r}")
        data = load_data_for(metadata, data)
    dataset = getattr(data, split)
    if dataset is None:
        raise ValueError(f"The data has no {split} split. Received: split={split!r}")
    check_compatible(model, data)
    return evaluate_split(
        inference_model(model, mixed_precision),
        dataset,
        label_smoothing=metadata.get("config", {}).get("label_smoothing", 0.0),
    )


def evaluate_split(model: keras.Model, dataset, *, label_smoothing: float = 0.0) -> dict[str, float]:
    """`evaluate`'s figures for a model on one batched `(images, labels)` split, the
    loss label-smoothed by `label_smoothing` (the run's); a segmentation model's are
    `kcnn.train.segmentation.evaluate_segmentation`'s."""
    if segmentation.model_task(model) == segmentation.SEGMENTATION:
        return segmentation.evaluate_segmentation(
            model, dataset, from_logits=outputs_logits(model), label_smoothing=label_smoothing
        )
    from_logits = outputs_logits(model)
    num_classes = int(model.outputs[0].shape[-1])
    loss = make_loss(num_classes, label_smoothing, from_logits=from_logits)
    mean_loss = keras.metrics.Mean(name="loss")
    metrics = make_metrics(num_classes, from_logits=from_logits)
    examples = 0
    for images, labels in dataset:
        outputs = model.predict_on_batch(images)
        outputs = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        mean_loss.update_state(loss.call(labels, outputs))
        for metric in metrics:
            metric.update_state(labels, outputs)
        examples += int(labels.shape[0])
    result = {"loss": float(mean_loss.result())}
    result.update((metric.name, float(metric.result())) for metric in metrics)
    result["examples"] = examples
    return result


def predict(
    model_or_path,
    images,
    top_k: int = 5,
    *,
    class_names: Sequence[str] | None = None,
    mixed_precision: str = "auto",
    skip_unreadable: bool = False,
):
    """Classifies images (or segments them, with a segmentation model).

    With a run folder, each image goes through the run's preprocessing and is checked
    against the run's training images (`metadata.json`'s "input_statistics"): a
    warning names an image that is obviously unlike them, with inverted polarity (a
    light background where the training images had a dark one, as a digit drawn in
    black on white paper for a model of white-on-black digits) or a very different
    size or shape before resizing. The prediction is made all the same.

    Args:
        model_or_path: a Keras classifier, a run folder or a `.keras` file.
        images: image file paths (or one path, or a folder of images), or raw images
            as an array / list of arrays (0..255 pixels, any size: the run's
            preprocessing is applied). For a bare model without metadata, arrays must
            already be preprocessed.
        top_k: how many classes to return per image.
        class_names: names of the classes; default the run's, else the indices.
        mixed_precision: the precision to compute in (`inference_model`): "auto"
            (bfloat16 where training would use it), "off" (float32), ...
        skip_unreadable: what an image file that cannot be read (corrupt,
            truncated, not an image) does: False raises a ValueError naming it;
            True names it in a warning, with why, and gives None in its place while
            the other images are predicted (`kcnn predict` does so).

    Returns:
        One list per image of `(class_name, probability)` pairs, most likely first
        (None for an unreadable file with `skip_unreadable`). For a segmentation
        model (`kcnn.train.segmentation`), one float32 `(height, width, classes)`
        array per image instead: each pixel's class probabilities, at the image's
        own size (at the model's for a bare model); `top_k` and `class_names` do not
        apply.
    """
    model, metadata = resolve_model(model_or_path)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive int. Received: top_k={top_k!r}")
    preprocessing = metadata.get("preprocessing")
    if isinstance(images, (str, os.PathLike)):
        images = kdata.image_files(images) if os.path.isdir(images) else [images]
    paths, unreadable = None, set()
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, (str, os.PathLike)) for i in images):
        if preprocessing is None:
            raise ValueError("Reading image files needs the run's preprocessing: pass a run folder. Received: a bare model")
        given = len(images)
        paths, images, unreadable = _read_image_files(images, skip_unreadable)
        if not images:
            return [None] * given
    if preprocessing is not None:
        x = kdata.preprocess_images(images, preprocessing)
        for warning in input_warnings(images, metadata, names=paths):
            warnings.warn(warning, UserWarning, stacklevel=2)
    else:
        x = np.asarray(images, np.float32)
    outputs = predict_in_batches(inference_model(model, mixed_precision), x)
    if segmentation.model_task(model) == segmentation.SEGMENTATION:
        sizes = [np.shape(image)[:2] for image in images] if preprocessing is not None else None
        results = segmentation.probabilities_at(outputs, sizes, from_logits=outputs_logits(model))
    else:
        results = _ranked(outputs, top_k, class_names or metadata.get("class_names"), from_logits=outputs_logits(model))
    if not unreadable:
        return results
    # The unreadable files keep their place, as None.
    readable = iter(results)
    return [None if index in unreadable else next(readable) for index in range(len(results) + len(unreadable))]


def _ranked(outputs, top_k: int, class_names, *, from_logits: bool) -> list[list[tuple[str, float]]]:
    """Per image, the `top_k` `(class_name, probability)` pairs, most likely first."""
    if from_logits:
        outputs = keras.ops.softmax(outputs, axis=-1)
    probabilities = keras.ops.convert_to_numpy(outputs).astype(np.float64)
    names = list(class_names or map(str, range(probabilities.shape[1])))
    order = np.argsort(-probabilities, axis=1)[:, : min(top_k, probabilities.shape[1])]
    return [[(names[j], float(row[j])) for j in top] for row, top in zip(probabilities, order)]


def _read_image_files(files, skip_unreadable: bool):
    """(paths of the readable files, their decoded images, the indices of the others),
    each unreadable file named in a warning with why; with `skip_unreadable` False the
    first one raises its ValueError instead."""
    paths, images, unreadable = [], [], set()
    for index, file in enumerate(files):
        try:
            images.append(kdata.load_image(file))
        except ValueError as error:
            if not skip_unreadable:
                raise
            unreadable.add(index)
            warnings.warn(f"{error}: not predicted", UserWarning, stacklevel=4)
            continue
        paths.append(os.fspath(file))
    return paths, images, unreadable


def predict_in_batches(model: keras.Model, images, batch_size: int = 32) -> np.ndarray:
    """`model`'s main output on preprocessed `images`, `batch_size` at a time.

    Keras' `predict_on_batch` per slice, not `model.predict`: `predict` builds a tf.data
    pipeline at every call, which costs about 40 ms per call for LeNet-5 on 2 cores,
    and sometimes ends half a second late for ResNet-50 (its whole call pinned at
    about 1.3 s for 256 images, float32 or bfloat16, on 2 Sapphire Rapids cores).

    Args:
        model: a Keras model; of several outputs the first is returned.
        images: an array of preprocessed images (NHWC).
        batch_size: images per call.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
    parts = []
    for start in range(0, len(images), batch_size):
        outputs = model.predict_on_batch(images[start : start + batch_size])
        parts.append(np.asarray(outputs[0] if isinstance(outputs, (list, tuple)) else outputs))
    if not parts:
        return np.zeros((0, *(int(d) for d in model.outputs[0].shape[1:])), np.float32)
    return np.concatenate(parts)


#: An image's border is "inverted" when its contrast with the rest of the image (mean
#: minus border mean, 0..255 scale) has the other sign than the training images' and is
#: at least this large; a clear digit on paper is 50-150 grey levels.
POLARITY_MARGIN = 20.0
#: A source image is "very different" in shape when its aspect ratio is this many times
#: the training images' (or its inverse), and in size when a side is this many times
#: larger or smaller than theirs (an 8x8 digit against a 640x480 photo: 60x).
ASPECT_FACTOR = 1.5
SIZE_FACTOR = 8.0


def input_warnings(images, metadata: Mapping[str, Any], *, names: Sequence[str] | None = None) -> list[str]:
    """What is obviously unlike the run's training images in raw images (0..255,
    any size): inverted polarity, very different size or shape. One message per
    finding, naming the image (its file name, else its index) and what was expected.

    Args:
        images: the raw images, an NHWC / NHW array or a list of HWC / HW arrays.
        metadata: the run's metadata.json contents (its "preprocessing" and
            "input_statistics"; without statistics there is nothing to compare).
        names: how to name the images in the messages (default "image 0", ...).
    """
    expected = metadata.get("input_statistics")
    if not expected:
        return []
    arrays = list(images) if isinstance(images, (list, tuple)) else list(np.asarray(images))
    unscaled = {**metadata["preprocessing"], "normalization": "none"}
    adapted = kdata.preprocess_images(arrays, unscaled)
    train_contrast = float(np.mean(expected["mean"]) - np.mean(expected["border_mean"]))
    train_height, train_width = expected["source_size"]
    messages = []
    for index, (raw, image) in enumerate(zip(arrays, adapted)):
        name = names[index] if names else f"image {index}"
        stats = kdata.image_statistics(image)
        contrast = float(np.mean(stats["mean"]) - np.mean(stats["border_mean"]))
        if abs(contrast) >= POLARITY_MARGIN and abs(train_contrast) >= POLARITY_MARGIN and contrast * train_contrast < 0:
            background = "dark" if train_contrast > 0 else "light"
            messages.append(
                f"{name} looks inverted: the model was trained on images with a {background} background "
                f"(border mean {np.mean(expected['border_mean']):.0f}, image mean {np.mean(expected['mean']):.0f} on 0..255), "
                f"this one has border mean {np.mean(stats['border_mean']):.0f} and image mean {np.mean(stats['mean']):.0f}. "
                "Invert it (255 - pixels) if it is drawn dark on light."
            )
        height, width = np.shape(raw)[:2]
        aspect = (width / height) / expected["source_aspect"]
        scale = max(height / train_height, width / train_width, train_height / height, train_width / width)
        if max(aspect, 1 / aspect) >= ASPECT_FACTOR or scale >= SIZE_FACTOR:
            messages.append(
                f"{name} is {height}x{width} pixels; the model was trained on images of about "
                f"{train_height}x{train_width} (both are resized to {'x'.join(map(str, metadata['preprocessing']['image_size']))}): "
                "expect less accurate predictions on images of another size or shape."
            )
    return messages
