"""Optimizer, learning-rate schedule, loss and `compile`: one recipe for `fit`, `fine_tune`
and the keras-tuner search, so a search trial trains exactly like a run."""

from __future__ import annotations

import contextlib
import math
import warnings

import keras
from keras import ops

from kcnn._keras_graph import leaf_layers, producer
from kcnn.train import _keras_distribute, segmentation
from kcnn.train.config import TrainConfig
from kcnn.train.distribute import DeviceSettings, resolve_device
from kcnn.train.optimizers import FusedAdam, FusedAdamW

#: Multiply-accumulates per `tf.function` call that "auto" steps per execution aims at
#: (forward and backward of every step in the call, 3x the forward MACs): about
#: 30-60 ms of two CPU cores, against ~1-3 ms of Keras and TensorFlow overhead per call.
AUTO_EXECUTION_MACS = 2e9
#: The most steps "auto" puts in one call (callbacks and the progress bar see one
#: batch end per call).
AUTO_MAX_STEPS_PER_EXECUTION = 32
#: Runs of fewer training steps get 1 step per call under "auto": the multi-step loop
#: traces the step a second time, inside `tf.while_loop` (about a second per model on a
#: 2-core CPU), and saves a Python round trip per step, which repays it from about 100
#: to 150 steps (LeNet-5 on digits: `benchmarks/auto_execution.py`).
AUTO_MIN_RUN_STEPS = 128

# Variables exempt from weight decay: decaying biases and BatchNorm's scale and
# offset only fights the normalization (Goyal et al. 2017, "no bias decay").
_NO_DECAY = ("bias", "gamma", "beta")


