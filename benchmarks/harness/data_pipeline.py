"""The input pipeline: images/s `kcnn.data` delivers from a folder of JPEGs against
what a model consumes in training."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from harness.measure import StepTimer, alternate, describe_machine, load_average, progress, ratio_summary


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
        "load_average_before": load_average(),
    }
    runs = alternate({"pipeline": deliver, "consumer": consume(constant)}, pairs, log=progress)
    fed = alternate({"real_pipeline": consume_real, "constant_batch": consume(constant)}, pairs, warmup=False, log=progress)
    result["load_average_after"] = load_average()
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
