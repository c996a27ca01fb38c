"""Throughput benchmarks: kcnn's trainer against a baseline, measured side by side.

Every figure is a ratio of two measurements taken alternately in one process
(A B A B ...), so that whatever else loads the machine loads both sides alike: each
result holds the per-pair values of both sides, their medians, and the ratio of each
pair with its median, minimum and maximum. Nothing here asserts a speed.

    import harness   # python benchmarks/bench.py ... runs these
    result = harness.compare_models("resnet50", input_size=64, batch_size=32, steps=12)
    result["ratios"]["train_images_per_second"]   # {"median": 1.2, "min": ..., "max": ..., ...}

The benchmarks:

* `compare_models`: a kcnn model trained through `kcnn.train.fit` against the
  same-named keras.applications model with plain `compile` + `fit` (or torchvision's,
  when PyTorch is installed): training and inference images/s, step time, peak memory.
* `small_model`: LeNet-5 on the bundled digits, `kcnn.train.fit` against the
  hand-written Keras `Sequential` a student trains with `model.fit(x, y)`.
* `pipeline`: images/s `kcnn.data` delivers from a folder of JPEGs against what a
  model consumes in training.
* `gpu_run`: the model comparison on a GPU with the fraction of the chip's peak
  reached (`chip_fraction`); reports that no GPU was found elsewhere.

Library code changes no process-wide state (thread pools, dtype policy, seeds); the
`benchmarks/bench.py` command may set thread counts.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "KERAS_BASELINES",
    "PEAK_FLOPS",
    "MemoryPeak",
    "StepTimer",
    "alternate",
    "chip_fraction",
    "compare_models",
    "describe_machine",
    "gpu_run",
    "peak_flops_for",
    "pipeline",
    "ratio_summary",
    "small_model",
    "student_lenet5",
    "to_markdown",
    "torch_available",
    "training_flops_per_image",
]

#: Dense bfloat16 (float16 where the chip has no bfloat16) tensor-core peak, FLOP/s,
#: of one device, from the vendors' data sheets (SXM parts). Matched as a substring of
#: the device name, longest key first ("H100" matches "NVIDIA H100 80GB HBM3").
PEAK_FLOPS: Mapping[str, float] = {
    "B200": 2250e12,
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "V100": 125e12,
    "T4": 65e12,
}

#: kcnn registry name -> the keras.applications constructor of the same network.
KERAS_BASELINES: Mapping[str, str] = {
    "resnet50": "ResNet50",
    "resnet101": "ResNet101",
    "resnet152": "ResNet152",
    "vgg16": "VGG16",
    "vgg19": "VGG19",
}

# ---------------------------------------------------------------------------
# Measuring


class StepTimer(keras.callbacks.Callback):
    """Records when each epoch begins and each training execution ends.

    With `steps_per_execution` k, Keras calls `on_train_batch_end` once per k steps
    with the index of the last step done, so the marks count steps either way.

    Attributes:
        epochs: `{epoch: (begin_time, [(last_step_index, end_time), ...])}`, times
            from `time.perf_counter`.
        cpu: `{epoch: (begin, [end, ...])}`, the same marks in this process's CPU
            seconds (`time.process_time`, all threads): unlike wall time, it barely
            moves when other processes take the cores.
    """

    def __init__(self):
        super().__init__()
        self.epochs: dict[int, tuple[float, list[tuple[int, float]]]] = {}
        self.cpu: dict[int, tuple[float, list[float]]] = {}
        self._current = None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch
        self.epochs[epoch] = (time.perf_counter(), [])
        self.cpu[epoch] = (time.process_time(), [])

    def on_train_batch_end(self, batch, logs=None):
        self.epochs[self._current][1].append((int(batch), time.perf_counter()))
        self.cpu[self._current][1].append(time.process_time())

    def steady_cpu(self, batch_size: int, skip: int = 1, epoch: int | None = None) -> float | None:
        """CPU milliseconds per image over the same steps as `steady_rate`."""
        epoch = min(self.epochs) if epoch is None else epoch
        if epoch not in self.cpu:
            return None
        begin, marks = self.cpu[epoch]
        steps = self.epochs[epoch][1]
        first_step, start = (steps[skip - 1][0], marks[skip - 1]) if skip else (-1, begin)
        return 1e3 * (marks[-1] - start) / ((steps[-1][0] - first_step) * batch_size)

    def epoch_cpu_seconds(self, skip: int = 1) -> list[float]:
        """CPU seconds of each epoch's training part, after the first `skip` epochs."""
        return [self.cpu[e][1][-1] - self.cpu[e][0] for i, e in enumerate(sorted(self.cpu)) if i >= skip and self.cpu[e][1]]

    def steady_rate(self, batch_size: int, skip: int = 1, epoch: int | None = None) -> tuple[float, float]:
        """Images/s and seconds per step over one epoch (default: the first), after
        `skip` executions.

        The first execution of a `fit` call traces the step function, and the first of
        each epoch starts an iterator; leave them out. Needs full batches only, i.e. a
        number of examples divisible by `batch_size`.
        """
        begin, marks = self.epochs[min(self.epochs) if epoch is None else epoch]
        if len(marks) <= skip:
            raise ValueError(f"Expected more than skip={skip} timed executions. Received: {len(marks)} (raise the steps)")
        first_step, start = marks[skip - 1] if skip else (-1, begin)
        last_step, end = marks[-1]
        steps = last_step - first_step
        return steps * batch_size / (end - start), (end - start) / steps

    def epoch_seconds(self, skip: int = 1) -> tuple[list[float], list[float]]:
        """Per epoch after the first `skip`: (training seconds, whole-epoch seconds).

        Training seconds run from the epoch's start to its last training step; the
        whole epoch runs to the next epoch's start (validation and every epoch-end
        callback included), so the last epoch has none.
        """
        order = sorted(self.epochs)
        train, whole = [], []
        for i, epoch in enumerate(order):
            if i < skip:
                continue
            begin, marks = self.epochs[epoch]
            if marks:
                train.append(marks[-1][1] - begin)
            if i + 1 < len(order):
                whole.append(self.epochs[order[i + 1]][0] - begin)
        return train, whole


