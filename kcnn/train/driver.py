"""`fit` and the phase driver it shares with `fine_tune`: a training run, resumable,
written to its run folder."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras

from kcnn import data as kdata
from kcnn._keras_graph import fit_iterations_per_epoch
from kcnn._lock import check_free
from kcnn.train.callbacks import BestModel, HistoryLogger, NonFiniteLossError, TerminateOnNonFinite, check_monitor
from kcnn.train.checkpoint import (
    EpochCheckpoint,
    best_file_name,
    cleanup_leftovers,
    is_current,
    load_weights,
    make_current,
    restore_training_state,
)
from kcnn.train.compile import compile_model, output_names
from kcnn.train.config import TrainConfig
from kcnn.train.distribute import DeviceSettings, prepare_model, resolve_device
from kcnn.train.inference import evaluate_split
from kcnn.train.inputs import model_and_data
from kcnn.train.runs import RunFolder, open_run, parameter_counts, start_metadata
from kcnn.weights import transfer_weights

logger = logging.getLogger("kcnn")


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished run produced.

    Attributes:
        model: the best epoch's inference model, as saved (auxiliary heads dropped).
        path: the run folder.
        history: the rows of history.csv (one dict per epoch).
        metrics: the final metrics (also in metadata.json): best epoch, epochs run,
            training/validation logs at the best epoch, and test metrics.
        metadata: the contents of metadata.json.
    """

    model: keras.Model
    path: pathlib.Path
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    metadata: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Phase:
    """One `model.fit` call of a run: its config (optimizer, learning rate, epochs),
    `setup(model)`, which sets the trainable flags before compiling, and what it does
    in words (logged when it starts, recorded in metadata.json)."""

    config: TrainConfig
    setup: Callable[[keras.Model], None] = lambda model: None
    description: str = "training"


def fit(
    model: keras.Model | str,
    data: Any = "digits",
    config: TrainConfig | None = None,
    *,
    output: str | os.PathLike | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
) -> TrainResult:
    """Trains a classifier and writes a run folder.

    The folder (`output`, default `saved_models/<model>-<dataset>-<time>/`) receives
    model.keras (the best epoch by `config.monitor`, written atomically), metadata.json,
    history.csv, curves.png, TensorBoard logs and, while the run is unfinished, a
    checkpoint: calling `fit` again with the same `output` resumes an interrupted run
    at the epoch after the last one completed (same model architecture and config).

    `model` trains in place, as with `model.fit`, on every device: when `fit` returns
    it holds the best epoch's weights, the ones saved to model.keras and returned as
    `result.model`. (Under mixed precision or a distribution strategy a copy with the
    device's dtype policy or mirrored variables trains, and its weights are copied
    back.)

    Models with auxiliary outputs (GoogLeNet with `aux_logits=True`) train on all of
    them, the auxiliary losses weighted by `config.aux_loss_weight`; the saved model
    keeps the main output only (the given model's auxiliary heads end at their last
    epoch's weights).

    Args:
        model: a Keras classifier, or a registered name (`kcnn.list_models()`), then
            built for the data's input shape and classes with `model_kwargs`.
        data: a `kcnn.data.Dataset` (re-batched to `config.batch_size`), or anything
            `kcnn.data.load` accepts, loaded with the config's batch size,
            augmentation and seed at the model's input size.
        config: a `TrainConfig` (default: `TrainConfig()`).
        output: the run folder; an unfinished run there is resumed.
        model_kwargs: builder arguments when `model` is a name, e.g.
            `{"stem": "small"}` for a ResNet on 32x32 images.
        data_options: more `kcnn.data.load` arguments when `data` is loaded here,
            e.g. `{"data_dir": "~/tensorflow_datasets", "download": True}`.
        callbacks: extra Keras callbacks.
        verbose: `model.fit` verbosity.

    Returns:
        A `TrainResult`.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (the run is marked
            "diverged"; its checkpoint keeps the last good epoch).
        ValueError: on incompatible model and data, a `monitor` the model does not
            log, or an `output` folder that holds a finished or different run.
        kcnn._lock.FolderInUseError: another process trains in `output` (a
            `ValueError`; the message names the process).
    """
    config = config or TrainConfig()
    if not isinstance(config, TrainConfig):
        raise ValueError(f"`config` must be a kcnn.train.TrainConfig. Received: config={config!r}")
    device = resolve_device(config)  # First: a multi-worker strategy needs TensorFlow without ops yet.
    if output is not None and device.is_chief:  # Refused at once, before loading anything, if another process trains there.
        check_free(output, "kcnn training run")
    loaded_here = not isinstance(data, kdata.Dataset)
    model, data, builder_arguments = model_and_data(model, data, config, model_kwargs, data_options)
    run = open_run(output, model.name, data, config, kind="fit", worker=None if device.is_chief else device.task)
    metadata = start_metadata(run, model, data, config, builder_arguments, kind="fit", loaded_here=loaded_here)
    return train_phases(run, metadata, model, data, [Phase(config)], callbacks=callbacks, verbose=verbose, device=device)


