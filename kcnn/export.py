"""Trained models as files other programs run: a TensorFlow SavedModel, ONNX, or LiteRT
(TensorFlow Lite), written by Keras' own exporters (`keras.Model.export`: TensorFlow's
SavedModel writer, tf2onnx, the TFLite converter).

    from kcnn.export import export
    result = export("saved_models/lenet5-digits-...", "lenet5.tflite", quantize="int8")
    print(result.accuracy)   # {'keras_accuracy': 0.99.., 'exported_accuracy': 0.99.., 'change': ...}

Every export takes raw images, uint8 NHWC of any height and width with 1, 3 or 4
channels, and returns class probabilities: the run's preprocessing (resize, channels,
normalization) runs inside the exported graph (`kcnn.serving`). The class names and the
preprocessing travel beside it, in `<output>.json`. `kcnn.serving.load_exported` runs
any of the three on raw images, and refuses before running what the graph does not
define: another channel count (the graph itself would read 5 channels as their first 3
and fail on 2 inside the runtime), an empty batch, a dtype other than uint8.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import pathlib
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from kcnn import data as kdata
from kcnn._files import atomic_path, write_json
from kcnn.data.masks import IGNORE_LABEL
from kcnn.serving import load_exported, raw_pixels, serving_model
from kcnn.train.inference import load_data_for, resolve_model

__all__ = ["FORMATS", "QUANTIZATIONS", "ExportResult", "export", "metadata_path"]

#: Export formats and the file name ending each needs (a SavedModel is a folder).
FORMATS = {"saved_model": "", "onnx": ".onnx", "litert": ".tflite"}
#: Post-training quantizations of the TFLite converter (LiteRT only): "float16" halves
#: the weights; "int8" quantizes weights and activations, calibrated on training images.
QUANTIZATIONS = ("int8", "float16")
#: Training images the int8 quantization calibrates its activation ranges on.
CALIBRATION_IMAGES = 300

_KERAS_FORMAT = {"saved_model": "tf_saved_model", "onnx": "onnx", "litert": "litert"}
_CONVERTER = {"saved_model": "TensorFlow's SavedModel writer", "onnx": "tf2onnx", "litert": "the TFLite converter"}


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What `export` wrote.

    Attributes:
        path: the exported model (a folder for a SavedModel).
        format: "saved_model", "onnx" or "litert".
        quantize: None, "int8" or "float16".
        metadata: the contents of `metadata_path`: class names, preprocessing, input
            and output, the source model.
        metadata_path: `<path>.json`.
        accuracy: for int8, the test split's accuracy of the Keras model and of the
            exported one (`{"split", "examples", "keras_accuracy", "exported_accuracy",
            "change"}`, change = exported - Keras); else None.
    """

    path: pathlib.Path
    format: str
    quantize: str | None
    metadata: dict[str, Any]
    metadata_path: pathlib.Path
    accuracy: dict[str, Any] | None = None


def metadata_path(path: str | os.PathLike) -> pathlib.Path:
    """Where `export` puts the JSON beside an exported model: `<path>.json`."""
    path = pathlib.Path(path)
    return path.with_name(path.name + ".json")


