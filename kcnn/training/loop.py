"""`fit`, `evaluate`, `predict` and `load`: training runs and their saved models."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import platform
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from kcnn import data as kdata
from kcnn.training.compile import compile_model, output_names, outputs_logits
from kcnn.training.config import (
    DeviceSettings,
    TrainConfig,
    prepare_model,
    resolve_device,
)
from kcnn.training.run import (
    METADATA_FORMAT,
    MODEL_FILE,
    BestModel,
    HistoryLogger,
    NonFiniteLossError,
    RunFolder,
    TerminateOnNonFinite,
)

_EPSILON = 1e-7


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
    """One `model.fit` call of a run: its config (optimizer, learning rate, epochs)
    and `setup(model)`, which sets the trainable flags before compiling."""

    config: TrainConfig
    setup: Callable[[keras.Model], None] = lambda model: None


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

    Models with auxiliary outputs (GoogLeNet with `aux_logits=True`) train on all of
    them, the auxiliary losses weighted by `config.aux_loss_weight`; the saved model
    keeps the main output only.

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
        ValueError: on incompatible model and data, or an `output` folder that holds
            a finished or different run.
    """
    config = config or TrainConfig()
    if not isinstance(config, TrainConfig):
        raise ValueError(f"`config` must be a kcnn.train.TrainConfig. Received: config={config!r}")
    loaded_here = not isinstance(data, kdata.Dataset)
    model, data, builder_arguments = _model_and_data(model, data, config, model_kwargs, data_options)
    run = _open_run(output, model.name, data, config, kind="fit")
    metadata = _start_metadata(run, model, data, config, builder_arguments, kind="fit", loaded_here=loaded_here)
    return _train(run, metadata, model, data, [Phase(config)], callbacks=callbacks, verbose=verbose)


# --------------------------------------------------------------------------
# The training driver shared by fit and fine_tune.


def _train(run, metadata, model, data, phases, *, callbacks, verbose) -> TrainResult:
    """Runs the phases (resuming where the checkpoint says), then finishes the run."""
    config = phases[0].config
    device = resolve_device(config)
    metadata["device"] = device.to_dict()
    model = prepare_model(model, device)
    main_output = output_names(model)[0] if len(model.outputs) > 1 else None
    # An uncompiled view sharing the layers: saves without optimizer state and,
    # for GoogLeNet, without the auxiliary heads.
    inference = keras.Model(model.inputs, model.outputs[0], name=model.name)
    everything = keras.Model(model.inputs, model.outputs, name=model.name)
    monitor = config.monitor
    if data.validation is None and monitor.startswith("val_"):
        monitor = monitor[len("val_") :]
    metadata["monitor"] = monitor
    run.write_metadata(metadata)

    started = time.perf_counter()
    state = run.read_state()
    done = state.get("phases_done", 0)
    epoch = state.get("next_epoch", 0)
    stopped_early = state.get("stopped_early", False)
    try:
        for index, phase in enumerate(phases):
            phase.setup(model)
            if index < done:
                # The last finished phase's end state, for the next phase to start
                # from (when every phase is done, model.keras is all that is needed).
                if index == done - 1 and done < len(phases):
                    everything.load_weights(run.phase_weights_path(index))
                continue
            best = BestModel(
                run,
                lambda: run.save_model(inference),
                monitor,
                phase.config.early_stopping,
                phase_start=epoch,
                main_output=main_output,
            )
            phase_callbacks = [
                TerminateOnNonFinite(),
                HistoryLogger(run, main_output),
                best,
                *_tensorboard(run),
                *callbacks,
                # Last: everything else of an epoch is on disk before it counts as done.
                keras.callbacks.BackupAndRestore(run.backup_dir(index), double_checkpoint=True, delete_checkpoint=False),
            ]
            compile_model(model, phase.config, data.steps_per_epoch, device=device)
            metadata.setdefault("steps_per_execution", {})[str(index)] = int(model.steps_per_execution)
            # BackupAndRestore restores the epoch into this private attribute, and
            # Keras never clears it: a second fit() would start from it.
            model._initial_epoch = None
            model.fit(
                with_targets(model, data.train),
                validation_data=with_targets(model, data.validation),
                epochs=epoch + phase.config.epochs,
                initial_epoch=epoch,
                callbacks=phase_callbacks,
                verbose=verbose,
                shuffle=False,  # The pipeline shuffles (seeded, every epoch).
            )
            history = run.read_history()
            epoch = history[-1]["epoch"] if history else epoch
            stopped_early = stopped_early or best.stopped_epoch is not None
            if index + 1 < len(phases):  # The next phase starts from these weights.
                everything.save_weights(run.phase_weights_path(index))
            run.update_state(phases_done=index + 1, next_epoch=epoch, stopped_early=stopped_early)
    except NonFiniteLossError as error:
        metadata.update(status="diverged", error=str(error))
        run.write_metadata(metadata)
        run.plot_curves()
        raise
    return _finish(run, metadata, data, time.perf_counter() - started, stopped_early)


