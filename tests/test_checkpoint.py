"""kcnn.train.checkpoint: a run resumes from the newest complete checkpoint whatever
file of it a kill (or a disk) left truncated, emptied or missing; falls back to the
previous checkpoint, or starts again from the beginning, with a warning naming what
was unusable; never a traceback, never random weights under a continuing epoch count.

One interrupted run (two epochs committed, the third begun) is made once; each case
damages a copy of its folder and resumes it, checking the state the resumed `fit`
starts from against the weights and optimizer state recorded at each epoch's end.
"""

import json
import pathlib
import re
import shutil
import warnings

import keras
import numpy as np
import pytest

from kcnn import convnet, data, train
from kcnn.train.runs import RunFolder

EPOCHS = 4
STEPS = 3  # 24 training images in batches of 8
CONFIG = train.TrainConfig(epochs=EPOCHS, batch_size=8, augment=None, steps_per_execution=1, warmup_epochs=1.0)


def tiny():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (48, 12, 12, 1), dtype=np.uint8)
    return data.load((x, np.arange(48) % 3), batch_size=8, validation_split=0.25, test_split=0.25, seed=0)


def small():
    return convnet(filters=(4,), hidden_units=(), input_shape=(12, 12, 1), classes=3)


def state(model):
    """The weights and the optimizer's variables (step count, moments), as arrays."""
    variables = model.optimizer.variables if model.optimizer is not None else []
    return [np.array(w) for w in model.get_weights()], [np.array(v) for v in variables]


