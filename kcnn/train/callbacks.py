"""The callbacks that write a run folder while it trains: history rows, the best
model, the epoch's checkpoint, and a stop on a non-finite loss."""

from __future__ import annotations

import math
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from kcnn.train.checkpoint import Checkpoint, best_file_name, make_current
from kcnn.train.random_state import random_state
from kcnn.train.runs import RunFolder


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: training diverged."""



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
    rate and the epoch's wall time.

    Args:
        run: the run folder.
        main_output: the main output's name (see `normalize_logs`).
        rows: the rows of the epochs before this `fit` call (the restored checkpoint's),
            which history.csv holds when it starts; `rows` keeps growing with each epoch.
    """

    def __init__(self, run: RunFolder, main_output: str | None, rows=()):
        super().__init__()
        self.run = run
        self.main_output = main_output
        self.rows = [dict(row) for row in rows]

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **normalize_logs(logs or {}, self.main_output)}
        row["learning_rate"] = current_learning_rate(self.model.optimizer)
        row["seconds"] = round(time.perf_counter() - self._started, 3)
        self.run.append_history(row)
        self.rows.append(row)


class BestModel(keras.callbacks.Callback):
    """Saves the inference model whenever `monitor` improves; stops early.

    The best value and epoch go into each epoch's checkpoint record, so they survive a
    resumption exactly (Keras' `EarlyStopping` and `ModelCheckpoint` keep theirs in
    memory). Early stopping counts epochs since the best one, or since the phase began.

    Args:
        save: `save(epoch)` writes the current weights as the best model of `epoch`
            (1-based); the checkpoint makes it the run's model.keras once the epoch
            is committed.
        monitor: normalized log name, e.g. "val_loss" or "val_accuracy".
        patience: epochs without improvement before stopping; 0 never stops.
        phase_start: the epoch (0-based) the current phase began at.
        main_output: the main output's name (see `normalize_logs`).
        best_value, best_epoch: the best so far (from the restored checkpoint), or None.
    """

    def __init__(
        self,
        save: Callable[[int], None],
        monitor: str,
        patience: int,
        phase_start: int,
        main_output,
        *,
        best_value: float | None = None,
        best_epoch: int | None = None,
    ):
        super().__init__()
        self.save = save
        self.monitor = monitor
        self.patience = patience
        self.phase_start = phase_start
        self.main_output = main_output
        self.maximize = monitor.endswith("accuracy")
        self.best_value = best_value
        self.best_epoch = best_epoch
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        logs = normalize_logs(logs or {}, self.main_output)
        if self.monitor not in logs:
            raise ValueError(f"`monitor` is not a logged quantity; logged: {sorted(logs)}. Received: monitor={self.monitor!r}")
        value = logs[self.monitor]
        better = self.best_value is None or (value > self.best_value if self.maximize else value < self.best_value)
        if better:
            self.save(epoch + 1)
            self.best_value, self.best_epoch = value, epoch + 1
        if self.patience and (epoch + 1) - max(self.best_epoch or 0, self.phase_start) >= self.patience:
            self.model.stop_training = True
            self.stopped_epoch = epoch + 1


def logged_quantities(model: keras.Model, *, validation: bool) -> list[str]:
    """The names history.csv and `monitor` know for a model compiled by
    `kcnn.train.compile_model`: the loss, the metrics of `make_metrics` (under plain
    names, see `normalize_logs`), each output's loss when there are several, and each
    with `val_` when there is validation data."""
    from kcnn.train.compile import make_metrics, output_names

    names = ["loss"] + [metric.name for metric in make_metrics(int(model.outputs[0].shape[-1]))]
    outputs = output_names(model)
    if len(outputs) > 1:
        names += [f"{name}_loss" for name in outputs]
    return names + ([f"val_{name}" for name in names] if validation else [])


def check_monitor(monitor: str, model: keras.Model, *, validation: bool) -> None:
    """Refuses, before anything trains, a `monitor` the model will never log.

    Raises:
        ValueError: naming the quantities that will be logged.
    """
    known = logged_quantities(model, validation=validation)
    if monitor not in known:
        hint = " (the data has no validation split)" if not validation else ""
        raise ValueError(
            f"`monitor` must be a quantity the model logs{hint}: one of {', '.join(known)}. "
            f"Received: monitor={monitor!r}"
        )


class EpochCheckpoint(keras.callbacks.Callback):
    """Commits a checkpoint at the end of each epoch (the last callback: the history
    row and the best model of the epoch are on disk before it counts), then makes the
    best epoch's model the run's model.keras.

    Args:
        checkpoint: the run's `Checkpoint`.
        model_path: the run's model.keras.
        phase: this phase's index.
        phase_start: the epochs before this phase.
        phase_end: the epoch (1-based count) this phase ends at.
        more_phases: another phase follows.
        model_only: the model whose weights start the next phase (an uncompiled view).
        best: the `BestModel` callback of the phase (its best value, epoch, stop).
        history: returns the history rows so far.
        stopped_early: whether an earlier phase stopped early.
        run: what the run is (metadata.json's kind, model and config).
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        model_path: pathlib.Path,
        *,
        phase: int,
        phase_start: int,
        phase_end: int,
        more_phases: bool,
        model_only: keras.Model,
        best,
        history: Callable[[], list[dict[str, Any]]],
        stopped_early: bool,
        run: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.checkpoint = checkpoint
        self.model_path = model_path
        self.phase = phase
        self.phase_start = phase_start
        self.phase_end = phase_end
        self.more_phases = more_phases
        self.model_only = model_only
        self.best = best
        self.history = history
        self.stopped_early = stopped_early
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1 >= self.phase_end or bool(self.model.stop_training)
        stopped_early = self.stopped_early or self.best.stopped_epoch is not None
        self.checkpoint.commit(
            phase=self.phase,
            phase_start=self.phase_start,
            epoch=epoch + 1,
            phase_done=done,
            more_phases=self.more_phases,
            model=self.model,
            model_only=self.model_only,
            best_value=self.best.best_value,
            best_epoch=self.best.best_epoch,
            stopped_early=stopped_early,
            history=self.history(),
            run=self.run,
            random=random_state(self.model),
        )
        if self.best.best_epoch == epoch + 1:
            make_current(self.checkpoint.directory / best_file_name(epoch + 1), self.model_path)
