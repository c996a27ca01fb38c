"""Throughput of a kcnn model against a baseline, measured side by side.

    python benchmarks/bench.py resnet50 --input-size 64 --batch-size 32 --steps 12
    python benchmarks/bench.py resnet50 --baselines keras keras_same torch   # torch: own process
    python benchmarks/bench.py tta --runs 4                    # time to 98.5% on the digits
    python benchmarks/bench.py lenet5                          # the small-model path on the digits, per epoch
    python benchmarks/bench.py pipeline --consumer resnet18 --input-size 32
    python benchmarks/bench.py resnet50 --gpu                  # chip fraction; says so without a GPU

The measurements live in the `harness` package (beside this file); this entry point only parses
flags, may set the process-wide thread counts (library code never does), prints a table
and writes JSON.
"""

import argparse
import json
import os
import sys


def build_parser():
    bench = argparse.ArgumentParser(
        prog="benchmarks/bench.py",
        description="Runs kcnn (through kcnn.train) and its baselines alternately, A B A B, and reports "
        "the medians and the ratio of each pair with its min and max.",
    )
    bench.add_argument(
        "model",
        help="resnet50/101/152 or vgg16/19 (keras baselines), any torchvision name with --baselines torch, "
        "'tta' (time to accuracy on the digits), 'lenet5' (kcnn fit against a student's Sequential, per epoch) "
        "or 'pipeline'",
    )
    bench.add_argument("--input-size", type=int, default=None, help="square input size (default: the model's; pipeline: 32)")
    bench.add_argument("--batch-size", type=int, default=None, help="batch size (default: 32; pipeline: 128; lenet5: kcnn's)")
    bench.add_argument("--steps", type=int, default=None, help="training steps per measurement (default: 12; pipeline: 8)")
    bench.add_argument(
        "--baselines",
        nargs="+",
        choices=("keras", "keras_same", "torch"),
        default=["keras"],
        help="keras: keras.applications in float32 (its defaults); keras_same: with kcnn's precision policy; "
        "torch: torchvision at its best in its own process (default: keras)",
    )
    bench.add_argument("--torch-python", default=None, help="the Python of a PyTorch venv (default: $KCNN_TORCH_PYTHON or /tmp/torchenv/bin/python)")
    bench.add_argument("--target", type=float, default=0.985, help="tta: test accuracy to reach (default: 0.985)")
    bench.add_argument("--runs", type=int, default=4, help="tta: runs per side (default: 4)")
    bench.add_argument("--max-epochs", type=int, default=60, help="tta: the keras and torch sides stop there (default: 60)")
    bench.add_argument("--sides", nargs="+", default=["kcnn", "keras", "torch"], help="tta: sides (default: kcnn keras torch)")
    bench.add_argument("--pairs", type=int, default=3, help="A B rounds (default: 3)")
    bench.add_argument("--epochs", type=int, default=4, help="lenet5: epochs per measurement, the first untimed")
    bench.add_argument("--steps-per-execution", type=int, default=None, help="kcnn side's TrainConfig.steps_per_execution")
    bench.add_argument("--consumer", default="resnet18", help="pipeline: the model that consumes the images")
    bench.add_argument("--folder", default=None, help="pipeline: a folder of class sub-folders (default: synthetic JPEGs)")
    bench.add_argument("--num-images", type=int, default=2048, help="pipeline: synthetic JPEGs to write (default: 2048)")
    bench.add_argument("--gpu", action="store_true", help="the GPU run: reports the fraction of the chip's peak")
    bench.add_argument("--peak-flops", type=float, default=None, help="the GPU's peak FLOP/s (default: by device name)")
    bench.add_argument("--intra-op-threads", type=int, default=None, help="process-wide TensorFlow intra-op threads")
    bench.add_argument("--inter-op-threads", type=int, default=None, help="process-wide TensorFlow inter-op threads")
    bench.add_argument("--output", default=None, help="write the result as JSON here")
    return bench


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return _bench(args)
    except ValueError as error:
        print(f"benchmarks/bench.py: error: {error}", file=sys.stderr)
        return 2


def _bench(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # Process-wide, so only here and before TensorFlow runs anything.
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)

    import harness as bench

    from kcnn.train import TrainConfig

    overrides = {"steps_per_execution": args.steps_per_execution} if args.steps_per_execution else {}
    if args.model == "tta":
        result = bench.time_to_accuracy(
            target=args.target, runs=args.runs, sides=args.sides, max_epochs=args.max_epochs, torch_python_path=args.torch_python
        )
    elif args.model == "pipeline":
        result = bench.pipeline(
            args.folder,
            consumer=args.consumer,
            input_size=args.input_size or 32,
            batch_size=args.batch_size or 128,
            steps=args.steps or 8,
            pairs=args.pairs,
            num_images=args.num_images,
        )
    elif args.model == "lenet5":
        config = TrainConfig(epochs=args.epochs, **({"batch_size": args.batch_size} if args.batch_size else {}), **overrides)
        result = bench.small_model(epochs=args.epochs, pairs=args.pairs, config=config)
    else:
        batch_size = args.batch_size or 32
        kwargs = {"input_size": args.input_size, "batch_size": batch_size, "steps": args.steps or 12, "pairs": args.pairs}
        if args.gpu:
            baselines = args.baselines if args.baselines != ["keras"] else ["keras_same"]
            result = bench.gpu_run(args.model, peak_flops=args.peak_flops, baselines=baselines, **{**kwargs, "input_size": args.input_size or 224})
        else:
            config = TrainConfig(epochs=1, batch_size=batch_size, augment=None, **overrides)
            result = bench.compare_models(
                args.model, config=config, peak_flops=args.peak_flops, baselines=args.baselines, torch_python_path=args.torch_python, **kwargs
            )
    result["command"] = _command(args)
    print(bench.to_markdown([result]))
    if result.get("status") != "ok":
        print(f"benchmarks/bench.py: {result.get('status')}: {result.get('reason')}", file=sys.stderr)
    if args.output:
        with open(args.output, "w") as file:
            json.dump(result, file, indent=2)
            file.write("\n")
    return 0


def _command(args):
    """The command line that reproduces this run (flags left at their defaults omitted)."""
    words = ["python", "benchmarks/bench.py", args.model]
    defaults = {
        "baselines": ["keras"], "pairs": 3, "epochs": 4, "consumer": "resnet18", "gpu": False, "num_images": 2048,
        "target": 0.985, "runs": 4, "sides": ["kcnn", "keras", "torch"], "max_epochs": 60,
    }
    for key, value in vars(args).items():
        if key in ("model", "output") or value is None or defaults.get(key) == value:
            continue
        flag = "--" + key.replace("_", "-")
        words.extend([flag] if value is True else [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)])
    return " ".join(words)



if __name__ == "__main__":
    sys.exit(main())
