"""The loop that runs a run's phases, resuming from its checkpoint.

A run is one or more `Phase`s (one for `fit`, the new head then the unfrozen stages
for `fine_tune`), each a `model.fit` call with its own config, counting epochs on
from the phase before. `run_phases` runs them, resuming where the run's checkpoint
(`kcnn.train.checkpoint`) says:

- What is restored: the newest usable checkpoint record, falling back to an older
  one (or to epoch 1) with a warning when files are missing or damaged; history.csv
  and model.keras are made the restored epoch's, the epochs finished, the best epoch
  and value and whether a phase stopped early carry on, the model's random
  generators (dropout) take their state back, and the interrupted phase gets its
  weights and optimizer state back. A phase that had ended only passes its
  end weights on to the next phase.
- Which epochs are skipped: the phases already done, and in the interrupted phase
  the epochs before the checkpoint's; the training split's shuffling and
  augmentation are moved on past every finished epoch, so that a resumed run sees
  the order and shifts an uninterrupted one would have.
- What progress is logged, each epoch: a row of history.csv, the best model so far,
  TensorBoard logs, then the checkpoint, last, once the rest is on disk; each phase
  of several is announced in the log ("phase 2/2, epochs 4-6: ..."), and a NaN or
  infinite loss marks the run "diverged". `Progress` is where the run ends.

The run's set-up, its lock and what the finished run writes are `kcnn.train.driver`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable

import keras

from kcnn._keras_graph import fit_iterations_per_epoch
from kcnn.train.callbacks import BestModel, EpochCheckpoint, HistoryLogger, NonFiniteLossError, TerminateOnNonFinite
from kcnn.train.checkpoint import (
    best_file_name,
    cleanup_leftovers,
    is_current,
    load_weights,
    make_current,
    restore_training_state,
)
from kcnn.train.compile import compile_model, output_names
from kcnn.train.config import TrainConfig
from kcnn.train.random_state import set_random_state

logger = logging.getLogger("kcnn")


@dataclasses.dataclass(frozen=True)
class Phase:
    """One `model.fit` call of a run: its config (optimizer, learning rate, epochs),
    `setup(model)`, which sets the trainable flags before compiling, and what it does
    in words (logged when it starts, recorded in metadata.json)."""

    config: TrainConfig
    setup: Callable[[keras.Model], None] = lambda model: None
    description: str = "training"


@dataclasses.dataclass
class Progress:
    """Where the run stands: epochs finished, the best epoch, the history rows."""

    epoch: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    stopped_early: bool = False
    history: list = dataclasses.field(default_factory=list)


def run_phases(run, metadata, model, data, phases, device, main_output, monitor, callbacks, verbose) -> Progress:
    """Runs `phases` in order on `model`, compiled afresh for each, resuming from the
    run's newest usable checkpoint; returns where the run ends (`Progress`).

    Called with the run folder locked and metadata.json written (`train_phases`).

    Args:
        run, metadata: the `RunFolder` and its metadata (updated as phases compile).
        model: the model to train (already prepared for `device`).
        data: the `kcnn.data.Dataset`.
        phases: the `Phase`s, in order.
        device: the resolved `DeviceSettings`.
        main_output: the main output's name when the model has several, else None.
        monitor: the metric that picks the best epoch (and stops early).
        callbacks, verbose: as `fit`'s.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite; metadata.json says
            "diverged" and curves.png is drawn first.
    """
    # Uncompiled views sharing the layers: `inference` saves without optimizer state
    # and, for GoogLeNet, without the auxiliary heads; `everything` carries a phase's
    # end weights to the next phase.
    inference = keras.Model(model.inputs, model.outputs[0], name=model.name)
    everything = keras.Model(model.inputs, model.outputs, name=model.name)
    checkpoint = run.checkpoint
    restored = _restore(run, checkpoint)
    progress = Progress()
    phases_done = 0
    if restored is not None:
        progress = Progress(
            restored.epoch, restored.best_value, restored.best_epoch, restored.stopped_early, restored.history
        )
        phases_done = restored.phases_done
        set_random_state(model, restored.random)
    identity = {key: metadata[key] for key in ("kind", "model", "config")}
    _skip_epochs(data.train, progress.epoch)
    try:
        for index, phase in enumerate(phases):
            phase.setup(model)
            if index < phases_done:
                # Restored at a phase's end: its weights, for the next phase to start
                # from (when every phase is done, model.keras is all that is needed;
                # restored within a later phase, that phase's checkpoint has them).
                if restored.phase_done and index == restored.phase and phases_done < len(phases):
                    load_weights(everything, restored.model_weights)
                continue
            resuming = restored is not None and restored.phase == index and not restored.phase_done
            phase_start = restored.phase_start if resuming else progress.epoch
            history = HistoryLogger(run, main_output, progress.history)
            best = BestModel(
                lambda epoch: run.save_model(inference, checkpoint.directory / best_file_name(epoch)),
                monitor,
                phase.config.early_stopping,
                phase_start=phase_start,
                main_output=main_output,
                best_value=progress.best_value,
                best_epoch=progress.best_epoch,
            )
            phase_callbacks = [
                TerminateOnNonFinite(),
                history,
                best,
                *_tensorboard(run),
                *callbacks,
                # Last: everything else of an epoch is on disk before it counts as done.
                EpochCheckpoint(
                    checkpoint,
                    run.model_path,
                    phase=index,
                    phase_start=phase_start,
                    phase_end=phase_start + phase.config.epochs,
                    more_phases=index + 1 < len(phases),
                    model_only=everything,
                    best=best,
                    history=lambda history=history: history.rows,
                    stopped_early=progress.stopped_early,
                    run=identity,
                ),
            ]
            if len(phases) > 1:
                logger.info(
                    "phase %d/%d, epochs %d-%d: %s",
                    index + 1, len(phases), phase_start + 1, phase_start + phase.config.epochs, phase.description,
                )
            compile_model(model, phase.config, data.steps_per_epoch, device=device)
            metadata.setdefault("steps_per_execution", {})[str(index)] = int(model.steps_per_execution)
            run.write_metadata(metadata)
            if resuming:
                restore_training_state(model, restored.weights, device.strategy)
            model.fit(
                with_targets(model, data.train),
                validation_data=with_targets(model, data.validation),
                epochs=phase_start + phase.config.epochs,
                initial_epoch=progress.epoch,
                callbacks=phase_callbacks,
                verbose=verbose,
                shuffle=False,  # The pipeline shuffles (seeded, every epoch).
            )
            progress = Progress(
                history.rows[-1]["epoch"] if history.rows else progress.epoch,
                best.best_value,
                best.best_epoch,
                progress.stopped_early or best.stopped_epoch is not None,
                history.rows,
            )
    except NonFiniteLossError as error:
        metadata.update(status="diverged", error=str(error))
        run.write_metadata(metadata)
        run.plot_curves()
        raise
    return progress


def _restore(run, checkpoint):
    """The newest usable checkpoint (`Restored`) or None, warning about what was
    unusable; history.csv and model.keras made those of the restored epoch."""
    cleanup_leftovers(run.path)
    cleanup_leftovers(checkpoint.directory)
    restored, problems = checkpoint.restore_point()
    if restored is not None:
        if problems:
            warnings.warn(
                f"The newest checkpoint of {run.path} is unusable: {'; '.join(problems)}. The run resumes from "
                f"the previous one, {restored.record.name} (after epoch {restored.epoch}); the epochs after it "
                "run again.",
                stacklevel=4,
            )
        checkpoint.prune()  # Drops the unusable files, and those of epochs never committed.
        if restored.best_model is not None and not is_current(restored.best_model, run.model_path):
            make_current(restored.best_model, run.model_path)
        run.write_history(restored.history)
        return restored
    if problems:
        warnings.warn(
            f"The checkpoint of {run.path} has nothing usable: {'; '.join(problems)}. The run starts again "
            "from its beginning (epoch 1).",
            stacklevel=4,
        )
        checkpoint.clear()
    run.write_history([])
    return None


def _skip_epochs(dataset, epochs: int) -> None:
    """Moves the training split's shuffling and augmentation on by `epochs` epochs.

    They draw afresh at each iteration of the split (`kcnn.data`), counting from the
    Dataset's creation: a resumed run, in a new process, would otherwise see epoch 1's
    order and shifts again at its epoch `epochs + 1`. Starting an iteration and dropping
    it advances the count and reads next to nothing; `fit` starts
    `fit_iterations_per_epoch` of them an epoch.
    """
    for _ in range(epochs * fit_iterations_per_epoch(dataset)):
        iter(dataset)


def with_targets(model: keras.Model, dataset):
    """`(images, labels)` batches with the labels repeated for every output of `model`
    (GoogLeNet's auxiliary heads learn the same labels)."""
    if dataset is None or len(model.outputs) == 1:
        return dataset
    names = output_names(model)
    return dataset.map(lambda x, y: (x, dict.fromkeys(names, y)))


def _tensorboard(run):
    """TensorBoard logging when the `tensorboard` package (which tf.summary needs) is there."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        warnings.warn("TensorBoard logs are skipped: the `tensorboard` package is not installed.", stacklevel=4)
        return []
    return [keras.callbacks.TensorBoard(run.logs_dir, write_graph=False)]
