"""Reading weight files: safetensors (torchvision/timm) and Keras 2's legacy `.h5`
(keras.applications), each into plain NumPy arrays.

safetensors is read here rather than with the `safetensors` package: the format is
an 8-byte little-endian header length, a JSON header `{name: {dtype, shape,
data_offsets}}` and one flat little-endian buffer, and checking every offset against
the file is what turns a truncated or damaged download into a clear error naming the
file. The writer exists for the tests and `tests/fixtures/make_torch_fixtures.py`.
This module imports NumPy only (the fixture script loads it into a PyTorch venv).
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

__all__ = ["WeightFileError", "read_keras_h5", "read_safetensors", "write_safetensors"]

_DTYPES = {
    "F16": np.float16, "F32": np.float32, "F64": np.float64, "BF16": None,
    "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v).str: k for k, v in _DTYPES.items() if v is not None}
# A header beyond this is no weight file (safetensors itself refuses headers over 100 MB).
_MAX_HEADER = 100 << 20


class WeightFileError(ValueError):
    """A weight file cannot be read: truncated, damaged or of another format. The
    message names the file."""


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{tensor name: array} of a `.safetensors` file (memory-mapped, read-only).

    Raises:
        WeightFileError: the file is truncated, damaged or no safetensors file.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) < 8:
            raise WeightFileError(f"{path} is no safetensors file: it has {size} bytes, fewer than its 8-byte header length")
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER or 8 + length > size:
            raise WeightFileError(
                f"{path} is truncated or no safetensors file: its header claims {length:,} bytes, the file has {size:,}"
            )
        try:
            header = json.loads(file.read(length))
        except ValueError as error:
            raise WeightFileError(f"{path} is damaged: its header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise WeightFileError(f"{path} is damaged: its header is not a JSON object")
    start = 8 + length
    buffer = np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(size - start,)) if size > start else np.zeros(0, np.uint8)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise WeightFileError(f"{path} is damaged: tensor {name!r} has a malformed entry {info!r}") from None
        if dtype is None:
            raise WeightFileError(f"{path}: tensor {name!r} is {info['dtype']}, which kcnn does not read; convert it to F32")
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if end - begin != expected or end > buffer.size or begin < 0:
            raise WeightFileError(
                f"{path} is truncated or damaged: tensor {name!r} needs bytes {begin:,}..{end:,} of a "
                f"{buffer.size:,}-byte buffer ({expected:,} bytes for shape {shape})"
            )
        tensors[name] = buffer[begin:end].view(np.dtype(dtype).newbyteorder("<")).reshape(shape)
    return tensors


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray]) -> None:
    """Writes {name: array} as a `.safetensors` file (what torch's `save_file` writes)."""
    header, offset, arrays = {}, 0, []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        nbytes = array.nbytes
        header[name] = {"dtype": _NAMES[array.dtype.str], "shape": list(array.shape), "data_offsets": [offset, offset + nbytes]}
        arrays.append(array)
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the buffer to 8 bytes
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for array in arrays:
            file.write(array.tobytes())


def read_keras_h5(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """{layer name: its weights in Keras order} of a Keras 2 legacy `.h5` file: the
    weights-only files keras.applications publishes (and `model.save("x.h5")`'s
    whole-model files, whose weights sit in `model_weights`).

    Raises:
        WeightFileError: the file is truncated, damaged or not in that layout.
    """
    import h5py

    path = os.fspath(path)
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise WeightFileError(f"{path} is truncated, damaged or no HDF5 file ({error})") from None
    with file:
        group = file.get("model_weights", file)
        if "layer_names" not in group.attrs:
            raise WeightFileError(
                f"{path} is no Keras 2 legacy weights file: it has no `layer_names` attribute "
                "(a Keras 3 `.weights.h5` file loads into the model it was saved from)"
            )
        layers = {}
        try:
            for layer in group.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in group[layer].attrs["weight_names"]]
                if names:
                    layers[layer] = [np.asarray(group[layer][name]) for name in names]
        except (OSError, KeyError) as error:
            raise WeightFileError(f"{path} is truncated or damaged: {error}") from None
    return layers
