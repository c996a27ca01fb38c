"""The run folder, its files, and whether an earlier run there can be resumed (what a
starting run's metadata.json says is `kcnn.train.metadata`'s).

A run folder (`saved_models/<model>-<dataset>-<time>/`) holds:

    model.keras     the best epoch's inference model (written atomically)
    metadata.json   the JSON sidecar: model, dataset, preprocessing, config, metrics
    history.csv     one row per epoch, numbered from 1, across resumptions and phases
    curves.png      loss and accuracy per epoch
    logs/           TensorBoard event files
    checkpoint/     the resumable state while the run is unfinished (removed at the end)
    kcnn.lock       while a process trains in the folder (see `kcnn._lock`)

Resumption rests on kcnn's own epoch-end checkpoint (`kcnn.train.checkpoint`): the
model's and the optimizer's state, the best epoch and the history rows, committed by a
record written last, the previous checkpoint kept until the next is complete. The
other per-epoch writes come *before* the checkpoint in callback order, so a run killed
between them re-runs that epoch; history.csv is rewritten from the restored record.
One process at a time trains in a folder: the others are refused, naming it.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import pathlib
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import keras

from kcnn._files import CorruptFileError, atomic_path, atomic_write, is_temporary, read_json, write_json
from kcnn._lock import LOCK_FILE, FolderLock
from kcnn.train.checkpoint import Checkpoint

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
LOGS_DIR = "logs"
CHECKPOINT_DIR = "checkpoint"
# Root of run folders when no output folder is given (relative to the working directory).
DEFAULT_ROOT = "saved_models"
METADATA_FORMAT = "kcnn.run/1"

logger = logging.getLogger("kcnn")


class RunFolder:
    """The files of one training run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, *, chief_path: str | os.PathLike | None = None):
        self.path = pathlib.Path(path)
        # For a non-chief worker of a cluster: the chief's folder, of which this one is
        # a private, temporary copy (`worker_folder`).
        self.chief_path = pathlib.Path(chief_path) if chief_path is not None else None
        self._lock: FolderLock | None = None

    @classmethod
    def new(cls, model_name: str, dataset_name: str, root: str | os.PathLike = DEFAULT_ROOT) -> RunFolder:
        """A fresh `<root>/<model>-<dataset>-<YYYYmmdd-HHMMSS>` folder name (not created)."""
        stem = f"{_slug(model_name)}-{_slug(dataset_name)}-{time.strftime('%Y%m%d-%H%M%S')}"
        path = pathlib.Path(root) / stem
        suffix = 2
        while path.exists():
            path = pathlib.Path(root) / f"{stem}-{suffix}"
            suffix += 1
        return cls(path)

    model_path = property(lambda self: self.path / MODEL_FILE)
    metadata_path = property(lambda self: self.path / METADATA_FILE)
    history_path = property(lambda self: self.path / HISTORY_FILE)
    curves_path = property(lambda self: self.path / CURVES_FILE)
    logs_dir = property(lambda self: self.path / LOGS_DIR)
    checkpoint_dir = property(lambda self: self.path / CHECKPOINT_DIR)

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.checkpoint_dir)

    def lock(self) -> FolderLock:
        """The folder's lock (`with run.lock():` trains alone in it): one per
        `RunFolder`, which its holder may take again."""
        if self._lock is None:
            self._lock = FolderLock(self.path, "kcnn training run")
        return self._lock

    # -- resuming ------------------------------------------------------------

    def check_resumable(self, kind: str, model_name: str, config: Mapping[str, Any], *, probe_lock=True) -> None:
        """Refuses a folder that holds something else than an unfinished run of the same
        kind, model and config, or (with `probe_lock`, when this process does not hold
        the lock) that another process trains in.

        A finished run's `checkpoint/`, left by a kill between the run's completion and
        its removal, is removed here (under the lock).

        Raises:
            ValueError: naming what the folder holds and the way out.
            kcnn._lock.FolderInUseError: another process holds the folder's lock.
        """
        if probe_lock and self.path.is_dir():
            with self.lock():  # Refused at once, naming the holder, if another process trains here.
                self._check_resumable(kind, model_name, config)
        else:
            self._check_resumable(kind, model_name, config)

    def _check_resumable(self, kind, model_name, config) -> None:
        output = os.fspath(self.path)
        if not self.path.is_dir() or not [p for p in self.path.iterdir() if p.name != LOCK_FILE and not is_temporary(p)]:
            return
        previous = self.previous_run()
        if previous is None or previous.get("format") != METADATA_FORMAT:
            raise ValueError(f"`output` is a non-empty folder that holds no kcnn run. Received: output={output!r}")
        if previous.get("status") == "completed":
            if self.checkpoint_dir.exists():
                logger.info("%s: removing checkpoint/, which a kill left behind after the run completed", output)
                self.remove_checkpoint()
            raise ValueError(f"`output` holds a finished run; choose a new folder to train again. Received: output={output!r}")
        changed = {key: (value, config.get(key)) for key, value in previous.get("config", {}).items() if config.get(key) != value}
        if previous.get("kind") != kind or previous["model"]["name"] != model_name or changed:
            raise ValueError(
                "`output` holds an unfinished run with other settings, which cannot be resumed with these: "
                f"{previous.get('kind')} of {previous['model']['name']!r}, changed config (old, new): {changed}. "
                f"Received: output={output!r}"
            )

    def previous_run(self) -> dict[str, Any] | None:
        """The metadata of the run in the folder; when metadata.json is unreadable, what
        the newest checkpoint record says of the run (with a warning), if any.

        Raises:
            ValueError: metadata.json is unreadable and no checkpoint tells what the folder holds.
        """
        try:
            return self.read_metadata()
        except CorruptFileError as error:
            restored, _ = self.checkpoint.restore_point()
            if restored is None or not restored.run:
                raise ValueError(
                    f"{error}, and no checkpoint in the folder tells which run it holds, so it can be neither resumed "
                    "nor overwritten safely. Move out what you want to keep and delete the folder, or choose another "
                    f"output. Received: output={os.fspath(self.path)!r}"
                ) from error
            warnings.warn(
                f"{error}; the checkpoint {restored.record.name} names the unfinished run, which resumes "
                "(metadata.json is written anew).",
                stacklevel=4,
            )
            return {"format": METADATA_FORMAT, "status": "running", **restored.run}

    # -- JSON ----------------------------------------------------------------

    def read_metadata(self) -> dict[str, Any] | None:
        return read_json(self.metadata_path)

    def write_metadata(self, metadata: Mapping[str, Any]) -> None:
        write_json(self.metadata_path, metadata)

    def read_state(self) -> dict[str, Any]:
        """Progress across phases and the best epoch so far, from the newest usable
        checkpoint record (`Restored.state`); {} when there is none."""
        restored, _ = self.checkpoint.restore_point()
        return restored.state() if restored is not None else {}

    # -- history -------------------------------------------------------------

    def read_history(self) -> list[dict[str, float]]:
        """The rows of history.csv (epoch as int, the rest as floats; NaN for blanks)."""
        if not self.history_path.exists():
            return []
        with open(self.history_path, newline="") as file:
            rows = list(csv.DictReader(file))
        return [
            {key: int(value) if key == "epoch" else _to_float(value) for key, value in row.items()} for row in rows
        ]

    def write_history(self, rows) -> None:
        """Replaces history.csv by `rows` (atomically): the rows of the epochs the
        restored checkpoint has seen; no file when there are none."""
        if not rows:
            self.history_path.unlink(missing_ok=True)
            return
        header = list(dict.fromkeys(key for row in rows for key in row))
        atomic_write(
            self.history_path, _csv_text(header, [[_format_value(row.get(key, "")) for key in header] for row in rows])
        )

    def append_history(self, row: Mapping[str, Any]) -> None:
        """Appends one epoch's row, flushed so it survives a killed process."""
        exists = self.history_path.exists() and self.history_path.stat().st_size > 0
        if exists:
            with open(self.history_path, newline="") as file:
                header = next(csv.reader(file))
        else:
            header = list(row)
        with open(self.history_path, "a", newline="") as file:
            writer = csv.writer(file)
            if not exists:
                writer.writerow(header)
            writer.writerow([_format_value(row.get(key, "")) for key in header])
            file.flush()
            os.fsync(file.fileno())

    # -- model and curves ----------------------------------------------------

    def save_model(self, model: keras.Model, path: str | os.PathLike | None = None) -> None:
        """Saves `model` to model.keras (or `path`) atomically: a reader never sees
        half a file."""
        with atomic_path(path or self.model_path) as temporary:
            model.save(temporary)

    def plot_curves(self) -> None:
        """Writes curves.png: loss and accuracy per epoch, training and validation."""
        rows = self.read_history()
        if not rows:
            return
        # The object-oriented Matplotlib API: no pyplot, so no global figure state
        # and no GUI backend is touched.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(10, 4), dpi=100)
        FigureCanvasAgg(figure)
        epochs = [row["epoch"] for row in rows]
        for index, (quantity, title) in enumerate((("loss", "Loss"), ("accuracy", "Accuracy"))):
            axes = figure.add_subplot(1, 2, index + 1)
            for key, label in ((quantity, "training"), (f"val_{quantity}", "validation")):
                values = [row.get(key, math.nan) for row in rows]
                if any(math.isfinite(v) for v in values):
                    axes.plot(epochs, values, marker="o", markersize=3, label=label)
            axes.set_title(title)
            axes.set_xlabel("epoch")
            axes.grid(alpha=0.3)
            axes.legend()
        # Fixed margins: tight_layout measures every label first, a third of the
        # figure's cost, paid at the end of every run.
        figure.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.92, wspace=0.18)
        with atomic_path(self.curves_path) as temporary:
            figure.savefig(temporary, format="png")

    def remove_checkpoint(self) -> None:
        self.checkpoint.clear()