@keras.saving.register_keras_serializable(package="kcnn")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from zero, then constant, step or cosine decay.

    Args:
        learning_rate: the peak learning rate, reached at the end of the warm-up.
        total_steps: training steps of the whole run (the cosine reaches zero there).
        warmup_steps: steps of the linear warm-up.
        kind: "constant", "step" or "cosine".
        decay_steps: period of the "step" decay.
        decay_rate: factor of the "step" decay.
        warmup_from: the learning rate the warm-up starts from (0; the unscaled
            rate under linear scaling, Goyal et al. 2017).
    """

    def __init__(
        self, learning_rate, total_steps, warmup_steps=0, kind="cosine", decay_steps=1, decay_rate=0.1, warmup_from=0.0
    ):
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.kind = kind
        self.decay_steps = int(decay_steps)
        self.decay_rate = float(decay_rate)
        self.warmup_from = float(warmup_from)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.learning_rate
        after = ops.maximum(step - self.warmup_steps, 0.0)
        if self.kind == "step":
            decayed = peak * ops.power(self.decay_rate, ops.floor(after / self.decay_steps))
        elif self.kind == "cosine":
            progress = ops.minimum(after / max(self.total_steps - self.warmup_steps, 1), 1.0)
            decayed = peak * 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            decayed = peak * ops.ones_like(step)
        if not self.warmup_steps:
            return decayed
        # (step + 1): the first update already moves, instead of a wasted step at 0.
        warm = self.warmup_from + (peak - self.warmup_from) * (step + 1.0) / self.warmup_steps
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "kind": self.kind,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "warmup_from": self.warmup_from,
        }


def make_schedule(config: TrainConfig, steps_per_epoch: int | None):
    """The learning rate of `config`: a float, or a `WarmupSchedule` over the run.

    Args:
        config: a `TrainConfig`.
        steps_per_epoch: training steps per epoch; needed unless the schedule is
            constant without warm-up.
    """
    peak = scaled_learning_rate(config)
    if config.schedule == "constant" and not config.warmup_epochs:
        return peak
    if steps_per_epoch is None or isinstance(steps_per_epoch, bool) or steps_per_epoch < 1:
        raise ValueError(
            f"The {config.schedule!r} schedule with {config.warmup_epochs} warm-up epochs needs the number of "
            f"training steps per epoch. Received: steps_per_epoch={steps_per_epoch!r}"
        )
    return WarmupSchedule(
        peak,
        total_steps=config.epochs * steps_per_epoch,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        kind=config.schedule,
        decay_steps=config.decay_epochs * steps_per_epoch,
        decay_rate=config.decay_rate,
        warmup_from=config.learning_rate if config.reference_batch_size else 0.0,
    )


def scaled_learning_rate(config: TrainConfig) -> float:
    """The peak learning rate of `config`: `learning_rate`, or under linear scaling
    (`reference_batch_size`, Goyal et al. 2017) `learning_rate * batch_size /
    reference_batch_size`, e.g. 0.1 for 256 images -> 0.4 at a global batch of 1024."""
    if not config.reference_batch_size:
        return config.learning_rate
    return config.learning_rate * config.batch_size / config.reference_batch_size


def make_optimizer(config: TrainConfig, steps_per_epoch: int | None = None) -> keras.optimizers.Optimizer:
    """The optimizer of `config`, with its schedule and weight decay.

    Args:
        config: a `TrainConfig`.
        steps_per_epoch: training steps per epoch (for the schedule).

    Returns:
        A new `keras.optimizers.Optimizer`: SGD, or Adam / AdamW updated by
        TensorFlow's fused kernel (`kcnn.train.optimizers`).
    """
    learning_rate = make_schedule(config, steps_per_epoch)
    decay = config.weight_decay or None
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=config.momentum, weight_decay=decay)
    elif config.optimizer == "adam":
        optimizer = FusedAdam(learning_rate, weight_decay=decay)
    else:
        optimizer = FusedAdamW(learning_rate, weight_decay=config.weight_decay)
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(_NO_DECAY))
    return optimizer


@keras.saving.register_keras_serializable(package="kcnn")
class SparseCrossentropy(keras.losses.Loss):
    """Cross-entropy from integer labels, with label smoothing.

    Keras' `SparseCategoricalCrossentropy` has no label smoothing; this one-hots the
    labels inside the loss so the data pipeline keeps its int32 labels.
    """

    def __init__(self, num_classes, label_smoothing=0.0, from_logits=False, name="sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        labels = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), self.num_classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            labels, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
        }


def set_bn_momentum(model: keras.Model, momentum: float) -> None:
    """Sets the moving-average momentum of every BatchNormalization layer of `model`
    (nested models included); read when the train step is traced, so before `fit`."""
    for layer in leaf_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)


def make_loss(num_classes: int, label_smoothing: float = 0.0, *, from_logits: bool = False) -> keras.losses.Loss:
    """The training loss: sparse cross-entropy, label-smoothed when `label_smoothing`.

    `loss` in history.csv and in `kcnn.train.evaluate` is this quantity, so the two
    agree; `crossentropy` (see `make_metrics`) is the plain one.
    """
    if label_smoothing:
        return SparseCrossentropy(num_classes, label_smoothing, from_logits=from_logits)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)


def make_metrics(num_classes: int, *, from_logits: bool = False) -> list[keras.metrics.Metric]:
    """The metrics of every run and evaluation: `accuracy`, `crossentropy` (without
    label smoothing, whatever the loss uses) and, with more than 10 classes,
    `top5_accuracy`."""
    metrics = [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        keras.metrics.SparseCategoricalCrossentropy(name="crossentropy", from_logits=from_logits),
    ]
    if num_classes > 10:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
    return metrics


def output_names(model: keras.Model) -> list[str]:
    """Names of the model's outputs (the layers producing them), main output first."""
    return list(getattr(model, "output_names", None) or [producer(t).name for t in model.outputs])


def outputs_logits(model: keras.Model) -> bool:
    """Whether the model's (main) output is logits rather than probabilities.

    Raises:
        ValueError: if the output activation is neither softmax nor linear.
    """
    layer = producer(model.outputs[0])
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", str(activation))
    if name == "softmax":
        return False
    if activation is None or name == "linear":
        return True
    raise ValueError(
        "Expected a classifier whose output is softmax probabilities or logits (classifier_activation "
        f"'softmax' or None). Received: output layer `{layer.name}` with activation {name!r}"
    )


