"""The device a run trains on: what the "auto" precision, XLA and distribution settings
of a `TrainConfig` resolve to, and the model prepared for them (dtype policy per layer,
variables created under the strategy)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any

import keras
import tensorflow as tf

from kcnn import _cpu
from kcnn._keras_graph import producer
from kcnn.train.config import MIXED_PRECISION, TrainConfig

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

    @property
    def task(self) -> tuple[str, int] | None:
        """This process' `(task type, index)` in a multi-worker cluster, else None."""
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if resolver is None or not resolver.task_type:
            return None
        return resolver.task_type, int(resolver.task_id or 0)

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run folder: always, but in a multi-worker
        cluster only the chief (task "chief", or worker 0 when there is none)."""
        task = self.task
        if task is None:
            return True
        cluster = self.strategy.cluster_resolver.cluster_spec().as_dict()
        return task[0] == "chief" or (task == ("worker", 0) and "chief" not in cluster)

    def to_dict(self) -> dict[str, Any]:
        info = {
            "precision": self.precision,
            "xla": self.xla,
            "strategy": type(self.strategy).__name__ if self.strategy else None,
            "replicas": self.strategy.num_replicas_in_sync if self.strategy else 1,
            "devices": list(self.devices),
            "cpu_bfloat16": list(self.cpu_bfloat16),
        }
        if self.task is not None:
            info["workers"] = cluster_size(self.strategy.cluster_resolver.cluster_spec().as_dict())
        return info


# --------------------------------------------------------------------------
# The cluster, from TF_CONFIG.


def tf_config() -> dict[str, Any]:
    """The `TF_CONFIG` environment variable as a dict ({} when unset), the cluster
    description that Kubeflow's TFJob, cloud trainers and launch scripts set:
    `{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker",
    "index": 0}}`.

    Raises:
        ValueError: `TF_CONFIG` is not such a JSON object.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG must be JSON ({error}). Received: TF_CONFIG={text!r}") from None
    if not isinstance(value, dict) or not isinstance(value.get("cluster", {}), dict):
        raise ValueError(
            'TF_CONFIG must be a JSON object such as {"cluster": {"worker": ["host0:2222", "host1:2222"]}, '
            f'"task": {{"type": "worker", "index": 0}}}}. Received: TF_CONFIG={text!r}'
        )
    return value


def cluster_size(cluster: dict[str, Any]) -> int:
    """The number of training tasks (chief and workers) of a TF_CONFIG cluster."""
    return sum(len(cluster.get(kind, ())) for kind in ("chief", "worker"))


_MIRRORED = {}  # One MirroredStrategy per device set and process (see `mirrored_strategy`).


def mirrored_strategy(devices: tuple[str, ...] | None = None):
    """The process' `tf.distribute.MirroredStrategy` over `devices` (None: every GPU,
    or the CPU), the same object at every call: two strategies over the same devices
    number their collective ops alike, and the second one's clash with the first's
    ("Shape mismatch in the collective instance", TensorFlow 2.21 on CPU)."""
    if devices not in _MIRRORED:
        _MIRRORED[devices] = tf.distribute.MirroredStrategy(list(devices) if devices else None)
    return _MIRRORED[devices]


def wants_multi_worker(config: TrainConfig) -> bool:
    """Whether `config` trains on a cluster: distribution "multi_worker", or "auto"
    with a `TF_CONFIG` that names more than one task."""
    if config.distribution == "multi_worker":
        return True
    return config.distribution == "auto" and cluster_size(tf_config().get("cluster", {})) > 1


