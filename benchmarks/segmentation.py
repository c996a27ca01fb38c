"""Segmentation on the synthetic scenes: each model trained by `kcnn train MODEL --data
shapes` with a fixed seed, its test mean IoU, pixel accuracy and per-class IoU (from the
run's metadata.json, as `kcnn evaluate` prints them) and the wall time of the command.
The README's table of FCN-32s, FCN-8s and the U-Net on ResNet-18 comes from notebook 04,
which trains the same models in process; this gives the `kcnn train` figures.

    python benchmarks/segmentation.py                          # fcn32s, fcn8s, unet on resnet18
    python benchmarks/segmentation.py fcn8s --epochs 5         # one model, fewer epochs
    python benchmarks/segmentation.py "unet --model-kwargs backbone=resnet34"
    python benchmarks/segmentation.py --output results/segmentation.json --runs /tmp/seg-runs

Each model is a `kcnn train` command line of its own (a name, then any more flags), run in
a process of its own, one after the other; the wall time counts the whole command (start,
data, training, the test evaluation), the train time what metadata.json records. Nothing
here asserts a speed or a score: the README quotes the JSON this writes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
#: The models of the README's table: the paper's coarse and fine FCN at the widths a CPU
#: trains (1/16 of VGG-16's), a U-Net on ResNet-18.
DEFAULT_MODELS = (
    "fcn32s --model-kwargs width_multiplier=0.0625",
    "fcn8s --model-kwargs width_multiplier=0.0625",
    "unet --model-kwargs backbone=resnet18",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/segmentation.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS), help="`kcnn train` model arguments, one string per model")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--extra", default="", help="more `kcnn train` flags for every model, e.g. '--batch-size 16'")
    parser.add_argument("--runs", default=None, help="folder of the run folders (default: a temporary folder)")
    parser.add_argument("--output", default=str(HERE / "results" / "segmentation.json"), help="the JSON written")
    parser.add_argument("--kcnn", default=str(pathlib.Path(sys.executable).with_name("kcnn")), help="the kcnn command")
    return parser


def command_line(kcnn: str, model: str, *, dataset: str, epochs: int, seed: int, extra: str, output: pathlib.Path) -> list[str]:
    """The `kcnn train` command of one model."""
    name, *flags = shlex.split(model)
    return [kcnn, "train", name, "--data", dataset, "--epochs", str(epochs), "--seed", str(seed),
            *flags, *shlex.split(extra), "--output", str(output), "--verbose", "0"]  # fmt: skip


def run_one(command: list[str], output: pathlib.Path) -> dict:
    """Runs one `kcnn train` command; its figures from the run's metadata.json."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({finished.returncode}):\n{finished.stderr[-3000:]}")
    metadata = json.loads((output / "metadata.json").read_text())
    test = metadata["metrics"]["test"]
    return {
        "command": shlex.join(["kcnn", *command[1:]]).replace(f" --output {shlex.quote(str(output))}", ""),
        "model": metadata["model"]["name"],
        "parameters": metadata["model"]["parameters"]["total"],
        "epochs": metadata["metrics"]["epochs"],
        "best_epoch": metadata["metrics"]["best_epoch"],
        "test_mean_iou": test["mean_iou"],
        "test_pixel_accuracy": test["accuracy"],
        "test_class_iou": dict(zip(metadata["class_names"], test["class_iou"], strict=True)),
        "wall_seconds": round(wall, 1),
        "train_seconds": metadata["timing"]["train_seconds"],
        "precision": metadata["device"]["precision"],
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def to_markdown(rows: list[dict]) -> str:
    lines = ["| command | parameters | test mean IoU | pixel accuracy | wall time |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| `{row['command']}` | {row['parameters'] / 1e6:.1f} M | {row['test_mean_iou']:.3f} | "
            f"{row['test_pixel_accuracy']:.1%} | {row['wall_seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    runs = pathlib.Path(args.runs or tempfile.mkdtemp(prefix="kcnn-segmentation-"))
    rows = []
    for index, model in enumerate(args.models):
        output = runs / f"{index}-{shlex.split(model)[0]}"
        command = command_line(args.kcnn, model, dataset=args.data, epochs=args.epochs, seed=args.seed, extra=args.extra, output=output)
        print(f"running: {shlex.join(command)}", flush=True)
        rows.append(run_one(command, output))
        print(json.dumps(rows[-1]), flush=True)
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "runs": rows}
    pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
