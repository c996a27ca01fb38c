"""kcnn.tune: search spaces, their checks, and searches (tiny data, a few trials)."""

import csv
import inspect
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings

import keras_tuner
import numpy as np
import pytest
from keras_tuner.errors import FailedTrialError

import kcnn
from kcnn import data as kdata
from kcnn import tune
from kcnn._files import is_temporary
from kcnn.tune import pareto_plot

HERE = os.path.dirname(os.path.abspath(__file__))


def tiny_data(size=16, n=64, classes=4, seed=0):
    """n random images of size x size, one channel: fast to train, useless to learn."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)
    y = np.arange(n) % classes
    return kdata.load((x, y), batch_size=32, validation_split=0.25, test_split=0.0, seed=seed)


def read_trials(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


# --------------------------------------------------------------------------
# Spaces.

EXPECTED_DEFAULTS = {
    "convnet": dict(
        filters=(16, 32, 64),
        kernel_size=(3, 3, 3),
        strides=(1, 1, 1),
        pool=(True, True, True),
        convs_per_stage=2,
        padding="same",
        batch_norm=False,
        stage_dropout=0.0,
        hidden_units=(128,),
        dropout=0.5,
    ),
    "resnet": dict(stages=(1, 1, 1), block="basic", width=16, stem="small", variant="v1"),
    "inception": dict(
        stages=(((32, 32, 64, 8, 16, 16),), ((64, 64, 128, 16, 32, 32),)),
        stem="small",
        stem_width=32,
        batch_norm=False,
        dropout=0.4,
    ),
}


@pytest.mark.parametrize("name", sorted(tune.SPACES))
def test_space_defaults(name):
    space = tune.get_space(name, (32, 32, 1), 10)
    assert space.default_arguments() == EXPECTED_DEFAULTS[name]
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    assert hp.values["learning_rate"] == 3e-3
    # Booleans stay booleans (keras-tuner's Choice would make them 0 and 1).
    flags = [
        value
        for key, value in hp.values.items()
        if key == "batch_norm" or (key.split("_")[0] == "pool" and key[5:].isdigit())
    ]
    assert all(type(value) is bool for value in flags)
    model = space.build(hp)
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 10)
    assert space.last_build["params"] == model.count_params() and space.last_build["macs"] > 0


def test_the_command_line_knows_every_space():
    from kcnn.tune.config import SPACE_NAMES

    assert tuple(tune.SPACES) == SPACE_NAMES


def test_hyperparameters_are_named_after_builder_arguments():
    hp = keras_tuner.HyperParameters()
    tune.ConvNetSpace((32, 32, 1), 10).declare(hp)
    names = {p.name for p in hp.space}
    assert {"depth", "filters", "batch_norm", "stage_dropout", "hidden_units", "dropout", "learning_rate"} <= names
    assert names <= set(inspect.signature(kcnn.convnet).parameters) | {"depth", "learning_rate"} | {
        f"{arg}_{stage}" for arg in ("kernel_size", "strides", "pool") for stage in (1, 2, 3, 4)
    }
    assert {f"{arg}_{stage}" for arg in ("kernel_size", "strides", "pool") for stage in (1, 2, 3, 4)} <= names
    # Stages beyond the smallest depth exist only at the depths that have them.
    conditional = {p.name for p in hp.space if p.conditions}
    assert conditional == {f"{arg}_{stage}" for arg in ("kernel_size", "strides", "pool") for stage in (3, 4)}
    hp = keras_tuner.HyperParameters()
    tune.ResNetSpace((32, 32, 3), 10).declare(hp)
    assert {"block", "depth", "stages_1", "width", "stem", "learning_rate"} <= {p.name for p in hp.space}


def test_convnet_width_doubles_with_each_halving_of_the_map():
    space = tune.ConvNetSpace((32, 32, 1), 10, depth=4, filters=8, strides=(1, 2), pool=(True, False))
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    hp.values.update(strides_1=2, pool_1=True, strides_2=1, pool_2=False, strides_3=2, pool_3=True, strides_4=2)
    # stage 1 halves by its stride (16x16), stage 2 after the pool (8x8), stage 3 by
    # its stride (4x4), stage 4 after a pool and by its stride (1x1), capped at 8x.
    assert space.declare(hp)["filters"] == (16, 32, 64, 64)


@pytest.mark.parametrize("name", sorted(tune.SPACES))
def test_every_choice_builds(name):
    """Each choice of each hyperparameter, the others at their defaults, builds (at
    the deepest depth, so that every per-stage hyperparameter is active)."""
    space = tune.get_space(name, (32, 32, 1), 10)
    declared = keras_tuner.HyperParameters()
    space.declare(declared)
    seen = set()
    for parameter in declared.space:
        values = getattr(parameter, "values", None) or [True, False]
        if isinstance(parameter, keras_tuner.engine.hyperparameters.Fixed):
            values = [parameter.value]
        for value in values:
            hp = keras_tuner.HyperParameters()
            space.declare(hp)
            if parameter.conditions:
                hp.values["depth"] = max(space.ranges["depth"])
            hp.values[parameter.name] = value
            for other in hp.space:  # Stages a greater depth activates: their defaults.
                if hp.is_active(other) and other.name not in hp.values:
                    hp.values[other.name] = other.default
            arguments = space.declare(hp)
            key = repr(sorted(arguments.items()))
            if key in seen:
                continue
            seen.add(key)
            model = space.build(hp)
            assert model.output_shape == (None, 10), (parameter.name, value)
    # The default configuration, plus one per other choice of each hyperparameter
    # (learning_rate is no builder argument; a conditional stage's default is the
    # deepest depth's default configuration): convnet 1 + 2 depths + 2 filters +
    # 4 kernel sizes + 4 strides + 4 pools + convs_per_stage + batch_norm +
    # stage_dropout + 2 hidden_units.
    assert len(seen) == {"convnet": 22, "resnet": 15, "inception": 15}[name]


def test_a_configuration_too_small_for_the_input_fails_with_the_builders_smallest_size():
    # 6 stages, each a 3x3/2 convolution and a 2x2 pool: ceil(n / 2) then floor, six
    # times, keeps at least 1x1 from 2731 pixels on.
    space = tune.ConvNetSpace((32, 32, 1), 10, depth=6, strides=2, pool=(False, True))
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    hp.values.update({f"pool_{stage}": True for stage in range(1, 7)})
    with pytest.raises(
        FailedTrialError,
        match=r"^The input is too small for `convnet`: its layers need at least 2731x2731 pixels\. Received: input_shape=\(32, 32, 1\)$",
    ):
        space.build(hp)
    assert "params" not in space.last_build
    hp.values.update({f"pool_{stage}": False for stage in range(1, 7)})
    assert space.build(hp).get_layer("block6_conv2").output.shape[1:3] == (1, 1)


class LeNetSpace(tune.SearchSpace):
    """A space of the user's: only the builder call and its hyperparameters."""

    name = "lenet"
    RANGES = {"variant": ("modern", "paper"), "learning_rate": (1e-3,)}
    DEFAULTS = {"variant": "modern", "learning_rate": 1e-3}

    def builder_arguments(self, hp):
        return dict(variant=self._declare(hp, "variant"))

    def build_model(self, arguments, **contract):
        return kcnn.lenet5(**arguments, input_shape=self.input_shape, classes=self.classes, **contract)


