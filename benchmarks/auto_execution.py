"""Where the multi-step loop of `steps_per_execution` pays for its tracing: LeNet-5 on the
bundled digits (batch 64: 20 training steps per epoch), a fresh model per run, trained
`epochs` epochs with `steps_per_execution` 1 and 20, alternated, in one process.

    python benchmarks/auto_execution.py --epochs 1 2 4 8 --repeats 3

Prints, per epoch count, the median wall time of `kcnn.train.fit` with each setting and
their ratio. The loop costs a second tracing of the step (inside `tf.while_loop`) per
model and saves a Python round trip per step; `kcnn.train.compile.steps_per_execution`'s
"auto" takes the loop only for runs long enough to repay it (AUTO_MIN_STEPS).
"""

import argparse
import statistics
import tempfile
import time

import kcnn
from kcnn import data as kdata
from kcnn import train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    digits = kdata.load("digits", batch_size=64, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        train.fit(kcnn.lenet5(input_shape=digits.input_shape, classes=10), digits,
                  train.TrainConfig(epochs=1, augment=None), output=f"{folder}/warm-up", verbose=0)
        for epochs in args.epochs:
            times = {1: [], 20: []}
            for repeat in range(args.repeats):
                for steps in times:
                    config = train.TrainConfig(epochs=epochs, augment=None, steps_per_execution=steps)
                    start = time.perf_counter()
                    train.fit(kcnn.lenet5(input_shape=digits.input_shape, classes=10), digits, config,
                              output=f"{folder}/{epochs}-{steps}-{repeat}", verbose=0)
                    times[steps].append(time.perf_counter() - start)
            one, loop = (statistics.median(times[s]) for s in (1, 20))
            print(f"{epochs:3d} epochs ({20 * epochs:4d} steps): 1 step/call {one:6.2f} s, 20 steps/call {loop:6.2f} s, "
                  f"ratio {loop / one:.2f}", flush=True)


if __name__ == "__main__":
    main()