def export(
    model_or_run,
    output: str | os.PathLike,
    format: str | None = None,
    *,
    quantize: str | None = None,
    data: Any = None,
    calibration_images: int = CALIBRATION_IMAGES,
    overwrite: bool = False,
) -> ExportResult:
    """Exports a classifier that takes raw images and returns class probabilities (a
    segmentation model: per-pixel probabilities at the images' size).

    Args:
        model_or_run: a run folder or `.keras` file (its metadata.json gives the
            preprocessing and class names), or a `keras.Model` with `data`.
        output: the file (`.onnx`, `.tflite`) or folder (SavedModel) to write. It is
            written whole or not at all: the exporter writes beside it and the result
            is renamed into place.
        format: "saved_model", "onnx" or "litert"; default from `output`'s ending
            (`.onnx`, `.tflite`, else a SavedModel).
        quantize: None, or for "litert" "float16" or "int8" (weights and activations,
            calibrated on `calibration_images` training images; the accuracy change on
            the test split is measured and returned).
        data: a `kcnn.data.Dataset` or a `kcnn.data.load` source (loaded with the run's
            preprocessing), default the run's own dataset; needed for int8, and for a
            bare `keras.Model` (a Dataset: its preprocessing and class names).
        calibration_images: training images int8 calibrates on.
        overwrite: replace an existing `output` (a folder only if it holds a SavedModel).

    Returns:
        An `ExportResult`.

    Raises:
        ValueError: an argument is refused, or the format cannot hold a layer of the
            model (the message names it); nothing is written then.
        ImportError: "onnx" without tf2onnx and onnx installed (`pip install "kcnn[export]"`).
    """
    model, metadata = resolve_model(model_or_run)
    output = pathlib.Path(output)
    format = _resolve_format(format, output)
    if quantize is not None and (quantize not in QUANTIZATIONS or format != "litert"):
        raise ValueError(
            "`quantize` must be None, or 'int8' or 'float16' with format='litert' (the TFLite converter quantizes; "
            f"SavedModel and ONNX exports are float32). Received: quantize={quantize!r}, format={format!r}"
        )
    if isinstance(calibration_images, bool) or not isinstance(calibration_images, int) or calibration_images < 1:
        raise ValueError(f"`calibration_images` must be a positive int. Received: calibration_images={calibration_images!r}")
    dataset = _dataset(model, metadata, data, needed=quantize == "int8")
    preprocessing = metadata.get("preprocessing") or (dataset.preprocessing if dataset is not None else None)
    if preprocessing is None:
        raise ValueError(
            "Exporting needs the preprocessing the model was trained with: pass a run folder, or data=a kcnn.data.Dataset "
            f"with a bare model. Received: a keras.Model `{model.name}` and data={data!r}"
        )
    class_names = list(metadata.get("class_names") or (dataset.class_names if dataset is not None else []))
    _check_output(output, format, overwrite)
    _check_dtypes(model, format)
    serving = serving_model(model, preprocessing, portable=format != "saved_model")
    classes = int(serving.outputs[0].shape[-1])
    # Keras' ONNX exporter takes only a model that has been called.
    serving(np.zeros((1, *preprocessing["image_size"], preprocessing["channels"]), np.uint8))
    if not class_names:
        class_names = [str(i) for i in range(classes)]
    sidecar = {
        "format": format,
        "quantize": quantize,
        "file": output.name,
        "input": {
            "name": "images",
            "dtype": "uint8",
            "shape": [None, None, None, None],
            "layout": "NHWC",
            "pixels": "0..255, any height and width, 1, 3 or 4 channels (alpha is dropped)",
        },
        "output": {"name": "probabilities", "dtype": "float32", "shape": [None] * (len(serving.outputs[0].shape) - 1) + [classes]},
        "class_names": class_names,
        "preprocessing": dict(preprocessing),
        "model": {"name": model.name, **({"run": os.fspath(model_or_run)} if not isinstance(model_or_run, keras.Model) else {})},
        "kcnn_version": _version(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    accuracy = None
    with _staged(output, folder=format == "saved_model", overwrite=overwrite) as temporary:
        if format == "saved_model":
            with _quiet():
                serving.export(os.fspath(temporary), format="tf_saved_model", verbose=False)
        elif format == "onnx":
            _export_onnx(serving, temporary, model)
        else:
            calibration = _raw_split(dataset, "train", calibration_images) if quantize == "int8" else None
            _export_litert(serving, temporary, model, quantize, calibration)
        if quantize == "int8":
            accuracy = _accuracy_change(model, load_exported(temporary), dataset)
            sidecar["accuracy"] = accuracy
        write_json(metadata_path(output), sidecar)
    return ExportResult(output, format, quantize, sidecar, metadata_path(output), accuracy)


def _version() -> str:
    import kcnn

    return kcnn.__version__


def _resolve_format(format: str | None, output: pathlib.Path) -> str:
    if format is None:
        format = next((name for name, suffix in FORMATS.items() if suffix and output.suffix == suffix), "saved_model")
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {list(FORMATS)}. Received: format={format!r}")
    suffix = FORMATS[format]
    if (suffix and output.suffix != suffix) or (not suffix and output.suffix in (".onnx", ".tflite")):
        expected = f"a path ending in {suffix}" if suffix else "a folder path (not .onnx or .tflite)"
        raise ValueError(f"format={format!r} writes {expected}. Received: output={os.fspath(output)!r}")
    return format


def _dataset(model, metadata, data, *, needed):
    if isinstance(data, kdata.Dataset):
        return data
    if data is None and not needed:
        return None
    if not metadata:
        raise ValueError(
            f"A keras.Model without a run folder needs data=a kcnn.data.Dataset (its preprocessing, class names, and "
            f"for int8 its training and test images). Received: a keras.Model `{model.name}` and data={data!r}"
        )
    return load_data_for(metadata, data)


def _check_output(output: pathlib.Path, format: str, overwrite: bool) -> None:
    if not output.exists() and not output.is_symlink():
        return
    if not overwrite:
        raise ValueError(f"`output` exists; pass overwrite=True (--overwrite) to replace it. Received: output={os.fspath(output)!r}")
    if output.is_dir() and not (format == "saved_model" and (output / "saved_model.pb").is_file()):
        raise ValueError(
            "`output` is a folder that holds no SavedModel; kcnn replaces only a SavedModel folder. "
            f"Received: output={os.fspath(output)!r}"
        )
    if format == "saved_model" and not output.is_dir():
        raise ValueError(f"`output` is a file and a SavedModel is a folder: choose another path. Received: output={os.fspath(output)!r}")


def _check_dtypes(model: keras.Model, format: str) -> None:
    if format != "onnx":
        return
    mixed = [layer.name for layer in model.layers if getattr(layer, "compute_dtype", "float32") not in ("float32", "int32", "uint8")]
    if mixed:
        raise ValueError(
            "Keras' ONNX export needs a float32 model (its dtype policy 'float32'). "
            f"Received: layers computing in another dtype: {mixed[:5]}"
        )


@contextlib.contextmanager
def _staged(output: pathlib.Path, *, folder: bool, overwrite: bool) -> Iterator[pathlib.Path]:
    """A temporary path beside `output` for the exporter, renamed over `output` when the
    block succeeds (a replaced SavedModel folder is moved aside first, then deleted);
    removed when it fails, so `output` never holds half an export."""
    if not folder:
        with atomic_path(output) as temporary:
            yield temporary
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    old = output.with_name(f".{output.name}.{os.getpid()}.old")
    try:
        yield temporary
        if overwrite and output.exists():
            os.replace(output, old)
        os.replace(temporary, output)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _quiet():
    """Keeps tf2onnx's and TensorFlow's INFO lines ("Assets written to ...") and NumPy's
    warnings about Keras' tf2onnx patch off the terminal for the call (the loggers'
    levels are restored after it)."""
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "absl", "tensorflow")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export_onnx(serving: keras.Model, path: pathlib.Path, model: keras.Model) -> None:
    try:
        import onnx
        import tf2onnx  # noqa: F401  (Keras imports it; checked here for a clear message)
    except ImportError as error:
        raise ImportError(f'format="onnx" needs tf2onnx and onnx: pip install "kcnn[export]" ({error})') from error
    with _quiet():
        serving.export(os.fspath(path), format="onnx", verbose=False)
    # tf2onnx logs an operation it cannot convert and writes it into the graph as it is,
    # a file no ONNX runtime runs: find such nodes and refuse.
    graph = onnx.load(os.fspath(path))
    unknown = [(node.op_type, node.name) for node in graph.graph.node if not onnx.defs.has(node.op_type, node.domain)]
    if unknown:
        raise _refusal("onnx", model, unknown, "tf2onnx has no ONNX conversion for")
    onnx.checker.check_model(graph)


def _export_litert(serving, path, model, quantize, calibration) -> None:
    import tensorflow as tf

    # Built-in operations only: the file runs on any LiteRT runtime, without the
    # TensorFlow (Flex) delegate that Keras' default would let it need.
    target_spec: dict[str, Any] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    options: dict[str, Any] = {}
    if quantize == "float16":
        target_spec["supported_types"] = [tf.float16]
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    try:
        with _quiet():
            if quantize == "int8":
                _export_int8(serving, path, calibration)
            else:
                serving.export(os.fspath(path), format="litert", verbose=False, target_spec=target_spec, **options)
    except Exception as error:
        if type(error).__name__ != "ConverterError":
            raise
        message = str(error)
        # The converter names each refused operation ('tf.ScaleAndTranslate' op is neither
        # a custom op nor a flex op) and where it is (fused["ScaleAndTranslate:", "<scope>@..."]).
        ops = set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message))
        nodes = [(op, node) for op, node in re.findall(r'fused\["(\w+):", "([^"@]+)@', message) if op in ops]
        if not ops:
            raise
        raise _refusal("litert", model, nodes or [(op, "") for op in ops], "the TFLite converter has no built-in operation for") from None