def test_a_space_asks_its_builder_whether_a_configuration_fits():
    with pytest.raises(
        ValueError,
        match=r"default configuration of the 'lenet' space does not fit the input: The input is too small for "
        r"`lenet5`: its layers need at least 32x32 pixels\. Received: input_shape=\(28, 28, 1\)$",
    ):
        LeNetSpace((28, 28, 1), 10)
    hp = keras_tuner.HyperParameters()
    LeNetSpace((32, 32, 1), 10).declare(hp)
    hp.values["variant"] = "paper"
    assert LeNetSpace((32, 32, 1), 10).build(hp).get_layer("rbf").units == 10


def test_budget_rejects_big_models():
    space = tune.ConvNetSpace((32, 32, 1), 10, max_params=10_000)
    # 3x3 convolutions 1-16-16, 16-32-32, 32-64-64, then 4x4x64 -> fc1 128 -> 10.
    params = 160 + 2_320 + 4_640 + 9_248 + 18_496 + 36_928 + (1_024 * 128 + 128) + (128 * 10 + 10)
    with pytest.raises(FailedTrialError, match=rf"^The model has {params:,} parameters, over the budget. Received: max_params=10,000$"):
        space.build(keras_tuner.HyperParameters())
    assert space.last_build == {"params": params, "macs": space.last_build["macs"]}
    space = tune.ConvNetSpace((32, 32, 1), 10, max_macs=1_000_000)
    with pytest.raises(FailedTrialError, match=r"MACs per image, over the budget"):
        space.build(keras_tuner.HyperParameters())


def test_fits_builds_the_configuration_and_checks_the_input_and_the_budget():
    import random

    from kcnn import shapes

    space = tune.ConvNetSpace((16, 16, 1), 10, max_macs=100_000, depth=(2, 4), filters=4, convs_per_stage=1, strides=(1, 2))

    def configuration(**values):
        hp = keras_tuner.HyperParameters()
        hp.values.update(values)
        space.declare(hp)  # the values not given: their defaults
        return hp

    state = random.getstate()
    # 16x16, 3x3 convolutions of 4 then 8 filters, a pool after each: 16*16*9*4 + 8*8*9*4*8 MACs, then the classifier.
    assert space.fits(configuration(depth=2, pool_1=True, pool_2=True, strides_1=1, strides_2=1))
    built = space.build(configuration(depth=2, pool_1=True, pool_2=True, strides_1=1, strides_2=1))
    assert space.last_build["macs"] == 9_216 + 18_432 + 4 * 4 * 8 * 128 + 128 * 10 == shapes.count_macs(built)
    # Four stages of stride 2, each pooled: the map is empty in the third (the builder refuses).
    halving = {f"{name}_{stage}": value for stage in range(1, 5) for name, value in (("strides", 2), ("pool", True))}
    assert not space.fits(configuration(depth=4, **halving))
    # No pooling: 16x16 maps to the end, 9,216 + 36,864 + 16*16*4*128 + 1,280 MACs, over the budget.
    assert not space.fits(configuration(depth=2, pool_1=False, pool_2=False, strides_1=1, strides_2=1))
    assert random.getstate() == state


def test_random_proposals_are_within_the_budget_and_no_trial_is_spent_on_the_others(tmp_path):
    # About half of this space costs more than 100 K MACs on 16x16 images.
    ranges = dict(depth=2, filters=(4, 8, 16), kernel_size=(3, 5), convs_per_stage=(1, 2), hidden_units=8, batch_norm=False)
    result = tune.search("convnet", tiny_data(size=16, n=32), tuner="random", max_trials=3, max_epochs=1, seed=5,
                         max_macs=100_000, top_k=0, references=None, directory=tmp_path, ranges=ranges)  # fmt: skip
    rows = read_trials(result.trials_csv)
    assert [row["status"] for row in rows] == ["COMPLETED"] * 3
    assert all(int(row["macs"]) <= 100_000 for row in rows)


