"""Measuring: timers, peak memory, A B A B alternation, ratios of paired
measurements, the machine's description, and the FLOPs a training step costs."""

from __future__ import annotations

import contextlib
import io
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

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
                log(f"pair {index + 1}/{pairs} {name} ({time.perf_counter() - started:.1f} s): {shown}; load {load_average()}")
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


def record_runs(result: dict, runs: Mapping[str, list[dict]], keys: Sequence[str]) -> None:
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
    result["load_average_after"] = load_average()
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
        "load_average": load_average(),
    }


def load_average():
    with contextlib.suppress(OSError, AttributeError):
        return [round(v, 2) for v in os.getloadavg()]
    return None


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


def synthetic_images(num: int, input_shape, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (num, *input_shape), dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    y = rng.integers(0, classes, num).astype(np.int32)
    return x, y


def progress(line: str) -> None:
    """Progress on stderr (stdout may be swallowed, see `quiet`)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet():
    """Swallows stdout (Keras progress bars) without changing what runs."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
