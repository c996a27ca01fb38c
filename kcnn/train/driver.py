"""`fit` and the driver it shares with `fine_tune`: a training run set up, its phases
run (the resumable loop is `kcnn.train.phases`), and the run folder's output written."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import time
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from kcnn import data as kdata
from kcnn._files import load_keras_model
from kcnn.train.callbacks import check_monitor
from kcnn.train.compile import output_names
from kcnn.train.config import TrainConfig
from kcnn.train.distribute import DeviceSettings, prepare_model, resolve_device
from kcnn.train.inference import evaluate_split, inference_model
from kcnn.train.inputs import model_and_data
from kcnn.train.metadata import parameter_counts, start_metadata
from kcnn.train.phases import Phase, run_phases
from kcnn.train.runs import RunFolder, claim_output, open_run
from kcnn.weights import transfer_weights


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
    with claim_output(output, device) as claimed:  # Before anything loads: another trainer there is refused at once.
        loaded_here = not isinstance(data, kdata.Dataset)
        model, data, builder_arguments = model_and_data(model, data, config, model_kwargs, data_options)
        run = open_run(claimed or output, model.name, data, config, kind="fit", worker=None if device.is_chief else device.task)
        metadata = start_metadata(run, model, data, config, builder_arguments, kind="fit", loaded_here=loaded_here)
        return train_phases(run, metadata, model, data, [Phase(config)], callbacks=callbacks, verbose=verbose, device=device)


# --------------------------------------------------------------------------
# The training driver shared by fit and fine_tune.


def train_phases(run, metadata, model, data, phases, *, callbacks, verbose, device=None) -> TrainResult:
    """Runs the phases (resuming where the checkpoint says), then finishes the run.

    The run folder is locked for the duration (from the start of `fit` or `fine_tune`
    when it is given, `claim_output`): another process training there is refused at
    once. A non-chief worker's folder (`kcnn.train.runs.worker_folder`)
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
        progress = run_phases(run, metadata, model, data, phases, device, main_output, monitor, callbacks, verbose)
        result = _finish(run, metadata, data, time.perf_counter() - started, progress)
    _leave_best_weights_in(given, trained=model, best=result.model)
    return result


def _leave_best_weights_in(given, *, trained, best):
    """The contract of `fit` and `fine_tune` on every device: the model the caller gave
    ends with the best epoch's weights (those of model.keras), as if it had trained in
    place. Under mixed precision or a strategy a copy trained (`prepare_model`): its
    weights come back first, so layers the saved model lacks (GoogLeNet's auxiliary
    heads) end at their last epoch's values."""
    if trained is not given:
        given.set_weights(trained.get_weights())
    transfer_weights(best, given)


def _finish(run, metadata, data, seconds, progress) -> TrainResult:
    best_model = load_keras_model(
        run.model_path,
        advice="Delete it and call `fit` (or `kcnn train`) again with the same output: the run's checkpoint "
        "makes it anew.",
    )
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
        # As `kcnn evaluate` computes them by default: in the run's precision, folded.
        "test": evaluate_split(
            inference_model(best_model, metadata["config"]["mixed_precision"]),
            data.test,
            label_smoothing=metadata["config"]["label_smoothing"],
        )
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
        predictor = inference_model(inference, config.mixed_precision)
        metrics = {
            "validation": evaluate_split(predictor, data.validation, label_smoothing=config.label_smoothing)
            if data.validation is not None
            else None,
            "test": evaluate_split(predictor, data.test, label_smoothing=config.label_smoothing) if data.test is not None else None,
        }
    metadata.update(status="completed", metrics=dict(metrics))
    run.write_metadata(metadata)
    return metadata
