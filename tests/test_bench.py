"""The benchmark code on tiny configurations: it runs, and its ratios are computed from
its own measurements. No test asserts a speed."""

import io
import json
import math
import signal
import sys

import harness
import keras
import numpy as np
import pytest
import tensorflow as tf
from bench import main as bench_main

import kcnn

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


def _tiny_reference(input_shape, classes):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes, activation="softmax"),
        ],
        name="tiny",
    )


def _check_ratios(result, first, second, invert=()):
    """Every ratio is the pairwise quotient of the result's own measurements."""
    runs = result["runs"]
    assert result["ratios"][second]
    for key, summary in result["ratios"][second].items():
        a = [run[key] for run in runs[first]]
        b = [run[key] for run in runs[second]]
        expected = [y / x for x, y in zip(a, b)] if key in invert else [x / y for x, y in zip(a, b)]
        np.testing.assert_allclose(summary["pairs"], expected)
        assert summary["min"] <= summary["median"] <= summary["max"]
        assert summary["median"] == pytest.approx(float(np.median(expected)))


# ---------------------------------------------------------------------------
# The arithmetic


def test_ratio_summary_pairs_medians_and_range():
    summary = harness.ratio_summary([2.0, 4.0, 9.0], [1.0, 2.0, 3.0], ("kcnn", "baseline"))
    assert summary["pairs"] == [2.0, 2.0, 3.0]
    assert (summary["median"], summary["min"], summary["max"]) == (2.0, 2.0, 3.0)
    assert summary["medians"] == {"kcnn": 4.0, "baseline": 2.0}
    with pytest.raises(ValueError, match="equally long"):
        harness.ratio_summary([1.0], [1.0, 2.0])


def test_alternate_runs_a_b_a_b_after_a_warm_up():
    calls = []
    sides = {"a": lambda: calls.append("a") or {"v": len(calls)}, "b": lambda: calls.append("b") or {"v": len(calls)}}
    runs = harness.alternate(sides, 2)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert [r["v"] for r in runs["a"]] == [3, 5] and [r["v"] for r in runs["b"]] == [4, 6]
    with pytest.raises(ValueError, match="pairs"):
        harness.alternate(sides, 0)


def test_step_timer_rates_leave_out_the_warm_up():
    timer = harness.StepTimer()
    # Epoch 0 begins at t=0; executions of 2 steps end at t=5 (tracing), 6, 7, 8.
    timer.epochs = {0: (0.0, [(1, 5.0), (3, 6.0), (5, 7.0), (7, 8.0)]), 1: (10.0, [(1, 11.0), (3, 12.0)]), 2: (13.0, [(3, 13.5)])}
    images_per_second, step = timer.steady_rate(batch_size=4, skip=1)
    assert step == pytest.approx(0.5)  # steps 2..7 in 3 seconds
    assert images_per_second == pytest.approx(6 * 4 / 3)
    train, whole = timer.epoch_seconds(skip=1)
    assert train == [2.0, 0.5] and whole == [3.0]
    with pytest.raises(ValueError, match="skip"):
        timer.steady_rate(batch_size=4, skip=4)
    assert timer.steady_cpu(batch_size=4) is None  # no CPU marks set here
    timer.cpu = {0: (0.0, [8.0, 9.0, 10.0, 11.5]), 1: (20.0, [21.0, 23.0]), 2: (30.0, [31.0])}
    assert timer.steady_cpu(batch_size=4, skip=1) == pytest.approx(1e3 * 3.5 / 24)
    assert timer.epoch_cpu_seconds(skip=1) == [3.0, 1.0]


def test_chip_fraction_is_macs_times_six_over_peak():
    # ResNet-50 v1.5 at 224: 4.09 GMACs -> 24.5 GFLOPs per image for a training step.
    assert harness.training_flops_per_image(4.09e9) == pytest.approx(24.54e9)
    assert harness.chip_fraction(3000.0, 4.09e9, 989e12) == pytest.approx(3000 * 4.09e9 * 6 / 989e12)
    assert harness.chip_fraction(1000.0, 1e9, 6e12) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="peak_flops"):
        harness.chip_fraction(1.0, 1.0, 0)


def test_peak_flops_by_device_name():
    assert harness.peak_flops_for("NVIDIA H200") == 989e12
    assert harness.peak_flops_for("NVIDIA A100-SXM4-80GB") == 312e12
    assert harness.peak_flops_for("Tesla T4") == 65e12
    assert harness.peak_flops_for("NVIDIA L40S") == 362e12  # not L4
    assert harness.peak_flops_for("Some Other Accelerator") is None
    assert harness.peak_flops_for("X", {"X": 1.0}) == 1.0