# --------------------------------------------------------------------------
# Metadata.


def open_run(output, model_name, data, config, *, kind, worker=None) -> RunFolder:
    """The run folder: a new one, or an unfinished one to resume (same config); for
    `worker` (a non-chief task of a cluster, e.g. ("worker", 1)) a private copy of the
    chief's (`worker_folder`).

    `output` is a path, None (a new folder) or a `RunFolder` (`claim_output`'s, whose
    lock this process holds).

    Raises:
        ValueError: `output` holds something else than an unfinished run of the same
            kind, model and config.
        kcnn._lock.FolderInUseError: another process trains in `output`.
    """
    if worker is not None:
        run = worker_folder(output.path if isinstance(output, RunFolder) else output, worker)
    elif isinstance(output, RunFolder):
        run = output
    else:
        run = RunFolder(output) if output is not None else RunFolder.new(model_name, data.name or "data")
    run.check_resumable(kind, model_name, config.to_dict())
    run.path.mkdir(parents=True, exist_ok=True)
    return run


@contextlib.contextmanager
def claim_output(output, device) -> Iterator[RunFolder | None]:
    """The run folder `output`, locked by this process from the start of a `fit` or
    `fine_tune` call, before its model is built and its data loaded: a second trainer
    is refused at once, not after its start-up, and none can start in the folder
    while this one starts up. None (nothing locked) for a new folder (`output` None)
    and for a non-chief worker, which trains in a copy of its own.

    Raises:
        kcnn._lock.FolderInUseError: another process trains in `output`.
    """
    if output is None or not device.is_chief:
        yield None
        return
    run = RunFolder(output)
    with run.lock():
        yield run


