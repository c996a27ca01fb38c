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
  same-named keras.applications model with plain `compile` + `fit` (float32 defaults,
  or kcnn's precision policy) and torchvision's at its best in its own process
  (`torch_baseline.py`): training and inference images/s, step time, peak memory.
* `time_to_accuracy`: wall time to 98.5% test accuracy on the digits, `kcnn train`'s
  recipe against a hand-written Keras LeNet-5 and a PyTorch one, each run a process
  of its own (`time_to_accuracy.py`, `torch_baseline.py lenet5`).
* `small_model`: LeNet-5 on the bundled digits, `kcnn.train.fit` against the
  hand-written Keras `Sequential` a student trains with `model.fit(x, y)`, per epoch.
* `pipeline`: images/s `kcnn.data` delivers from a folder of JPEGs against what a
  model consumes in training.
* `gpu_run`: the model comparison on a GPU with the fraction of the chip's peak
  reached (`chip_fraction`); reports that no GPU was found elsewhere.

Library code changes no process-wide state (thread pools, dtype policy, seeds); the
`benchmarks/bench.py` command may set thread counts.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
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
    "BASELINES",
    "KERAS_BASELINES",
    "PEAK_FLOPS",
    "MemoryPeak",
    "StepTimer",
    "TorchWorker",
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
    "time_to_accuracy",
    "to_markdown",
    "torch_python",
    "training_flops_per_image",
    "tta_summary",
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
    """Adds the load after the runs, the runs and, per baseline (every side but "kcnn")
    and quantity in `keys`, the ratio kcnn / baseline of each pair, inverted for
    quantities where less is better (all but rates, `*_per_second`), so that a ratio
    > 1 always favours kcnn: `result["ratios"][baseline][quantity]`."""
    ratios: dict[str, dict] = {}
    for side in runs:
        if side == "kcnn":
            continue
        ratios[side] = {}
        for key in keys:
            kcnn = [run.get(key) for run in runs["kcnn"]]
            baseline = [run.get(key) for run in runs[side]]
            if None in kcnn or None in baseline or not kcnn:
                continue
            if key.endswith("_per_second"):
                ratios[side][key] = ratio_summary(kcnn, baseline, ("kcnn", side))
                ratios[side][key]["ratio"] = f"kcnn / {side} (> 1: kcnn is faster)"
            else:  # seconds, CPU, memory
                ratios[side][key] = ratio_summary(baseline, kcnn, (side, "kcnn"))
                ratios[side][key]["ratio"] = f"{side} / kcnn (> 1: kcnn needs less)"
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
            self.log(f"{what}: kcnn {images_per_second:.4g}, {shown} img/s ({time.perf_counter() - started:.1f} s); load {_load()}")


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


#: The Python of a PyTorch environment for the torch baselines (see torch_baseline.py);
#: `--torch-python` or the KCNN_TORCH_PYTHON environment variable override it.
DEFAULT_TORCH_PYTHON = "/tmp/torchenv/bin/python"
TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_baseline.py")
TORCH_VENV_HELP = (
    "python3.11 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy"
)


def torch_python(path: str | None = None) -> tuple[str | None, str]:
    """The Python that runs the torch baselines, and if there is none, why.

    PyTorch runs in a process of its own (`torch_baseline.py`), never in this one: the
    baseline then has its process, its threads and its memory to itself, as a PyTorch
    user's script would.
    """
    path = path or os.environ.get("KCNN_TORCH_PYTHON") or DEFAULT_TORCH_PYTHON
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return None, f"PyTorch baseline skipped: no Python at {path} (build one: {TORCH_VENV_HELP}; or pass --torch-python)"
    return path, ""


class TorchWorker:
    """A long-lived `torch_baseline.py serve` process, asked for one measurement at a time
    (JSON lines), so the torch side alternates with kcnn's without a process start and a
    model build per measurement.

    Args:
        python: the Python of a PyTorch environment.
        script: the worker script (default `TORCH_SCRIPT`).
        timeout: seconds each answer may take; then the worker is killed.
    """

    def __init__(self, python: str, script: str = TORCH_SCRIPT, timeout: float = 900):
        import subprocess

        self.timeout = timeout
        self.process = subprocess.Popen(
            [python, script, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def ask(self, request: Mapping[str, Any]) -> dict:
        """Sends `request`, returns the answer; raises RuntimeError on an error answer,
        a dead worker or a timeout (the worker is then killed: SIGKILL)."""
        import select

        if self.process.poll() is not None:
            raise RuntimeError(f"The torch worker has exited (code {self.process.returncode}).")
        self.process.stdin.write(json.dumps(dict(request)) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.process.kill()  # stuck or dead: nothing more to ask it
            self.process.wait()
            why = f"no answer within {self.timeout:.0f} s" if not ready else "it exited"
            raise RuntimeError(f"The torch worker gave no answer to {request.get('op')!r}: {why}.")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"The torch worker failed on {request.get('op')!r}: {answer['error']}")
        return answer

    def close(self) -> int | None:
        """Asks the worker to quit; kills it if it has not within 10 s. Returns its exit code."""
        import subprocess

        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.process.stdin.write('{"op": "quit"}\n')
                self.process.stdin.flush()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


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
    x, y = _synthetic(batch_size * steps, input_shape, classes)
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

        result["load_average_before"] = _load()
        with _quiet():
            kcnn_skip = max(1, math.ceil(skip / steps_per_execution(model, config, steps)))
            runs, result["kcnn_fit_call"] = _interleaved_fit(model, data, config, others, pairs, kcnn_skip)
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
# Time to accuracy


HERE = os.path.dirname(os.path.abspath(__file__))
TTA_SIDES = ("kcnn", "keras", "torch")


def tta_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The times of one time-to-accuracy run from the timestamps its process printed.

    Returns:
        `time_to_target_seconds`: from the parent starting the process to the end of
        the first epoch whose test accuracy reached the target, the test evaluations
        before it left out (None when never reached); `training_seconds`: the same from
        when the side was ready (imports and data loaded); `startup_seconds`: process
        start, imports and data loading (`process_seconds` of it: from the process
        start to the first line of the script); `epochs`; `best_accuracy`.
    """
    epochs = report["epochs"]
    reached = next((i for i, e in enumerate(epochs) if e["test_accuracy"] >= report["target"]), None)
    startup = report["ready_at"] - report["started_at"]
    summary = {
        "startup_seconds": startup,
        "process_seconds": report["python_started_at"] - report["started_at"],
        "epochs": None if reached is None else epochs[reached]["epoch"],
        "best_accuracy": max((e["test_accuracy"] for e in epochs), default=None),
        "time_to_target_seconds": None,
        "training_seconds": None,
    }
    if reached is not None:
        evaluations = sum(e["eval_seconds"] for e in epochs[:reached])
        summary["time_to_target_seconds"] = epochs[reached]["end"] - report["started_at"] - evaluations
        summary["training_seconds"] = epochs[reached]["end"] - report["ready_at"] - evaluations
    return summary


def _tta_command(side: str, data_path: str, target: float, torch_python_path: str | None, max_epochs: int) -> list[str] | str:
    if side == "torch":
        python, reason = torch_python(torch_python_path)
        if python is None:
            return reason
        return [python, os.path.join(HERE, "torch_baseline.py"), "lenet5", "--data", data_path, "--target", str(target), "--max-epochs", str(max_epochs)]
    return [sys.executable, os.path.join(HERE, "time_to_accuracy.py"), side, "--data", data_path, "--target", str(target), "--max-epochs", str(max_epochs)]


def _run_side(command: Sequence[str], timeout: float) -> dict:
    """Runs one side's process (killed after `timeout` s) and reads its JSON report, the
    last line of its output; `started_at` is taken just before the process starts."""
    import subprocess

    started = time.time()
    completed = subprocess.run([*command, "--started-at", repr(started)], capture_output=True, text=True, timeout=timeout, check=False)
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"{command[1]} {command[2]} exited with {completed.returncode}: {completed.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def time_to_accuracy(
    *,
    target: float = 0.985,
    runs: int = 4,
    sides: Sequence[str] = TTA_SIDES,
    max_epochs: int = 60,
    timeout: float = 600,
    torch_python_path: str | None = None,
    run_side: Callable[[Sequence[str], float], dict] = _run_side,
) -> dict[str, Any]:
    """Wall time to `target` test accuracy on the digits (DAWNBench's measure), each run
    a fresh process, the sides alternating run by run: kcnn, keras, torch, kcnn, ...

    Every side trains on the digits' training split of `kcnn train` (seed 1337) and is
    scored on its test split (359 images) after every epoch; the scoring is left out
    of the times. Start-up (process start, imports, data loading) is reported apart
    and included in `time_to_target_seconds`; `training_seconds` leaves it out.

    Args:
        target: the test accuracy to reach.
        runs: runs per side.
        sides: from `TTA_SIDES`; "torch" is skipped without a PyTorch Python.
        max_epochs: the keras and torch sides stop there (kcnn's recipe has 30 epochs).
        timeout: seconds per run; the process is killed after.
        torch_python_path: the Python of the torch side (default `torch_python()`).
        run_side: runs a command and returns its report (tests pass a fake).
    """
    from kcnn import data as kdata

    unknown = [side for side in sides if side not in TTA_SIDES]
    if unknown or "kcnn" not in sides:
        raise ValueError(f"`sides` must include 'kcnn' and only name {list(TTA_SIDES)}. Received: sides={list(sides)!r}")
    plain = kdata.load("digits", image_size=32, channels=1, batch_size=256, seed=1337)
    x, y = kdata.as_numpy(plain.train)
    x_test, y_test = kdata.as_numpy(plain.test)
    result: dict[str, Any] = {
        "benchmark": "time_to_accuracy",
        "target": target,
        "runs_per_side": runs,
        "num_train": len(x),
        "num_test": len(x_test),
        "machine": describe_machine(),
        "skipped": {},
        "load_average_before": _load(),
    }
    with tempfile.TemporaryDirectory(prefix="kcnn-tta-") as folder:
        data_path = os.path.join(folder, "digits.npz")
        np.savez(data_path, x_train=x, y_train=y, x_test=x_test, y_test=y_test)
        commands = {}
        for side in sides:
            command = _tta_command(side, data_path, target, torch_python_path, max_epochs)
            if isinstance(command, str):
                result["skipped"][side] = command
            else:
                commands[side] = command
        reports: dict[str, list[dict]] = {side: [] for side in commands}

        def measure(side):
            def run():
                report = run_side(commands[side], timeout)
                reports[side].append(report)
                return tta_summary(report)

            return run

        measured = alternate({side: measure(side) for side in commands}, runs, warmup=False, log=_progress)
    result["what"] = {side: reports[side][0]["what"] for side in commands}
    result["reports"] = reports
    # Ratios of times need a time on both sides of every pair: a run that never
    # reached the target has none, and the ratio is left out (see `runs`).
    _record_runs(result, measured, ())
    for side in measured:
        if side == "kcnn":
            continue
        for key in ("time_to_target_seconds", "training_seconds", "startup_seconds"):
            pairs = [(a[key], b[key]) for a, b in zip(measured["kcnn"], measured[side], strict=True) if a[key] and b[key]]
            if pairs:
                result["ratios"][side][key] = ratio_summary([b for _, b in pairs], [a for a, _ in pairs], (side, "kcnn"))
                result["ratios"][side][key]["ratio"] = f"{side} / kcnn (> 1: kcnn is faster; 2: kcnn takes half the time)"
    result["status"] = "ok"
    return result


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


# ---------------------------------------------------------------------------
# Reporting


def to_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of the results' ratios: one row per benchmark, baseline and
    quantity; the B column names the baseline (see `BASELINES`)."""
    rows = ["| benchmark | quantity | A (median) | B (median) | A/B: median [min-max] | pairs |", "|---|---|---|---|---|---|"]
    for result in results:
        what = _title(result)
        if result.get("status") != "ok":
            rows.append(f"| {what} | - | - | - | {result.get('status')}: {result.get('reason', '')} | - |")
            continue
        for key, summary in _flat_ratios(result["ratios"]):
            if "median" not in summary:
                rows.append(f"| {what} | {key} | | | {summary['value']:.2f} ({summary.get('note', '')}) | 1 |")
                continue
            (name_a, a), (name_b, b) = summary["medians"].items()
            rows.append(
                f"| {what} | {key} | {name_a} {_fmt(key, a)} | {name_b} {_fmt(key, b)} | **{summary['median']:.2f}** "
                f"[{summary['min']:.2f}-{summary['max']:.2f}] | {len(summary['pairs'])} |"
            )
        for side, reason in result.get("skipped", {}).items():
            rows.append(f"| {what} | vs {side} | - | - | skipped: {reason} | - |")
        if result.get("chip_fraction"):
            fractions = ", ".join(f"{side} {value:.1%}" for side, value in result["chip_fraction"].items())
            rows.append(f"| {what} | fraction of {result['gpu']} peak | {fractions} | | | |")
    return "\n".join(rows)


def _flat_ratios(ratios: Mapping[str, Any]):
    """(quantity, summary) pairs of `ratios`, whether keyed by quantity or by baseline
    and quantity (`_record_runs`)."""
    for key, value in ratios.items():
        if "median" in value or "value" in value:
            yield key, value
        else:
            yield from value.items()


def _title(result: Mapping[str, Any]) -> str:
    kind = result.get("benchmark")
    if kind in ("model", "gpu"):
        if "input_size" not in result:
            return f"{result.get('model', '')} ({kind})"
        precision = result.get("device", {}).get("precision", "")
        return f"{result['model']} {result['input_size']}px b{result['batch_size']}: kcnn fit ({precision})"
    if kind == "small_model":
        config = result.get("config", {})
        spe = config.get("steps_per_execution", 1)
        if "steps_per_execution_resolved" in config and spe != config["steps_per_execution_resolved"]:
            spe = f"{spe}: {config['steps_per_execution_resolved']}"
        return f"lenet5 digits: kcnn fit (b{config.get('batch_size')}, spe {spe}, augment {config.get('augment')}) vs student fit (b32)"
    if kind == "time_to_accuracy":
        return f"lenet5 digits: time to {result['target']:.1%} test accuracy"
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