# --------------------------------------------------------------------------
# The training driver shared by fit and fine_tune.


def train_phases(run, metadata, model, data, phases, *, callbacks, verbose, device=None) -> TrainResult:
    """Runs the phases (resuming where the checkpoint says), then finishes the run.

    The run folder is locked for the duration: another process training there is
    refused at once. A non-chief worker's folder (`kcnn.train.runs.worker_folder`)
    is deleted at the end; its result names the chief's.

    Args:
        run: the `RunFolder` (from `open_run`).
        metadata: its metadata (from `start_metadata`).
        model: the model to train.
        data: the `kcnn.data.Dataset`.
        phases: the `Phase`s, in order (one for `fit`, two for `fine_tune`).
        callbacks, verbose: as `fit`'s.
        device: the device settings `fit` resolved first thing (a multi-worker
            strategy needs TensorFlow without ops); they say whether this process is
            the chief. The precision is resolved again here, with the model.
    """
    try:
        result = _train_phases(run, metadata, model, data, phases, callbacks, verbose)
    finally:
        if run.chief_path is not None or (device is not None and not device.is_chief):
            shutil.rmtree(run.path, ignore_errors=True)
    if run.chief_path is not None:
        result = dataclasses.replace(result, path=run.chief_path)
    return result


def _train_phases(run, metadata, model, data, phases, callbacks, verbose) -> TrainResult:
    config = phases[0].config
    # Resolved again with the model, whose size decides the "auto" precision on a CPU;
    # the strategy is the process' one that `fit` made first.
    device = resolve_device(config, model)
    metadata["device"] = device.to_dict()
    given = model
    model = prepare_model(model, device)
    main_output = output_names(model)[0] if len(model.outputs) > 1 else None
    monitor = config.monitor
    if data.validation is None and monitor.startswith("val_"):
        monitor = monitor[len("val_") :]
    check_monitor(monitor, model, validation=data.validation is not None)  # Before anything is written.
    with run.lock():
        # Again under the lock: another process may have changed the folder since `open_run`.
        run.check_resumable(metadata["kind"], metadata["model"]["name"], metadata["config"], probe_lock=False)
        metadata["monitor"] = monitor
        metadata["phases"] = [{"description": p.description, "epochs": p.config.epochs} for p in phases]
        run.write_metadata(metadata)
        started = time.perf_counter()
        progress = _run_phases(run, metadata, model, data, phases, device, main_output, monitor, callbacks, verbose)
        result = _finish(run, metadata, data, time.perf_counter() - started, progress)
    _leave_best_weights_in(given, trained=model, best=result.model)
    return result


@dataclasses.dataclass
class _Progress:
    """Where the run stands: epochs finished, the best epoch, the history rows."""

    epoch: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    stopped_early: bool = False
    history: list = dataclasses.field(default_factory=list)


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


