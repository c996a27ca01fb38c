"""Segmentation in the training module: which task a model or a dataset is for, the
per-pixel loss and metrics a segmentation run compiles with, its evaluation (with the
IoU of every class) and its predictions (per-pixel probabilities at each image's size).

A model segments when its (main) output has one class vector per pixel, `(batch,
height, width, classes)`; a registered model's spec may say so before it is built
(`task="segmentation"`). Its data is a `kcnn.data.SegmentationDataset`, whose masks
mark unlabelled pixels `kcnn.data.IGNORE_LABEL`: the loss and every metric skip them.

- loss: cross-entropy per labelled pixel (label-smoothed as the run's config says),
  averaged over the labelled pixels of each batch;
- `accuracy`: pixel accuracy; `mean_iou`: Keras' `MeanIoU` (classes absent from both
  the masks and the predictions left out of the mean); `crossentropy`: the plain
  cross-entropy, pixel-weighted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from kcnn.data.masks import IGNORE_LABEL

SEGMENTATION = "segmentation"
CLASSIFICATION = "classification"


def model_task(model: keras.Model) -> str:
    """"segmentation" for a model whose main output is `(batch, height, width, classes)`,
    else "classification"."""
    return SEGMENTATION if len(model.outputs[0].shape) == 4 else CLASSIFICATION


def spec_task(spec: Any) -> str:
    """The task of a registered model's spec (`ModelSpec.task`; classification for specs
    that do not say)."""
    return getattr(spec, "task", CLASSIFICATION)


def data_task(data: Any) -> str:
    """The task of a `kcnn.data.Dataset` ("classification" or "segmentation")."""
    return getattr(data, "task", CLASSIFICATION)


def check_task(model: keras.Model, data: Any) -> None:
    """Refuses a classifier with segmentation data, and a segmentation model with
    classification data."""
    model_kind, data_kind = model_task(model), data_task(data)
    if model_kind == data_kind:
        return
    if model_kind == SEGMENTATION:
        raise ValueError(
            f"`{model.name}` segments images (one class per pixel: output {tuple(model.outputs[0].shape)}), but the data "
            f"has one label per image. Expected a segmentation dataset: 'shapes', a folder of images/ and masks/, "
            f"oxford_iiit_pet, or mask arrays. Received: {data.name or 'data'!r}, a classification dataset"
        )
    raise ValueError(
        f"`{model.name}` is a classifier (one class per image: output {tuple(model.outputs[0].shape)}), but the data has "
        f"a mask per image. Expected a segmentation model for it (e.g. kcnn.fcn8s or kcnn.unet), or a classification "
        f"dataset. Received: {data.name or 'data'!r}, a segmentation dataset"
    )


def task_metadata(data: Any) -> dict[str, Any]:
    """What a run's metadata.json records of a segmentation dataset (nothing for a
    classification one): the task, the ignore label, the palette of its pictures."""
    if data_task(data) != SEGMENTATION:
        return {}
    return {"task": SEGMENTATION, "segmentation": {"ignore_label": int(data.ignore_label), "palette": data.palette}}


# --------------------------------------------------------------------------
# Loss and metrics.


@keras.saving.register_keras_serializable(package="kcnn")
class SegmentationCrossentropy(keras.losses.Loss):
    """Cross-entropy per labelled pixel, with label smoothing, averaged over the
    labelled pixels of the batch; pixels marked `ignore_label` count for nothing.

    Without label smoothing it equals `keras.losses.SparseCategoricalCrossentropy(
    ignore_class=ignore_label)`, which has no label smoothing.
    """

    def __init__(
        self, num_classes, label_smoothing=0.0, from_logits=False, ignore_label=IGNORE_LABEL, name="segmentation_crossentropy", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)
        self.ignore_label = int(ignore_label)

    def pixel_losses(self, y_true, y_pred):
        """`(losses, labelled)`: each pixel's loss (0 where unlabelled) and 1.0 / 0.0 for
        labelled / unlabelled pixels, both `(batch, height, width)`."""
        labels = ops.cast(y_true, "int32")
        labelled = ops.not_equal(labels, self.ignore_label)
        if self.from_logits:
            log_p = ops.log_softmax(y_pred, axis=-1)
        else:  # as Keras' crossentropy of probabilities: normalized, clipped
            epsilon = keras.config.epsilon()
            log_p = ops.log(ops.clip(y_pred / ops.sum(y_pred, axis=-1, keepdims=True), epsilon, 1.0 - epsilon))
        # Label smoothing's targets are (1 - s) on the label plus s / classes on every
        # class: the loss is (1 - s) x the label's -log p plus s x the mean -log p, with
        # no one-hot tensor of every pixel's classes.
        label_term = ops.take_along_axis(log_p, ops.where(labelled, labels, 0)[..., None], axis=-1)[..., 0]
        losses = -(1.0 - self.label_smoothing) * label_term - self.label_smoothing * ops.mean(log_p, axis=-1)
        labelled = ops.cast(labelled, losses.dtype)
        return losses * labelled, labelled

    def call(self, y_true, y_pred):
        losses, labelled = self.pixel_losses(y_true, y_pred)
        # Keras' "sum_over_batch_size" reduction divides by every pixel; scaled by
        # pixels / labelled pixels, the loss is the mean over the labelled ones
        # (as Keras does for its own ignore_class).
        pixels = ops.cast(ops.prod(ops.convert_to_tensor(ops.shape(labelled), dtype="int32")), losses.dtype)
        return losses * ops.divide_no_nan(pixels, ops.sum(labelled))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
            "ignore_label": self.ignore_label,
        }


class _LabelledPixels:
    """A Keras metric of `(labels, predictions)` restricted to labelled pixels: an
    `ignore_label` pixel gets sample weight 0 (and a valid class index, unread)."""

    def __init__(self, *args, ignore_label=IGNORE_LABEL, **kwargs):
        super().__init__(*args, **kwargs)
        self.ignore_label = int(ignore_label)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.cast(y_true, "int32")
        labelled = ops.cast(ops.not_equal(labels, self.ignore_label), "float32")
        weight = labelled if sample_weight is None else labelled * ops.cast(sample_weight, "float32")
        return super().update_state(ops.where(labelled > 0, labels, 0), y_pred, sample_weight=weight)

    def get_config(self):
        return {**super().get_config(), "ignore_label": self.ignore_label}


@keras.saving.register_keras_serializable(package="kcnn")
class PixelAccuracy(_LabelledPixels, keras.metrics.SparseCategoricalAccuracy):
    """The share of labelled pixels whose most probable class is their label."""


@keras.saving.register_keras_serializable(package="kcnn")
class PixelCrossentropy(_LabelledPixels, keras.metrics.SparseCategoricalCrossentropy):
    """The cross-entropy of the labelled pixels, averaged over them."""


def make_segmentation_loss(num_classes: int, label_smoothing: float = 0.0, *, from_logits: bool = False) -> keras.losses.Loss:
    """The training loss of a segmentation run (`SegmentationCrossentropy`)."""
    return SegmentationCrossentropy(num_classes, label_smoothing, from_logits=from_logits)


def make_segmentation_metrics(num_classes: int, *, from_logits: bool = False) -> list[keras.metrics.Metric]:
    """`accuracy` (pixel accuracy), `mean_iou` (Keras' `MeanIoU` of the argmax) and
    `crossentropy`, all over the labelled pixels."""
    return [
        PixelAccuracy(name="accuracy"),
        keras.metrics.MeanIoU(num_classes, name="mean_iou", ignore_class=IGNORE_LABEL, sparse_y_pred=False),
        PixelCrossentropy(name="crossentropy", from_logits=from_logits),
    ]


# --------------------------------------------------------------------------
# Evaluation and prediction.


def class_iou(confusion: np.ndarray) -> list[float | None]:
    """Each class's intersection over union from a confusion matrix (rows: labels,
    columns: predictions); None for a class neither labelled nor predicted."""
    confusion = np.asarray(confusion, np.float64)
    hits = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - hits
    return [None if u == 0 else float(h / u) for h, u in zip(hits, union)]


def evaluate_segmentation(model: keras.Model, dataset, *, from_logits: bool, label_smoothing: float = 0.0) -> dict[str, Any]:
    """A segmentation model's figures on one batched `(images, masks)` split
    (`from_logits`: whether the model outputs logits, `kcnn.train.compile.outputs_logits`).

    Returns:
        `{"loss", "crossentropy", "accuracy", "mean_iou", "class_iou", "examples",
        "pixels"}`: the run's loss (label-smoothed as trained) and the plain
        cross-entropy, both averaged over the labelled pixels; pixel accuracy; Keras'
        mean IoU; the IoU of each class, in label order (None for a class neither
        in the masks nor predicted); images; labelled pixels.
    """
    num_classes = int(model.outputs[0].shape[-1])
    loss = make_segmentation_loss(num_classes, label_smoothing, from_logits=from_logits)
    mean_loss = keras.metrics.Mean(name="loss")
    metrics = make_segmentation_metrics(num_classes, from_logits=from_logits)
    examples = pixels = 0
    for images, masks in dataset:
        outputs = model.predict_on_batch(images)
        outputs = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        losses, labelled = loss.pixel_losses(masks, ops.convert_to_tensor(outputs, "float32"))
        mean_loss.update_state(losses, sample_weight=labelled)
        for metric in metrics:
            metric.update_state(masks, outputs)
        examples += int(masks.shape[0])
        pixels += int(ops.sum(labelled))
    result = {"loss": float(mean_loss.result())}
    result.update((metric.name, float(metric.result())) for metric in metrics)
    result["class_iou"] = class_iou(ops.convert_to_numpy(metrics[1].total_cm))
    result.update(examples=examples, pixels=pixels)
    return result


def probabilities_at(outputs: np.ndarray, sizes: Sequence[tuple[int, int]] | None, *, from_logits: bool) -> list[np.ndarray]:
    """Per-pixel class probabilities `(height, width, classes)` of each image, resized
    from the model's output to the image's own `(height, width)` in `sizes` (as the
    exported models do: antialiased bilinear, so the probabilities still sum to 1);
    at the model's size where `sizes` is None."""
    import tensorflow as tf

    outputs = ops.convert_to_tensor(outputs, "float32")
    probabilities = ops.softmax(outputs, axis=-1) if from_logits else outputs
    probabilities = ops.convert_to_numpy(probabilities)
    if sizes is None:
        return list(probabilities)
    return [
        tf.image.resize(p[None], size, method="bilinear", antialias=True).numpy()[0] if tuple(size) != p.shape[:2] else p
        for p, size in zip(probabilities, sizes)
    ]
