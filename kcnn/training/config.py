"""Training settings as data, and what "auto" resolves to on the device at hand.

`TrainConfig` is the single description of a training run: `fit`, `fine_tune`, the
command line (one flag per field) and the keras-tuner search all read it, and every run
folder stores it in `metadata.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
MIXED_PRECISION = ("auto", "off", "mixed_float16", "mixed_bfloat16")
XLA = ("auto", "on", "off")
DISTRIBUTION = ("auto", "off", "mirrored")
AUGMENT = ("shift", "flip")


def _field(default, help, *, choices=None, flags=()):
    """A config field whose metadata drives the command line (`kcnn train --help`)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "flags": flags})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train: optimizer, schedule, regularization, device settings.

    The defaults train LeNet-5 on the bundled digits to about 99% test accuracy (30
    epochs of AdamW with cosine decay, label smoothing 0.1 and shift augmentation) in
    under a minute on two CPU cores, and are a sound start for the other models.

    Attributes:
        epochs: number of epochs (for `fine_tune`: both phases together).
        batch_size: global batch size (split across replicas under a strategy).
        optimizer: "sgd" (with `momentum`), "adam" or "adamw".
        learning_rate: peak learning rate, reached after the warm-up.
        schedule: "constant", "step" (multiply by `decay_rate` every `decay_epochs`)
            or "cosine" (to zero at the last step).
        warmup_epochs: linear warm-up from zero, in epochs (fractions allowed).
        decay_epochs: period of the "step" schedule.
        decay_rate: factor of the "step" schedule.
        weight_decay: decoupled weight decay (biases and BatchNorm parameters are
            exempt), for every optimizer.
        momentum: SGD momentum.
        label_smoothing: label smoothing of the cross-entropy.
        aux_loss_weight: loss weight of auxiliary classifiers (GoogLeNet's 0.3).
        augment: training augmentation when `fit` loads the data itself: "shift",
            "flip" or None (see `kcnn.data.AUGMENT_POLICIES`); a `Dataset` passed in
            keeps its own.
        early_stopping: stop after this many epochs without improvement of
            `monitor`; 0 disables it.
        monitor: the logged quantity that picks the best epoch (the saved model) and
            drives early stopping; falls back to "loss" without validation data.
        mixed_precision: "auto" (mixed_bfloat16 on GPUs of compute capability 8+,
            mixed_float16 on 7.x, else off), "off", "mixed_float16" or
            "mixed_bfloat16".
        xla: "auto" (on for a single GPU, off on CPU, where XLA makes convolutions
            slower), "on" or "off".
        distribution: "auto" (MirroredStrategy when several GPUs are visible),
            "off" or "mirrored".
        steps_per_execution: training steps per `tf.function` call, or "auto":
            enough steps that each call does about `AUTO_EXECUTION_MACS`
            multiply-accumulates (at most 32, at most an epoch), so the per-call
            overhead of Keras and TensorFlow stops dominating small models (LeNet-5
            on 32x32 images: a whole epoch per call); 1 for models as big as a
            ResNet, where a step is long anyway (`kcnn.train.steps_per_execution`).
        seed: seeds the data split, shuffling and augmentation (and, from the
            command line, the weight initialization).
    """

    epochs: int = _field(30, "number of epochs")
    batch_size: int = _field(64, "global batch size")
    optimizer: str = _field("adamw", "optimizer", choices=OPTIMIZERS)
    learning_rate: float = _field(3e-3, "peak learning rate", flags=("--lr",))
    schedule: str = _field("cosine", "learning-rate schedule", choices=SCHEDULES)
    warmup_epochs: float = _field(1.0, "linear warm-up, in epochs")
    decay_epochs: int = _field(30, "period of the step schedule, in epochs")
    decay_rate: float = _field(0.1, "factor of the step schedule")
    weight_decay: float = _field(1e-4, "decoupled weight decay")
    momentum: float = _field(0.9, "SGD momentum")
    label_smoothing: float = _field(0.1, "label smoothing")
    aux_loss_weight: float = _field(0.3, "loss weight of auxiliary classifiers")
    augment: str | None = _field("shift", "augmentation when the data is loaded by name", choices=(*AUGMENT, None))
    early_stopping: int = _field(0, "patience in epochs (0: off)")
    monitor: str = _field("val_loss", "quantity that picks the best epoch")
    mixed_precision: str = _field("auto", "compute dtype policy", choices=MIXED_PRECISION)
    xla: str = _field("auto", "XLA compilation", choices=XLA)
    distribution: str = _field("auto", "distribution strategy", choices=DISTRIBUTION)
    steps_per_execution: int | str = _field("auto", "training steps per tf.function call, or 'auto' (many for small models)")
    seed: int = _field(1337, "seed of the split, shuffling and augmentation")

    def __post_init__(self):
        for name in ("epochs", "batch_size", "decay_epochs"):
            _check_int(name, getattr(self, name), minimum=1)
        if self.steps_per_execution != "auto":
            try:
                _check_int("steps_per_execution", self.steps_per_execution, minimum=1)
            except ValueError:
                raise ValueError(
                    f"`steps_per_execution` must be an int >= 1 or 'auto'. Received: steps_per_execution={self.steps_per_execution!r}"
                ) from None
        _check_int("early_stopping", self.early_stopping, minimum=0)
        _check_int("seed", self.seed, minimum=None)
        _check_number("learning_rate", self.learning_rate, positive=True)
        for name in ("warmup_epochs", "weight_decay", "decay_rate", "aux_loss_weight"):
            _check_number(name, getattr(self, name), positive=False)
        for name in ("momentum", "label_smoothing"):
            value = getattr(self, name)
            _check_number(name, value, positive=False)
            if value >= 1:
                raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}")
        for field in dataclasses.fields(self):
            choices = field.metadata["choices"]
            if choices is not None and getattr(self, field.name) not in choices:
                expected = ", ".join(repr(c) for c in choices)
                raise ValueError(f"`{field.name}` must be one of {expected}. Received: {field.name}={getattr(self, field.name)!r}")
        if not isinstance(self.monitor, str) or not self.monitor:
            raise ValueError(f"`monitor` must be a logged metric name such as 'val_loss'. Received: monitor={self.monitor!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """The inverse of `to_dict`; unknown keys are refused."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown TrainConfig fields {unknown}. Known: {sorted(known)}. Received: {dict(values)!r}")
        return cls(**values)


