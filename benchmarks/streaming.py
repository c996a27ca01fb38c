"""A folder of images bigger than memory, streamed: peak memory and throughput.

    python benchmarks/streaming.py [--images 20000] [--size 160] [--folder DIR] [--output result.json]

Writes `--images` JPEGs (10 classes, `--size` x `--size` RGB, reused when the folder
already holds them), then, in a fresh process, loads the folder with `kcnn.data.load`
(at that size the decoded images take more than `kcnn.data.IN_MEMORY_LIMIT`, so it
streams) and measures:

* **pipeline**: images/s of one pass over the training split alone (decode, resize,
  shift augmentation, batching), no model;
* **model**: images/s of the training step alone, on one batch held in memory;
* **fit**: images/s of one `kcnn.train.fit` epoch of a small ConvNet on the stream;
* **peak RSS** of that process (TensorFlow included), from `getrusage`.

Not a test: the figures depend on the machine and its load (recorded).
"""

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODEL = {"filters": (16, 32, 64), "strides": 2, "hidden_units": (64,)}


def write_folder(folder: pathlib.Path, images: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    per_class = images // 10
    for c in range(10):
        directory = folder / f"class{c}"
        directory.mkdir(parents=True, exist_ok=True)
        if len(list(directory.glob("*.jpg"))) >= per_class:
            continue
        # Smooth images (a coarse random grid upsampled) compress like photos.
        for i in range(per_class):
            coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            coarse[..., c % 3] //= 2
            Image.fromarray(coarse).resize((size, size), Image.BILINEAR).save(directory / f"{i:05d}.jpg", quality=85)


def measure(folder: str, size: int, batch_size: int) -> dict:
    import keras
    import tensorflow as tf

    from kcnn import data, train

    started = time.perf_counter()
    dataset = data.load(folder, image_size=size, batch_size=batch_size, augment="shift", validation_split=0.05, test_split=0.05)
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    count = sum(int(y.shape[0]) for _, y in dataset.train)
    pipeline = count / (time.perf_counter() - started)

    config = train.TrainConfig(epochs=1, batch_size=batch_size, steps_per_execution=1)
    from kcnn import create_model
    from kcnn.train.compile import compile_model

    model = create_model("convnet", input_shape=(size, size, 3), classes=10, **MODEL)
    compile_model(model, config, dataset.steps_per_epoch)
    batch = next(iter(dataset.train))
    held = tf.data.Dataset.from_tensors(batch).repeat(40)
    model.fit(held.take(5), verbose=0)  # Traced.
    started = time.perf_counter()
    model.fit(held, verbose=0)
    model_rate = 40 * batch_size / (time.perf_counter() - started)

    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    output = tempfile.mkdtemp(prefix="kcnn-streaming-run-")
    result = train.fit("convnet", dataset, config, model_kwargs=MODEL, output=output, verbose=0)
    fit_seconds = time.perf_counter() - started
    shutil.rmtree(output, ignore_errors=True)
    return {
        "images": dataset.num_train + dataset.num_validation + dataset.num_test,
        "train_images": dataset.num_train,
        "image_size": size,
        "batch_size": batch_size,
        "streaming": dataset.streaming,
        "decoded_gib": round((dataset.num_train + dataset.num_validation + dataset.num_test) * size * size * 3 / 2**30, 2),
        "load_seconds": round(load_seconds, 1),
        "pipeline_images_per_second": round(pipeline, 1),
        "model_images_per_second": round(model_rate, 1),
        "fit_images_per_second": round(dataset.num_train / fit_seconds, 1),
        "fit_seconds": round(fit_seconds, 1),
        "test_accuracy": round(result.metrics["test"]["accuracy"], 4),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--folder", default="/tmp/kcnn-streaming-bench")
    parser.add_argument("--output", default=None)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.folder, args.size, args.batch_size)))
        return 0
    folder = pathlib.Path(args.folder)
    started = time.perf_counter()
    write_folder(folder, args.images, args.size)
    print(f"folder: {folder} ({args.images} JPEGs, {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    # A fresh process: its peak RSS is the load and the training alone.
    command = [sys.executable, __file__, "--measure", "--folder", str(folder), "--size", str(args.size), "--batch-size", str(args.batch_size)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=3600).stdout
    result = json.loads(output.strip().splitlines()[-1])
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        pathlib.Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