def worker_share(strategy):
    """The rows of every global batch that this worker's replicas train on under
    `strategy`, as `kcnn.data.Dataset.for_worker` takes them (`batch_share`), so that
    each worker reads and decodes only those; None outside a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None
    cluster = resolver.cluster_spec().as_dict()
    # Input pipelines are numbered as TensorFlow numbers them (multi_worker_util.id_in_cluster):
    # the chief first, then the workers.
    index = int(resolver.task_id or 0) + (len(cluster.get("chief", ())) if resolver.task_type == "worker" else 0)
    return batch_share(index, cluster_size(cluster), strategy.num_replicas_in_sync)


def batch_share(index: int, workers: int, replicas: int):
    """`share(rows, n)`: whether rows of a global batch of `n` rows go to input pipeline
    (worker) `index` of `workers`, `replicas` replicas in all.

    TensorFlow distributes a batched dataset sharded by data (`AutoShardPolicy.DATA`)
    so: every batch of `n` rows is cut into `replicas` consecutive pieces of
    ceil(n / replicas) rows (the last ones shorter, or empty), and worker k's replicas
    take pieces k, k + workers, k + 2 workers, ... (tensorflow/python/distribute/
    input_lib.py rebatches, the auto-shard rewrite turns that into its legacy rebatch
    and keeps every `workers`-th piece; tests/test_distribute.py pins it).
    """

    def share(rows, n):
        piece = tf.maximum((n + replicas - 1) // replicas, 1)
        return tf.equal(rows // piece % workers, index)

    return share


_MULTI_WORKER = []  # The process' MultiWorkerMirroredStrategy: collectives are configured once.


def multi_worker_strategy():
    """The process' `tf.distribute.MultiWorkerMirroredStrategy` for the cluster in
    `TF_CONFIG`, created on the first call and the same object afterwards.

    TensorFlow configures collective ops once per process, before any other op: call
    this (or `kcnn train` / `kcnn finetune`, which do) before building a model or
    loading data. Creating it blocks until every worker of the cluster has started.

    Raises:
        ValueError: TF_CONFIG names fewer than two tasks, or TensorFlow ran ops first.
    """
    if _MULTI_WORKER:
        return _MULTI_WORKER[0]
    cluster = tf_config().get("cluster", {})
    if cluster_size(cluster) < 2:
        raise ValueError(
            'distribution="multi_worker" needs a cluster of two or more tasks in the TF_CONFIG environment '
            f"variable. Received: TF_CONFIG={os.environ.get('TF_CONFIG')!r}"
        )
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:
        raise ValueError(
            "Multi-worker training must set up TensorFlow's collective ops before any other TensorFlow op: "
            "call kcnn.train.distribute.multi_worker_strategy() first thing in the program (before building a "
            f"model or loading data), as `kcnn train` does. Received: {error}"
        ) from None
    _MULTI_WORKER.append(strategy)
    return strategy


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
        A `DeviceSettings`. Nothing process-wide is changed, but for the cluster's
        strategy when `TF_CONFIG` asks for one (`multi_worker_strategy`: TensorFlow
        sets it up once per process).
    """
    multi_worker = wants_multi_worker(config)
    # First: it needs a TensorFlow that has run no op yet.
    strategy = multi_worker_strategy() if multi_worker else None
    gpus = tf.config.list_physical_devices("GPU")
    cpu_bfloat16 = _cpu.bfloat16_units()
    names = tuple(gpu.name.replace("/physical_device:", "") for gpu in gpus)
    if multi_worker:
        pass  # The cluster's strategy, whatever this machine has.
    elif config.distribution == "mirrored" or (config.distribution == "auto" and len(gpus) > 1):
        # Every GPU; without any, the CPU's logical devices when the program split it
        # into several (`tf.config.set_logical_device_configuration`, as the tests do
        # to stand in for GPUs), else the CPU.
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        strategy = mirrored_strategy(None if gpus or len(cpus) < 2 else tuple(cpus))
    else:
        strategy = None
    precision = resolve_precision(config.mixed_precision, model, gpus=gpus, cpu_bfloat16=cpu_bfloat16)
    if config.xla == "auto":
        # Measured: XLA slows convolutions down on CPU; Keras also turns it off
        # under tf.distribute.
        xla = bool(gpus) and strategy is None
    else:
        xla = config.xla == "on"
    return DeviceSettings(
        precision=precision, xla=xla, strategy=strategy, devices=names if gpus else (), cpu_bfloat16=cpu_bfloat16
    )