class Record(keras.callbacks.Callback):
    """The state at the start of `fit` (after the restore) and at each epoch's end."""

    def __init__(self, stop_at=None):
        super().__init__()
        self.stop_at = stop_at
        self.begin = None
        self.ends = {}

    def on_train_begin(self, logs=None):
        if self.model.optimizer.built:
            self.begin = state(self.model)
        else:  # A fresh start: the optimizer has no variables yet.
            self.begin = (state(self.model)[0], None)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.stop_at:
            raise KeyboardInterrupt  # As a kill, for what is on disk: epochs 1..stop_at committed.

    def on_epoch_end(self, epoch, logs=None):
        self.ends[epoch + 1] = state(self.model)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run interrupted when its third epoch began, the states it went through, and
    its model's initial weights."""
    folder = tmp_path_factory.mktemp("interrupted") / "run"
    model = small()
    initial = model.get_weights()
    record = Record(stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        train.fit(model, tiny(), CONFIG, output=folder, callbacks=[record], verbose=0)
    history = RunFolder(folder).read_history()
    assert [row["epoch"] for row in history] == [1, 2]
    return folder, record.ends, initial, history


def resume(interrupted, tmp_path, damage=lambda run: None):
    """Damages a copy of the interrupted run, resumes it, and returns what the resumed
    `fit` started from, the result and the warnings."""
    source, _ends, initial, _ = interrupted
    folder = tmp_path / "run"
    shutil.copytree(source, folder)
    run = RunFolder(folder)
    damage(run)
    model = small()
    model.set_weights(initial)
    record = Record()
    seen = {}

    class Look(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["history"] = run.read_history()
            saved = keras.saving.load_model(run.model_path) if run.model_path.exists() else None
            seen["model.keras"] = saved and [np.array(w) for w in saved.get_weights()]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train.fit(model, tiny(), CONFIG, output=folder, callbacks=[record, Look()], verbose=0)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return record, seen, result, [m for m in messages if "checkpoint" in m or "metadata.json" in m]


def assert_same(actual, expected):
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        np.testing.assert_array_equal(a, b)


def assert_resumed_after(record, ends, epoch):
    weights, optimizer = record.begin
    assert_same(weights, ends[epoch][0])
    assert_same(optimizer, ends[epoch][1])  # the step count and the moments too
    assert int(optimizer[0]) == epoch * STEPS


def test_the_checkpoint_holds_the_weights_the_optimizer_and_a_record_naming_them(interrupted):
    folder, _ends, _, history = interrupted
    names = sorted(p.name for p in (folder / "checkpoint").iterdir())
    assert names == [
        "best-epoch0001.keras", "best-epoch0002.keras",
        "phase1-epoch0001.json", "phase1-epoch0001.weights.h5",
        "phase1-epoch0002.json", "phase1-epoch0002.weights.h5",
    ] or names == [  # the same best epoch twice: one best model
        "best-epoch0001.keras",
        "phase1-epoch0001.json", "phase1-epoch0001.weights.h5",
        "phase1-epoch0002.json", "phase1-epoch0002.weights.h5",
    ]  # fmt: skip
    record = json.loads((folder / "checkpoint" / "phase1-epoch0002.json").read_text())
    assert record["format"] == "kcnn.checkpoint/1"
    assert (record["phase"], record["phase_start"], record["epoch"], record["phase_done"]) == (0, 0, 2, False)
    weights = folder / "checkpoint" / "phase1-epoch0002.weights.h5"
    assert record["files"]["weights"]["name"] == weights.name and record["files"]["weights"]["size"] == weights.stat().st_size
    assert record["history"] == history
    assert record["best"]["epoch"] == min(history, key=lambda row: row["val_loss"])["epoch"]
    assert record["run"]["kind"] == "fit" and record["run"]["config"] == CONFIG.to_dict()
    assert not (folder / "kcnn.lock").exists()  # released when the process left fit


def test_an_interrupted_run_resumes_from_its_newest_checkpoint(interrupted, tmp_path):
    _, ends, _, history = interrupted
    record, seen, result, messages = resume(interrupted, tmp_path)
    assert_resumed_after(record, ends, 2)
    assert seen["history"] == history and messages == []
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert result.history[:2] == history
    assert result.metadata["status"] == "completed" and not (result.path / "checkpoint").exists()


def test_a_kill_during_a_checkpoint_write_resumes_from_the_one_before(interrupted, tmp_path):
    # Killed while writing epoch 2's checkpoint: its weights half-written under their
    # temporary name, its record never written; epoch 3's left nothing.
    def kill_in_write(run):
        checkpoint = run.path / "checkpoint"
        weights = (checkpoint / "phase1-epoch0002.weights.h5").read_bytes()
        (checkpoint / "phase1-epoch0002.weights.h5").rename(checkpoint / ".phase1-epoch0002.weights.999.tmp.h5")
        (checkpoint / ".phase1-epoch0002.weights.999.tmp.h5").write_bytes(weights[: len(weights) // 3])
        (checkpoint / "phase1-epoch0002.json").unlink()

    _, ends, _, history = interrupted
    record, seen, result, messages = resume(interrupted, tmp_path, kill_in_write)
    assert_resumed_after(record, ends, 1)
    assert seen["history"] == history[:1] and messages == []  # an ordinary kill: nothing to report
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]


def test_a_kill_during_the_first_checkpoint_write_starts_the_run_again(interrupted, tmp_path):
    def kill_in_first_write(run):
        checkpoint = run.path / "checkpoint"
        for path in checkpoint.iterdir():
            path.unlink()
        (checkpoint / ".phase1-epoch0001.weights.999.tmp.h5").write_bytes(b"\x89HDF\r\n")

    _, _, initial, _ = interrupted
    record, seen, result, messages = resume(interrupted, tmp_path, kill_in_first_write)
    assert_same(record.begin[0], initial) and record.begin[1] is None
    assert seen["history"] == [] and messages == []
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "name, damage, problem",
    [
        ("phase1-epoch0002.json", "truncate", r"phase1-epoch0002\.json is not valid JSON"),
        ("phase1-epoch0002.json", "empty", r"phase1-epoch0002\.json is empty"),
        ("phase1-epoch0002.weights.h5", "truncate", r"phase1-epoch0002\.json names phase1-epoch0002\.weights\.h5 has [\d,]+ bytes where [\d,]+ were written"),
        ("phase1-epoch0002.weights.h5", "empty", r"phase1-epoch0002\.weights\.h5 has 0 bytes"),
        ("phase1-epoch0002.weights.h5", "remove", r"phase1-epoch0002\.weights\.h5 is missing"),
        ("phase1-epoch0002.weights.h5", "flip", r"phase1-epoch0002\.weights\.h5 is damaged"),
    ],
)
def test_an_unusable_newest_checkpoint_falls_back_to_the_previous_one(interrupted, tmp_path, name, damage, problem):
    def break_it(run):
        path = run.path / "checkpoint" / name
        content = path.read_bytes()
        if damage == "remove":
            path.unlink()
        elif damage == "flip":  # same size, one byte changed
            middle = len(content) // 2
            path.write_bytes(content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1 :])
        else:
            path.write_bytes(content[: len(content) // 2] if damage == "truncate" else b"")

    _, ends, _, history = interrupted
    record, seen, result, messages = resume(interrupted, tmp_path, break_it)
    assert_resumed_after(record, ends, 1)
    assert seen["history"] == history[:1]
    assert len(messages) == 1
    assert re.search(problem, messages[0]), messages
    assert "resumes from the previous one, phase1-epoch0001.json (after epoch 1)" in messages[0]
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]


def test_with_no_usable_checkpoint_the_run_starts_again_with_a_warning(interrupted, tmp_path):
    def break_all(run):
        for path in (run.path / "checkpoint").glob("*.weights.h5"):
            path.write_bytes(path.read_bytes()[:100])
        (run.path / "history.csv").unlink()

    _, _, initial, _ = interrupted
    record, seen, result, messages = resume(interrupted, tmp_path, break_all)
    assert_same(record.begin[0], initial) and record.begin[1] is None  # not the weights of an epoch
    assert seen["history"] == []
    assert len(messages) == 1 and "has nothing usable" in messages[0] and "starts again from its beginning (epoch 1)" in messages[0]
    assert "phase1-epoch0002.weights.h5 has 100 bytes" in messages[0] and "phase1-epoch0001.weights.h5 has 100 bytes" in messages[0]
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]


@pytest.mark.parametrize("damage", ["remove", "truncate"])
def test_model_keras_and_history_csv_are_made_again_from_the_checkpoint(interrupted, tmp_path, damage):
    def break_them(run):
        for path in (run.model_path, run.history_path):
            if damage == "remove":
                path.unlink()
            else:
                path.write_bytes(path.read_bytes()[:50])

    _, ends, _, history = interrupted
    best = min(history, key=lambda row: row["val_loss"])["epoch"]
    record, seen, _result, messages = resume(interrupted, tmp_path, break_them)
    assert_resumed_after(record, ends, 2)
    assert seen["history"] == history and messages == []
    assert_same(seen["model.keras"], ends[best][0])  # the best epoch's model, as it was


def test_an_unreadable_metadata_json_is_reported_and_the_run_resumes(interrupted, tmp_path):
    def truncate(run):
        run.metadata_path.write_text(run.metadata_path.read_text()[:30])

    _, ends, _, _ = interrupted
    record, _, result, messages = resume(interrupted, tmp_path, truncate)
    assert_resumed_after(record, ends, 2)
    assert any("metadata.json is not valid JSON" in m and "names the unfinished run, which resumes" in m for m in messages)
    assert result.metadata["status"] == "completed"


def test_an_unreadable_metadata_json_without_checkpoint_is_refused_with_the_way_out(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    (run.path / "model.keras").write_bytes(b"a finished run's model")
    run.metadata_path.write_text('{"format": "kcnn.run/1", "sta')
    with pytest.raises(ValueError, match=r"metadata\.json is not valid JSON .*no checkpoint in the folder tells which run it holds.*delete the folder, or choose another output\. Received: output="):
        train.fit(small(), tiny(), CONFIG, output=run.path, verbose=0)
    assert (run.path / "model.keras").read_bytes() == b"a finished run's model"


def test_a_second_phase_resumes_in_its_phase_and_falls_back_to_its_start(tmp_path):
    def base():
        return convnet(filters=(4, 8), hidden_units=(), input_shape=(12, 12, 1), classes=3)

    initial = base().get_weights()
    dataset = tiny()
    config = train.TrainConfig(epochs=4, batch_size=8, augment=None, steps_per_execution=1)
    record = Record(stop_at=3)

    def fine_tune(callbacks):
        model = base()
        model.set_weights(initial)
        return train.fine_tune(model, dataset, config, head_epochs=2, output=tmp_path / "run", callbacks=callbacks, verbose=0)

    with pytest.raises(KeyboardInterrupt):
        fine_tune([record])
    checkpoint = tmp_path / "run" / "checkpoint"
    # The newest two epochs, and the end of phase 1 with the weights phase 2 starts from.
    assert sorted(p.name for p in checkpoint.glob("*.json")) == ["phase1-epoch0002.json", "phase2-epoch0003.json"]
    assert (checkpoint / "phase1-epoch0002.model.weights.h5").is_file()
    # Phase 2's checkpoint is unusable: phase 2 starts again from phase 1's end.
    (checkpoint / "phase2-epoch0003.weights.h5").unlink()
    resumed = Record()
    with pytest.warns(UserWarning, match=r"phase2-epoch0003\.weights\.h5 is missing\. The run resumes from the previous one, phase1-epoch0002\.json \(after epoch 2\)"):
        result = fine_tune([resumed])
    assert_same(resumed.begin[0], record.ends[2][0])  # the model as phase 1 left it, a new optimizer
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert result.history[2]["learning_rate"] == pytest.approx(3e-4)  # phase 2's warm-up, from its start


def test_a_monitor_the_model_never_logs_is_refused_before_training(tmp_path):
    config = train.TrainConfig(epochs=1, batch_size=8, augment=None, monitor="val_acc")
    with pytest.raises(
        ValueError,
        match=r"`monitor` must be a quantity the model logs: one of loss, accuracy, crossentropy, val_loss, "
        r"val_accuracy, val_crossentropy\. Received: monitor='val_acc'",
    ):
        train.fit(small(), tiny(), config, output=tmp_path / "run", verbose=0)
    assert not (tmp_path / "run" / "metadata.json").exists() and not (tmp_path / "run" / "history.csv").exists()
    # Corrected, the same folder trains.
    config = train.TrainConfig(epochs=1, batch_size=8, augment=None, monitor="val_accuracy")
    fixed = train.fit(small(), tiny(), config, output=tmp_path / "run", verbose=0)
    assert fixed.metadata["monitor"] == "val_accuracy"


def test_the_monitor_names_follow_the_model_and_the_data():
    from kcnn.train.callbacks import check_monitor, logged_quantities

    many = keras.Sequential([keras.Input((4,)), keras.layers.Dense(20, activation="softmax")])
    assert logged_quantities(many, validation=False) == ["loss", "accuracy", "crossentropy", "top5_accuracy"]
    inputs = keras.Input((4,))
    two = keras.Model(inputs, [keras.layers.Dense(3, name="predictions")(inputs), keras.layers.Dense(3, name="aux1_predictions")(inputs)])
    assert "val_aux1_predictions_loss" in logged_quantities(two, validation=True)
    with pytest.raises(ValueError, match=r"\(the data has no validation split\): one of loss, accuracy, crossentropy, top5_accuracy\. Received: monitor='val_loss'"):
        check_monitor("val_loss", many, validation=False)


def test_a_damaged_model_file_is_named_as_such(tmp_path):
    from kcnn import lenet5

    path = tmp_path / "model.keras"
    lenet5().save(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"model\.keras is not a readable \.keras model: it is no zip archive \(1,000 bytes\), so it is truncated, emptied or damaged\..*Received: path="):
        train.load(path)
    (tmp_path / "metadata.json").write_text("{")
    lenet5().save(path)
    with pytest.raises(ValueError, match=r"metadata\.json is not valid JSON .*restore it from a copy"):
        train.load(tmp_path)


def test_history_csv_is_written_from_the_restored_rows(tmp_path):
    run = RunFolder(tmp_path)
    rows = [{"epoch": 1, "loss": 1.0, "val_loss": float("nan")}, {"epoch": 2, "loss": 0.5, "val_loss": 0.25}]
    run.write_history(rows)
    assert run.read_history()[0]["loss"] == 1.0 and run.read_history()[1] == rows[1]
    run.append_history({"epoch": 3, "loss": 0.125, "val_loss": 0.0625})
    assert [row["loss"] for row in run.read_history()] == [1.0, 0.5, 0.125]
    run.write_history([])
    assert not run.history_path.exists() and run.read_history() == []


def test_leftovers_of_killed_writers_are_removed_and_block_nothing(interrupted, tmp_path):
    def leave_leftovers(run):
        (run.path / ".model.4242.tmp.keras").write_bytes(b"half")
        (run.path / "kcnn.lock").write_text('{"pid": 4242, "host": "gone"}')  # the lock file of a killed process

    _record, _, result, messages = resume(interrupted, tmp_path, leave_leftovers)
    assert messages == [] and result.metadata["status"] == "completed"
    assert not any(p.name.startswith(".") for p in result.path.iterdir()) and not (result.path / "kcnn.lock").exists()
    assert pathlib.Path(result.path).is_dir()


def test_a_run_killed_after_its_last_epoch_finishes_without_training_again(tmp_path):
    class StopAtTheEnd(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            raise KeyboardInterrupt  # After the last epoch's checkpoint, before the run is finished.

    config = train.TrainConfig(epochs=2, batch_size=8, augment=None)
    with pytest.raises(KeyboardInterrupt):
        train.fit(small(), tiny(), config, output=tmp_path / "run", callbacks=[StopAtTheEnd()], verbose=0)
    run = RunFolder(tmp_path / "run")
    assert run.read_metadata()["status"] == "running" and run.read_state()["phases_done"] == 1
    record = Record()
    result = train.fit(small(), tiny(), config, output=run.path, callbacks=[record], verbose=0)
    assert record.begin is None and record.ends == {}  # nothing trained again
    assert [row["epoch"] for row in result.history] == [1, 2] and result.metadata["status"] == "completed"
    assert result.metrics["best_epoch"] == min(result.history, key=lambda row: row["val_loss"])["epoch"]


def test_the_best_model_is_hashed_once_per_version_not_at_every_epoch(tmp_path, monkeypatch):
    """Every record names the best epoch's model with its SHA-256; an unchanged file
    (100 MB for a ResNet-50) is not read again at each epoch to say so."""
    from kcnn import _files
    from kcnn.train import checkpoint as kcheckpoint
    from kcnn.train.checkpoint import Checkpoint, best_file_name

    hashed = []
    digest = _files.file_digest
    for module in (_files, kcheckpoint):  # checking a file (`check_digest`) hashes it too
        monkeypatch.setattr(module, "file_digest", lambda path: hashed.append(pathlib.Path(path).name) or digest(path))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    folder = Checkpoint(tmp_path / "checkpoint")
    best = folder.directory / best_file_name(1)
    folder.directory.mkdir()
    best.write_bytes(b"the best epoch's model")
    common = dict(phase=0, phase_start=0, phase_done=False, more_phases=False, model=model, model_only=None, stopped_early=False, history=[])
    for epoch in (1, 2, 3):  # epoch 1 stays the best
        folder.commit(epoch=epoch, best_value=0.5, best_epoch=1, **common)
    assert hashed.count(best.name) == 1
    # A new version of the file (kcnn writes by renaming over it) is hashed again.
    replacement = best.with_name("new.keras")
    replacement.write_bytes(b"THE BEST EPOCH'S MODEL")
    replacement.replace(best)
    record = folder.commit(epoch=4, best_value=0.5, best_epoch=1, **common)
    assert hashed.count(best.name) == 2
    assert json.loads(record.read_text())["files"]["best_model"]["sha256"] == digest(best)["sha256"]
    # A run resumed in a new process checks it once, when it restores the record.
    hashed.clear()
    resumed = Checkpoint(folder.directory)
    restored, problems = resumed.restore_point()
    assert problems == [] and restored.best_model == best and hashed.count(best.name) == 1
    resumed.commit(epoch=5, best_value=0.5, best_epoch=1, **common)
    assert hashed.count(best.name) == 1


def test_a_checkpoint_left_by_a_kill_after_the_run_completed_goes_when_the_folder_is_opened_again(tmp_path, monkeypatch):
    """Marked completed, then killed before its checkpoint/ was removed (300 MB for a
    ResNet run): the next trainer to open the folder removes it, and is refused as
    for any finished run."""
    def killed(run):
        raise KeyboardInterrupt  # the kill, between the two writes

    config = train.TrainConfig(epochs=1, batch_size=8, augment=None)
    with monkeypatch.context() as patch:
        patch.setattr(RunFolder, "remove_checkpoint", killed)
        with pytest.raises(KeyboardInterrupt):
            train.fit(small(), tiny(), config, output=tmp_path / "run", verbose=0)
    run = RunFolder(tmp_path / "run")
    assert run.read_metadata()["status"] == "completed" and run.checkpoint.records()
    with pytest.raises(ValueError, match="holds a finished run"):
        train.fit(small(), tiny(), config, output=run.path, verbose=0)
    assert not run.checkpoint_dir.exists()
    assert sorted(p.name for p in run.path.iterdir()) == ["curves.png", "history.csv", "logs", "metadata.json", "model.keras"]
