"""Trains LeNet-5 on tiny seeded arrays into a run folder, for tests/test_lock.py.

    python tests/_train_worker.py OUTPUT [--epochs 4] [--hold-at-epoch 3 MARKER]

With --hold-at-epoch N MARKER the process stops in the middle of epoch N (after its
second batch), writes the file MARKER and sleeps there, holding the run folder, until
the test SIGKILLs it, like a machine that loses power: no Python cleanup runs.
"""

import argparse
import os
import pathlib
import time

import keras
import numpy as np

from kcnn import data, train

EPOCHS = 4
# One step per call, so the kill lands after the second step, mid-epoch.
CONFIG = dict(batch_size=8, augment=None, learning_rate=1e-3, warmup_epochs=1.0, steps_per_execution=1)


class HoldMidEpoch(keras.callbacks.Callback):
    def __init__(self, epoch, marker):
        super().__init__()
        self.hold_epoch = epoch
        self.marker = pathlib.Path(marker)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.hold_epoch and batch == 1:
            self.marker.write_text(str(os.getpid()))
            time.sleep(600)


def tiny_digits():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(64, 32, 32, 1), dtype=np.uint8)
    y = np.arange(64) % 4
    return data.load((x, y), batch_size=8, validation_split=0.25, test_split=0.25, seed=0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--hold-at-epoch", nargs=2, default=None, metavar=("EPOCH", "MARKER"))
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    callbacks = [HoldMidEpoch(int(args.hold_at_epoch[0]), args.hold_at_epoch[1])] if args.hold_at_epoch else []
    config = train.TrainConfig(epochs=args.epochs, **CONFIG)
    train.fit("lenet5", tiny_digits(), config, output=args.output, callbacks=callbacks, verbose=0)


if __name__ == "__main__":
    main()
