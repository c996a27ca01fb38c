"""The run folder and the callbacks that fill it.

A run folder (`saved_models/<model>-<dataset>-<time>/`) holds:

    model.keras     the best epoch's inference model (written atomically)
    metadata.json   the JSON sidecar: model, dataset, preprocessing, config, metrics
    history.csv     one row per epoch, numbered from 1, across resumptions and phases
    curves.png      loss and accuracy per epoch
    logs/           TensorBoard event files
    checkpoint/     the resumable state while the run is unfinished (removed at the end)

Resumption rests on `keras.callbacks.BackupAndRestore` (model and optimizer state at the
end of each epoch). The other per-epoch writes come *before* the backup in callback
order, so a run killed between them re-runs that epoch and overwrites the row it had
written, instead of losing one; `history.csv` is cut back to the restored epoch when an
epoch begins.
"""

from __future__ import annotations

import csv
import math
import os
import pathlib
import re
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from kcnn._jsonfiles import atomic_write, read_json, write_json

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
LOGS_DIR = "logs"
CHECKPOINT_DIR = "checkpoint"
# Root of run folders when no output folder is given (relative to the working directory).
DEFAULT_ROOT = "saved_models"
METADATA_FORMAT = "kcnn.run/1"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: training diverged."""


class RunFolder:
    """The files of one training run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)

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

    def backup_dir(self, phase: int) -> pathlib.Path:
        """`BackupAndRestore`'s folder for a phase (each phase has its own optimizer)."""
        return self.checkpoint_dir / f"phase{phase + 1}"

    def phase_weights_path(self, phase: int) -> pathlib.Path:
        return self.checkpoint_dir / f"phase{phase + 1}_end.weights.h5"

    # -- JSON ----------------------------------------------------------------

    def read_metadata(self) -> dict[str, Any] | None:
        return read_json(self.metadata_path)

    def write_metadata(self, metadata: Mapping[str, Any]) -> None:
        write_json(self.metadata_path, metadata)

    def read_state(self) -> dict[str, Any]:
        """Progress across phases and the best epoch so far (`checkpoint/state.json`)."""
        return read_json(self.checkpoint_dir / "state.json") or {}

    def update_state(self, **values) -> None:
        write_json(self.checkpoint_dir / "state.json", {**self.read_state(), **values})

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

    def truncate_history(self, epochs: int) -> None:
        """Keeps the rows of epochs 1..`epochs`: the ones the restored state has seen."""
        if not self.history_path.exists():
            return
        with open(self.history_path, newline="") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            rows = [row for row in reader if row and int(row[0]) <= epochs]
        if header is None:
            return
        atomic_write(self.history_path, _csv_text(header, rows))

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

    def save_model(self, model: keras.Model) -> None:
        """Saves `model` to model.keras atomically (a reader never sees half a file)."""
        temporary = self.path / ".model.tmp.keras"  # Keras insists on the extension.
        model.save(temporary)
        os.replace(temporary, self.model_path)

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
        figure.tight_layout()
        temporary = self.path / ".curves.tmp.png"
        figure.savefig(temporary, format="png")
        os.replace(temporary, self.curves_path)

    def remove_checkpoint(self) -> None:
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)


# --------------------------------------------------------------------------
# Callbacks.


def normalize_logs(logs: Mapping[str, Any], main_output: str | None) -> dict[str, float]:
    """Keras logs as floats, with the main output's metrics under plain names.

    With several outputs Keras prefixes metrics by output (`predictions_accuracy`);
    history.csv says `accuracy` for every model. Per-output losses keep their names.
    """
    result = {}
    prefix = f"{main_output}_" if main_output else None
    for key, value in logs.items():
        name = key
        if prefix and not key.endswith("_loss"):
            for head in ("", "val_"):
                if key.startswith(head + prefix):
                    name = head + key[len(head + prefix) :]
        result[name] = float(np.asarray(value))
    return result


def current_learning_rate(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class TerminateOnNonFinite(keras.callbacks.Callback):
    """Raises `NonFiniteLossError` as soon as a loss is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`, which lets the epoch end (and the backup
    save the broken weights), this stops at once, so the last checkpoint stays good.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"epoch {getattr(self, '_epoch', 0) + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, f"the end of epoch {epoch + 1}")

    def _check(self, logs, where):
        for key, value in (logs or {}).items():
            if key.endswith("loss") and not math.isfinite(float(np.asarray(value))):
                rate = current_learning_rate(self.model.optimizer)
                raise NonFiniteLossError(
                    f"Training diverged: `{key}` is {float(np.asarray(value))} at {where}. The learning rate is "
                    f"probably too high (it was {rate:.3g}): lower it, lengthen the warm-up, or check the data "
                    "for NaN or infinite values."
                )


class HistoryLogger(keras.callbacks.Callback):
    """Appends one row per epoch to history.csv: epoch (from 1), the logs, the learning
    rate and the epoch's wall time."""

    def __init__(self, run: RunFolder, main_output: str | None):
        super().__init__()
        self.run = run
        self.main_output = main_output
        self._truncated = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._truncated:
            # The first epoch of this fit() call is the one after the restored
            # state: rows beyond it come from an epoch that is about to re-run.
            self.run.truncate_history(epoch)
            self._truncated = True
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **normalize_logs(logs or {}, self.main_output)}
        row["learning_rate"] = current_learning_rate(self.model.optimizer)
        row["seconds"] = round(time.perf_counter() - self._started, 3)
        self.run.append_history(row)


class BestModel(keras.callbacks.Callback):
    """Saves the inference model whenever `monitor` improves; stops early.

    The best value and epoch live in the run's checkpoint state, so they survive a
    resumption (Keras' `EarlyStopping` and `ModelCheckpoint` keep theirs in memory).
    Early stopping counts epochs since the best one, or since the phase began.

    Args:
        run: the run folder.
        save: `save()` writes the current weights as the run's model.keras.
        monitor: normalized log name, e.g. "val_loss" or "val_accuracy".
        patience: epochs without improvement before stopping; 0 never stops.
        phase_start: the epoch (0-based) the current phase began at.
        main_output: the main output's name (see `normalize_logs`).
    """

    def __init__(self, run: RunFolder, save: Callable[[], None], monitor: str, patience: int, phase_start: int, main_output):
        super().__init__()
        self.run = run
        self.save = save
        self.monitor = monitor
        self.patience = patience
        self.phase_start = phase_start
        self.main_output = main_output
        self.maximize = monitor.endswith("accuracy")
        self.stopped_epoch = None

    def on_train_begin(self, logs=None):
        state = self.run.read_state()
        self.best_value = state.get("best_value")
        self.best_epoch = state.get("best_epoch", 0)

    def on_epoch_end(self, epoch, logs=None):
        logs = normalize_logs(logs or {}, self.main_output)
        if self.monitor not in logs:
            raise ValueError(f"`monitor` is not a logged quantity; logged: {sorted(logs)}. Received: monitor={self.monitor!r}")
        value = logs[self.monitor]
        better = self.best_value is None or (value > self.best_value if self.maximize else value < self.best_value)
        if better:
            self.save()
            self.best_value, self.best_epoch = value, epoch + 1
            self.run.update_state(best_value=value, best_epoch=epoch + 1, monitor=self.monitor)
        if self.patience and (epoch + 1) - max(self.best_epoch, self.phase_start) >= self.patience:
            self.model.stop_training = True
            self.stopped_epoch = epoch + 1


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
