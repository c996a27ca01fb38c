"""The model comparison: a kcnn model trained through `kcnn.train.fit` against
keras.applications and torchvision, alternately, and the same on a GPU with the
fraction of the chip's peak."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from harness.measure import (
    MemoryPeak,
    StepTimer,
    alternate,
    chip_fraction,
    describe_machine,
    load_average,
    peak_flops_for,
    progress,
    quiet,
    record_runs,
    synthetic_images,
    training_flops_per_image,
)
from harness.torch_side import TorchWorker, torch_python

#: kcnn registry name -> the keras.applications constructor of the same network.
KERAS_BASELINES: Mapping[str, str] = {
    "resnet50": "ResNet50",
    "resnet101": "ResNet101",
    "resnet152": "ResNet152",
    "vgg16": "VGG16",
    "vgg19": "VGG19",
}


#: The baselines of `compare_models`: name -> what it is.
BASELINES: Mapping[str, str] = {
    "keras": "keras.applications + compile('adam') + fit(x, y), float32 (the defaults)",
    "keras_same": "keras.applications + compile('adam') + fit(x, y), kcnn's precision policy per layer",
    "torch": "torchvision (own process), channels-last, AdamW, bfloat16 autocast where kcnn computes in bfloat16",
}


def compare_models(
    name: str,
    *,
    input_size: int | None = None,
    batch_size: int = 32,
    steps: int = 12,
    baselines: Sequence[str] = ("keras",),
    pairs: int = 3,
    classes: int = 10,
    config: Any = None,
    skip: int = 2,
    reference: Callable[[tuple[int, int, int], int], keras.Model] | None = None,
    peak_flops: float | None = None,
    torch_python_path: str | None = None,
) -> dict[str, Any]:
    """kcnn's `name` trained through `kcnn.train.fit` against baselines, alternately.

    Every side trains on the same synthetic images (`batch_size * steps` of them,
    `input_size` square, RGB) for one epoch per measurement; the first `skip` steps
    of each epoch (tracing, start-up) are left out of the rates. Each round runs kcnn,
    then every baseline in the order given. Inference is `model.predict` on the same
    images, alternated the same way: for kcnn what `kcnn.train.predict` runs,
    `predict_in_batches` on `kcnn.train.inference_model(model)` (bfloat16 where "auto"
    trains in it); PyTorch an `inference_mode` loop.

    Args:
        name: a registered model; with a keras baseline one of `KERAS_BASELINES`.
        input_size: square input size; default the model's own.
        batch_size: batch size of every side.
        steps: training steps per measurement.
        baselines: names from `BASELINES`: "keras" (keras.applications, float32
            defaults), "keras_same" (the same with kcnn's resolved precision policy:
            the "same settings" comparison) and "torch" (torchvision at its best in
            its own process; skipped without a PyTorch Python, `torch_python`).
        pairs: rounds after one warm-up round.
        classes: number of classes of every model.
        config: the `kcnn.train.TrainConfig` (default: the trainer's defaults with
            `epochs=1`, this batch size, no augmentation and one step per call; its
            "auto" precision is kcnn's default one).
        skip: leading steps (kcnn: executions) left out of each measurement.
        reference: builds the keras baselines from `(input_shape, classes)` instead of
            keras.applications (other baselines, small tests).
        peak_flops: on a GPU, the device's peak FLOP/s for `chip_fraction`
            (default: `PEAK_FLOPS` by device name).
        torch_python_path: the Python of the torch baseline (default `torch_python()`).

    Returns:
        A JSON-serializable dict: settings, machine, each side's measurements per
        pair, and `ratios[baseline][quantity]` (ratios > 1 favour kcnn).
    """
    from kcnn import data as kdata
    from kcnn import registry, shapes
    from kcnn import train as ktrain
    from kcnn.train.compile import steps_per_execution
    from kcnn.train.distribute import DeviceSettings, prepare_model, resolve_device
    from kcnn.train.inference import predict_in_batches

    baselines = tuple(baselines)
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown or not baselines or len(set(baselines)) != len(baselines):
        raise ValueError(f"`baselines` must be distinct names from {sorted(BASELINES)}. Received: baselines={baselines!r}")
    if any(b.startswith("keras") for b in baselines) and reference is None and name not in KERAS_BASELINES:
        raise ValueError(
            f"keras.applications has no counterpart of {name!r}; with a keras baseline choose one of "
            f"{sorted(KERAS_BASELINES)} (lenet5 has its own benchmarks, `small_model` and `time_to_accuracy`). "
            f"Received: name={name!r}"
        )
    for arg, value in (("batch_size", batch_size), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{arg}` must be a positive int. Received: {arg}={value!r}")
    if steps <= skip:
        raise ValueError(f"`steps` must exceed the {skip} warm-up steps left out of each measurement. Received: steps={steps}")
    spec = registry.get_spec(name)
    size = input_size or spec.default_input_shape[0]
    input_shape = (size, size, 3)
    # One step per call, as the baselines' fit: the measurement times steps (and
    # "auto" gives 1 anyway for models of keras.applications' size).
    config = config or ktrain.TrainConfig(epochs=1, batch_size=batch_size, augment=None, steps_per_execution=1)
    if config.batch_size != batch_size:
        raise ValueError(f"`config.batch_size` must equal `batch_size`. Received: {config.batch_size} and {batch_size}")
    model = spec.build(input_shape=input_shape, classes=classes)
    device = resolve_device(config, model)
    result: dict[str, Any] = {
        "benchmark": "model",
        "model": name,
        "input_size": size,
        "batch_size": batch_size,
        "steps": steps,
        "pairs": pairs,
        "skip": skip,
        "classes": classes,
        "config": config.to_dict(),
        "device": device.to_dict(),
        "machine": describe_machine(),
        "baselines": {},
        "skipped": {},
    }
    x, y = synthetic_images(batch_size * steps, input_shape, classes)
    # The same images on every side: kcnn.data stores them as uint8 and divides by 255.
    data = kdata.load((x, y), batch_size=batch_size, validation_split=0, test_split=0, normalize="unit", seed=config.seed)
    result["macs_per_image"] = shapes.count_macs(model)
    train_sides: dict[str, Callable[[], dict]] = {}
    # kcnn's inference is what `kcnn.train.predict` runs: the model in the precision the
    # config's resolves to (device.precision), as training's, called batch by batch.
    infer = {
        "kcnn": _keras_inference_side(
            ktrain.inference_model(model, config.mixed_precision),
            x,
            batch_size,
            predict=functools.partial(predict_in_batches, batch_size=batch_size),
        )
    }
    with contextlib.ExitStack() as stack:
        for baseline in baselines:
            if baseline.startswith("keras"):
                if reference is None:
                    constructor = KERAS_BASELINES[name]
                    other = getattr(keras.applications, constructor)(weights=None, input_shape=input_shape, classes=classes)
                    what = f"keras.applications.{constructor}"
                else:
                    other = reference(input_shape, classes)
                    what = other.name
                precision = "float32"
                if baseline == "keras_same":
                    precision = device.precision
                    other = prepare_model(other, DeviceSettings(precision, xla=False, strategy=None, devices=()))
                other.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
                result["baselines"][baseline] = f"{what} + compile('adam') + fit(x, y), {precision}"
                train_sides[baseline] = _keras_train_side(other, x, y, batch_size, skip=skip)
                infer[baseline] = _keras_inference_side(other, x, batch_size)
            else:
                python, reason = torch_python(torch_python_path)
                if python is None:
                    result["skipped"][baseline] = reason
                    continue
                worker = stack.enter_context(TorchWorker(python))
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="kcnn-bench-torch-"))
                np.savez(os.path.join(folder, "data.npz"), x=x, y=y)
                bfloat16 = device.precision == "mixed_bfloat16"
                info = worker.ask(
                    {"op": "setup", "model": name, "data": os.path.join(folder, "data.npz"), "classes": classes,
                     "batch_size": batch_size, "skip": skip, "channels_last": True, "bfloat16": bfloat16}
                )
                result["baselines"][baseline] = (
                    f"torchvision.models.{name} (torch {info['torch']}, {info['threads']} threads, own process), channels-last, "
                    f"AdamW, {'bfloat16 autocast' if bfloat16 else 'float32'}"
                )
                train_sides[baseline] = functools.partial(worker.ask, {"op": "train"})
                infer[baseline] = functools.partial(worker.ask, {"op": "infer"})
        if not train_sides:
            return {**result, "status": "skipped", "reason": "; ".join(result["skipped"].values())}

        def others():
            return {side: run() for side, run in train_sides.items()}

        result["load_average_before"] = load_average()
        with quiet():
            kcnn_skip = max(1, math.ceil(skip / steps_per_execution(model, config, steps)))
            runs, result["kcnn_fit_call"] = _interleaved_fit(model, data, config, others, pairs, kcnn_skip)
            inference = alternate(infer, pairs, log=progress)
    for side in runs:
        for run, more in zip(runs[side], inference[side], strict=True):
            run.update(more)
    record_runs(
        result,
        runs,
        ("train_images_per_second", "train_cpu_ms_per_image", "inference_images_per_second", "step_seconds", "peak_memory_bytes"),
    )
    result["status"] = "ok"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        result["gpu"] = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
        result["peak_flops"] = peak_flops or peak_flops_for(result["gpu"])
        result["training_flops_per_image"] = training_flops_per_image(result["macs_per_image"])
        if result["peak_flops"]:
            result["chip_fraction"] = {
                side: chip_fraction(
                    statistics.median(r["train_images_per_second"] for r in side_runs), result["macs_per_image"], result["peak_flops"]
                )
                for side, side_runs in runs.items()
            }
        else:
            result["note"] = f"no peak FLOP/s known for {result['gpu']!r}: pass peak_flops (--peak-flops)"
    return result


class _Interleave(keras.callbacks.Callback):
    """Makes one `kcnn.train.fit` call serve every pair: after each kcnn epoch (one
    measurement) the other sides take theirs (`other()` returns side -> measurement),
    so the run goes
    kcnn-warm-up, other-warm-up, kcnn, other, kcnn, other, ... (A B A B). One call
    traces the step function once; a call per measurement would re-trace (over a
    minute for ResNet-50 on two cores) and write a run folder each time."""

    def __init__(self, timer: StepTimer, other: Callable[[], dict], batch_size: int, skip: int, log=None):
        super().__init__()
        self.timer, self.other, self.batch_size, self.skip, self.log = timer, other, batch_size, skip, log
        self.mine: list[dict] = []
        self.others: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._memory = MemoryPeak().__enter__()

    def on_epoch_end(self, epoch, logs=None):
        self._memory.__exit__(None, None, None)
        images_per_second, step = self.timer.steady_rate(self.batch_size, skip=self.skip, epoch=epoch)
        self.mine.append(
            {
                "train_images_per_second": images_per_second,
                "step_seconds": step,
                "train_cpu_ms_per_image": self.timer.steady_cpu(self.batch_size, skip=self.skip, epoch=epoch),
                "peak_memory_bytes": self._memory.peak_bytes,
            }
        )
        started = time.perf_counter()
        self.others.append(self.other())
        if self.log:
            what = "warm-up" if epoch == 0 else f"pair {epoch}"
            shown = ", ".join(f"{side} {run['train_images_per_second']:.4g}" for side, run in self.others[-1].items())
            self.log(f"{what}: kcnn {images_per_second:.4g}, {shown} img/s ({time.perf_counter() - started:.1f} s); load {load_average()}")


def _interleaved_fit(model, data, config, other: Callable[[], dict], pairs: int, skip: int) -> tuple[dict, dict]:
    """kcnn's side through `kcnn.train.fit` (epochs = pairs + 1, the first a warm-up)
    with `other` measured after each epoch; returns both sides' runs and the fit call's
    timing."""
    import dataclasses

    from kcnn import train

    timer = StepTimer()
    interleave = _Interleave(timer, other, config.batch_size, skip, progress)
    folder = tempfile.mkdtemp(prefix="kcnn-bench-")
    try:
        started = time.perf_counter()
        train.fit(
            model, data, dataclasses.replace(config, epochs=pairs + 1), output=os.path.join(folder, "run"), callbacks=[timer, interleave], verbose=0
        )
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    first_begin, first_marks = timer.epochs[0]
    timing = {
        "fit_call_seconds": wall,
        "first_execution_seconds": first_marks[0][1] - first_begin,  # tracing, mostly
        "other_sides_seconds": sum(r.get("fit_call_seconds", 0.0) for others in interleave.others for r in others.values()),
    }
    return {"kcnn": interleave.mine[1:], **{side: [o[side] for o in interleave.others[1:]] for side in interleave.others[0]}}, timing


def _keras_train_side(model: keras.Model, x, y, batch_size: int, *, skip: int) -> Callable[[], dict]:
    """Plain `model.fit(x, y, batch_size=...)` on NumPy arrays, one epoch per measurement."""

    def run():
        timer = StepTimer()
        with MemoryPeak() as memory:
            started = time.perf_counter()
            model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[timer])
            wall = time.perf_counter() - started
        images_per_second, step = timer.steady_rate(batch_size, skip=skip)
        return {
            "train_images_per_second": images_per_second,
            "step_seconds": step,
            "train_cpu_ms_per_image": timer.steady_cpu(batch_size, skip=skip),
            "peak_memory_bytes": memory.peak_bytes,
            "fit_call_seconds": wall,
        }

    return run


def _keras_inference_side(model: keras.Model, x, batch_size: int, predict=None) -> Callable[[], dict]:
    """Times `predict(model, images)` on `x` after one batch of warm-up (a recompile
    retraces); default Keras' `model.predict`, as a Keras user calls it."""
    predict = predict or (lambda model, images: model.predict(images, batch_size=batch_size, verbose=0))

    def run():
        predict(model, x[:batch_size])
        started = time.perf_counter()
        predict(model, x)
        return {"inference_images_per_second": len(x) / (time.perf_counter() - started)}

    return run


def gpu_run(
    name: str = "resnet50",
    *,
    input_size: int = 224,
    batch_size: int = 128,
    steps: int = 20,
    pairs: int = 3,
    peak_flops: float | None = None,
    baselines: Sequence[str] = ("keras_same",),
) -> dict[str, Any]:
    """The model comparison on a GPU, with mixed precision and XLA as `kcnn.train`'s
    "auto" resolves them, plus each side's fraction of the chip's peak.

    Args:
        name, input_size, batch_size, steps, pairs, baselines: as `compare_models` (default: keras.applications
            with kcnn's mixed precision).
        peak_flops: the device's peak FLOP/s; default from `PEAK_FLOPS` by device name.

    Returns:
        The `compare_models` result, which on a GPU holds `gpu`, `peak_flops`,
        `training_flops_per_image` and `chip_fraction` (per side, from the median
        training images/s); or `{"status": "skipped", "reason": ...}` without a GPU.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return {
            "benchmark": "gpu",
            "model": name,
            "status": "skipped",
            "reason": "no GPU found: tf.config.list_physical_devices('GPU') is empty",
            "machine": describe_machine(),
        }
    return compare_models(
        name, input_size=input_size, batch_size=batch_size, steps=steps, baselines=baselines, pairs=pairs, peak_flops=peak_flops
    ) | {"benchmark": "gpu"}