def test_markdown_table_shows_each_ratio_with_its_range():
    result = {
        "benchmark": "model",
        "model": "resnet50",
        "input_size": 64,
        "batch_size": 32,
        "baseline": "keras",
        "status": "ok",
        "ratios": {"keras": {"train_images_per_second": harness.ratio_summary([3.0, 4.0], [2.0, 2.0], ("kcnn", "baseline"))}},
    }
    table = harness.to_markdown([result, {"benchmark": "gpu", "model": "resnet50", "status": "skipped", "reason": "no GPU found"}])
    assert "**1.75** [1.50-2.00]" in table and "kcnn 3.5" in table and "baseline 2" in table
    assert "skipped: no GPU found" in table


# ---------------------------------------------------------------------------
# The benchmarks, tiny


def test_compare_models_tiny_computes_ratios_from_its_runs():
    result = harness.compare_models(
        "lenet5",
        input_size=32,
        batch_size=4,
        steps=3,
        pairs=1,
        classes=3,
        skip=1,
        reference=_tiny_reference,
        baselines=("keras", "keras_same", "torch"),
        torch_python_path="/nonexistent/python",
    )
    assert result["status"] == "ok"
    assert result["baselines"] == {
        "keras": "tiny + compile('adam') + fit(x, y), float32",
        "keras_same": f"tiny + compile('adam') + fit(x, y), {result['device']['precision']}",
    }
    assert "no Python at /nonexistent/python" in result["skipped"]["torch"] and "pip install torch==" in result["skipped"]["torch"]
    assert set(result["runs"]) == {"kcnn", "keras", "keras_same"} and len(result["runs"]["kcnn"]) == 1
    for runs in result["runs"].values():
        for run in runs:
            assert run["train_images_per_second"] > 0 and run["inference_images_per_second"] > 0
            assert run["step_seconds"] == pytest.approx(4 / run["train_images_per_second"])
    for baseline in ("keras", "keras_same"):
        _check_ratios(result, "kcnn", baseline, invert=("step_seconds", "train_cpu_ms_per_image", "peak_memory_bytes"))
    assert "skipped: PyTorch baseline skipped" in harness.to_markdown([result])
    assert result["macs_per_image"] > 0 and result["machine"]["cores"] >= 1
    json.dumps(result)  # JSON-serializable as is


def test_compare_models_refuses_what_it_cannot_compare():
    with pytest.raises(ValueError, match="keras.applications has no counterpart"):
        harness.compare_models("lenet5")
    with pytest.raises(ValueError, match="baselines"):
        harness.compare_models("resnet50", baselines=("jax",))
    with pytest.raises(ValueError, match="steps"):
        harness.compare_models("resnet50", steps=2, skip=2)


def test_small_model_tiny(rng):
    x = rng.integers(0, 256, (48, 32, 32), dtype=np.uint8)
    y = np.repeat(np.arange(3), 16)
    config = bench_config(epochs=3, batch_size=16)
    result = harness.small_model(epochs=3, pairs=1, config=config, data=(x, y))
    assert result["status"] == "ok"
    for run in result["runs"]["kcnn"] + result["runs"]["baseline"]:
        assert run["epoch_train_seconds"] > 0 and run["fit_call_seconds"] >= run["epoch_train_seconds"]
        assert run["train_images_per_second"] == pytest.approx(result["num_train"] / run["epoch_train_seconds"])
    _check_ratios(
        result, "kcnn", "baseline", invert=("epoch_train_seconds", "epoch_train_cpu_seconds", "epoch_whole_seconds", "fit_call_seconds")
    )
    assert set(result["test_accuracy"]) == {"kcnn", "baseline"}


def test_pipeline_tiny(tmp_path):
    folder = harness.write_jpeg_folder(tmp_path / "jpegs", num_images=24, size=20, classes=2)
    result = harness.pipeline(folder, consumer="lenet5", input_size=32, batch_size=8, steps=2, pairs=1)
    assert result["status"] == "ok" and result["num_images"] == 24
    assert result["decode_images_per_second"] > 0
    ratios = result["ratios"]
    np.testing.assert_allclose(
        ratios["pipeline_over_consumption"]["pairs"],
        [p["images_per_second"] / c["images_per_second"] for p, c in zip(result["runs"]["pipeline"], result["runs"]["consumer"])],
    )
    np.testing.assert_allclose(
        ratios["training_with_pipeline_over_constant_batch"]["pairs"],
        [p["images_per_second"] / c["images_per_second"] for p, c in zip(result["runs"]["real_pipeline"], result["runs"]["constant_batch"])],
    )
    assert math.isfinite(ratios["decode_over_consumption"]["value"])


