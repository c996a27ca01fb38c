"""`kcnn tune --workers N`: a chief and N local workers, pinned, stopped together."""

import csv
import io
import os
import re
import subprocess
import sys
import time

import pytest

from kcnn.cli.tune import _without_workers
from kcnn.tune import workers


def test_commands_pin_each_worker_to_one_device():
    commands = workers.cluster_commands(["tune", "convnet"], 3, port=4321, devices=["0", "1"])
    assert [name for name, _, _ in commands] == ["chief", "w0", "w1", "w2"]
    assert [env.get("CUDA_VISIBLE_DEVICES") for _, _, env in commands] == ["0", "0", "1", "0"]
    assert commands[2][1][-4:] == ["--chief", "127.0.0.1:4321", "--worker", "w1"]
    assert all(env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for _, _, env in commands)
    # On a CPU machine nothing is pinned.
    assert all("CUDA_VISIBLE_DEVICES" not in env for _, _, env in workers.cluster_commands(["tune"], 2, port=1))
    with pytest.raises(ValueError, match="drop --chief and --worker"):
        workers.cluster_commands(["tune", "--chief", "h:1"], 2, port=1)
    with pytest.raises(ValueError, match="`--workers` must be an int >= 1. Received: workers=0"):
        workers.cluster_commands(["tune"], 0, port=1)
    assert _without_workers(["tune", "--workers", "2", "--max-trials", "3", "--workers=4"]) == ["tune", "--max-trials", "3"]
    assert workers.visible_accelerators({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert workers.visible_accelerators({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def _python(code):
    return [sys.executable, "-c", code]


def test_a_failing_worker_stops_the_others(tmp_path):
    marker = tmp_path / "still-running"
    sleeper = f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(120)"
    commands = [
        ("chief", _python(sleeper), {}),
        ("w0", _python("import time; time.sleep(1); print('giving up'); raise SystemExit(3)"), {}),
        ("w1", _python(sleeper), {}),
    ]
    out = io.StringIO()
    started = time.monotonic()
    assert workers.run_cluster(commands, out=out) == 3
    assert time.monotonic() - started < 60  # Not the sleepers' 120 s: they were stopped.
    assert "[w0] giving up" in out.getvalue()
    assert "w0 ended with exit code 3; stopping the search" in out.getvalue()


def test_the_chief_finishing_ends_the_cluster():
    commands = [("chief", _python("print('done')"), {}), ("w0", _python("import time; time.sleep(120)"), {})]
    out = io.StringIO()
    assert workers.run_cluster(commands, out=out) == 0
    assert "done" in out.getvalue().splitlines()


def test_tune_with_two_local_workers_runs_every_trial_once(tmp_path):
    project = tmp_path / "project"
    command = [sys.executable, "-m", "kcnn", "tune", "convnet", "--data", "digits", "--workers", "2"]
    command += ["--tuner", "random", "--max-trials", "3", "--max-epochs", "1", "--directory", str(project)]
    command += ["--ranges", "filters=4,8", "--ranges", "hidden_units=8", "--ranges", "depth=1", "--batch-size", "128"]
    command += ["--top-k", "0"]  # The finish (retraining, the chief's alone) is tested in test_tune.py.
    # No reference bar (the chief trains LeNet-5 as a trial before serving any; tested in test_tune_cost.py).
    command += ["--references", "none"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=400)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)  # The launcher and the processes it started.
            process.wait()
    assert process.returncode == 0, output[-4000:]
    ran = {}
    for worker in ("w0", "w1"):
        match = re.search(rf"^\[{worker}\] worker {worker}: ran trials (.*)$", output, re.M)
        assert match, output[-4000:]
        ran[worker] = [t for t in match.group(1).split(", ") if t and t != "none"]
    assert sorted(int(t) for t in ran["w0"] + ran["w1"]) == [0, 1, 2]
    with open(project / "trials.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["trial"]) for row in rows] == [0, 1, 2]
    assert all(row["status"] == "COMPLETED" for row in rows)
    assert {row["trial"]: row["tuner"] for row in rows} == {t: w for w, ts in ran.items() for t in ts}
    assert "best model saved to" in output


LAUNCH_ONLY = """
import json, sys
from kcnn.tune import workers

workers.run_cluster = lambda commands: print(json.dumps([name for name, _, _ in commands])) or 0
from kcnn.cli import main

code = main(sys.argv[1:])
print(code, "tensorflow" in sys.modules, "keras" in sys.modules)
"""


def test_the_launcher_of_the_workers_does_not_load_tensorflow():
    # Each process it starts loads TensorFlow itself; the launcher only waits for them.
    command = ["tune", "convnet", "--data", "digits", "--workers", "2", "--max-trials", "3"]
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    done = subprocess.run(_python(LAUNCH_ONLY) + command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ['["chief", "w0", "w1"]', "0 False False"]