def test_space_arguments_are_checked():
    with pytest.raises(ValueError, match=r"Unknown ranges for the 'convnet' space: \['kernel'\]"):
        tune.ConvNetSpace((32, 32, 1), 10, kernel=3)
    with pytest.raises(ValueError, match=r"does not fit the input: The input is too small for `convnet`: its layers need at least 16x16 pixels"):
        tune.ConvNetSpace((8, 8, 1), 10, depth=4)
    with pytest.raises(ValueError, match=r"Unknown search space. Known: convnet, resnet, inception"):
        tune.get_space("vgg")
    with pytest.raises(ValueError, match=r"`tuner` must be one of"):
        tune.SearchConfig(tuner="evolution")
    with pytest.raises(ValueError, match=r"A worker needs the chief's address"):
        tune.SearchConfig(worker="w1")
    with pytest.raises(ValueError, match=r"must be HOST:PORT"):
        tune.SearchConfig(chief="localhost")
    for project in ("/tmp/search", "../search", "my search"):
        with pytest.raises(ValueError, match=rf"a folder path goes to `directory`, --directory\). Received: project='{re.escape(project)}'"):
            tune.SearchConfig(project=project)
    assert tune.SearchConfig(project="digits-v2.1_a").project == "digits-v2.1_a"


# --------------------------------------------------------------------------
# Searches. Those that are not about the reference nets have none (references=None): by
# default a search first trains the cheapest reference as a trial, the bar of its cost
# term, which costs a trial's tracing and saving (~10 s) and is tested in test_tune_cost.py.


def test_configurations_too_small_for_the_input_are_failed_trials_and_a_best_model_is_returned(tmp_path, capfd, caplog):
    """Stride 2 in all of 6 stages on 32x32: pooling late stages empties the map. Each
    trial's line goes to the `kcnn` logger (shown by default: tests/test_log.py)."""
    data = tiny_data(size=32)
    ranges = dict(
        depth=6, strides=2, pool=(False, True), filters=4, kernel_size=3, convs_per_stage=1,
        batch_norm=False, stage_dropout=0.0, hidden_units=8, learning_rate=3e-3,
    )  # fmt: skip
    result = tune.search(
        "convnet", data, tuner="grid", max_trials=4, max_epochs=1, directory=tmp_path / "geometry", ranges=ranges,
        top_k=0, references=None,
    )  # fmt: skip
    rows = read_trials(result.trials_csv)
    assert len(rows) == 4
    failed = [row for row in rows if row["status"] == "FAILED"]
    assert failed and all(
        row["reason"].startswith("The input is too small for `convnet`: its layers need at least") and not row["params"]
        for row in failed
    )
    completed = [row for row in rows if row["status"] == "COMPLETED"]
    assert completed and all(int(row["params"]) > 0 and int(row["macs"]) > 0 for row in completed)
    assert set(rows[0]) >= {"trial", "status", "val_accuracy", "params", "macs", "seconds", "pool_6", "reason"}
    assert (result.path / "model.keras").is_file()
    metadata = json.loads((result.path / "metadata.json").read_text())
    assert metadata["search"]["trial_id"] == result.best_trial and metadata["search"]["restored"]
    assert metadata["model"]["builder_arguments"]["strides"] == [2] * 6
    assert result.plot.is_file() and result.plot.stat().st_size > 1000
    assert "failed:" in result.table()
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = [r.getMessage() for r in caplog.records if r.name == "kcnn" and r.getMessage().startswith("trial ")]
    assert [line.split("  ")[0] for line in lines] == [f"trial {n}/4 ({n - 1:04d})" for n in range(1, 5)]
    assert all(r.levelname == "INFO" for r in caplog.records if r.getMessage() in lines)
    for line, row in zip(lines, rows, strict=True):
        expected = "FAILED: The input is too small" if row["status"] == "FAILED" else f"val_accuracy {float(row['val_accuracy']):.4f}"
        assert expected in line


def test_seeded_random_searches_propose_the_same_configurations(tmp_path, monkeypatch):
    """Proposals do not depend on training, so a budget no model meets makes every
    trial fail at once (after a few draws that do not fit), which also shows a search
    where nothing completes."""
    from kcnn.tune._keras_tuner.oracles import _FittingDraws

    monkeypatch.setattr(_FittingDraws, "MAX_MISFITS", 4)
    data = tiny_data(size=16, n=32)

    def proposals(seed, name):
        with pytest.raises(ValueError, match=r"No trial of the search completed.*over the budget"):
            tune.search(
                "convnet",
                data,
                tuner="random",
                max_trials=4,
                max_epochs=1,
                seed=seed,
                max_params=1,
                references=None,
                directory=tmp_path / name,
            )
        rows = read_trials(tmp_path / name / "trials.csv")
        assert [row["status"] for row in rows] == ["FAILED"] * 4
        skip = {"trial", "status", "val_accuracy", "params", "macs", "seconds", "epochs", "pareto", "tuner", "reason"}
        return [{key: value for key, value in row.items() if key not in skip} for row in rows]

    first = proposals(11, "a")
    assert proposals(11, "b") == first
    assert len({json.dumps(values, sort_keys=True) for values in first}) == 4
    assert proposals(12, "c") != first


def test_rejected_configurations_are_recorded_without_a_traceback(tmp_path, capfd):
    # Two stages fit 16x16 whatever their strides and pools: every trial is over the budget.
    with pytest.raises(ValueError, match="No trial of the search completed"):
        tune.search("convnet", tiny_data(size=16, n=32), tuner="random", max_trials=2, max_epochs=1, max_params=1,
                    references=None, directory=tmp_path, ranges=dict(depth=2))  # fmt: skip
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
    rows = read_trials(tmp_path / "trials.csv")
    assert [row["status"] for row in rows] == ["FAILED", "FAILED"]
    assert all(re.fullmatch(r"The model has [\d,]+ parameters, over the budget\. Received: max_params=1", row["reason"]) for row in rows)