def bench_config(**kwargs):
    from kcnn.train import TrainConfig

    return TrainConfig(**kwargs)


# ---------------------------------------------------------------------------
# The GPU path, where there is none


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present")
def test_gpu_run_says_no_gpu_was_found(tmp_path):
    result = harness.gpu_run("resnet50")
    assert result["status"] == "skipped" and "no GPU found" in result["reason"]
    out = tmp_path / "gpu.json"
    assert bench_main(["resnet50", "--gpu", "--output", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["status"] == "skipped" and saved["command"] == "python benchmarks/bench.py resnet50 --gpu"


def test_cli_rejects_a_model_without_baseline(capsys):
    assert bench_main(["googlenet", "--steps", "3"]) == 2
    assert "keras.applications has no counterpart" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# The PyTorch side (its own process) and time to accuracy, without torch


def test_torch_worker_protocol_answers_errors_and_quits():
    # The worker script under this (torch-less, or torch-having) Python: the protocol
    # and its errors need no torch.
    with harness.TorchWorker(sys.executable, timeout=60) as worker:
        with pytest.raises(RuntimeError, match=r"failed on 'train': ValueError: Expected a 'setup' request"):
            worker.ask({"op": "train"})
        with pytest.raises(RuntimeError, match=r"Expected op 'setup', 'train', 'infer' or 'quit'. Received: op='fly'"):
            worker.ask({"op": "fly"})
        with pytest.raises(RuntimeError, match=r"failed on 'setup'"):  # no torch, or no such file
            worker.ask({"op": "setup", "model": "resnet18", "data": "/nonexistent.npz", "classes": 2, "batch_size": 2})
    assert worker.process.returncode == 0  # quit when asked


def test_torch_worker_is_killed_when_it_does_not_answer(tmp_path):
    silent = tmp_path / "silent.py"
    silent.write_text("import time\ntime.sleep(60)\n")
    worker = harness.TorchWorker(sys.executable, script=str(silent), timeout=0.5)
    with pytest.raises(RuntimeError, match=r"no answer within 0 s"):
        worker.ask({"op": "train"})
    assert worker.process.returncode == -signal.SIGKILL


def test_torch_baseline_script_arguments(capsys):
    import torch_baseline

    args = torch_baseline.build_parser().parse_args(["lenet5", "--data", "d.npz", "--max-epochs", "3", "--started-at", "5.5"])
    assert (args.data, args.target, args.max_epochs, args.batch_size, args.started_at) == ("d.npz", 0.985, 3, 32, 5.5)
    assert torch_baseline.main(["lenet5", "--data", "d.npz", "--target", "1.5"]) == 2
    assert "--target must be in (0, 1]. Received: 1.5" in capsys.readouterr().err
    replies = io.StringIO()
    assert torch_baseline.serve(io.StringIO('\n{"op": "infer"}\nnot json\n{"op": "quit"}\n{"op": "train"}\n'), replies) == 0
    answers = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert len(answers) == 2 and "Expected a 'setup' request before 'infer'" in answers[0]["error"]
    assert answers[1]["error"].startswith("JSONDecodeError")


def test_time_to_accuracy_script_arguments(capsys):
    import time_to_accuracy

    args = time_to_accuracy.build_parser().parse_args(["keras", "--data", "d.npz"])
    assert (args.side, args.target, args.max_epochs, args.mixed_precision, args.seed) == ("keras", 0.985, 60, "auto", 1337)
    assert time_to_accuracy.main(["kcnn", "--data", "d.npz", "--target", "0"]) == 2
    assert "Received: 0.0" in capsys.readouterr().err


def _report(side, started, ready, epochs, target=0.9):
    """A side's report: epochs as (seconds after ready at the epoch's end, evaluation seconds, accuracy)."""
    return {
        "side": side,
        "what": side,
        "started_at": started,
        "python_started_at": started + 0.25,
        "ready_at": ready,
        "target": target,
        "epochs": [{"epoch": i + 1, "end": ready + end, "eval_seconds": ev, "test_accuracy": acc} for i, (end, ev, acc) in enumerate(epochs)],
    }


def test_tta_summary_leaves_evaluations_out_and_counts_start_up():
    report = _report("kcnn", 100.0, 103.0, [(1.0, 0.5, 0.5), (2.5, 0.5, 0.8), (4.0, 0.5, 0.95), (5.5, 0.5, 0.99)])
    summary = harness.tta_summary(report)
    assert summary == {
        "startup_seconds": 3.0,
        "process_seconds": 0.25,
        "epochs": 3,
        "best_accuracy": 0.99,
        "time_to_target_seconds": 3.0 + 4.0 - 1.0,  # two evaluations before the target epoch
        "training_seconds": 4.0 - 1.0,
    }
    never = harness.tta_summary(_report("keras", 0.0, 2.0, [(1.0, 0.1, 0.5)]))
    assert never["time_to_target_seconds"] is None and never["epochs"] is None and never["best_accuracy"] == 0.5


def test_time_to_accuracy_alternates_processes_and_compares_times():
    calls = []
    times = {"kcnn": [(1.0, 0.0, 0.95)], "keras": [(1.0, 0.0, 0.5), (3.0, 0.0, 0.95)]}

    def fake_run(command, timeout):
        side = command[2]
        calls.append(side)
        assert command[3:5][0] == "--data" and timeout == 7
        return _report(side, 0.0, 1.0 + len(calls), times[side])

    result = harness.time_to_accuracy(
        target=0.9, runs=2, timeout=7, sides=("kcnn", "keras", "torch"), torch_python_path="/nonexistent/python", run_side=fake_run
    )
    assert calls == ["kcnn", "keras", "kcnn", "keras"]
    assert "no Python at /nonexistent/python" in result["skipped"]["torch"]
    assert result["num_test"] == 359
    # kcnn: ready at 2 and 4, target 1 s later; keras: ready at 3 and 5, target 3 s later.
    ratios = result["ratios"]["keras"]
    assert ratios["time_to_target_seconds"]["pairs"] == [6.0 / 3.0, 8.0 / 5.0]
    assert ratios["training_seconds"]["pairs"] == [3.0, 3.0]
    assert "time to 90.0% test accuracy" in harness.to_markdown([result])
    with pytest.raises(ValueError, match="sides"):
        harness.time_to_accuracy(sides=("keras",), run_side=fake_run)


def test_optimizer_step_times_both_optimizers_from_its_own_rounds():
    import optimizer_step

    result = optimizer_step.measure("convnet", input_size=16, rounds=2, steps=1)
    assert set(result["runs"]) == {"keras_adamw", "fused_adamw"} and all(len(r) == 2 for r in result["runs"].values())
    medians = {name: float(np.median([r["step_seconds"] for r in runs])) for name, runs in result["runs"].items()}
    assert result["median_step_seconds"] == medians and all(v > 0 for v in medians.values())
    assert result["keras_over_fused"] == pytest.approx(medians["keras_adamw"] / medians["fused_adamw"])
    assert result["parameters"] == sum(int(np.prod(v.shape)) for v in kcnn.convnet(input_shape=(16, 16, 3), classes=10).trainable_variables)
    json.dumps(result)


def test_trial_epochs_counts_what_each_trial_trained_by_status(tmp_path, capsys):
    import trial_epochs

    # (status, the epochs of its objective history): a Hyperband trial continued from
    # epoch 2 trained the epochs it recorded, 2 to 4; a failed trial wrote no record.
    trials = {"0000": ("COMPLETED", [0, 1]), "0001": ("STOPPED", [0]), "0002": ("COMPLETED", [2, 3, 4]), "0003": ("FAILED", None)}
    for project, kept in (("none", trials), ("median", {**trials, "0002": ("STOPPED", [2])})):
        for trial_id, (status, epochs) in kept.items():
            folder = tmp_path / project / f"trial_{trial_id}"
            folder.mkdir(parents=True)
            (folder / "trial.json").write_text(json.dumps({"status": status}))
            if epochs is not None:
                (folder / "kcnn_trial.json").write_text(json.dumps({"objective_history": {str(e): 0.5 for e in epochs}}))
    (tmp_path / "none" / "bar").mkdir()  # the reference trained as a trial: not counted
    assert trial_epochs.trial_epochs(tmp_path / "none") == {"COMPLETED": [2, 3], "PRUNED": [1], "FAILED": [0]}
    trial_epochs.main([str(tmp_path / "none"), str(tmp_path / "median")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("none: 6 trained trial-epochs: 2 completed (5 epochs), 1 failed (0 epochs), 1 pruned (1 epochs)")
    assert lines[2].endswith("median: -2 epochs (-33%) against " + str(tmp_path / "none"))