def worker_folder(output, task) -> RunFolder:
    """The run folder of a non-chief worker: a temporary copy of the chief's folder
    (metadata, history, model and checkpoint files), which the worker trains in as the
    chief does in its own and deletes at the end.

    The chief alone writes `output`, which every worker reads (shared storage), so a
    restarted cluster resumes from one checkpoint on every worker. The worker runs
    exactly the chief's code on its copy: the same restore, the same callbacks at the
    same points (their decisions come from all-reduced logs), so no worker runs a
    collective the others do not (tf-keras kept non-chief writes in `workertemp_<id>`
    folders for the same reason).

    Args:
        output: the chief's run folder, or None (a new run: nothing to copy).
        task: this worker's `(task type, index)`.
    """
    import hashlib
    import shutil
    import tempfile

    source = pathlib.Path(output).absolute() if output is not None else None
    if source is None:
        scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"kcnn-{task[0]}{task[1]}-"))
    else:
        # One name per task and run folder: a worker restarted after a kill replaces
        # what its predecessor left.
        digest = hashlib.sha256(os.fspath(source).encode()).hexdigest()[:12]
        scratch = pathlib.Path(tempfile.gettempdir()) / f"kcnn-{task[0]}{task[1]}-{digest}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
    run = RunFolder(scratch, chief_path=output)
    if source is None or not source.is_dir():
        return run
    for name in (METADATA_FILE, HISTORY_FILE, MODEL_FILE, CHECKPOINT_DIR):
        path = source / name
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        for file in files:
            if is_temporary(file) or not file.is_file():
                continue
            target = scratch / file.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # Pruned by the chief meanwhile: not needed.
                shutil.copyfile(file, target)
    return run


def run_metadata(path) -> dict[str, Any]:
    """The metadata.json of a run folder (or of the folder of a `.keras` file), read
    without loading the model; {} when there is none."""
    path = pathlib.Path(path)
    return RunFolder(path if path.is_dir() else path.parent).read_metadata() or {}


# --------------------------------------------------------------------------
# Files.


def _slug(name: str) -> str:
    name = os.path.basename(os.path.normpath(str(name))) or str(name)
    return re.sub(r"[^a-z0-9_.]+", "_", name.lower()).strip("_.") or "data"


def _to_float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan


def _format_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _csv_text(header, rows) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