class MemoryPeak:
    """Peak memory while the block runs: GPU bytes on a GPU, resident set size on CPU.

    The CPU figure samples the whole process's RSS (every `interval` seconds), so it
    includes everything else alive in the process, e.g. the other side's model.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_bytes: int | None = None
        self.kind = "gpu" if tf.config.list_physical_devices("GPU") else "rss"

    def __enter__(self):
        if self.kind == "gpu":
            tf.config.experimental.reset_memory_stats("GPU:0")
            return self
        self._stop = threading.Event()
        self.peak_bytes = _rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes or 0, _rss_bytes() or 0)

    def __exit__(self, *exc):
        if self.kind == "gpu":
            self.peak_bytes = int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes or 0, _rss_bytes() or 0) or None
        return False


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except ImportError:
            return None


def alternate(
    sides: Mapping[str, Callable[[], dict]], pairs: int, *, warmup: bool = True, log: Callable[[str], None] | None = None
) -> dict[str, list[dict]]:
    """Runs the sides alternately, A B A B ..., `pairs` times each.

    Args:
        sides: name -> callable returning one measurement (a dict of numbers).
        pairs: rounds; each side runs once per round, in the given order.
        warmup: run every side once first, unrecorded (tracing, caches).
        log: called with a line per measurement (progress).

    Returns:
        name -> the measurements in round order.
    """
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise ValueError(f"`pairs` must be a positive int. Received: pairs={pairs!r}")
    if warmup:
        for name, run in sides.items():
            started = time.perf_counter()
            run()
            if log:
                log(f"warm-up {name}: {time.perf_counter() - started:.1f} s")
    results = {name: [] for name in sides}
    for index in range(pairs):
        for name, run in sides.items():
            started = time.perf_counter()
            results[name].append(run())
            if log:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in results[name][-1].items() if isinstance(v, float))
                log(f"pair {index + 1}/{pairs} {name} ({time.perf_counter() - started:.1f} s): {shown}; load {_load()}")
    return results


def ratio_summary(
    numerator: Sequence[float], denominator: Sequence[float], names: tuple[str, str] = ("numerator", "denominator")
) -> dict[str, Any]:
    """The ratio of each pair (numerator[i] / denominator[i]) with its median, min and
    max, and the median of each side (under `names`)."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(
            f"Expected two equally long, non-empty lists of paired values. Received: {len(numerator)} and {len(denominator)}"
        )
    ratios = [a / b if b else math.inf for a, b in zip(numerator, denominator, strict=True)]
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "pairs": ratios,
        "medians": {names[0]: statistics.median(numerator), names[1]: statistics.median(denominator)},
    }