def _run_phases(run, metadata, model, data, phases, device, main_output, monitor, callbacks, verbose) -> _Progress:
    # Uncompiled views sharing the layers: `inference` saves without optimizer state
    # and, for GoogLeNet, without the auxiliary heads; `everything` carries a phase's
    # end weights to the next phase.
    inference = keras.Model(model.inputs, model.outputs[0], name=model.name)
    everything = keras.Model(model.inputs, model.outputs, name=model.name)
    checkpoint = run.checkpoint
    restored = _restore(run, checkpoint)
    progress = _Progress()
    phases_done = 0
    if restored is not None:
        progress = _Progress(
            restored.epoch, restored.best_value, restored.best_epoch, restored.stopped_early, restored.history
        )
        phases_done = restored.phases_done
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
            progress = _Progress(
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


def _leave_best_weights_in(given, *, trained, best):
    """The contract of `fit` and `fine_tune` on every device: the model the caller gave
    ends with the best epoch's weights (those of model.keras), as if it had trained in
    place. Under mixed precision or a strategy a copy trained (`prepare_model`): its
    weights come back first, so layers the saved model lacks (GoogLeNet's auxiliary
    heads) end at their last epoch's values."""
    if trained is not given:
        given.set_weights(trained.get_weights())
    transfer_weights(best, given)


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


def _finish(run, metadata, data, seconds, progress) -> TrainResult:
    best_model = keras.saving.load_model(run.model_path, compile=False)
    if metadata["device"]["precision"] != "float32":
        # The saved model is for inference on any device: float32 everywhere (the
        # variables are float32 already, so nothing is lost).
        best_model = prepare_model(best_model, DeviceSettings("float32", xla=False, strategy=None, devices=()))
        run.save_model(best_model)
    history = run.read_history()
    best_epoch = progress.best_epoch
    stopped_early = progress.stopped_early
    best_row = next((row for row in history if row["epoch"] == best_epoch), {})
    metrics = {
        "best_epoch": best_epoch,
        "epochs": len(history),
        "stopped_early": bool(stopped_early),
        "monitor": metadata["monitor"],
        "train": {k: v for k, v in best_row.items() if not k.startswith("val_") and k not in ("epoch", "seconds")},
        "validation": {k[len("val_") :]: v for k, v in best_row.items() if k.startswith("val_")},
        "test": evaluate_split(best_model, data.test, label_smoothing=metadata["config"]["label_smoothing"])
        if data.test is not None
        else None,
    }
    seconds_total = sum(row.get("seconds", 0.0) for row in history)
    metadata["metrics"] = metrics
    metadata["model"]["parameters"] = parameter_counts(best_model)
    metadata["timing"] = {
        "train_seconds": round(seconds_total, 2),
        "this_session_seconds": round(seconds, 2),
        "images_per_second": round(data.num_train * len(history) / seconds_total, 1) if seconds_total else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    metadata["status"] = "completed"
    run.plot_curves()
    run.write_metadata(metadata)
    run.remove_checkpoint()
    return TrainResult(model=best_model, path=run.path, history=history, metrics=metrics, metadata=metadata)


def save_run(
    model: keras.Model,
    data: kdata.Dataset,
    config: TrainConfig,
    output: str | os.PathLike,
    *,
    kind: str = "fit",
    builder_arguments: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Saves a model trained elsewhere (e.g. a search trial) as a run folder.

    Writes model.keras (the main output, uncompiled) and metadata.json in `fit`'s
    format, with status "completed"; there is no history.

    Args:
        model: the trained classifier.
        data: the `kcnn.data.Dataset` it was trained on.
        config: how it was trained.
        output: the run folder (created; must not hold a run).
        kind: what produced the model, e.g. "search".
        builder_arguments: the registry builder's arguments, when known.
        metrics: the metadata's "metrics"; default the validation and test metrics.

    Returns:
        The metadata written.
    """
    run = RunFolder(output)
    if run.read_metadata() is not None:
        raise ValueError(f"`output` already holds a run. Received: output={os.fspath(output)!r}")
    run.path.mkdir(parents=True, exist_ok=True)
    inference = keras.Model(model.inputs, model.outputs[0], name=model.name)
    run.save_model(inference)
    metadata = start_metadata(run, inference, data, config, builder_arguments, kind=kind, loaded_here=False)
    if metrics is None:
        metrics = {
            "validation": evaluate_split(inference, data.validation, label_smoothing=config.label_smoothing)
            if data.validation is not None
            else None,
            "test": evaluate_split(inference, data.test, label_smoothing=config.label_smoothing) if data.test is not None else None,
        }
    metadata.update(status="completed", metrics=dict(metrics))
    run.write_metadata(metadata)
    return metadata
