"""Time to accuracy: wall time to a test accuracy on the digits, each run a process
of its own (`time_to_accuracy.py`, `torch_baseline.py lenet5`), the sides alternating."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from harness.measure import alternate, describe_machine, load_average, progress, ratio_summary, record_runs
from harness.torch_side import BENCHMARKS, torch_python

TTA_SIDES = ("kcnn", "keras", "torch")


def tta_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The times of one time-to-accuracy run from the timestamps its process printed.

    Returns:
        `time_to_target_seconds`: from the parent starting the process to the end of
        the first epoch whose test accuracy reached the target, the test evaluations
        before it left out (None when never reached); `training_seconds`: the same from
        when the side was ready (imports and data loaded); `startup_seconds`: process
        start, imports and data loading (`process_seconds` of it: from the process
        start to the first line of the script); `epochs`; `best_accuracy`.
    """
    epochs = report["epochs"]
    reached = next((i for i, e in enumerate(epochs) if e["test_accuracy"] >= report["target"]), None)
    startup = report["ready_at"] - report["started_at"]
    summary = {
        "startup_seconds": startup,
        "process_seconds": report["python_started_at"] - report["started_at"],
        "epochs": None if reached is None else epochs[reached]["epoch"],
        "best_accuracy": max((e["test_accuracy"] for e in epochs), default=None),
        "time_to_target_seconds": None,
        "training_seconds": None,
    }
    if reached is not None:
        evaluations = sum(e["eval_seconds"] for e in epochs[:reached])
        summary["time_to_target_seconds"] = epochs[reached]["end"] - report["started_at"] - evaluations
        summary["training_seconds"] = epochs[reached]["end"] - report["ready_at"] - evaluations
    return summary


def _tta_command(side: str, data_path: str, target: float, torch_python_path: str | None, max_epochs: int) -> list[str] | str:
    if side == "torch":
        python, reason = torch_python(torch_python_path)
        if python is None:
            return reason
        return [python, os.path.join(BENCHMARKS, "torch_baseline.py"), "lenet5", "--data", data_path, "--target", str(target), "--max-epochs", str(max_epochs)]
    return [sys.executable, os.path.join(BENCHMARKS, "time_to_accuracy.py"), side, "--data", data_path, "--target", str(target), "--max-epochs", str(max_epochs)]


def _run_side(command: Sequence[str], timeout: float) -> dict:
    """Runs one side's process (killed after `timeout` s) and reads its JSON report, the
    last line of its output; `started_at` is taken just before the process starts."""
    import subprocess

    started = time.time()
    completed = subprocess.run([*command, "--started-at", repr(started)], capture_output=True, text=True, timeout=timeout, check=False)
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"{command[1]} {command[2]} exited with {completed.returncode}: {completed.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def time_to_accuracy(
    *,
    target: float = 0.985,
    runs: int = 4,
    sides: Sequence[str] = TTA_SIDES,
    max_epochs: int = 60,
    timeout: float = 600,
    torch_python_path: str | None = None,
    run_side: Callable[[Sequence[str], float], dict] = _run_side,
) -> dict[str, Any]:
    """Wall time to `target` test accuracy on the digits (DAWNBench's measure), each run
    a fresh process, the sides alternating run by run: kcnn, keras, torch, kcnn, ...

    Every side trains on the digits' training split of `kcnn train` (seed 1337) and is
    scored on its test split (359 images) after every epoch; the scoring is left out
    of the times. Start-up (process start, imports, data loading) is reported apart
    and included in `time_to_target_seconds`; `training_seconds` leaves it out.

    Args:
        target: the test accuracy to reach.
        runs: runs per side.
        sides: from `TTA_SIDES`; "torch" is skipped without a PyTorch Python.
        max_epochs: the keras and torch sides stop there (kcnn's recipe has 30 epochs).
        timeout: seconds per run; the process is killed after.
        torch_python_path: the Python of the torch side (default `torch_python()`).
        run_side: runs a command and returns its report (tests pass a fake).
    """
    from kcnn import data as kdata

    unknown = [side for side in sides if side not in TTA_SIDES]
    if unknown or "kcnn" not in sides:
        raise ValueError(f"`sides` must include 'kcnn' and only name {list(TTA_SIDES)}. Received: sides={list(sides)!r}")
    plain = kdata.load("digits", image_size=32, channels=1, batch_size=256, seed=1337)
    x, y = kdata.as_numpy(plain.train)
    x_test, y_test = kdata.as_numpy(plain.test)
    result: dict[str, Any] = {
        "benchmark": "time_to_accuracy",
        "target": target,
        "runs_per_side": runs,
        "num_train": len(x),
        "num_test": len(x_test),
        "machine": describe_machine(),
        "skipped": {},
        "load_average_before": load_average(),
    }
    with tempfile.TemporaryDirectory(prefix="kcnn-tta-") as folder:
        data_path = os.path.join(folder, "digits.npz")
        np.savez(data_path, x_train=x, y_train=y, x_test=x_test, y_test=y_test)
        commands = {}
        for side in sides:
            command = _tta_command(side, data_path, target, torch_python_path, max_epochs)
            if isinstance(command, str):
                result["skipped"][side] = command
            else:
                commands[side] = command
        reports: dict[str, list[dict]] = {side: [] for side in commands}

        def measure(side):
            def run():
                report = run_side(commands[side], timeout)
                reports[side].append(report)
                return tta_summary(report)

            return run

        measured = alternate({side: measure(side) for side in commands}, runs, warmup=False, log=progress)
    result["what"] = {side: reports[side][0]["what"] for side in commands}
    result["reports"] = reports
    # Ratios of times need a time on both sides of every pair: a run that never
    # reached the target has none, and the ratio is left out (see `runs`).
    record_runs(result, measured, ())
    for side in measured:
        if side == "kcnn":
            continue
        for key in ("time_to_target_seconds", "training_seconds", "startup_seconds"):
            pairs = [(a[key], b[key]) for a, b in zip(measured["kcnn"], measured[side], strict=True) if a[key] and b[key]]
            if pairs:
                result["ratios"][side][key] = ratio_summary([b for _, b in pairs], [a for a, _ in pairs], (side, "kcnn"))
                result["ratios"][side][key]["ratio"] = f"{side} / kcnn (> 1: kcnn is faster; 2: kcnn takes half the time)"
    result["status"] = "ok"
    return result