def _record_runs(result: dict, runs: Mapping[str, list[dict]], keys: Sequence[str]) -> None:
    """Adds the load after the runs, the runs and, per quantity in `keys`, the ratio
    kcnn / baseline of each pair, inverted for quantities where less is better (all
    but rates, `*_per_second`), so that a ratio > 1 always favours kcnn."""
    ratios = {}
    for key in keys:
        kcnn = [run.get(key) for run in runs["kcnn"]]
        baseline = [run.get(key) for run in runs["baseline"]]
        if None in kcnn or None in baseline or not kcnn:
            continue
        if key.endswith("_per_second"):
            ratios[key] = ratio_summary(kcnn, baseline, ("kcnn", "baseline"))
            ratios[key]["ratio"] = "kcnn / baseline (> 1: kcnn is faster)"
        else:  # seconds, CPU, memory
            ratios[key] = ratio_summary(baseline, kcnn, ("baseline", "kcnn"))
            ratios[key]["ratio"] = "baseline / kcnn (> 1: kcnn needs less)"
    result["load_average_after"] = _load()
    result["runs"] = runs
    result["ratios"] = ratios


def describe_machine() -> dict[str, Any]:
    """CPU, cores, memory, accelerators, load and library versions, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append({"name": details.get("device_name", gpu.name), "compute_capability": details.get("compute_capability")})
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "gpus": gpus,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "load_average": _load(),
    }


def _load():
    with contextlib.suppress(OSError, AttributeError):
        return [round(v, 2) for v in os.getloadavg()]
    return None


# ---------------------------------------------------------------------------
# FLOPs and the chip's peak


def training_flops_per_image(macs: float) -> float:
    """FLOPs of one training step per image: forward + two backward passes (x 3),
    two FLOPs per multiply-add (x 2)."""
    return float(macs) * 3 * 2


def chip_fraction(images_per_second: float, macs: float, peak_flops: float) -> float:
    """The fraction of the chip's peak a training run reaches:
    images/s x MACs x 3 x 2 / peak FLOP/s."""
    if not peak_flops or peak_flops <= 0:
        raise ValueError(f"`peak_flops` must be a positive number of FLOP/s. Received: peak_flops={peak_flops!r}")
    return images_per_second * training_flops_per_image(macs) / peak_flops


def peak_flops_for(device_name: str, table: Mapping[str, float] = PEAK_FLOPS) -> float | None:
    """The peak FLOP/s of the device whose name contains a key of `table` (the longest
    matching key wins), or None."""
    name = device_name.upper()
    for key in sorted(table, key=len, reverse=True):
        if key.upper() in name:
            return table[key]
    return None


# ---------------------------------------------------------------------------
# Training and inference sides


def _synthetic(num: int, input_shape, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (num, *input_shape), dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    y = rng.integers(0, classes, num).astype(np.int32)
    return x, y


def _progress(line: str) -> None:
    """Progress on stderr (stdout may be swallowed, see `_quiet`)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _quiet():
    """Swallows stdout (Keras progress bars) without changing what runs."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


class _Interleave(keras.callbacks.Callback):
    """Makes one `kcnn.train.fit` call serve every pair: after each kcnn epoch (one
    measurement) the other side takes its measurement, so the run goes
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
            self.log(
                f"{what}: kcnn {images_per_second:.4g} img/s, baseline {self.others[-1]['train_images_per_second']:.4g} img/s "
                f"({time.perf_counter() - started:.1f} s); load {_load()}"
            )


def _interleaved_fit(model, data, config, other: Callable[[], dict], pairs: int, skip: int) -> tuple[dict, dict]:
    """kcnn's side through `kcnn.train.fit` (epochs = pairs + 1, the first a warm-up)
    with `other` measured after each epoch; returns both sides' runs and the fit call's
    timing."""
    import dataclasses

    from kcnn import train

    timer = StepTimer()
    interleave = _Interleave(timer, other, config.batch_size, skip, _progress)
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
        "other_side_seconds": sum(r.get("fit_call_seconds", 0.0) for r in interleave.others),
    }
    return {"kcnn": interleave.mine[1:], "baseline": interleave.others[1:]}, timing


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


def _keras_inference_side(model: keras.Model, x, batch_size: int) -> Callable[[], dict]:
    def run():
        model.predict(x[:batch_size], batch_size=batch_size, verbose=0)  # (re)trace after a recompile
        started = time.perf_counter()
        model.predict(x, batch_size=batch_size, verbose=0)
        return {"inference_images_per_second": len(x) / (time.perf_counter() - started)}

    return run