def resolve_precision(mixed_precision: str, model: keras.Model | None = None, *, gpus=None, cpu_bfloat16=None) -> str:
    """The dtype policy name that a `TrainConfig.mixed_precision` value computes in on
    this machine: "auto" as `resolve_device` describes it, "off" as "float32", any
    other value as itself. Training (`resolve_device`) and inference
    (`kcnn.train.inference.inference_model`) resolve it alike.

    Args:
        mixed_precision: "auto", "off", "mixed_float16" or "mixed_bfloat16".
        model: the model; its MACs decide on a CPU with bfloat16 units.
        gpus, cpu_bfloat16: the physical GPUs and the CPU's bfloat16 units, when the
            caller has them already; default: looked up.
    """
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"`mixed_precision` must be one of {MIXED_PRECISION}. Received: mixed_precision={mixed_precision!r}")
    if mixed_precision != "auto":
        return "float32" if mixed_precision == "off" else mixed_precision
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    if gpus:
        capability = min(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)) for gpu in gpus)
        # bfloat16 needs no loss scaling and is fast from Ampere (8.0) on;
        # float16 tensor cores start with Volta (7.0).
        return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16" if capability >= (7, 0) else "float32"
    cpu_bfloat16 = _cpu.bfloat16_units() if cpu_bfloat16 is None else cpu_bfloat16
    return "mixed_bfloat16" if cpu_bfloat16 and _macs(model) >= CPU_BFLOAT16_MIN_MACS else "float32"


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
    if device.strategy is None and computes_in(model, device.precision):
        return model
    scope = device.strategy.scope() if device.strategy else contextlib.nullcontext()
    with scope:
        clone = clone_with_policy(model, device.precision)
        clone.set_weights(model.get_weights())
    if device.task is not None:
        # `set_weights` assigns each worker its own model's values, overriding the
        # strategy's broadcast of the initial ones: every worker takes the chief's.
        broadcast_from_chief(clone, device.strategy)
    return clone


def computes_in(model: keras.Model, precision: str) -> bool:
    """Whether every layer of `model` has the dtype policy `precision`."""
    return {layer.dtype_policy.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)} <= {precision}


def clone_with_policy(model: keras.Model, precision: str, *, rebuild=None) -> keras.Model:
    """A clone of `model` (new, uninitialized weights) whose layers compute under the
    dtype policy `precision`, its output layers under float32.

    Args:
        model: a functional Keras model.
        precision: a dtype policy name.
        rebuild: `rebuild(layer, config)` makes a layer's clone from its config (the
            policy set); default `type(layer).from_config(config)`.
    """
    output_layers = {producer(tensor).name for tensor in model.outputs}
    policy = keras.DTypePolicy(precision)
    float32 = keras.DTypePolicy("float32")

    def with_policy(layer):
        config = layer.get_config()
        config["dtype"] = float32 if layer.name in output_layers else policy
        return rebuild(layer, config) if rebuild else layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=with_policy)


def broadcast_from_chief(model: keras.Model, strategy) -> None:
    """Gives every replica of `strategy` the weights of its first replica (the
    chief's): an all-reduce SUM of the chief's values and zeros elsewhere, exact.
    Floating-point weights only (the random generators' states stay each worker's)."""
    variables = [v for v in model.weights if keras.backend.is_float_dtype(v.dtype)]

    def chief_values():
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        return [context.all_reduce("SUM", v.value * tf.cast(first, v.dtype)) for v in variables]

    values = strategy.run(tf.function(chief_values))
    with strategy.scope():
        for variable, value in zip(variables, values, strict=True):
            variable.assign(strategy.experimental_local_results(value)[0])
