"""The small-model path: LeNet-5 on the digits, `kcnn.train.fit` against the
`Sequential` a student trains with `model.fit(x, y)`, epoch by epoch."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import keras
import numpy as np

from harness.measure import StepTimer, alternate, describe_machine, load_average, progress, quiet, record_runs


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
        return epoch_measurement(timer, len(x), wall)

    def student_side():
        timer = StepTimer()
        model = student_lenet5(classes=plain.num_classes)
        started = time.perf_counter()
        model.fit(x, y, epochs=epochs, callbacks=[timer])
        wall = time.perf_counter() - started
        last["student"] = model
        return epoch_measurement(timer, len(x), wall)

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
        "load_average_before": load_average(),
    }
    with quiet():
        runs = alternate({"kcnn": kcnn_side, "baseline": student_side}, pairs, warmup=False, log=progress)
    record_runs(
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


def epoch_measurement(timer: StepTimer, num_train: int, wall: float) -> dict:
    train, whole = timer.epoch_seconds(skip=1)
    cpu = timer.epoch_cpu_seconds(skip=1)
    return {
        "epoch_train_seconds": statistics.median(train),
        "epoch_train_cpu_seconds": statistics.median(cpu) if cpu else None,
        "epoch_whole_seconds": statistics.median(whole) if whole else None,
        "train_images_per_second": num_train / statistics.median(train),
        "fit_call_seconds": wall,
    }