def steps_per_execution(
    model: keras.Model, config: TrainConfig, steps_per_epoch: int | None = None, *, replicas: int = 1
) -> int:
    """`config.steps_per_execution`, with "auto" resolved for `model`.

    With more than one replica it is 1: Keras 3.15's multi-step loop fails under
    `tf.distribute` with two or more replicas ("You must feed a value for
    placeholder tensor", keras-team/keras#19246; pinned by tests/test_distribute.py),
    so an explicit value above 1 is replaced, with a warning.

    "auto" gives ceil(AUTO_EXECUTION_MACS / (3 x forward MACs per image x batch size)),
    clipped to [1, min(32, steps_per_epoch)]: LeNet-5 at batch 64 gets a whole
    digits epoch (20 steps of 1,259 images) per call, any ResNet on 32x32 images or
    larger gets 1.
    A model whose MACs cannot be counted gets 1, and so does a run of fewer than
    `AUTO_MIN_RUN_STEPS` steps (`config.epochs` x `steps_per_epoch`), too short to
    repay the loop's tracing.
    """
    if replicas > 1:
        if config.steps_per_execution not in ("auto", 1):
            warnings.warn(
                f"steps_per_execution={config.steps_per_execution} does not work with {replicas} replicas in "
                "Keras 3 (keras-team/keras#19246): training runs 1 step per call.",
                stacklevel=3,
            )
        return 1
    if config.steps_per_execution != "auto":
        return config.steps_per_execution
    if steps_per_epoch is not None and config.epochs * steps_per_epoch < AUTO_MIN_RUN_STEPS:
        return 1
    from kcnn import shapes  # The MAC count needs the shape tracer, only here.

    try:
        macs = shapes.count_macs(model)
    except (ValueError, TypeError):  # e.g. a subclassed model, or unknown input sizes
        return 1
    per_step = 3 * max(macs, 1) * config.batch_size
    steps = math.ceil(AUTO_EXECUTION_MACS / per_step)
    return max(1, min(steps, AUTO_MAX_STEPS_PER_EXECUTION, steps_per_epoch or AUTO_MAX_STEPS_PER_EXECUTION))


def compile_model(
    model: keras.Model,
    config: TrainConfig,
    steps_per_epoch: int | None = None,
    *,
    device: DeviceSettings | None = None,
) -> keras.Model:
    """Compiles `model` for training as `config` says.

    Sparse cross-entropy (with label smoothing, `make_loss`) on every output,
    auxiliary outputs (any after the first, e.g. GoogLeNet's) weighted by
    `config.aux_loss_weight`, `make_metrics` on the main output, loss scaling when the
    model computes in float16, and `config.bn_momentum` on every BatchNormalization
    layer.

    Args:
        model: the model (from `prepare_model` when precision or strategy matter).
        config: a `TrainConfig`.
        steps_per_epoch: training steps per epoch (for the schedule).
        device: resolved device settings; default `resolve_device(config, model)`.

    Returns:
        `model`, compiled.
    """
    device = device or resolve_device(config, model)
    if config.bn_momentum is not None:
        set_bn_momentum(model, config.bn_momentum)
    num_classes = int(model.outputs[0].shape[-1])
    from_logits = outputs_logits(model)
    names = output_names(model)
    replicas = device.strategy.num_replicas_in_sync if device.strategy else 1
    scope = device.strategy.scope() if device.strategy else contextlib.nullcontext()
    with scope:
        # The metrics' variables too: created outside the scope, they would count
        # each worker's batches alone (per-worker accuracy, per-worker early stopping).
        if segmentation.model_task(model) == segmentation.SEGMENTATION:
            loss = segmentation.make_segmentation_loss(num_classes, config.label_smoothing, from_logits=from_logits)
            metrics = segmentation.make_segmentation_metrics(num_classes, from_logits=from_logits)
        else:
            loss = make_loss(num_classes, config.label_smoothing, from_logits=from_logits)
            metrics = make_metrics(num_classes, from_logits=from_logits)
        if len(names) > 1:
            loss = dict.fromkeys(names, loss)
            loss_weights = {name: 1.0 if i == 0 else config.aux_loss_weight for i, name in enumerate(names)}
            metrics = {names[0]: metrics}
        else:
            loss_weights = None
        optimizer = make_optimizer(config, steps_per_epoch)
        if any(layer.dtype_policy.compute_dtype == "float16" for layer in model.layers):
            # Keras only adds loss scaling when the *model's* policy is float16;
            # ours is set per layer (see `prepare_model`).
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(
            optimizer=optimizer,
            loss=loss,
            loss_weights=loss_weights,
            metrics=metrics,
            jit_compile=device.xla,
            steps_per_execution=steps_per_execution(model, config, steps_per_epoch, replicas=replicas),
            auto_scale_loss=False,
        )
    if device.strategy is not None:
        _keras_distribute.fit_under_strategy(model, device.strategy)
    return model