def torch_available() -> tuple[bool, str]:
    """Whether PyTorch and torchvision can be used here, and if not, why.

    torchvision must be imported before TensorFlow: imported after TensorFlow 2.21,
    torchvision 0.29 (CUDA build, with torch 2.14) crashes the process with a
    segmentation fault while loading its operators. So once TensorFlow is loaded
    and torchvision is not, this reports the baseline as unavailable instead of
    importing it; `benchmarks/bench.py --baseline torch` imports torchvision first.
    """
    import importlib.util
    import sys

    missing = [name for name in ("torch", "torchvision") if importlib.util.find_spec(name) is None]
    if missing:
        return False, (
            f"PyTorch baseline skipped: {' and '.join(missing)} not installed "
            "(pip install torch torchvision; an optional extra, not a kcnn dependency)"
        )
    if "tensorflow" in sys.modules and "torchvision" not in sys.modules:
        return False, (
            "PyTorch baseline skipped: torchvision was not imported before TensorFlow, and importing it after "
            "TensorFlow crashes the process; import torchvision first, or run `python benchmarks/bench.py --baseline torch`"
        )
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as error:
        return False, f"PyTorch baseline skipped: {error} (an optional extra, not a kcnn dependency)"
    return True, ""


def _torch_sides(name: str, x, y, classes: int, batch_size: int, *, skip: int) -> tuple[Callable, Callable]:
    """Training and inference measurements of torchvision's model `name` on the same
    data (NCHW), with Adam and cross-entropy: the PyTorch counterpart of plain `fit`."""
    import torch
    import torchvision

    if not hasattr(torchvision.models, name):
        raise ValueError(f"torchvision has no model {name!r}. Received: model={name!r}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = getattr(torchvision.models, name)(num_classes=classes).to(device)
    if name == "googlenet":
        model.aux_logits = False
    optimizer = torch.optim.Adam(model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    labels = torch.from_numpy(y.astype(np.int64))
    batches = [(images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(x) - batch_size + 1, batch_size)]

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def train():
        model.train()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        marks, cpu = [], []
        with MemoryPeak() if device == "cpu" else contextlib.nullcontext() as memory:
            start = time.perf_counter()
            for xb, yb in batches:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()
                optimizer.step()
                sync()
                marks.append(time.perf_counter())
                cpu.append(time.process_time())
        peak = torch.cuda.max_memory_allocated() if device == "cuda" else memory.peak_bytes
        marks = [start, *marks]
        if len(marks) <= skip + 1:
            raise ValueError(f"Expected more than skip={skip} timed steps. Received: {len(marks) - 1} (raise --steps)")
        seconds = marks[-1] - marks[skip]
        steps = len(marks) - 1 - skip
        return {
            "train_images_per_second": steps * batch_size / seconds,
            "step_seconds": seconds / steps,
            "train_cpu_ms_per_image": 1e3 * (cpu[-1] - cpu[skip - 1]) / (steps * batch_size) if skip else None,
            "peak_memory_bytes": peak,
            "fit_call_seconds": marks[-1] - start,
        }

    def infer():
        model.eval()
        with torch.inference_mode():
            model(batches[0][0].to(device))
            sync()
            start = time.perf_counter()
            for xb, _ in batches:
                model(xb.to(device))
            sync()
        return {"inference_images_per_second": len(batches) * batch_size / (time.perf_counter() - start)}

    return train, infer


def compare_models(
    name: str,
    *,
    input_size: int | None = None,
    batch_size: int = 32,
    steps: int = 12,
    baseline: str = "keras",
    pairs: int = 3,
    classes: int = 10,
    config: Any = None,
    skip: int = 2,
    reference: Callable[[tuple[int, int, int], int], keras.Model] | None = None,
    peak_flops: float | None = None,
) -> dict[str, Any]:
    """kcnn's `name` trained through `kcnn.train.fit` against the baseline's, alternately.

    Both sides train on the same synthetic images (`batch_size * steps` of them,
    `input_size` square, RGB) for one epoch per measurement; the first `skip` steps
    of each epoch (tracing, start-up) are left out of the rates. Inference is
    `model.predict` on the same images (PyTorch: a `no_grad` loop).

    Args:
        name: a registered model; with `baseline="keras"` one of `KERAS_BASELINES`.
        input_size: square input size; default the model's own.
        batch_size: batch size of both sides.
        steps: training steps per measurement.
        baseline: "keras" (keras.applications + plain `compile` + `fit`) or "torch"
            (torchvision's model of the same name; skipped when not installed).
        pairs: A B rounds after one warm-up round.
        classes: number of classes of both models.
        config: the `kcnn.train.TrainConfig` (default: the trainer's defaults with
            `epochs=1`, this batch size, no augmentation and one step per call).
        skip: leading steps (kcnn: executions) left out of each measurement.
        reference: with `baseline="keras"`, builds the baseline from
            `(input_shape, classes)` instead of keras.applications (for other
            baselines, and small tests).
        peak_flops: on a GPU, the device's peak FLOP/s for `chip_fraction`
            (default: `PEAK_FLOPS` by device name).

    Returns:
        A JSON-serializable dict: settings, machine, each side's measurements per
        pair, and `ratios` (kcnn / baseline; > 1 means kcnn is faster).
    """
    from kcnn import data as kdata
    from kcnn import registry, shapes
    from kcnn import train as ktrain
    from kcnn.train.compile import steps_per_execution
    from kcnn.train.distribute import resolve_device

    if baseline not in ("keras", "torch"):
        raise ValueError(f"`baseline` must be 'keras' or 'torch'. Received: baseline={baseline!r}")
    if baseline == "keras" and reference is None and name not in KERAS_BASELINES:
        raise ValueError(
            f"keras.applications has no counterpart of {name!r}; with baseline='keras' choose one of "
            f"{sorted(KERAS_BASELINES)} (lenet5 has its own benchmark, `small_model`). Received: name={name!r}"
        )
    for arg, value in (("batch_size", batch_size), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{arg}` must be a positive int. Received: {arg}={value!r}")
    if steps <= skip:
        raise ValueError(f"`steps` must exceed the {skip} warm-up steps left out of each measurement. Received: steps={steps}")
    spec = registry.get_spec(name)
    size = input_size or spec.default_input_shape[0]
    input_shape = (size, size, 3)
    # One step per call, as the baseline's fit: the measurement times steps (and
    # "auto" gives 1 anyway for models of keras.applications' size).
    config = config or ktrain.TrainConfig(epochs=1, batch_size=batch_size, augment=None, steps_per_execution=1)
    if config.batch_size != batch_size:
        raise ValueError(f"`config.batch_size` must equal `batch_size`. Received: {config.batch_size} and {batch_size}")
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
        "device": resolve_device(config).to_dict(),
        "machine": describe_machine(),
    }
    if baseline == "torch":
        ok, reason = torch_available()
        if not ok:
            return {**result, "baseline": "torchvision", "status": "skipped", "reason": reason}
    x, y = _synthetic(batch_size * steps, input_shape, classes)
    # The same images on both sides: kcnn.data stores them as uint8 and divides by 255.
    data = kdata.load((x, y), batch_size=batch_size, validation_split=0, test_split=0, normalize="unit", seed=config.seed)
    model = spec.build(input_shape=input_shape, classes=classes)
    result["macs_per_image"] = shapes.count_macs(model)
    infer = {"kcnn": _keras_inference_side(model, x, batch_size)}
    if baseline == "keras":
        if reference is None:
            constructor = KERAS_BASELINES[name]
            other = getattr(keras.applications, constructor)(weights=None, input_shape=input_shape, classes=classes)
            result["baseline"] = f"keras.applications.{constructor} + compile('adam') + fit(x, y)"
        else:
            other = reference(input_shape, classes)
            result["baseline"] = f"{other.name} + compile('adam') + fit(x, y)"
        other.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        train_other = _keras_train_side(other, x, y, batch_size, skip=skip)
        infer["baseline"] = _keras_inference_side(other, x, batch_size)
    else:
        import torch

        train_other, infer["baseline"] = _torch_sides(name, x, y, classes, batch_size, skip=skip)
        result["baseline"] = f"torchvision.models.{name} (torch {torch.__version__}) + Adam loop"
    result["load_average_before"] = _load()
    with _quiet():
        kcnn_skip = max(1, math.ceil(skip / steps_per_execution(model, config, steps)))
        runs, result["kcnn_fit_call"] = _interleaved_fit(model, data, config, train_other, pairs, kcnn_skip)
        inference = alternate(infer, pairs, log=_progress)
    for side in runs:
        for run, more in zip(runs[side], inference[side], strict=True):
            run.update(more)
    _record_runs(
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


# ---------------------------------------------------------------------------
# The small-model path


def student_lenet5(input_shape=(32, 32, 1), classes: int = 10) -> keras.Model:
    """LeNet-5 as a student writes it: a `Sequential` compiled with Adam and the
    sparse cross-entropy, trained with `model.fit(x, y)` defaults."""
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(6, 5, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(16, 5, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(120, activation="relu"),
            layers.Dense(84, activation="relu"),
            layers.Dense(classes, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def small_model(*, epochs: int = 4, pairs: int = 3, config: Any = None, data: Any = "digits") -> dict[str, Any]:
    """LeNet-5 on the digits: `kcnn.train.fit` against the student's `model.fit(x, y)`.

    Each measurement trains a fresh model for `epochs` epochs (both sides, default
    verbosity with the progress bar swallowed); the first epoch (tracing) is left out.
    "train" epoch seconds run to the last training step; "whole" epoch seconds include
    what the trainer does at the end of an epoch (validation, checkpoint, logs). The
    student trains on the same training images, as NumPy arrays. Test accuracy of the
    last model of each side is reported alongside.

    Args:
        epochs: epochs per measurement (at least 3: one warm-up, two timed).
        pairs: A B rounds (no extra warm-up: every measurement builds and traces anew).
        config: the `kcnn.train.TrainConfig`; default `TrainConfig(epochs=epochs)`.
        data: the source, loaded by `kcnn.train.fit` as `kcnn train` would.
    """
    from kcnn import data as kdata
    from kcnn import train as ktrain
    from kcnn.train.inputs import load_data

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 3:
        raise ValueError(f"`epochs` must be an int >= 3 (one warm-up and two timed epochs). Received: epochs={epochs!r}")
    config = config or ktrain.TrainConfig(epochs=epochs)
    if config.epochs != epochs:
        raise ValueError(f"`config.epochs` must equal `epochs`. Received: {config.epochs} and {epochs}")
    loaded = load_data(data, config, input_shape=(32, 32, 1))
    plain = kdata.load(data, image_size=32, channels=1, batch_size=256, seed=config.seed)
    x, y = kdata.as_numpy(plain.train)
    x_test, y_test = kdata.as_numpy(plain.test)
    last = {}

    def kcnn_side():
        timer = StepTimer()
        folder = tempfile.mkdtemp(prefix="kcnn-bench-")
        try:
            started = time.perf_counter()
            result = ktrain.fit("lenet5", loaded, config, output=os.path.join(folder, "run"), callbacks=[timer])
            wall = time.perf_counter() - started
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        last["kcnn"] = result.model
        last["steps_per_execution"] = result.metadata["steps_per_execution"]["0"]
        return _epoch_measurement(timer, len(x), wall)

    def student_side():
        timer = StepTimer()
        model = student_lenet5(classes=plain.num_classes)
        started = time.perf_counter()
        model.fit(x, y, epochs=epochs, callbacks=[timer])
        wall = time.perf_counter() - started
        last["student"] = model
        return _epoch_measurement(timer, len(x), wall)

    result: dict[str, Any] = {
        "benchmark": "small_model",
        "model": "lenet5",
        "data": str(data),
        "num_train": len(x),
        "epochs": epochs,
        "pairs": pairs,
        "config": config.to_dict(),
        "baseline": "keras.Sequential LeNet-5 + compile('adam') + fit(x, y) defaults (batch 32)",
        "machine": describe_machine(),
        "load_average_before": _load(),
    }
    with _quiet():
        runs = alternate({"kcnn": kcnn_side, "baseline": student_side}, pairs, warmup=False, log=_progress)
    _record_runs(
        result,
        runs,
        ("epoch_train_seconds", "epoch_train_cpu_seconds", "epoch_whole_seconds", "train_images_per_second", "fit_call_seconds"),
    )
    result["config"]["steps_per_execution_resolved"] = last["steps_per_execution"]
    result["test_accuracy"] = {
        "kcnn": float(np.mean(np.argmax(last["kcnn"].predict(x_test, verbose=0), 1) == y_test)),
        "baseline": float(np.mean(np.argmax(last["student"].predict(x_test, verbose=0), 1) == y_test)),
    }
    result["status"] = "ok"
    return result


def _epoch_measurement(timer: StepTimer, num_train: int, wall: float) -> dict:
    train, whole = timer.epoch_seconds(skip=1)
    cpu = timer.epoch_cpu_seconds(skip=1)
    return {
        "epoch_train_seconds": statistics.median(train),
        "epoch_train_cpu_seconds": statistics.median(cpu) if cpu else None,
        "epoch_whole_seconds": statistics.median(whole) if whole else None,
        "train_images_per_second": num_train / statistics.median(train),
        "fit_call_seconds": wall,
    }


# ---------------------------------------------------------------------------
# The input pipeline


def write_jpeg_folder(folder: str | os.PathLike, *, num_images: int = 256, size: int = 64, classes: int = 4, seed: int = 0) -> str:
    """Writes `num_images` synthetic JPEGs (smooth gradients plus noise, quality 90)
    into `classes` class sub-folders, for pipeline benchmarks without a dataset."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    for i in range(num_images):
        label = i % classes
        os.makedirs(os.path.join(folder, f"class{label}"), exist_ok=True)
        a, b, c = rng.random(3)
        image = np.stack([np.add.outer(a * ramp, b * ramp), np.add.outer(c * ramp, a * ramp), np.add.outer(b * ramp, c * ramp)], -1)
        image = np.clip(image * 127 + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(folder, f"class{label}", f"{i:05d}.jpg"), quality=90)
    return os.fspath(folder)


def pipeline(
    folder: str | os.PathLike | None = None,
    *,
    consumer: str = "resnet18",
    input_size: int = 32,
    batch_size: int = 128,
    steps: int = 8,
    pairs: int = 3,
    num_images: int = 2048,
    jpeg_size: int | None = None,
    augment: str = "flip",
    model_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What `kcnn.data` delivers from a folder of JPEGs against what a model consumes.

    Measured alternately: (A) one epoch of the training pipeline (the decoded images
    are held in memory by `kcnn.data`; every epoch gathers, augments and normalizes)
    and (B) the consumer's training steps, compiled by `kcnn.train.compile_model`, fed
    one constant in-memory batch so the pipeline costs it nothing. Decoding and
    resizing (once per `load`) are timed separately. Finally the consumer trains
    through `model.fit` on the real pipeline and on the constant batch, alternately:
    their ratio is what the pipeline costs training when both share the CPU.

    Args:
        folder: a folder of class sub-folders of images; default synthetic JPEGs of
            `jpeg_size` (default: 1.25 x `input_size`, so every image is resized).
        consumer: the registered model that consumes the images.
        input_size: the square image size both use.
        batch_size: batch size of both.
        steps: consumer training steps per measurement (after one untimed step).
        pairs: A B rounds after a warm-up round.
        num_images: synthetic images to write when `folder` is None.
        augment: the pipeline's augmentation.
        model_kwargs: builder arguments of the consumer.
    """
    from kcnn import data as kdata
    from kcnn import registry
    from kcnn import train as ktrain

    owned = None
    if folder is None:
        owned = tempfile.mkdtemp(prefix="kcnn-bench-jpegs-")
        folder = write_jpeg_folder(owned, num_images=num_images, size=jpeg_size or max(8, round(input_size * 1.25)))
    try:
        started = time.perf_counter()
        data = kdata.load(folder, image_size=input_size, channels=3, batch_size=batch_size, augment=augment, validation_split=0, test_split=0)
        decode_seconds = time.perf_counter() - started
    finally:
        if owned:
            shutil.rmtree(owned, ignore_errors=True)
    config = ktrain.TrainConfig(epochs=1, batch_size=batch_size, steps_per_execution=1)  # steps are timed
    model = registry.get_spec(consumer).build(input_shape=(input_size, input_size, 3), classes=data.num_classes, **dict(model_kwargs or {}))
    ktrain.compile_model(model, config, steps_per_epoch=steps + 1)
    xb, yb = next(iter(data.train))
    constant = tf.data.Dataset.from_tensors((xb, yb)).repeat(steps + 1)

    def deliver():
        count = 0
        started = time.perf_counter()
        for images, _ in data.train:
            count += int(images.shape[0])
        return {"images_per_second": count / (time.perf_counter() - started)}

    def consume(dataset):
        def run():
            timer = StepTimer()
            model.fit(dataset, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
            images_per_second, step = timer.steady_rate(batch_size, skip=1)
            return {"images_per_second": images_per_second, "step_seconds": step}

        return run

    real = data.train.repeat()

    def consume_real():
        timer = StepTimer()
        model.fit(real, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[timer], shuffle=False)
        images_per_second, step = timer.steady_rate(batch_size, skip=1)
        return {"images_per_second": images_per_second, "step_seconds": step}

    result: dict[str, Any] = {
        "benchmark": "pipeline",
        "source": "synthetic JPEGs" if owned else os.fspath(folder),
        "num_images": data.num_train,
        "consumer": consumer,
        "model_kwargs": dict(model_kwargs or {}),
        "input_size": input_size,
        "batch_size": batch_size,
        "augment": augment,
        "steps": steps,
        "pairs": pairs,
        "decode_images_per_second": data.num_train / decode_seconds,
        "machine": describe_machine(),
        "load_average_before": _load(),
    }
    runs = alternate({"pipeline": deliver, "consumer": consume(constant)}, pairs, log=_progress)
    fed = alternate({"real_pipeline": consume_real, "constant_batch": consume(constant)}, pairs, warmup=False, log=_progress)
    result["load_average_after"] = _load()
    result["runs"] = {**runs, **fed}
    result["ratios"] = {
        "pipeline_over_consumption": ratio_summary(
            [r["images_per_second"] for r in runs["pipeline"]],
            [r["images_per_second"] for r in runs["consumer"]],
            ("pipeline", "consumer"),
        ),
        "decode_over_consumption": {
            "value": result["decode_images_per_second"] / statistics.median(r["images_per_second"] for r in runs["consumer"]),
            "note": "decoding happens once per kcnn.data.load; later epochs read the decoded images from memory",
        },
        "training_with_pipeline_over_constant_batch": ratio_summary(
            [r["images_per_second"] for r in fed["real_pipeline"]],
            [r["images_per_second"] for r in fed["constant_batch"]],
            ("real_pipeline", "constant_batch"),
        ),
    }
    result["status"] = "ok"
    return result


# ---------------------------------------------------------------------------
# The GPU run


def gpu_run(
    name: str = "resnet50",
    *,
    input_size: int = 224,
    batch_size: int = 128,
    steps: int = 20,
    pairs: int = 3,
    peak_flops: float | None = None,
    baseline: str = "keras",
) -> dict[str, Any]:
    """The model comparison on a GPU, with mixed precision and XLA as `kcnn.train`'s
    "auto" resolves them, plus each side's fraction of the chip's peak.

    Args:
        name, input_size, batch_size, steps, pairs, baseline: as `compare_models`.
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
        name, input_size=input_size, batch_size=batch_size, steps=steps, baseline=baseline, pairs=pairs, peak_flops=peak_flops
    ) | {"benchmark": "gpu"}


# ---------------------------------------------------------------------------
# Reporting


def to_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of the results' ratios: one row per benchmark and quantity."""
    rows = ["| benchmark | quantity | A (median) | B (median) | A/B: median [min-max] | pairs |", "|---|---|---|---|---|---|"]
    for result in results:
        what = _title(result)
        if result.get("status") != "ok":
            rows.append(f"| {what} | - | - | - | {result.get('status')}: {result.get('reason', '')} | - |")
            continue
        for key, summary in result["ratios"].items():
            if "median" not in summary:
                rows.append(f"| {what} | {key} | | | {summary['value']:.2f} ({summary.get('note', '')}) | 1 |")
                continue
            (name_a, a), (name_b, b) = summary["medians"].items()
            rows.append(
                f"| {what} | {key} | {name_a} {_fmt(key, a)} | {name_b} {_fmt(key, b)} | **{summary['median']:.2f}** "
                f"[{summary['min']:.2f}-{summary['max']:.2f}] | {len(summary['pairs'])} |"
            )
        if result.get("chip_fraction"):
            fractions = ", ".join(f"{side} {value:.1%}" for side, value in result["chip_fraction"].items())
            rows.append(f"| {what} | fraction of {result['gpu']} peak | {fractions} | | | |")
    return "\n".join(rows)


def _title(result: Mapping[str, Any]) -> str:
    kind = result.get("benchmark")
    if kind in ("model", "gpu"):
        if "input_size" not in result:
            return f"{result.get('model', '')} ({kind})"
        baseline = str(result.get("baseline", "")).split(" + ")[0]
        return f"{result['model']} {result['input_size']}px b{result['batch_size']}: kcnn fit vs {baseline} fit"
    if kind == "small_model":
        config = result.get("config", {})
        spe = config.get("steps_per_execution", 1)
        if "steps_per_execution_resolved" in config and spe != config["steps_per_execution_resolved"]:
            spe = f"{spe}: {config['steps_per_execution_resolved']}"
        return f"lenet5 digits: kcnn fit (b{config.get('batch_size')}, spe {spe}, augment {config.get('augment')}) vs student fit (b32)"
    if kind == "pipeline":
        return f"kcnn.data JPEG folder ({result['augment']}) -> {result['consumer']} {result['input_size']}px b{result['batch_size']}"
    return str(kind)


def _fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if key.endswith("bytes"):
        return f"{value / 2**20:.0f} MiB"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"
