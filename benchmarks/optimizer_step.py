"""One optimizer step on a model's variables: Keras' AdamW against kcnn's FusedAdamW
(TensorFlow's fused Adam kernel, `kcnn.train.optimizers`), alternately in one process,
each in a `tf.function`, on the same fixed gradients.

    python benchmarks/optimizer_step.py                       # ResNet-50, 5 rounds of 5 steps
    python benchmarks/optimizer_step.py --model resnet18 --rounds 3

Prints one JSON line: seconds per step of each side per round, and the ratio of the
medians (> 1: the fused step is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(model_name: str = "resnet50", *, input_size: int = 64, rounds: int = 5, steps: int = 5) -> dict:
    import harness
    import keras
    import tensorflow as tf

    from kcnn import registry
    from kcnn.train.optimizers import FusedAdamW

    model = registry.get_spec(model_name).build(input_shape=(input_size, input_size, 3), classes=10)
    variables = model.trainable_variables
    generator = tf.random.Generator.from_seed(0)
    gradients = [generator.normal(v.shape) * 1e-3 for v in variables]
    sides = {}
    for name, optimizer_class in (("keras_adamw", keras.optimizers.AdamW), ("fused_adamw", FusedAdamW)):
        optimizer = optimizer_class(learning_rate=1e-3, weight_decay=1e-4)
        optimizer.build(variables)
        step = tf.function(lambda optimizer=optimizer: optimizer.apply(gradients, variables))

        def run(step=step):
            started = time.perf_counter()
            for _ in range(steps):
                step()
            return {"step_seconds": (time.perf_counter() - started) / steps}

        sides[name] = run
    runs = harness.alternate(sides, rounds)
    medians = {name: statistics.median(r["step_seconds"] for r in side) for name, side in runs.items()}
    return {
        "benchmark": "optimizer_step",
        "model": model_name,
        "parameters": int(sum(int(tf.size(v)) for v in variables)),
        "steps_per_round": steps,
        "runs": runs,
        "median_step_seconds": medians,
        "keras_over_fused": medians["keras_adamw"] / medians["fused_adamw"],
        "machine": harness.describe_machine(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/optimizer_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model, input_size=args.input_size, rounds=args.rounds, steps=args.steps)))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