def _export_int8(serving: keras.Model, path: pathlib.Path, calibration: np.ndarray) -> None:
    """int8 weights and activations for the network, float32 for the preprocessing.

    Keras' LiteRT exporter (a SavedModel, then the TFLite converter) would quantize the
    preprocessing too, with activation ranges calibrated at the model's input size only:
    images of another size then come out wrong (and TensorFlow 2.21's quantized
    BATCH_MATMUL crashes on the resize). So this takes the same route and keeps the
    preprocessing's operations in float32 with the converter's selective quantization
    (`tf.lite.experimental.QuantizationDebugger`'s denylisted nodes).
    """
    import tensorflow as tf

    def converter(folder):
        result = tf.lite.TFLiteConverter.from_saved_model(folder)
        result.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return result

    representative = lambda: ([image[None]] for image in calibration)
    with tempfile.TemporaryDirectory(prefix="kcnn-export-") as folder:
        serving.export(folder, format="tf_saved_model", verbose=False)
        interpreter = tf.lite.Interpreter(model_content=converter(folder).convert())
        preprocessing = [
            detail["name"]
            for detail in interpreter.get_tensor_details()
            # The resizing before the network (and a segmentation network's after it) sees any size.
            if re.search(r"(^|/)(preprocessing|probabilities)(_\d+)?/", detail["name"])
        ]
        quantizing = converter(folder)
        quantizing.optimizations = [tf.lite.Optimize.DEFAULT]
        quantizing.representative_dataset = representative
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=quantizing,
            debug_dataset=representative,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=preprocessing),
        )
        path.write_bytes(debugger.get_nondebug_quantized_model())


