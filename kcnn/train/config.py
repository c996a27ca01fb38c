"""Training settings as data.

`TrainConfig` is the single description of a training run: `fit`, `fine_tune`, the
command line (one flag per field) and the keras-tuner search all read it, and every run
folder stores it in `metadata.json`. This module imports neither Keras nor TensorFlow,
so the command line builds its flags without them; what the "auto" settings resolve
to on the device at hand is `kcnn.train.distribute`'s.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
MIXED_PRECISION = ("auto", "off", "mixed_float16", "mixed_bfloat16")
XLA = ("auto", "on", "off")
DISTRIBUTION = ("auto", "off", "mirrored", "multi_worker")
# kcnn.data's AUGMENT_POLICIES and SEGMENTATION_AUGMENT_POLICIES ("crop": segmentation
# data only), written out: this module does not import TensorFlow (tests pin the equality).
AUGMENT = ("shift", "flip", "crop")


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
        warmup_epochs: linear warm-up from zero, in epochs (fractions allowed);
            with `reference_batch_size`, from the unscaled learning rate.
        reference_batch_size: opt-in linear learning-rate scaling (Goyal et al.
            2017, "when the minibatch size is multiplied by k, multiply the
            learning rate by k"): `learning_rate` is the rate for batches of this
            size, and the run peaks at `learning_rate * batch_size /
            reference_batch_size`, reached by the warm-up from `learning_rate`
            (the paper warms up for 5 epochs). None: `learning_rate` as given.
        decay_epochs: period of the "step" schedule.
        decay_rate: factor of the "step" schedule.
        weight_decay: decoupled weight decay (biases and BatchNorm parameters are
            exempt), for every optimizer.
        momentum: SGD momentum.
        label_smoothing: label smoothing of the cross-entropy.
        aux_loss_weight: loss weight of auxiliary classifiers (GoogLeNet's 0.3).
        bn_momentum: the momentum of every BatchNormalization layer's moving
            statistics while training, or None to keep the model's (Keras' 0.99).
            The moving statistics, which evaluation uses, follow the batches' with a
            time constant of 1 / (1 - momentum) steps: a run of a few hundred steps
            needs less than 0.99 (e.g. 0.9), or its validation scores come from
            statistics that never caught up with the training ones. The saved
            model keeps the momentum it trained with.
        augment: training augmentation when `fit` loads the data itself: "shift",
            "flip", "crop" (segmentation data only: a zoom) or None (see
            `kcnn.data.AUGMENT_POLICIES`, `SEGMENTATION_AUGMENT_POLICIES`); a `Dataset`
            passed in keeps its own.
        early_stopping: stop after this many epochs without improvement of
            `monitor`; 0 disables it.
        monitor: the logged quantity that picks the best epoch (the saved model) and
            drives early stopping; falls back to "loss" without validation data.
        mixed_precision: "auto" (mixed_bfloat16 on GPUs of compute capability 8+,
            mixed_float16 on 7.x; on CPUs with bfloat16 units, AMX or AVX-512 BF16,
            mixed_bfloat16 for models of 1e8 MACs per image or more; else off),
            "off", "mixed_float16" or "mixed_bfloat16". The saved model is float32.
        xla: "auto" (on for a single GPU, off on CPU, where XLA makes convolutions
            slower), "on" or "off".
        distribution: "auto" (MultiWorkerMirroredStrategy when the `TF_CONFIG`
            environment variable names more than one task, else MirroredStrategy
            when several GPUs are visible), "off", "mirrored" (every device of this
            machine) or "multi_worker" (the cluster `TF_CONFIG` describes; the
            chief, worker 0, alone writes the run folder).
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
    reference_batch_size: int | None = _field(
        None, "scale the learning rate linearly by batch_size / this (Goyal et al. 2017; default: no scaling)"
    )
    decay_epochs: int = _field(30, "period of the step schedule, in epochs")
    decay_rate: float = _field(0.1, "factor of the step schedule")
    weight_decay: float = _field(1e-4, "decoupled weight decay")
    momentum: float = _field(0.9, "SGD momentum")
    label_smoothing: float = _field(0.1, "label smoothing")
    aux_loss_weight: float = _field(0.3, "loss weight of auxiliary classifiers")
    bn_momentum: float | None = _field(None, "BatchNorm moving-average momentum while training (default: the model's)")
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
        if self.reference_batch_size is not None:
            _check_int("reference_batch_size", self.reference_batch_size, minimum=1)
        _check_int("early_stopping", self.early_stopping, minimum=0)
        _check_int("seed", self.seed, minimum=None)
        _check_number("learning_rate", self.learning_rate, positive=True)
        for name in ("warmup_epochs", "weight_decay", "decay_rate", "aux_loss_weight"):
            _check_number(name, getattr(self, name), positive=False)
        if self.bn_momentum is not None:
            _check_number("bn_momentum", self.bn_momentum, positive=False)
            if self.bn_momentum >= 1:
                raise ValueError(f"`bn_momentum` must be in [0, 1) or None. Received: bn_momentum={self.bn_momentum!r}")
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
