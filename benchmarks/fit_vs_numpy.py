"""Training throughput of `kcnn.train.fit` against plain `model.fit(x, y)` on NumPy arrays.

Both train the same ResNet-18 (32x32 stem), compiled by the same `compile_model`, on
the same random CIFAR-sized images, side by side in one process. `fit` pays for its
tf.data pipeline and its per-epoch bookkeeping (best-model save, resumable checkpoint,
history, TensorBoard); the baseline pays for NumPy-to-tensor conversion. Reported:
images/s of the steady-state epochs (the first, which traces, is left out) and their
ratio, by wall clock and by this process's CPU time (the fairer figure on a machine
shared with other jobs).

    .venv/bin/python benchmarks/fit_vs_numpy.py [--images 256] [--epochs 3] [--batch-size 64]
"""

import argparse
import statistics
import tempfile
import time

import keras
import numpy as np

from kcnn import data, resnet18, train


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock and CPU seconds of each epoch."""

    def on_train_begin(self, logs=None):
        self.seconds = []
        self.cpu_seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started[0])
        self.cpu_seconds.append(time.process_time() - self.started[1])


def steady(timer):
    """Median wall and CPU seconds per epoch, leaving out the first (tracing) epoch."""
    return statistics.median(timer.seconds[1:]), statistics.median(timer.cpu_seconds[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is left out)")

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=args.images)
    config = train.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, augment=None)
    keras.utils.set_random_seed(0)

    # kcnn: data.load + train.fit (no validation or test split: both sides only train).
    dataset = data.load((x, y), batch_size=args.batch_size, validation_split=0, test_split=0)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as output:
        model = resnet18(stem="small", input_shape=(32, 32, 3), classes=10)
        train.fit(model, dataset, config, output=f"{output}/run", callbacks=[timer], verbose=0)
    kcnn_seconds, kcnn_cpu = steady(timer)

    # Baseline: the same model and compile, fed NumPy arrays already scaled to [0, 1].
    baseline = resnet18(stem="small", input_shape=(32, 32, 3), classes=10)
    train.compile_model(baseline, config, steps_per_epoch=dataset.steps_per_epoch)
    timer = EpochTimer()
    baseline.fit(x.astype(np.float32) / 255.0, y, batch_size=args.batch_size, epochs=args.epochs, callbacks=[timer], verbose=0)
    numpy_seconds, numpy_cpu = steady(timer)

    print(f"resnet18 32x32, {args.images} images, batch {args.batch_size}, median of epochs 2..{args.epochs}")
    rows = (("kcnn.train.fit (tf.data + checkpoints)", kcnn_seconds, kcnn_cpu), ("model.fit(x, y) from NumPy", numpy_seconds, numpy_cpu))
    for label, wall, cpu in rows:
        print(f"  {label:<40} {args.images / wall:8.1f} images/s wall, {args.images / cpu:8.1f} images per CPU-second")
    print(f"  ratio kcnn / numpy: {numpy_seconds / kcnn_seconds:.2f} (wall), {numpy_cpu / kcnn_cpu:.2f} (CPU)")

if __name__ == "__main__":
    main()
