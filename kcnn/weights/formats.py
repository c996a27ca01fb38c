"""Reading weight files into plain NumPy arrays: safetensors (torchvision/timm), Keras
2's legacy `.h5` (keras.applications), Keras 3's `.weights.h5`, and ONNX graphs (the
ONNX Model Zoo's BVLC AlexNet and GoogLeNet, read by the `onnx` package).

safetensors files are read by the `safetensors` package (its NumPy API): it refuses
what the format forbids (tensors that overlap, leave gaps or run past the buffer, a
header of the wrong size), which an own reader would have to reproduce. kcnn adds what
the package does not check: the file's name in every error, and no NaN or infinite
value in a float tensor (a damaged file that the format cannot see).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["WeightFileError", "check_finite", "read_keras3_h5", "read_keras_h5", "read_onnx", "read_safetensors"]


class WeightFileError(ValueError):
    """A weight file cannot be read: truncated, damaged or of another format. The
    message names the file."""


def check_finite(path, name, array):
    """Refuses a float tensor holding NaN or infinite values (a damaged file)."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise WeightFileError(
            f"{os.fspath(path)} is damaged: tensor {name!r} of shape {tuple(array.shape)} holds {bad:,} NaN or infinite "
            "values; a trained weight is finite. Download the file again"
        )
    return array


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{tensor name: array} of a `.safetensors` file.

    Raises:
        WeightFileError: the file is truncated, damaged (overlapping, misplaced or
            non-finite tensors) or no safetensors file; the message names it.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = os.fspath(path)
    try:
        tensors = load_file(path)
    except (SafetensorError, ValueError, TypeError) as error:
        raise WeightFileError(
            f"{path} is truncated, damaged or no safetensors file (a JSON header, then tensors packed back to back "
            f"from byte 0 of the buffer, none overlapping, none outside it). Received: {error}"
        ) from None
    return {name: check_finite(path, name, value) for name, value in tensors.items()}


def _open_h5(path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise WeightFileError(f"{path} is truncated, damaged or no HDF5 file ({error})") from None


def read_keras_h5(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """{layer name: its weights in Keras order} of a Keras 2 legacy `.h5` file: the
    weights-only files keras.applications publishes (and `model.save("x.h5")`'s
    whole-model files, whose weights sit in `model_weights`).

    Raises:
        WeightFileError: the file is truncated, damaged or not in that layout.
    """
    path = os.fspath(path)
    with _open_h5(path) as file:
        group = file.get("model_weights", file)
        if "layer_names" not in group.attrs:
            raise WeightFileError(
                f"{path} is no Keras 2 legacy weights file: it has no `layer_names` attribute "
                "(a Keras 3 file is named `.weights.h5`)"
            )
        layers = {}
        try:
            for layer in group.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in group[layer].attrs["weight_names"]]
                if names:
                    layers[layer] = [check_finite(path, f"{layer}/{name}", np.asarray(group[layer][name])) for name in names]
        except (OSError, KeyError) as error:
            raise WeightFileError(f"{path} is truncated or damaged: {error}") from None
    return layers


def read_keras3_h5(path: str | os.PathLike, keys=None) -> dict[str, list[np.ndarray]]:
    """{key: variables in order} of a Keras 3 `.weights.h5` file, for its top-level
    layers: `layers/<key>/vars/<i>`, where Keras names each key after the layer's
    class and its rank among the model's layers of that class (`conv2d`,
    `batch_normalization_3`), not after the layer.

    Args:
        path: the file.
        keys: read only these keys' variables; None: none, only the number of
            variables of each key is returned (as a list of that many None).

    Raises:
        WeightFileError: the file is truncated, damaged or not in that layout.
    """
    path = os.fspath(path)
    with _open_h5(path) as file:
        if "layers" not in file:
            raise WeightFileError(f"{path} is no Keras 3 `.weights.h5` file: it has no `layers` group")
        values = {}
        try:
            for key, group in file["layers"].items():
                variables = group.get("vars", {})
                names = [f"layers/{key}/vars/{i}" for i in range(len(variables))]
                if keys is None or key not in keys:
                    values[key] = [None] * len(names)
                else:
                    values[key] = [check_finite(path, name, np.asarray(file[name])) for name in names]
        except (OSError, KeyError) as error:
            raise WeightFileError(f"{path} is truncated or damaged: {error}") from None
    return values


def read_onnx(path: str | os.PathLike):
    """The `onnx.ModelProto` of an `.onnx` file (weights inside it). Its structure is
    checked where it is mapped (`kcnn.weights.convert_onnx`).

    Raises:
        WeightFileError: the file is truncated, damaged or no ONNX model; or `onnx`
            is not installed (it comes with kcnn's `export` extra).
    """
    path = os.fspath(path)
    try:
        import onnx
    except ImportError:
        raise WeightFileError(
            f"Reading {path} needs the `onnx` package: pip install 'kcnn[export]' (or pip install onnx)"
        ) from None
    try:
        model = onnx.load(path)
    except Exception as error:  # protobuf's DecodeError, onnx's errors about external data, ...
        raise WeightFileError(f"{path} is truncated, damaged or no ONNX model ({type(error).__name__}: {error})") from None
    if not model.graph.node:
        raise WeightFileError(f"{path} is no ONNX model: its graph has no operations")
    return model
