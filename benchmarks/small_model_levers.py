"""The levers of the small-model path: LeNet-5 on the digits through `kcnn.train.fit`
with several `TrainConfig`s, and the student's `model.fit(x, y)`, all alternately in one
process (every variant once per round). Per-step overhead dominates a model this small,
so steps per execution, batch size and the pipeline (augmentation) are what move it.

    python benchmarks/small_model_levers.py                 # 3 rounds, 4 epochs each
    python benchmarks/small_model_levers.py --rounds 2 --variants default spe8 spe8_noaug

Results go to benchmarks/results/small_model_levers.json (or --output). Ratios are
student epoch time / variant epoch time (> 1: the kcnn variant is faster), per round.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: variant -> TrainConfig overrides (on top of the trainer's defaults).
VARIANTS = {
    "default": {},
    "spe4": {"steps_per_execution": 4},
    "spe8": {"steps_per_execution": 8},
    "spe32": {"steps_per_execution": 32},
    "noaug": {"augment": None},
    "spe8_noaug": {"steps_per_execution": 8, "augment": None},
    "b128_spe8": {"batch_size": 128, "steps_per_execution": 8},
    "b128_spe8_noaug": {"batch_size": 128, "steps_per_execution": 8, "augment": None},
    "b128": {"batch_size": 128},
    "b128_spe32": {"batch_size": 128, "steps_per_execution": 32},
    "xla": {"xla": "on"},
    "xla_spe8": {"xla": "on", "steps_per_execution": 8},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "small_model_levers.json"))
    args = parser.parse_args(argv)

    import harness as bench
    from harness.small import epoch_measurement

    from kcnn import data as kdata
    from kcnn import train
    from kcnn._files import write_json
    from kcnn.train.inputs import load_data

    plain = kdata.load("digits", batch_size=256)
    x, y = kdata.as_numpy(plain.train)

    def kcnn_side(overrides):
        config = train.TrainConfig(epochs=args.epochs, **overrides)
        loaded = load_data("digits", config, input_shape=(32, 32, 1))

        def run():
            timer = bench.StepTimer()
            folder = tempfile.mkdtemp(prefix="kcnn-levers-")
            try:
                started = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    train.fit("lenet5", loaded, config, output=os.path.join(folder, "run"), callbacks=[timer])
                wall = time.perf_counter() - started
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            return epoch_measurement(timer, len(x), wall)

        return run

    def student():
        timer = bench.StepTimer()
        model = bench.student_lenet5()
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            model.fit(x, y, epochs=args.epochs, callbacks=[timer])
        return epoch_measurement(timer, len(x), time.perf_counter() - started)

    sides = {"student": student, **{name: kcnn_side(VARIANTS[name]) for name in args.variants}}
    runs = bench.alternate(sides, args.rounds, warmup=False, log=lambda line: print(line, flush=True))
    summary = {}
    for name in args.variants:
        for key in ("epoch_train_seconds", "epoch_train_cpu_seconds", "epoch_whole_seconds"):
            ratio = bench.ratio_summary([r[key] for r in runs["student"]], [r[key] for r in runs[name]], ("student", name))
            summary.setdefault(name, {})[key] = ratio
        train_ratio, whole_ratio = summary[name]["epoch_train_seconds"], summary[name]["epoch_whole_seconds"]
        cpu_ratio = summary[name]["epoch_train_cpu_seconds"]
        print(
            f"{name:12s} {VARIANTS[name]!s:50s} train epoch x{train_ratio['median']:.2f} [{train_ratio['min']:.2f}-{train_ratio['max']:.2f}]"
            f"  its CPU x{cpu_ratio['median']:.2f} [{cpu_ratio['min']:.2f}-{cpu_ratio['max']:.2f}]"
            f"  whole epoch x{whole_ratio['median']:.2f} [{whole_ratio['min']:.2f}-{whole_ratio['max']:.2f}]  vs student"
            f" ({statistics.median(r['epoch_train_seconds'] for r in runs[name]):.3f} s vs"
            f" {statistics.median(r['epoch_train_seconds'] for r in runs['student']):.3f} s)"
        )
    result = {
        "benchmark": "small_model_levers",
        "command": "python benchmarks/small_model_levers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "variants": {name: VARIANTS[name] for name in args.variants},
        "epochs": args.epochs,
        "rounds": args.rounds,
        "machine": bench.describe_machine(),
        "summary": summary,
        "runs": runs,
    }
    write_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