def test_retrained_best_model_is_a_kcnn_train_run_and_each_execution_starts_from_other_weights(tmp_path):
    import keras

    first_kernels = []

    class Initial(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            first_kernels.append(self.model.get_layer("block1_conv1").get_weights()[0])

    data = tiny_data(size=16, n=32)
    ranges = dict(depth=2, filters=4, hidden_units=8, convs_per_stage=1, strides=1, pool=True)
    result = tune.search("convnet", data, tuner="random", max_trials=1, max_epochs=1, retrain=True, top_k=0,
                         references=None, executions_per_trial=2, directory=tmp_path / "p", ranges=ranges, callbacks=[Initial()])  # fmt: skip
    # Two executions of the trial, from other (seeded) weights: averaging them means something.
    first, second = first_kernels
    assert not np.array_equal(first, second)
    space = tune.get_space("convnet", (16, 16, 1), 4, **ranges)
    hp = keras_tuner.HyperParameters()
    hp.values = dict(result.best_hyperparameters)
    np.testing.assert_array_equal(space.build(hp).get_layer("block1_conv1").get_weights()[0], first)
    metadata = json.loads((result.path / "metadata.json").read_text())
    assert metadata["kind"] == "search" and not metadata["search"]["restored"]
    assert metadata["model"]["builder"] == "kcnn.convnet"
    assert metadata["model"]["builder_arguments"]["filters"] == [4, 8]
    assert (result.path / "history.csv").is_file() and (result.path / "model.keras").is_file()


def test_search_killed_mid_trial_resumes_to_the_scores_of_an_uninterrupted_one(tmp_path):
    project, log = tmp_path / "project", tmp_path / "events.jsonl"
    script = os.path.join(HERE, "_tune_resume.py")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def events():
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    first = subprocess.Popen(
        [sys.executable, script, str(project), str(log), "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not any(e["event"] == "hang" for e in events()):
            assert first.poll() is None, first.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the search never reached its second trial"
            time.sleep(0.5)
        # Mid-trial, after the first of its two epochs, and inside a write of oracle.json.
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    before = events()
    finished_before = [e["trial"] for e in before if e["event"] == "end"]
    assert finished_before == ["0000"]
    assert list(project.glob(f".oracle.{first.pid}.tmp*"))  # What the kill left.

    # Resumed, then the same search uninterrupted in another folder, in one process.
    second = subprocess.run(
        [sys.executable, script, str(project), str(log), "0", str(tmp_path / "fresh")],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr.decode()[-3000:]
    after = events()[len(before) :]
    resumed = [e for e in after if e["run"] == "resumed"]
    started_after = [e["trial"] for e in resumed if e["event"] == "start"]
    finished_after = [e["trial"] for e in resumed if e["event"] == "end"]
    assert started_after == finished_after == ["0001", "0002"]  # The killed trial again, then the last.
    scores = {e["trial"]: e["score"] for e in [*before, *resumed] if e["event"] == "end"}
    uninterrupted = {e["trial"]: e["score"] for e in after if e["run"] == "fresh" and e["event"] == "end"}
    assert len(set(uninterrupted.values())) > 1  # Scores that tell trials apart.
    assert scores == uninterrupted  # Exactly: the same data order, weights and proposals.
    rows = read_trials(project / "trials.csv")
    assert [row["trial"] for row in rows] == ["0000", "0001", "0002"]
    assert all(row["status"] in ("COMPLETED", "FAILED") for row in rows)
    assert (project / "best" / "model.keras").is_file()
    assert not [path for path in project.rglob("*") if is_temporary(path)]


def test_a_chief_removes_the_temporary_files_of_writers_no_longer_alive_only(tmp_path):
    from kcnn.tune import project

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, timeout=60)
    dead, alive = int(ended.stdout), os.getpid()
    (tmp_path / "trial_0001").mkdir()
    files = [tmp_path / f".oracle.{dead}.tmp.json", tmp_path / "trial_0001" / f".kcnn_trial.{alive}.tmp.json"]
    for path in [*files, tmp_path / "oracle.json"]:
        path.write_text("{")
    assert project.remove_leftovers(tmp_path, "chief") == files[:1]  # A worker may be writing the other.
    assert project.remove_leftovers(tmp_path, "local") == files[1:]  # Under the lock, nobody is.
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["oracle.json", "trial_0001"]


# --------------------------------------------------------------------------
# A project whose state files are damaged resumes from what is left.

SMALL = dict(depth=2, filters=4, hidden_units=8, convs_per_stage=1, strides=1, pool=True)


def test_a_search_with_damaged_state_files_resumes_keeping_its_finished_trials(tmp_path):
    data, project = tiny_data(size=16, n=32), tmp_path / "project"
    ranges = {**SMALL, "learning_rate": (1e-3, 3e-3, 1e-2)}
    first = tune.search("convnet", data, tuner="random", max_trials=2, max_epochs=1, seed=5, directory=project, ranges=ranges,
                        top_k=0, references=None)  # fmt: skip
    scores = {record.trial_id: record.score for record in first.trials}
    (project / "oracle.json").write_text((project / "oracle.json").read_text()[:100])  # a kill inside keras-tuner's write
    (project / "tuner0.json").write_text("")
    (project / "trial_0000" / "trial.json").write_text('{"trial_id": "0000", "hyper')
    started = []
    with pytest.warns(UserWarning) as caught:
        second = tune.search(
            "convnet", data, tuner="random", max_trials=3, max_epochs=1, seed=5, directory=project, ranges=ranges, top_k=0,
            references=None, on_trial=lambda record: started.append(record.trial_id) if record.status == "RUNNING" else None,
        )  # fmt: skip
    messages = "\n".join(str(w.message) for w in caught)
    assert re.search(r"trial_0000/trial\.json is not valid JSON .*; trial 0000 is restored from the copy in kcnn_trial\.json \(COMPLETED\)", messages)
    assert re.search(r"oracle\.json is not valid JSON .*; the search state is rebuilt from the 2 trials .*\(2 completed, kept and not run again\)", messages)
    assert re.search(r"tuner0\.json is empty; it holds nothing the search needs", messages)
    assert started == ["0002"]  # the finished trials were not run again
    rows = read_trials(second.trials_csv)
    assert [row["trial"] for row in rows] == ["0000", "0001", "0002"]
    assert {record.trial_id: record.score for record in second.trials if record.trial_id in scores} == scores
    assert json.loads((project / "oracle.json").read_text())["end_order"] == ["0000", "0001", "0002"]


def test_a_hyperband_trial_continues_the_weights_of_the_one_it_promotes_without_a_warning(tmp_path):
    # keras-tuner carries a promoted trial's weights, not its optimizer's state (a new
    # optimizer, built at the first step): Keras' warning that it skipped the saved
    # optimizer's variables said so on every promotion, to every user.
    data, project = tiny_data(size=16, n=32), tmp_path / "project"
    options = dict(tuner="hyperband", max_epochs=3, hyperband_factor=3, seed=2, directory=project, ranges=SMALL, top_k=0,
                   references=None)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tune.search("convnet", data, max_trials=4, **options)
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    records = {record.trial_id: record for record in result.trials}
    values = json.loads((project / "trial_0003" / "trial.json").read_text())["hyperparameters"]["values"]
    best_first = max(("0000", "0001", "0002"), key=lambda trial_id: records[trial_id].score)
    assert records["0003"].status == "COMPLETED" and values["tuner/initial_epoch"] == 1
    assert values["tuner/trial_id"] == best_first  # Hyperband promotes the first round's best


def test_a_hyperband_trial_whose_checkpoint_is_unreadable_trains_from_scratch(tmp_path):
    data, project = tiny_data(size=16, n=32), tmp_path / "project"
    # max_epochs 3, factor 3: a first bracket of 3 one-epoch trials, then the best
    # continued for 3 epochs in trial 0003.
    options = dict(tuner="hyperband", max_epochs=3, hyperband_factor=3, seed=2, directory=project, ranges=SMALL, top_k=0,
                   references=None)
    tune.search("convnet", data, max_trials=3, **options)
    for trial in ("0000", "0001", "0002"):
        checkpoint = project / f"trial_{trial}" / "checkpoint.weights.h5"
        checkpoint.write_bytes(checkpoint.read_bytes()[:300])
    with pytest.warns(UserWarning, match=r"Trial 0003: the checkpoint of trial 000\d it continues cannot be read \(.*checkpoint\.weights\.h5: .*\); it trains from scratch for its 3 epochs\."):
        result = tune.search("convnet", data, max_trials=4, **options)
    last = next(record for record in result.trials if record.trial_id == "0003")
    assert last.status == "COMPLETED" and last.epochs == 3
    values = json.loads((project / "trial_0003" / "trial.json").read_text())["hyperparameters"]["values"]
    assert values["tuner/initial_epoch"] == 0 and "tuner/trial_id" not in values and values["tuner/round"] == 1


# --------------------------------------------------------------------------
# The finish: the top trials retrained with the full recipe, references, selection.


def digits_like(n=96, size=32, classes=4, seed=0):
    """Random 32x32 images with a test split: LeNet-5 fits them."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)
    return kdata.load((x, np.arange(n) % classes), batch_size=32, validation_split=0.25, test_split=0.25, seed=seed)


def finish_rows(project):
    return [{k: row[k] for k in ("name", "kind", "rank", "val_accuracy", "test_accuracy")} for row in read_trials(project / "finish.csv")]


def test_the_rank_is_the_cheapest_within_one_standard_error_of_the_top():
    from kcnn.tune.selection import FinishRecord, rank, standard_error

    assert standard_error(0.99, 179) == pytest.approx(0.0092080, abs=1e-6)  # q = (177.21 + 1) / 181
    assert standard_error(1.0, 179) == pytest.approx(0.0055403, abs=1e-6)  # q = 180 / 181, not 0
    records = [
        FinishRecord("0001", "trial", validation=0.9944, validation_examples=179, macs=14_600_000, params=187_000),
        FinishRecord("0002", "trial", validation=0.9888, validation_examples=179, macs=400_000, params=40_000),
        FinishRecord("0003", "trial", validation=0.9777, validation_examples=179, macs=100_000, params=9_000),
        FinishRecord("0004", "trial", validation=0.9888, validation_examples=179, macs=400_000, params=30_000),
    ]
    # Top 99.44% (178 of 179): 98.88% is one image and 0.56 points lower, within the 1.23
    # points of the difference's standard error, and ties (the cheaper first, fewer
    # parameters breaking the MACs tie); 97.77% is three images, 1.68 points, beyond its 1.45.
    assert [(r.name, r.rank) for r in rank(records)] == [("0004", 1), ("0002", 2), ("0001", 3), ("0003", 4)]


def test_the_verdict_names_every_split_on_which_best_is_below_a_reference():
    from kcnn.tune import verdict
    from kcnn.tune.selection import FinishRecord, rank

    def run(name, kind, validation, test, macs):
        return FinishRecord(name, kind, validation=validation, validation_examples=179, test=test, test_examples=359,
                            macs=macs, params=macs // 10)  # fmt: skip

    # The trial is one validation image below LeNet-5, within the standard error, and cheaper:
    # it is kept, and the verdict says it is below on validation and test. The ConvNet,
    # more accurate still, pays for 16x the MACs: a lower score, and the trial is below it too.
    ranked = rank([run("0003", "trial", 0.9777, 0.9666, 200_000), run("lenet5", "reference", 0.9832, 0.9721, 416_520),
                   run("convnet", "reference", 0.9944, 0.9889, 16 * 416_520)], 416_520)  # fmt: skip
    assert [(r.name, r.rank) for r in ranked] == [("0003", 1), ("lenet5", 2), ("convnet", 3)]
    chosen, references = ranked[0], ranked[1:]
    comparisons = verdict.compare(chosen, references)
    assert [c["reference"] for c in comparisons] == ["lenet5", "convnet"] and verdict.below(comparisons) == ["lenet5", "convnet"]
    lenet = comparisons[0]
    assert lenet["below"] == ["validation", "test"] and lenet["macs"] == [200_000, 416_520]
    assert lenet["validation"]["difference"] == pytest.approx(-0.0055) and lenet["validation"]["error"] == pytest.approx(
        math.hypot(chosen.validation_error, references[0].validation_error)
    )
    assert verdict.lines(chosen, comparisons, note=", retrained") == [
        # Standard errors by Laplace's rule: sqrt(q (1 - q) / n), q = (k + 1) / (n + 2); of a difference, hypot.
        "best/: trial 0003, retrained: validation 97.77% ±1.22, test 96.66% ±0.98",
        "  vs lenet5: validation -0.55 ±1.65 points, test -0.55 ±1.34 points, 200.0K vs 416.5K MACs  BELOW it on validation and test",
        "  vs convnet: validation -1.67 ±1.45 points, test -2.23 ±1.16 points, 200.0K vs 6.7M MACs  BELOW it on validation and test",
    ]
    # A reference chosen is not compared with itself; above every reference, nothing is marked.
    assert verdict.compare(references[0], references) == verdict.compare(references[0], references[1:])
    assert not verdict.below(verdict.compare(references[1], [chosen, references[0]]))


def test_the_verdict_over_seeds_is_welchs_t_interval_on_the_difference_of_the_means():
    from scipy import stats

    from kcnn.tune import verdict
    from kcnn.tune.selection import FinishRecord

    def runs(name, kind, tests, macs):
        return [FinishRecord(name, kind, validation=0.99, validation_examples=179, test=test, test_examples=359,
                             macs=macs, params=macs // 10) for test in tests]  # fmt: skip

    # Test accuracies of three seeds each on 359 images (one image: 0.28 points).
    chosen = runs("0006", "trial", [0.9944, 0.9916, 0.9944], 260_000)
    lenet, convnet, vgg = (runs("lenet5", "reference", [0.9861, 0.9889, 0.9861], 416_520),
                           runs("convnet", "reference", [0.9972, 0.9944, 1.0], 38_300_000),
                           runs("vgg11", "reference", [0.9972, 0.9972, 1.0], 100_000_000))  # fmt: skip
    for ours, theirs in ((chosen, lenet), (chosen, convnet)):
        a, b = (np.array([r.test for r in ours]), np.array([r.test for r in theirs]))
        facts = verdict.difference(a, b)
        welch = stats.ttest_ind(a, b, equal_var=False)
        interval = welch.confidence_interval(0.95)
        assert facts["difference"] == pytest.approx(a.mean() - b.mean())
        assert facts["error"] == pytest.approx(math.sqrt(a.var(ddof=1) / 3 + b.var(ddof=1) / 3))
        assert facts["df"] == pytest.approx(welch.df)
        assert (facts["difference"] - facts["interval"], facts["difference"] + facts["interval"]) == pytest.approx(
            (interval.low, interval.high)
        )
    two = verdict.spread([0.9944, 0.9916])  # The sample standard deviation, NumPy's ddof=1.
    assert (two["values"], two["mean"], two["std"]) == ([0.9944, 0.9916], pytest.approx(0.993), pytest.approx(np.std([0.9944, 0.9916], ddof=1)))
    # No spread (every seed the same): any difference is beyond it, none is no verdict.
    assert [verdict.difference([0.5, 0.5], b)["verdict"] for b in ([0.25, 0.25], [0.5, 0.5], [0.75, 0.75])] == ["beats", "within", "below"]
    seeds = {(r[0].kind, r[0].name): r for r in (chosen, lenet, convnet, vgg)}
    comparisons = verdict.compare(chosen[0], [lenet[0], convnet[0], vgg[0]], seeds)
    assert [c["seeds"]["verdict"] for c in comparisons] == ["beats", "within", "below"]
    assert comparisons[0]["seeds"]["test"]["chosen"] == verdict.spread([0.9944, 0.9916, 0.9944])
    assert verdict.lines(chosen[0], comparisons, seeds=verdict.over_seeds(chosen))[4:] == [
        "over 3 seeds, test accuracy: mean ±sample standard deviation (each seed's); differences of the means ±their 95% Welch t interval",
        "  trial 0006: 99.35% ±0.16 (99.44 99.16 99.44)",
        "  lenet5: 98.70% ±0.16 (98.61 98.89 98.61); trial 0006 beats it by +0.64 ±0.37 points",  # t(4) = 2.78
        "  convnet: 99.72% ±0.28 (99.72 99.44 100.00); trial 0006 is within the spread: -0.37 ±0.57 points",
        "  vgg11: 99.81% ±0.16 (99.72 99.72 100.00); trial 0006 is BELOW it by -0.47 ±0.37 points",
    ]
    # One seed: the verdict of one run, as before repeats.
    assert "seeds" not in verdict.compare(chosen[0], [lenet[0]], {k: v[:1] for k, v in seeds.items()})[0]
    with pytest.raises(ValueError, match=r"`seeds` must be an int >= 1. Received: seeds=0"):
        tune.SearchConfig(seeds=0)


def test_the_finish_retrains_the_cheapest_trials_the_validation_split_cannot_tell_from_the_best():
    from kcnn.tune.selection import select_candidates

    def trial(number, score, macs):
        return tune.TrialRecord(f"{number:04d}", number + 1, None, "COMPLETED", score=score, macs=macs)

    # Ranked best first, on 179 validation images: 98.88% (one image below 99.44%) is
    # within the standard error of the difference (1.23 points), 97.77% (three images,
    # 1.68 points) beyond its 1.45.
    ranked = [trial(0, 0.9944, 127e6), trial(1, 0.9888, 9e6), trial(2, 0.9888, 1e6), trial(3, 0.9777, 0.4e6)]
    assert [r.trial_id for r in select_candidates(ranked, 3, 179)] == ["0002", "0001", "0000"]
    # Fewer places than ties: the best trial takes the last, against the cheapest tie.
    assert [r.trial_id for r in select_candidates(ranked, 2, 179)] == ["0002", "0000"]
    assert [r.trial_id for r in select_candidates(ranked, 1, 179)] == ["0000"]
    assert [r.trial_id for r in select_candidates(ranked, 4, 179)] == ["0002", "0001", "0000", "0003"]
    assert [r.trial_id for r in select_candidates(ranked, 2, 179, accuracy=False)] == ["0000", "0001"]


# One seed: the repeats of the chosen run and the references are tested on their own (`seeds`).
SEARCH = dict(tuner="random", max_trials=2, max_epochs=1, top_k=2, finish_epochs=1, seed=3, seeds=1)
SMALL_32 = dict(depth=2, filters=4, hidden_units=8, convs_per_stage=1, strides=2, pool=True, kernel_size=(3, 5))


def test_the_top_trials_are_retrained_with_the_full_recipe_tested_and_ranked_the_same_with_the_same_seed(
    tmp_path, monkeypatch
):
    from kcnn import train

    data, project, settings = digits_like(), tmp_path / "a", dict(SEARCH, seeds=2)
    result = tune.search("convnet", data, directory=project, ranges=SMALL_32, references="lenet5", **settings)
    ranked = sorted((r for r in result.trials if r.status == "COMPLETED"), key=lambda r: (-r.score, r.macs, r.number))
    # The two best trials, retrained as `kcnn train` trains (its recipe, the search's seed).
    assert sorted(r.name for r in result.retrained) == sorted(r.trial_id for r in ranked[:2])
    assert [r.rank for r in result.retrained] == [1, 2]
    for record in result.retrained:
        metadata = json.loads((record.path / "metadata.json").read_text())
        assert metadata["status"] == "completed" and metadata["search"]["trial_id"] == record.name
        recipe = {k: v for k, v in metadata["config"].items() if k not in ("epochs", "seed", "learning_rate")}
        assert recipe == {k: v for k, v in kcnn.train.TrainConfig().to_dict().items() if k in recipe}
        assert (metadata["config"]["epochs"], metadata["config"]["seed"]) == (1, tune.search_train_config().seed)
        assert record.test == metadata["metrics"]["test"]["accuracy"] and record.test_examples == 24
        assert record.validation == metadata["metrics"]["validation"]["accuracy"] and record.validation_examples == 24
        assert record.macs == next(r.macs for r in result.trials if r.trial_id == record.name)
    # best/ is the chosen run (rank 1 of the trials and the reference, all at chance on these
    # images: the cheapest), with the search's facts and its verdict against the reference.
    chosen = result.retrained[0]
    assert result.chosen == chosen and result.best_trial == chosen.name and result.best_test_accuracy == chosen.test
    best = json.loads((result.path / "metadata.json").read_text())
    assert best["search"]["trial_id"] == chosen.name and best["kind"] == "search" and not best["search"]["restored"]
    assert best["metrics"]["test"]["accuracy"] == chosen.test
    assert best["search"]["chosen"] == {"kind": "trial", "name": chosen.name, "validation": chosen.validation,
                                        "test": chosen.test, "macs": chosen.macs, "params": chosen.params,
                                        "score": chosen.score}  # fmt: skip
    assert best["search"]["against_references"] == list(result.comparisons) and best["search"]["below_references"] == []
    (comparison,) = result.comparisons
    assert (comparison["reference"], comparison["validation"]["difference"], comparison["below"]) == ("lenet5", 0.0, [])
    lines = result.verdict().splitlines()
    assert lines[0].startswith(f"best/: trial {chosen.name}, retrained with the full recipe: ")
    assert lines[1].startswith("  vs lenet5: validation +0.00 ±")
    # The chosen run and the reference again with seed 1, next to seed 0 (the finish's run,
    # which chose): the same recipe and split (the same 24 test images), other weights and
    # batches (another first loss).
    repeats = {chosen: project / "finish" / f"trial_{chosen.name}_seed1", "lenet5": project / "finish" / "reference_lenet5_seed1"}
    tests = {}
    for record, run in repeats.items():
        first = record.path if record != "lenet5" else project / "finish" / "reference_lenet5"
        metadata, seed_0 = (json.loads((path / "metadata.json").read_text()) for path in (run, first))
        assert metadata["status"] == "completed" and metadata["search"]["seed"] == 1
        assert metadata["config"] == seed_0["config"] and metadata["metrics"]["test"]["examples"] == 24
        assert read_trials(run / "history.csv")[0]["loss"] != read_trials(first / "history.csv")[0]["loss"]
        tests[run] = [seed_0["metrics"]["test"]["accuracy"], metadata["metrics"]["test"]["accuracy"]]
    # best/metadata.json: the chosen model's accuracies over the seeds and the verdict on LeNet-5.
    over = best["search"]["over_seeds"]
    assert over == {**result.over_seeds, "verdicts": {"lenet5": comparison["seeds"]["verdict"]},
                    "runs": {f"trial {chosen.name}": [f"finish/trial_{chosen.name}", f"finish/trial_{chosen.name}_seed1"],
                             "lenet5": ["finish/reference_lenet5", "finish/reference_lenet5_seed1"]}}  # fmt: skip
    assert over["seeds"] == 2 and over["test"]["values"] == tests[repeats[chosen]]
    assert comparison["seeds"]["test"]["reference"]["values"] == tests[repeats["lenet5"]]
    assert lines[2].startswith("over 2 seeds, test accuracy: mean ±sample standard deviation")
    assert lines[3].startswith(f"  trial {chosen.name}: ") and lines[4].startswith("  lenet5: ")
    assert re.search(rf"; trial {chosen.name} (beats it by|is within the spread:|is BELOW it by) [+-]\d\.\d\d ±\d+\.\d\d points$", lines[4])
    # trials.csv shows the retrained scores next to the search's.
    rows = {row["trial"]: row for row in read_trials(result.trials_csv)}
    for record in result.retrained:
        row = rows[record.name]
        assert (row["retrained_rank"], float(row["retrained_test_accuracy"])) == (str(record.rank), record.test)
    # The reference, trained with the same recipe on the same data, is ranked with them (a
    # candidate for best/: the costliest of equal scores here), plotted and labelled.
    (reference,) = result.references
    # LeNet-5 (61,706 parameters, 416,520 MACs with 10 classes) with 4 outputs of its 84-unit F6.
    assert (reference.name, reference.kind, reference.params, reference.macs) == ("lenet5", "reference", 61_196, 416_016)
    assert reference.rank == 3 and reference.score == reference.validation
    assert reference.test is not None
    labels = pareto_plot.plot_pareto(tmp_path / "plot.png", result.trials, "val_accuracy", finish=[*result.retrained, reference])
    assert f"lenet5 {100 * reference.test:.2f}%" in labels and f"trial {chosen.name} (chosen) {100 * chosen.test:.2f}%" in labels
    assert "reference, test (val open)" in labels
    table = result.table()
    assert re.search(rf"^ +\*1 trial {chosen.name} ", table, re.M) and re.search(r"^ +3 lenet5 \(ref\) ", table, re.M)
    assert [row["name"] for row in read_trials(project / "finish.csv")] == [*(r.name for r in result.retrained), "lenet5"]
    # A MACs search that asked for no latency measures none, the finish neither (no cache, no column).
    assert not (project / "latency.json").exists() and {r.latency_ms for r in [*result.retrained, reference]} == {None}
    assert " ms " not in table and "latency" not in best["search"]["chosen"]

    # The same search again: every run is read (the repeats too), none trained, the same verdict.
    fits = []
    real_fit = train.fit
    monkeypatch.setattr(train, "fit", lambda *args, **kwargs: fits.append(kwargs["output"]) or real_fit(*args, **kwargs))
    again = tune.search("convnet", data, directory=project, ranges=SMALL_32, references="lenet5", **settings)
    assert fits == [] and (again.over_seeds, again.comparisons) == (result.over_seeds, result.comparisons)

    # The same seed, another project: the same trials, retrained to the same scores and ranking.
    second = tune.search("convnet", data, directory=tmp_path / "b", ranges=SMALL_32, references=None, **SEARCH)
    assert finish_rows(tmp_path / "b") == finish_rows(project)[:2]
    # A finish cut short (its second run lost) trains that run only when resumed.
    shutil.rmtree(second.retrained[1].path)
    fits.clear()
    again = tune.search("convnet", data, directory=tmp_path / "b", ranges=SMALL_32, references=None, **SEARCH)
    assert fits == [second.retrained[1].path]
    assert finish_rows(tmp_path / "b") == finish_rows(project)[:2] and again.best_trial == result.best_trial


@pytest.mark.parametrize(
    "name, ranges",
    [
        ("resnet", dict(block="basic", depth=2, stages=1, width=4, stem="small", learning_rate=3e-3)),
        ("inception", {"depth": 2, "modules": 1, "1x1": 4, "3x3": 4, "5x5": 4, "pool_proj": 4, "stem_width": 4}),
    ],
)
def test_the_resnet_and_inception_spaces_finish_the_same_way(tmp_path, name, ranges):
    # No references: the spaces' retraining is the point (a reference would compete for best/).
    result = tune.search(name, digits_like(n=48), directory=tmp_path, ranges=ranges, references=None,
                         **dict(SEARCH, max_trials=1, top_k=1))  # fmt: skip
    (record,) = result.retrained
    assert (record.name, record.rank, record.test_examples) == ("0000", 1, 12) and record.test is not None
    metadata = json.loads((result.path / "metadata.json").read_text())
    assert metadata["model"]["builder"] == tune.SPACES[name].builder_name
    assert metadata["metrics"]["test"]["accuracy"] == record.test == result.best_test_accuracy
    assert result.over_seeds is None and "over_seeds" not in metadata["search"]  # One seed, no spread.


def test_a_diverged_trial_is_a_failed_trial_with_its_reason(tmp_path):
    import keras

    class Diverge(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            logs["loss"] = float("nan")

    with pytest.raises(ValueError, match="No trial of the search completed"):
        tune.search("convnet", tiny_data(size=16, n=32), tuner="random", max_trials=1, max_epochs=1, top_k=0,
                    references=None, directory=tmp_path, ranges=SMALL, callbacks=[Diverge()])  # fmt: skip
    (row,) = read_trials(tmp_path / "trials.csv")
    assert row["status"] == "FAILED"
    assert row["reason"].startswith("Training diverged: `loss` is nan at epoch 1, batch 1. The learning rate is probably too high")
    # Short trials train BatchNorm with a momentum whose statistics catch up in a few steps.
    assert tune.search_train_config().bn_momentum == 0.9