def _refusal(format: str, model: keras.Model, nodes, reason: str) -> ValueError:
    """The error for operations a format cannot hold, naming the layers they come from
    (the exporters name a node by its TensorFlow name scope: model/layer/.../op)."""
    names = {}
    for layer in _layers(model):
        names.setdefault(layer.name, layer)
    culprits, ops = {}, []
    for op, node in nodes:
        ops.append(op)
        for part in reversed(node.split("/")):
            name = part if part in names else re.sub(r"_\d+$", "", part)
            if name in names and names[name] is not model:
                culprits.setdefault(name, (type(names[name]).__name__, set()))[1].add(op)
                break
    ops = sorted(set(ops))
    if culprits:
        described = "; ".join(f"layer `{name}` ({kind}: {', '.join(sorted(o))})" for name, (kind, o) in culprits.items())
    else:
        described = f"operations {ops}"
    return ValueError(
        f"format={format!r} cannot hold `{model.name}`: {reason} {described}. Expected a model whose layers "
        f"{_CONVERTER[format]} converts; SavedModel holds any TensorFlow operation. Received: unsupported {ops}"
    )


def _layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def _raw_split(dataset: kdata.Dataset, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
    """A split's images as the uint8 pixels the serving model takes (with labels for
    the test split)."""
    source = getattr(dataset, split)
    if source is None:
        raise ValueError(f"int8 quantization needs the data's {split} split. Received: a dataset without one")
    images, labels = [], []
    count = 0
    for x, y in source:
        images.append(raw_pixels(x.numpy(), dataset.preprocessing))
        labels.append(y.numpy())
        count += len(images[-1])
        if limit is not None and count >= limit:
            break
    images = np.concatenate(images)[:limit]
    return images if split == "train" else (images, np.concatenate(labels))


def _accuracy_change(model: keras.Model, run, dataset: kdata.Dataset) -> dict[str, Any]:
    """Test accuracy of the Keras model (on the preprocessed split) and of the exported
    one (on the same images as raw pixels)."""
    images, labels = _raw_split(dataset, "test")
    network = model if len(model.outputs) == 1 else keras.Model(model.inputs, model.outputs[0])
    keras_scores = network.predict(kdata.preprocess_images(images, dataset.preprocessing), verbose=0, batch_size=256)
    exported = np.concatenate([run(images[start : start + 256]) for start in range(0, len(images), 256)])
    # Per image, or per labelled pixel of a segmentation model (the same argmax over the last axis).
    labelled = labels != IGNORE_LABEL if keras_scores.ndim == 4 else np.ones(labels.shape, bool)
    keras_accuracy = float(np.mean((np.argmax(keras_scores, axis=-1) == labels)[labelled]))
    exported_accuracy = float(np.mean((np.argmax(exported, axis=-1) == labels)[labelled]))
    return {
        "split": "test",
        "examples": len(labels),
        "keras_accuracy": keras_accuracy,
        "exported_accuracy": exported_accuracy,
        "change": exported_accuracy - keras_accuracy,
    }
