"""kcnn._lock: one process at a time in a run folder or a tuning project, refused at
once with the holder named; a killed holder blocks nothing. Tested with real processes,
each with a timeout and SIGKILLed at the end."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from kcnn._lock import LOCK_FILE, FolderInUseError, FolderLock, check_free

TESTS = pathlib.Path(__file__).parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(sys.path)}


def wait_for(path, process, seconds=240):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_a_second_lock_is_refused_naming_the_holder_and_released_with_its_file(tmp_path):
    with FolderLock(tmp_path, "kcnn training run"):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        # Another open file of the same process is refused too (two runs in threads).
        with pytest.raises(FolderInUseError) as refused:
            FolderLock(tmp_path, "kcnn training run").acquire()
        message = str(refused.value)
        assert f"is in use by process {os.getpid()} on {socket.gethostname()}, running since {holder['started']}" in message
        assert "(kcnn training run: " in message and message.endswith(f"Received: {os.fspath(tmp_path)!r}")
        with pytest.raises(FolderInUseError):
            check_free(tmp_path, "kcnn training run")
    assert not (tmp_path / LOCK_FILE).exists()
    check_free(tmp_path, "kcnn training run")
    assert list(tmp_path.iterdir()) == []


def test_the_lock_file_of_a_dead_process_blocks_nothing(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": socket.gethostname(), "started": "yesterday"}))
    with FolderLock(tmp_path, "search") as lock:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid() and lock.held


def test_a_lock_file_removed_by_a_releasing_holder_is_not_locked_twice(tmp_path):
    # Between our open() and flock(), the holder released and removed the file, and a
    # third process made a new one: the lock must be on the file at the path.
    first = FolderLock(tmp_path, "a").acquire()
    stale = os.open(tmp_path / LOCK_FILE, os.O_RDWR)
    first.release()
    second = FolderLock(tmp_path, "b").acquire()
    import fcntl

    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the removed inode: free, and useless
    os.close(stale)
    with pytest.raises(FolderInUseError):
        FolderLock(tmp_path, "c").acquire()
    second.release()


def test_a_second_training_is_refused_then_the_killed_holder_resumes_without_losing_an_epoch(tmp_path):
    """One pair of processes for two claims: while a training holds its run folder (in
    the middle of epoch 3), a second one is refused and writes nothing; SIGKILLed there,
    as a machine that loses power, the holder leaves an unfinished run that a new
    process completes: every epoch once, and the optimizer's state restored (the learning
    rate follows the whole run's schedule, not one restarted at epoch 3)."""
    sys.path.insert(0, str(TESTS))
    import _train_worker as worker

    from kcnn import train
    from kcnn.train.compile import make_schedule
    from kcnn.train.runs import RunFolder

    output, marker = tmp_path / "run", tmp_path / "holding"
    run = RunFolder(output)
    config = train.TrainConfig(epochs=worker.EPOCHS, **worker.CONFIG)
    command = [sys.executable, str(TESTS / "_train_worker.py"), str(output)]
    holder = subprocess.Popen([*command, "--hold-at-epoch", "3", str(marker)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(marker, holder)
        # The second training, in this process (another one than the holder's: what the
        # lock tells apart), as the worker would start it.
        with pytest.raises(FolderInUseError, match=re.escape(f"{output} is in use by process {holder.pid} on {socket.gethostname()}")):
            train.fit("lenet5", worker.tiny_digits(), config, output=output, verbose=0)
        assert [row["epoch"] for row in run.read_history()] == [1, 2]  # nothing of the second process
    finally:
        stop(holder)
    assert holder.returncode == -signal.SIGKILL
    assert run.read_metadata()["status"] == "running" and run.checkpoint_dir.is_dir()

    resumed = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = run.read_history()
    assert [row["epoch"] for row in history] == list(range(1, worker.EPOCHS + 1))
    metadata = run.read_metadata()
    assert metadata["status"] == "completed" and metadata["metrics"]["epochs"] == worker.EPOCHS
    assert not run.checkpoint_dir.exists() and not (output / LOCK_FILE).exists()
    steps = 4  # 32 training images in batches of 8
    schedule = make_schedule(config, steps)
    for row in history:
        assert row["learning_rate"] == pytest.approx(float(schedule(row["epoch"] * steps)), rel=1e-5)


HOLD = """
import sys, time
from kcnn._lock import FolderLock
FolderLock(sys.argv[1], "kcnn search").acquire()
open(sys.argv[2], "w").close()
time.sleep(600)
"""


def test_a_search_is_refused_while_another_process_holds_its_project(tmp_path):
    import numpy as np

    from kcnn import data as kdata
    from kcnn import tune

    project, marker = tmp_path / "project", tmp_path / "holding"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(project), str(marker)], env=ENV, stderr=subprocess.PIPE)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 16, 16, 1), dtype=np.uint8)
    dataset = kdata.load((x, np.arange(32) % 4), batch_size=16, validation_split=0.25, test_split=0.0)
    ranges = dict(depth=2, filters=4, hidden_units=8, convs_per_stage=1, strides=1, pool=True)

    def search():
        return tune.search(
            "convnet", dataset, tuner="random", max_trials=1, max_epochs=1, top_k=0, directory=project, ranges=ranges,
            references=None,  # no reference bar to train: the lock is the point
        )

    try:
        wait_for(marker, holder, seconds=60)
        with pytest.raises(FolderInUseError, match=rf"is in use by process {holder.pid} on {socket.gethostname()}, .*\(kcnn search: "):
            search()
        assert sorted(p.name for p in project.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        stop(holder)
    result = search()
    assert [r.status for r in result.trials] == ["COMPLETED"] and not (project / LOCK_FILE).exists()


def test_the_holder_may_take_its_lock_again_and_an_empty_folder_it_made_goes_with_it(tmp_path):
    folder = tmp_path / "new" / "run"
    lock = FolderLock(folder, "kcnn training run")
    with lock:
        with lock:  # the holder, again (the trainer claims its folder, then trains in it)
            assert lock.held
        assert lock.held and (folder / LOCK_FILE).exists()
        with pytest.raises(FolderInUseError):
            FolderLock(folder, "kcnn training run").acquire()
    assert not lock.held and not folder.exists() and (tmp_path / "new").is_dir()
    with lock:
        (folder / "metadata.json").write_text("{}")
    assert [p.name for p in folder.iterdir()] == ["metadata.json"]  # written in: it stays


class _StartUp(Exception):
    """Stands for the rest of a trainer's start-up."""


def test_a_trainer_claims_its_folder_before_its_start_up_and_a_second_is_refused_before_any(tmp_path, monkeypatch):
    """The model is built and the data loaded (seconds to minutes) with the folder
    already locked: a second trainer is refused at once, before its own start-up."""
    from kcnn import lenet5, train
    from kcnn.train import driver, transfer

    output, base = tmp_path / "run", tmp_path / "base.keras"
    lenet5(classes=3).save(base)
    started = []

    def start_up(name, *, holding):
        def step(*args, **kwargs):
            started.append(name)
            if holding:  # this trainer's folder is locked already, as another one finds it
                with pytest.raises(FolderInUseError, match=f"is in use by process {os.getpid()} "):
                    FolderLock(output, "probe").acquire()
            raise _StartUp

        return step

    for holding in (True, False):
        monkeypatch.setattr(driver, "model_and_data", start_up("model_and_data", holding=holding))
        monkeypatch.setattr(transfer, "resolve_model", start_up("resolve_model", holding=holding))
        monkeypatch.setattr(transfer, "load_data", start_up("load_data", holding=holding))
        if holding:
            for trainer in (lambda: train.fit("lenet5", "digits", output=output), lambda: train.fine_tune(base, "digits", output=output)):
                with pytest.raises(_StartUp):
                    trainer()
                assert not output.exists()  # released, and the folder it made (empty) removed
            assert started == ["model_and_data", "resolve_model"]
        else:
            started.clear()
            with FolderLock(output, "kcnn training run"):  # another trainer's
                with pytest.raises(FolderInUseError, match="is in use by process"):
                    train.fit("lenet5", "digits", output=output)
                with pytest.raises(FolderInUseError, match="is in use by process"):
                    train.fine_tune(base, "digits", output=output)
            assert started == []  # refused before building, loading or reading anything
