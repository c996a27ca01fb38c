"""Small files that must survive a kill: atomic text writes and JSON, shared by the
trainer's run folders and the tuner's project folders."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any


def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Writes `text` so that a reader, or a writer killed midway, never sees half a
    file: a temporary file in the same folder (named per process, as chief and
    workers of a search share folders), flushed to disk, then renamed over `path`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", newline="") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """`value` as indented JSON (NumPy scalars, tuples, sets and paths allowed), atomically."""
    atomic_write(path, json.dumps(value, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in `path`, or None when there is no such file.

    Raises:
        ValueError: the file is not valid JSON (the message names it).
    """
    try:
        with open(path) as file:
            return json.load(file)
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise ValueError(f"{os.fspath(path)} is not valid JSON ({error}); delete or repair it") from error


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"Not JSON-serializable: {value!r}")
