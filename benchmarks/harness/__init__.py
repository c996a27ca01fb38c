"""Throughput benchmarks: kcnn's trainer against a baseline, measured side by side.

Every figure is a ratio of two measurements taken alternately in one process
(A B A B ...), so that whatever else loads the machine loads both sides alike: each
result holds the per-pair values of both sides, their medians, and the ratio of each
pair with its median, minimum and maximum. Nothing here asserts a speed.

    import harness   # python benchmarks/bench.py ... runs these
    result = harness.compare_models("resnet50", input_size=64, batch_size=32, steps=12)
    result["ratios"]["train_images_per_second"]   # {"median": 1.2, "min": ..., "max": ..., ...}

The benchmarks:

* `compare_models`: a kcnn model trained through `kcnn.train.fit` against the
  same-named keras.applications model with plain `compile` + `fit` (float32 defaults,
  or kcnn's precision policy) and torchvision's at its best in its own process
  (`torch_baseline.py`): training and inference images/s, step time, peak memory.
* `time_to_accuracy`: wall time to 98.5% test accuracy on the digits, `kcnn train`'s
  recipe against a hand-written Keras LeNet-5 and a PyTorch one, each run a process
  of its own (`time_to_accuracy.py`, `torch_baseline.py lenet5`).
* `small_model`: LeNet-5 on the bundled digits, `kcnn.train.fit` against the
  hand-written Keras `Sequential` a student trains with `model.fit(x, y)`, per epoch.
* `pipeline`: images/s `kcnn.data` delivers from a folder of JPEGs against what a
  model consumes in training.
* `gpu_run`: the model comparison on a GPU with the fraction of the chip's peak
  reached (`chip_fraction`); reports that no GPU was found elsewhere.

One module per job: `measure` (timers, memory, alternation, ratios, the machine,
FLOPs), `models` (the model and GPU comparisons), `torch_side` (the PyTorch process),
`small`, `tta`, `data_pipeline` and `report` (the Markdown table).

Library code changes no process-wide state (thread pools, dtype policy, seeds); the
`benchmarks/bench.py` command may set thread counts.
"""

from harness.data_pipeline import pipeline, write_jpeg_folder
from harness.measure import (
    PEAK_FLOPS,
    MemoryPeak,
    StepTimer,
    alternate,
    chip_fraction,
    describe_machine,
    peak_flops_for,
    ratio_summary,
    training_flops_per_image,
)
from harness.models import BASELINES, KERAS_BASELINES, compare_models, gpu_run
from harness.report import to_markdown
from harness.small import small_model, student_lenet5
from harness.torch_side import TorchWorker, torch_python
from harness.tta import time_to_accuracy, tta_summary

__all__ = [
    "BASELINES",
    "KERAS_BASELINES",
    "PEAK_FLOPS",
    "MemoryPeak",
    "StepTimer",
    "TorchWorker",
    "alternate",
    "chip_fraction",
    "compare_models",
    "describe_machine",
    "gpu_run",
    "peak_flops_for",
    "pipeline",
    "ratio_summary",
    "small_model",
    "student_lenet5",
    "time_to_accuracy",
    "to_markdown",
    "torch_python",
    "training_flops_per_image",
    "tta_summary",
    "write_jpeg_folder",
]
