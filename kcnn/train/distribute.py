"""The device a run trains on: what the "auto" precision, XLA and distribution settings
of a `TrainConfig` resolve to, and the model prepared for them (dtype policy per layer,
variables created under the strategy)."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import keras
import tensorflow as tf

from kcnn import _cpu
from kcnn._keras_graph import producer
from kcnn.train.config import TrainConfig

#: Forward multiply-accumulates per image from which "auto" trains in mixed bfloat16 on
#: a CPU with bfloat16 units. Measured on 2 Sapphire Rapids cores (AMX): ResNet-50 at
#: 64x64 (0.32 GMACs) trains about 1.3x faster in bfloat16, LeNet-5 (0.42 MMACs) no
#: faster (its steps are per-call overhead and casts, not arithmetic), so small models
#: keep float32's precision for nothing lost.
CPU_BFLOAT16_MIN_MACS = 1e8


@dataclasses.dataclass(frozen=True)
class DeviceSettings:
    """What the "auto" settings of a `TrainConfig` resolve to on this machine.

    Attributes:
        precision: the dtype policy name the model computes in ("float32",
            "mixed_float16" or "mixed_bfloat16").
        xla: whether the train step is XLA-compiled.
        strategy: the `tf.distribute.Strategy`, or None for the default one.
        devices: the accelerators used, e.g. ["GPU:0"]; [] on CPU.
        cpu_bfloat16: the CPU's native bfloat16 units ("amx_bf16", "avx512_bf16"),
            which "auto" precision uses on a CPU; () where it has none.
    """

    precision: str
    xla: bool
    strategy: Any
    devices: tuple[str, ...]
    cpu_bfloat16: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "xla": self.xla,
            "strategy": type(self.strategy).__name__ if self.strategy else None,
            "replicas": self.strategy.num_replicas_in_sync if self.strategy else 1,
            "devices": list(self.devices),
            "cpu_bfloat16": list(self.cpu_bfloat16),
        }


def resolve_device(config: TrainConfig, model: keras.Model | None = None) -> DeviceSettings:
    """Resolves the "auto" precision, XLA and distribution settings of `config`.

    "auto" precision: on GPUs mixed bfloat16 from compute capability 8.0, mixed
    float16 from 7.0, else float32; on a CPU with native bfloat16 units (AMX or
    AVX-512 BF16, `kcnn._cpu.bfloat16_units`) mixed bfloat16 for models of at least
    `CPU_BFLOAT16_MIN_MACS` forward multiply-accumulates per image, else float32.

    Args:
        config: a `TrainConfig`.
        model: the model to train; without it (or when its MACs cannot be counted) a
            CPU with bfloat16 units gets mixed bfloat16.

    Returns:
        A `DeviceSettings`. Nothing process-wide is changed.
    """
    gpus = tf.config.list_physical_devices("GPU")
    cpu_bfloat16 = _cpu.bfloat16_units()
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
        elif cpu_bfloat16 and _macs(model) >= CPU_BFLOAT16_MIN_MACS:
            precision = "mixed_bfloat16"
    else:
        precision = "float32" if config.mixed_precision == "off" else config.mixed_precision
    if config.xla == "auto":
        # Measured: XLA slows convolutions down on CPU; Keras also turns it off
        # under tf.distribute.
        xla = bool(gpus) and strategy is None
    else:
        xla = config.xla == "on"
    return DeviceSettings(
        precision=precision, xla=xla, strategy=strategy, devices=names if gpus else (), cpu_bfloat16=cpu_bfloat16
    )


def _macs(model: keras.Model | None) -> float:
    """Forward MACs per image of `model`; infinite when unknown (no model, a subclassed
    one, unknown input sizes), so the device alone decides."""
    if model is None:
        return float("inf")
    from kcnn import shapes  # The MAC count needs the shape tracer, only here.

    try:
        return float(shapes.count_macs(model))
    except (ValueError, TypeError):
        return float("inf")


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