def _check_int(name, value, *, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (minimum is not None and value < minimum):
        bound = "an int" if minimum is None else f"an int >= {minimum}"
        raise ValueError(f"`{name}` must be {bound}. Received: {name}={value!r}")


def _check_number(name, value, *, positive):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "a positive number" if positive else "a number >= 0"
        raise ValueError(f"`{name}` must be {bound}. Received: {name}={value!r}")


@dataclasses.dataclass(frozen=True)
class DeviceSettings:
    """What the "auto" settings of a `TrainConfig` resolve to on this machine.

    Attributes:
        precision: the dtype policy name the model computes in ("float32",
            "mixed_float16" or "mixed_bfloat16").
        xla: whether the train step is XLA-compiled.
        strategy: the `tf.distribute.Strategy`, or None for the default one.
        devices: the accelerators used, e.g. ["GPU:0"]; [] on CPU.
    """

    precision: str
    xla: bool
    strategy: Any
    devices: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "xla": self.xla,
            "strategy": type(self.strategy).__name__ if self.strategy else None,
            "replicas": self.strategy.num_replicas_in_sync if self.strategy else 1,
            "devices": list(self.devices),
        }


def resolve_device(config: TrainConfig) -> DeviceSettings:
    """Resolves the "auto" precision, XLA and distribution settings of `config`.

    Args:
        config: a `TrainConfig`.

    Returns:
        A `DeviceSettings`. Nothing process-wide is changed.
    """
    gpus = tf.config.list_physical_devices("GPU")
    names = tuple(gpu.name.replace("/physical_device:", "") for gpu in gpus)
    if config.distribution == "mirrored" or (config.distribution == "auto" and len(gpus) > 1):
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = None
    if config.mixed_precision == "auto":
        precision = "float32"
        if gpus:
            capability = min(
                tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)) for gpu in gpus
            )
            # bfloat16 needs no loss scaling and is fast from Ampere (8.0) on;
            # float16 tensor cores start with Volta (7.0).
            precision = "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16" if capability >= (7, 0) else "float32"
    else:
        precision = "float32" if config.mixed_precision == "off" else config.mixed_precision
    if config.xla == "auto":
        # Measured: XLA slows convolutions down on CPU; Keras also turns it off
        # under tf.distribute.
        xla = bool(gpus) and strategy is None
    else:
        xla = config.xla == "on"
    return DeviceSettings(precision=precision, xla=xla, strategy=strategy, devices=names if gpus else ())


def producer(tensor):
    """The layer that computed a functional model's tensor."""
    # Keras keeps the graph of a functional model only in this attribute.
    return tensor._keras_history.operation


def prepare_model(model: keras.Model, device: DeviceSettings) -> keras.Model:
    """The model to train under `device`'s dtype policy and strategy.

    Keras layers take their dtype policy when they are built, and our builders build
    under whatever global policy is set. Rather than switching the global policy
    (process-wide state the caller did not ask to change), the model is cloned with an
    explicit `dtype=keras.DTypePolicy(...)` per layer and given the original weights.
    The output layers stay float32, so softmax and the loss run in full precision.
    Under a distribution strategy the clone is created in its scope, which is what
    makes the variables mirrored.

    Args:
        model: a functional Keras model.
        device: from `resolve_device`.

    Returns:
        `model` itself when nothing needs changing (float32, no strategy), else a
        clone with the same layer names and weights.
    """
    current = {layer.dtype_policy.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)}
    if device.strategy is None and current <= {device.precision}:
        return model
    output_layers = {producer(tensor).name for tensor in model.outputs}
    policy = keras.DTypePolicy(device.precision)
    float32 = keras.DTypePolicy("float32")

    def with_policy(layer):
        config = layer.get_config()
        config["dtype"] = float32 if layer.name in output_layers else policy
        return layer.__class__.from_config(config)

    scope = device.strategy.scope() if device.strategy else contextlib.nullcontext()
    with scope:
        clone = keras.models.clone_model(model, clone_function=with_policy)
        clone.set_weights(model.get_weights())
    return clone
