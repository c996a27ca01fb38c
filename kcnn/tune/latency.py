"""Measured latency: what a deployer pays for a model on their device, where MACs and
parameters are proxies (issue 30).

`measure_latency` times the model's inference path, the one `kcnn.train.predict` runs
(`kcnn.train.inference_model`: the precision "auto" resolves to on this machine, batch
normalization folded into the convolutions in reduced precision), called through one
traced function on a fixed random batch: warm-up calls first (the first one traces),
then `repeats` timed calls with `time.perf_counter`. The figure is their median, and
its spread the interquartile range (the middle half of the runs): on a busy machine a
few runs take several times the others, which the median and the IQR ignore and a mean
and a standard deviation would not.

A search measures each configuration once and keeps the figures in its project
(`LatencyCache`, `<project>/latency.json`), so that a resumed search, or a configuration
proposed again (Hyperband's later rounds), is not timed again.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from kcnn._files import CorruptFileError, read_json, write_json

__all__ = ["CACHE_FILE", "Latency", "LatencyCache", "LatencyMeter", "configuration_key", "device_name", "measure_latency"]

#: The project file of a search's measured latencies.
CACHE_FILE = "latency.json"
#: Version of the cache file's layout: a file of another version is measured anew.
CACHE_VERSION = 1
#: Untimed calls before the timed ones: the first traces the function; the next ones
#: let oneDNN pick its kernels and the allocator reach its steady state. With 1, the
#: first model timed in a process measured 1.5-4x its later figure on 2 busy EPYC
#: cores; with 5, within the run-to-run spread.
WARMUP = 5
#: Timed calls: a quartile of 20 runs rests on 5 of them.
REPEATS = 20


@dataclasses.dataclass(frozen=True)
class Latency:
    """The latency of a model's inference path on this machine.

    Attributes:
        median_ms: the median of the timed runs, in milliseconds per batch.
        spread_ms: their interquartile range (third quartile minus first), in
            milliseconds; 0 with fewer than 2 runs.
        repeats: the timed runs.
        batch_size: images per call.
        precision: the dtype policy the model computed in ("float32",
            "mixed_bfloat16", ...), what "auto" resolved to.
    """

    median_ms: float
    spread_ms: float
    repeats: int
    batch_size: int
    precision: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Latency:
        """A `Latency` from `to_dict`'s output; ValueError for anything else."""
        names = [field.name for field in dataclasses.fields(cls)]
        if not isinstance(value, Mapping) or sorted(value) != sorted(names):
            raise ValueError(f"Expected a latency with the keys {names}. Received: {value!r}")
        latency = cls(
            median_ms=float(value["median_ms"]),
            spread_ms=float(value["spread_ms"]),
            repeats=int(value["repeats"]),
            batch_size=int(value["batch_size"]),
            precision=str(value["precision"]),
        )
        if not (latency.median_ms > 0 and latency.spread_ms >= 0 and latency.repeats >= 1 and latency.batch_size >= 1):
            raise ValueError(f"Expected a positive median, spread, repeats and batch size. Received: {value!r}")
        return latency


def measure_latency(model, *, batch_size: int = 1, warmup: int = WARMUP, repeats: int = REPEATS, precision: str = "auto") -> Latency:
    """Times `model`'s inference path (`kcnn.train.inference_model(model, precision)`)
    on a fixed random batch: `warmup` untimed calls, then the median and interquartile
    range of `repeats` timed ones (see the module's docstring).

    Each call ends when its outputs are on the host (`.numpy()`): on a GPU, whose calls
    return before the work is done, this times the work and the copy of the outputs
    (a few bytes per image for a classifier).

    Args:
        model: a functional Keras model of one input of known size.
        batch_size: images per call (1: the latency of one image).
        warmup: untimed calls first, at least 1 (the first traces the function).
        repeats: timed calls.
        precision: as `TrainConfig.mixed_precision`; "auto" picks what
            `kcnn.train.predict` computes in on this machine.
    """
    import tensorflow as tf

    from kcnn.train import distribute, inference

    for name, value, minimum in (("batch_size", batch_size, 1), ("warmup", warmup, 1), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")
    batch = tf.constant(_random_batch(model, batch_size))
    resolved = distribute.resolve_precision(precision, model)
    runner = inference.inference_model(model, precision)
    # One traced function, as `predict_on_batch` runs, without Keras' per-call
    # conversions from and to NumPy, which would be timed with the model.
    call = tf.function(lambda images: runner(images, training=False))
    for _ in range(warmup):
        _wait(call(batch))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _wait(call(batch))
        times.append(1000 * (time.perf_counter() - start))
    return Latency(
        median_ms=statistics.median(times),
        spread_ms=_interquartile_range(times),
        repeats=repeats,
        batch_size=batch_size,
        precision=resolved,
    )


def _random_batch(model, batch_size: int) -> np.ndarray:
    """A fixed batch of standard normal images of the model's input size: the timing
    of a convolutional net does not depend on the pixels."""
    if len(model.inputs) != 1:
        raise ValueError(f"Expected a model of one input. Received: a model of {len(model.inputs)} inputs")
    shape = tuple(model.inputs[0].shape[1:])
    if any(size is None for size in shape):
        raise ValueError(f"Expected a model whose input size is known, to time it on. Received: input shape {shape}")
    images = np.random.default_rng(0).standard_normal((batch_size, *shape))
    return images.astype(model.inputs[0].dtype or "float32")


def _wait(outputs) -> None:
    import tensorflow as tf

    for tensor in tf.nest.flatten(outputs):
        tensor.numpy()


def _interquartile_range(times) -> float:
    if len(times) < 2:
        return 0.0
    first, _, third = statistics.quantiles(times, n=4, method="inclusive")
    return third - first


def device_name() -> str:
    """What runs the model: the first GPU's name, or the CPU's model name, which a
    cached latency is keyed by (a project moved to another machine measures anew)."""
    import tensorflow as tf

    from kcnn import _cpu

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return "GPU " + str(tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name))
    return "CPU " + (_cpu.cpu_model() or "unknown")


