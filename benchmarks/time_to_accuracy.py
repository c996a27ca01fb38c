"""One side of the time-to-accuracy benchmark (DAWNBench's measure), in its own process:

    python benchmarks/time_to_accuracy.py kcnn  --data digits.npz --target 0.985
    python benchmarks/time_to_accuracy.py keras --data digits.npz --target 0.985

* kcnn: `kcnn train`'s default recipe, i.e. `kcnn.train.fit("lenet5", "digits",
  TrainConfig())` (batch 64, AdamW, cosine schedule over 30 epochs, shift augmentation,
  validation, checkpoints and logs every epoch), in the float32 or bfloat16 that "auto"
  picks; `--mixed-precision` overrides it.
* keras: LeNet-5 as a student writes it (`harness.student_lenet5`: a `Sequential`
  compiled with Adam) trained by `model.fit(x, y)` defaults (batch 32) on the same
  training images (x_train, y_train of the .npz).

After each epoch a callback takes the time, then measures the accuracy on the .npz's test
images (the digits' test split, the same for every side) and stops the run once it
reaches --target. Prints one JSON line of timestamps (time.time()) that
`harness.time_to_accuracy` reads: when Python started, when the side was ready
(imports and data done), and per epoch when its training ended, how long the test
evaluation took and its accuracy. The PyTorch side is `torch_baseline.py lenet5`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

STARTED = time.time()  # as close to the process start as Python gets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/time_to_accuracy.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("side", choices=("kcnn", "keras"))
    parser.add_argument("--data", required=True, help=".npz with x_train, y_train, x_test, y_test (the digits' split)")
    parser.add_argument("--target", type=float, default=0.985, help="test accuracy to reach (default: 0.985)")
    parser.add_argument("--max-epochs", type=int, default=60, help="keras: stop here if the target is not reached (default: 60)")
    parser.add_argument("--mixed-precision", default="auto", help="kcnn: TrainConfig.mixed_precision (default: auto)")
    parser.add_argument("--seed", type=int, default=1337, help="kcnn: as `kcnn train --seed`; keras: the weights' seed")
    parser.add_argument("--started-at", type=float, default=None, help="time.time() when the parent started this process")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.target <= 1:
        print(f"benchmarks/time_to_accuracy.py: error: --target must be in (0, 1]. Received: {args.target}", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(json.dumps(run(args)), flush=True)
    return 0


def run(args) -> dict:
    import keras
    import numpy as np

    arrays = np.load(args.data)
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    epochs = []

    class ToTarget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            end = time.time()
            predicted = np.argmax(self.model.predict(x_test, batch_size=512, verbose=0), axis=-1)
            accuracy = float(np.mean(predicted == y_test))
            epochs.append({"epoch": epoch + 1, "end": end, "eval_seconds": time.time() - end, "test_accuracy": accuracy})
            if accuracy >= args.target:
                self.model.stop_training = True

    if args.side == "kcnn":
        import tempfile

        from kcnn import train
        from kcnn.train.inputs import load_data

        # As the command line does once: the seed also initializes the weights.
        keras.utils.set_random_seed(args.seed)
        config = train.TrainConfig(seed=args.seed, mixed_precision=args.mixed_precision)
        data = load_data("digits", config, input_shape=(32, 32, 1))
        ready = time.time()
        with tempfile.TemporaryDirectory(prefix="kcnn-tta-") as folder:
            result = train.fit("lenet5", data, config, output=os.path.join(folder, "run"), callbacks=[ToTarget()], verbose=2)
        what = f"kcnn train (lenet5, digits, defaults; precision {result.metadata['device']['precision']})"
    else:
        import harness

        keras.utils.set_random_seed(args.seed)
        x, y = arrays["x_train"], arrays["y_train"]
        ready = time.time()
        model = harness.student_lenet5(input_shape=x.shape[1:], classes=int(max(y.max(), y_test.max())) + 1)
        model.fit(x, y, epochs=args.max_epochs, callbacks=[ToTarget()])  # verbose: the default progress bar
        what = "keras.Sequential LeNet-5 + compile('adam') + fit(x, y) defaults (batch 32)"
    return {
        "side": args.side,
        "what": what,
        "started_at": args.started_at or STARTED,
        "python_started_at": STARTED,
        "ready_at": ready,
        "target": args.target,
        "epochs": epochs,
    }


if __name__ == "__main__":
    sys.exit(main())