def with_targets(model: keras.Model, dataset):
    """`(images, labels)` batches with the labels repeated for every output of `model`
    (GoogLeNet's auxiliary heads learn the same labels)."""
    if dataset is None or len(model.outputs) == 1:
        return dataset
    names = output_names(model)
    return dataset.map(lambda x, y: (x, {name: y for name in names}))


def _tensorboard(run):
    """TensorBoard logging when the `tensorboard` package (which tf.summary needs) is there."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        warnings.warn("TensorBoard logs are skipped: the `tensorboard` package is not installed.", stacklevel=4)
        return []
    return [keras.callbacks.TensorBoard(run.logs_dir, write_graph=False)]


def _finish(run, metadata, data, seconds, stopped_early) -> TrainResult:
    best_model = keras.saving.load_model(run.model_path, compile=False)
    if metadata["device"]["precision"] != "float32":
        # The saved model is for inference on any device: float32 everywhere (the
        # variables are float32 already, so nothing is lost).
        best_model = prepare_model(best_model, DeviceSettings("float32", xla=False, strategy=None, devices=()))
        run.save_model(best_model)
    history = run.read_history()
    state = run.read_state()
    best_epoch = state.get("best_epoch")
    best_row = next((row for row in history if row["epoch"] == best_epoch), {})
    metrics = {
        "best_epoch": best_epoch,
        "epochs": len(history),
        "stopped_early": bool(stopped_early),
        "monitor": metadata["monitor"],
        "train": {k: v for k, v in best_row.items() if not k.startswith("val_") and k not in ("epoch", "seconds")},
        "validation": {k[len("val_") :]: v for k, v in best_row.items() if k.startswith("val_")},
        "test": evaluate(best_model, data) if data.test is not None else None,
    }
    seconds_total = sum(row.get("seconds", 0.0) for row in history)
    metadata["metrics"] = metrics
    metadata["model"]["parameters"] = _parameter_counts(best_model)
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


# --------------------------------------------------------------------------
# Model, data and run folder.


def _model_and_data(model, data, config, model_kwargs, data_options=None):
    """Builds the model from a name and loads the data, each fitted to the other."""
    from kcnn import registry

    if isinstance(model, str):
        spec = registry.get_spec(model)
        data = load_data(data, config, **(data_options or {}))
        kwargs = dict(model_kwargs or {})
        kwargs.setdefault("input_shape", tuple(data.input_shape))
        kwargs.setdefault("classes", data.num_classes)
        model = spec.build(**kwargs)
        builder_arguments = {**spec.arguments, **kwargs, "input_shape": list(kwargs["input_shape"])}
    elif isinstance(model, keras.Model):
        if model_kwargs:
            raise ValueError(f"`model_kwargs` only apply when `model` is a registered name. Received: model_kwargs={model_kwargs!r}")
        data = load_data(data, config, input_shape=model.input_shape[1:], **(data_options or {}))
        builder_arguments = None  # A built model does not record them.
    else:
        raise ValueError(f"`model` must be a keras.Model or a registered model name. Received: model={model!r}")
    check_compatible(model, data)
    return model, data, builder_arguments


def load_data(
    data: Any, config: TrainConfig, *, input_shape=None, normalize: str = "unit", **load_options
) -> kdata.Dataset:
    """The data of a run, batched by `config.batch_size`.

    Args:
        data: a `kcnn.data.Dataset` (re-batched, otherwise used as is) or a
            `kcnn.data.load` source, loaded with the config's augmentation and seed.
        config: a `TrainConfig`.
        input_shape: the model's `(height, width, channels)` (None entries: the
            source's own), to load images at the model's size.
        normalize: normalization when loading (see `kcnn.data.NORMALIZATIONS`).
        **load_options: more `kcnn.data.load` arguments (`data_dir`, `download`, ...).
    """
    if isinstance(data, kdata.Dataset):
        return data.with_batch_size(config.batch_size)
    height, width, channels = input_shape if input_shape is not None else (None, None, None)
    return kdata.load(
        data,
        image_size=(height, width) if height and width else None,
        channels=channels,
        normalize=normalize,
        batch_size=config.batch_size,
        augment=config.augment or False,
        seed=config.seed,
        **load_options,
    )


def check_compatible(model: keras.Model, data: kdata.Dataset) -> None:
    """Checks that `data` fits `model`'s input and output.

    Raises:
        ValueError: on a different image shape or number of classes.
    """
    expected = tuple(model.input_shape[1:])
    received = tuple(data.input_shape)
    if len(expected) != 3 or any(e is not None and e != r for e, r in zip(expected, received)):
        raise ValueError(
            f"The data's images do not fit `{model.name}`: it takes {expected}. "
            f"Received: images of shape {received} (pass image_size/channels to kcnn.data.load)"
        )
    classes = int(model.outputs[0].shape[-1])
    if classes != data.num_classes:
        raise ValueError(
            f"`{model.name}` has {classes} outputs but the data has {data.num_classes} classes; build the model "
            f"with classes={data.num_classes} or use kcnn.train.fine_tune. Received: {data.num_classes} classes"
        )


def _open_run(output, model_name, data, config, *, kind) -> RunFolder:
    """The run folder: a new one, or an unfinished one to resume (same config)."""
    run = RunFolder(output) if output is not None else RunFolder.new(model_name, data.name or "data")
    if run.path.exists() and any(run.path.iterdir()):
        previous = run.read_metadata()
        if previous is None or previous.get("format") != METADATA_FORMAT:
            raise ValueError(f"`output` is a non-empty folder that holds no kcnn run. Received: output={os.fspath(run.path)!r}")
        if previous.get("status") == "completed":
            raise ValueError(
                f"`output` holds a finished run; choose a new folder to train again. Received: output={os.fspath(run.path)!r}"
            )
        changed = {
            key: (value, config.to_dict().get(key))
            for key, value in previous.get("config", {}).items()
            if config.to_dict().get(key) != value
        }
        if previous.get("kind") != kind or previous["model"]["name"] != model_name or changed:
            raise ValueError(
                "`output` holds an unfinished run with other settings, which cannot be resumed with these: "
                f"{previous.get('kind')} of {previous['model']['name']!r}, changed config (old, new): {changed}. "
                f"Received: output={os.fspath(run.path)!r}"
            )
    run.path.mkdir(parents=True, exist_ok=True)
    return run


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
    metadata = _start_metadata(run, inference, data, config, builder_arguments, kind=kind, loaded_here=False)
    if metrics is None:
        metrics = {
            "validation": evaluate(inference, data, split="validation") if data.validation is not None else None,
            "test": evaluate(inference, data) if data.test is not None else None,
        }
    metadata.update(status="completed", metrics=dict(metrics))
    run.write_metadata(metadata)
    return metadata


def _start_metadata(run, model, data, config, builder_arguments, *, kind, loaded_here=True) -> dict[str, Any]:
    from kcnn import registry

    previous = run.read_metadata()
    spec = registry.MODELS.get(model.name)
    return {
        "format": METADATA_FORMAT,
        "kind": kind,
        "status": "running",
        "created": (previous or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        "model": {
            "name": model.name,
            "registered": spec is not None,
            "family": spec.family if spec else None,
            "builder_arguments": builder_arguments,
            "input_shape": list(model.input_shape[1:]),
            "classes": int(model.outputs[0].shape[-1]),
            "training_outputs": output_names(model),
            "parameters": _parameter_counts(model),
        },
        "dataset": {
            "name": data.name,
            "num_classes": data.num_classes,
            "input_shape": list(data.input_shape),
            "num_train": data.num_train,
            "num_validation": data.num_validation,
            "num_test": data.num_test,
            "batch_size": data.batch_size,
            # `config.augment` only applies when the run loads the data itself.
            "augment": config.augment if loaded_here else "as loaded by the caller",
        },
        "class_names": list(data.class_names),
        "preprocessing": dict(data.preprocessing),
        "config": config.to_dict(),
        "versions": _versions(),
    }


def _parameter_counts(model) -> dict[str, int]:
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(model.count_params())
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


def _versions() -> dict[str, str]:
    import tensorflow as tf

    import kcnn

    return {
        "kcnn": kcnn.__version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------
# Saved models: load, evaluate, predict.


def load(path: str | os.PathLike) -> tuple[keras.Model, dict[str, Any]]:
    """Loads a saved model and its metadata.

    Args:
        path: a run folder, or a `.keras` file (its metadata.json, if any, is the one
            next to it).

    Returns:
        `(model, metadata)`; metadata is {} when there is no metadata.json.
    """
    path = pathlib.Path(path)
    model_path = path / MODEL_FILE if path.is_dir() else path
    if not model_path.is_file():
        raise ValueError(
            f"Expected a run folder holding {MODEL_FILE} or a .keras file. Received: path={os.fspath(path)!r}"
        )
    model = keras.saving.load_model(model_path, compile=False)
    metadata = RunFolder(model_path.parent).read_metadata() or {}
    return model, metadata


def _resolve(model_or_path):
    if isinstance(model_or_path, keras.Model):
        return model_or_path, {}
    if isinstance(model_or_path, (str, os.PathLike)):
        return load(model_or_path)
    raise ValueError(f"Expected a keras.Model, a run folder or a .keras path. Received: {model_or_path!r}")


def load_data_for(metadata: Mapping[str, Any], source: Any = None, *, batch_size: int = 64) -> kdata.Dataset:
    """Loads data as a saved run saw it: its preprocessing and, for the run's own
    dataset, its split (the seed of its config).

    Args:
        metadata: a run's metadata.json contents.
        source: a `kcnn.data.load` source; default the run's dataset.
        batch_size: batch size of the splits.
    """
    if source is None:
        source = metadata.get("dataset", {}).get("name")
        if not source or source == "arrays":
            raise ValueError(
                "The run was trained on in-memory arrays, which cannot be reloaded by name: pass the data. "
                f"Received: dataset name {source!r}"
            )
    preprocessing = metadata["preprocessing"]
    data = kdata.load(
        source,
        image_size=tuple(preprocessing["image_size"]),
        channels=preprocessing["channels"],
        normalize=preprocessing["normalization"],
        batch_size=batch_size,
        seed=metadata.get("config", {}).get("seed", 1337),
    )
    if data.preprocessing.get("mean") != preprocessing.get("mean") or data.preprocessing.get("std") != preprocessing.get("std"):
        raise ValueError(
            "The data's standardization statistics differ from the run's, so the model would see other inputs. "
            f"Received: mean={data.preprocessing.get('mean')}, run's mean={preprocessing.get('mean')}"
        )
    return data


def evaluate(model_or_path, data: Any = None, *, split: str = "test") -> dict[str, float]:
    """Loss and accuracy of a model on a split of a dataset.

    Args:
        model_or_path: a Keras classifier, a run folder or a `.keras` file.
        data: a `kcnn.data.Dataset`, a `kcnn.data.load` source (loaded with the run's
            preprocessing), or None for the run's own dataset and split.
        split: "test", "validation" or "train".

    Returns:
        `{"loss", "accuracy", "examples"}`, plus "top5_accuracy" with more than 10
        classes.
    """
    model, metadata = _resolve(model_or_path)
    if not isinstance(data, kdata.Dataset):
        if not metadata:
            raise ValueError("Pass a kcnn.data.Dataset to evaluate a model without a run folder. Received: data={data!r}")
        data = load_data_for(metadata, data)
    if split not in ("train", "validation", "test"):
        raise ValueError(f"`split` must be 'train', 'validation' or 'test'. Received: split={split!r}")
    dataset = getattr(data, split)
    if dataset is None:
        raise ValueError(f"The data has no {split} split. Received: split={split!r}")
    check_compatible(model, data)
    logits = outputs_logits(model)
    probabilities, labels = [], []
    for images, batch_labels in dataset.as_numpy_iterator():
        outputs = model.predict_on_batch(images)
        outputs = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        probabilities.append(_softmax(outputs) if logits else np.asarray(outputs, np.float64))
        labels.append(batch_labels)
    probabilities = np.concatenate(probabilities)
    labels = np.concatenate(labels).astype(np.int64)
    picked = probabilities[np.arange(len(labels)), labels]
    result = {
        "loss": float(np.mean(-np.log(np.clip(picked, _EPSILON, 1.0)))),
        "accuracy": float(np.mean(np.argmax(probabilities, axis=1) == labels)),
        "examples": len(labels),
    }
    if probabilities.shape[1] > 10:
        top5 = np.argsort(-probabilities, axis=1)[:, :5]
        result["top5_accuracy"] = float(np.mean(np.any(top5 == labels[:, None], axis=1)))
    return result


def predict(model_or_path, images, top_k: int = 5, *, class_names: Sequence[str] | None = None):
    """Classifies images.

    Args:
        model_or_path: a Keras classifier, a run folder or a `.keras` file.
        images: image file paths (or one path), or raw images as an array / list of
            arrays (0..255 pixels, any size: the run's preprocessing is applied). For
            a bare model without metadata, arrays must already be preprocessed.
        top_k: how many classes to return per image.
        class_names: names of the classes; default the run's, else the indices.

    Returns:
        One list per image of `(class_name, probability)` pairs, most likely first.
    """
    model, metadata = _resolve(model_or_path)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive int. Received: top_k={top_k!r}")
    preprocessing = metadata.get("preprocessing")
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, (str, os.PathLike)) for i in images):
        if preprocessing is None:
            raise ValueError("Reading image files needs the run's preprocessing: pass a run folder. Received: a bare model")
        x = kdata.read_images(images, preprocessing)
    elif preprocessing is not None:
        x = kdata.preprocess_images(images, preprocessing)
    else:
        x = np.asarray(images, np.float32)
    outputs = model.predict(x, verbose=0)
    outputs = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    probabilities = _softmax(outputs) if outputs_logits(model) else np.asarray(outputs, np.float64)
    names = list(class_names or metadata.get("class_names") or map(str, range(probabilities.shape[1])))
    k = min(top_k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1)[:, :k]
    return [[(names[j], float(row[j])) for j in top] for row, top in zip(probabilities, order)]


def _softmax(x):
    x = np.asarray(x, np.float64)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return x / x.sum(axis=1, keepdims=True)

