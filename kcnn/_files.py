"""Files that must survive a kill: every file kcnn writes goes through `atomic_path`,
so a reader, or a writer killed midway, never sees half a file. Shared by the trainer's
run folders and the tuner's project folders."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """A temporary path beside `path` to write to; flushed to disk and renamed over
    `path` when the block succeeds, removed when it fails.

    The temporary name is hidden, unique per process (chief and workers of a search,
    or two runs, share folders) and keeps `path`'s extension (Keras picks its format
    by it).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield temporary
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as file:
        file.write(text)


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