def configuration_key(**facts) -> str:
    """The cache key of `facts` (the builder's arguments, input shape, batch size,
    precision, device): canonical JSON, the same for the same facts in any order."""
    return json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)


class LatencyCache:
    """Measured latencies by configuration key, kept in a JSON file (`CACHE_FILE` in a
    search's project) rewritten atomically at every new figure, so a search killed
    at any point resumes with every figure measured before it.

    A damaged file (or one of another layout) is reported with a warning and measured
    anew: it holds nothing that cannot be measured again. Processes sharing the file
    (a distributed search's workers) merge what is on disk before each write; two
    writes in the same instant can still drop one figure, measured again when asked.

    Args:
        path: the JSON file.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.entries: dict[str, Latency] = self._read(report=True)

    def get(self, key: str) -> Latency | None:
        return self.entries.get(key)

    def put(self, key: str, latency: Latency) -> None:
        self.entries = {**self._read(report=False), **self.entries, key: latency}
        entries = {name: value.to_dict() for name, value in sorted(self.entries.items())}
        write_json(self.path, {"version": CACHE_VERSION, "entries": entries})

    def _read(self, *, report: bool) -> dict[str, Latency]:
        try:
            content = read_json(self.path)
        except CorruptFileError as error:
            return self._unusable(str(error), report)
        if content is None:
            return {}
        if not isinstance(content, dict) or content.get("version") != CACHE_VERSION or not isinstance(content.get("entries"), dict):
            return self._unusable(f"{self.path} is not a version-{CACHE_VERSION} latency cache", report)
        entries = {}
        for key, value in content["entries"].items():
            try:
                entries[key] = Latency.from_dict(value)
            except (TypeError, ValueError) as error:
                self._unusable(f"{self.path} holds an unreadable entry ({error})", report)
        return entries

    @staticmethod
    def _unusable(problem: str, report: bool) -> dict:
        if report:
            warnings.warn(f"{problem}; the latencies it lacks are measured again and the file written anew.", stacklevel=4)
        return {}


class LatencyMeter:
    """A search's latencies: each configuration measured once (`measure_latency`), on
    this machine, through the project's cache.

    Args:
        cache: a `LatencyCache`, or None for none.
        batch_size: images per timed call (`SearchConfig.latency_batch_size`).
        precision: as `TrainConfig.mixed_precision`; "auto": what `predict` runs.
        warmup, repeats: as `measure_latency`'s.
    """

    def __init__(self, cache: LatencyCache | None = None, *, batch_size: int = 1, precision: str = "auto",
                 warmup: int = WARMUP, repeats: int = REPEATS):  # fmt: skip
        self.cache = cache
        self.batch_size = batch_size
        self.precision = precision
        self.warmup = warmup
        self.repeats = repeats
        self.device = device_name()

    def latency(self, model, configuration: Mapping[str, Any]) -> Latency:
        """The latency of `model`, built from `configuration` (what determines the
        network: e.g. the builder's name and arguments): the cached figure of the
        same configuration, input, batch size, precision and device, or a new
        measurement, cached."""
        from kcnn.train import distribute

        key = configuration_key(
            configuration=dict(configuration),
            input_shape=list(model.inputs[0].shape[1:]),
            batch_size=self.batch_size,
            precision=distribute.resolve_precision(self.precision, model),
            device=self.device,
        )
        cached = None if self.cache is None else self.cache.get(key)
        if cached is not None:
            return cached
        latency = measure_latency(
            model, batch_size=self.batch_size, warmup=self.warmup, repeats=self.repeats, precision=self.precision
        )
        if self.cache is not None:
            self.cache.put(key, latency)
        return latency
