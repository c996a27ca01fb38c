"""Files that must survive a kill: every file kcnn writes goes through `atomic_path`,
so a reader, or a writer killed midway, never sees half a file; and files read back
(JSON, `.keras` models) that a kill or a disk damaged are refused naming the file.
Shared by the trainer's run folders and the tuner's project folders."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

# Suffixes Keras picks a format by, kept whole on temporary names.
_KEPT_SUFFIXES = (".weights.h5", ".weights.json")
#: Where a temporary name ends: `.<stem>.<pid>.tmp<suffix>` (see `atomic_path`).
TEMPORARY_MARK = ".tmp"


class CorruptFileError(ValueError):
    """A file kcnn wrote cannot be read back: truncated, emptied or damaged. The
    message names the file."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """A temporary path beside `path` to write to; flushed to disk and renamed over
    `path` when the block succeeds, removed when it fails.

    The temporary name is hidden, unique per process (chief and workers of a search,
    or two runs, share folders) and keeps `path`'s extension (Keras picks its format
    by it: `.keras`, `.weights.h5`).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = next((s for s in _KEPT_SUFFIXES if path.name.endswith(s)), path.suffix)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    temporary = path.with_name(f".{stem}.{os.getpid()}{TEMPORARY_MARK}{suffix}")
    try:
        yield temporary
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
        sync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether `path` is one of `atomic_path`'s temporary names (left by a killed writer)."""
    name = pathlib.Path(path).name
    return name.startswith(".") and TEMPORARY_MARK in name


def temporary_writer(path: str | os.PathLike) -> int | None:
    """The process id in one of `atomic_path`'s temporary names (the writer's), else None."""
    name = pathlib.Path(path).name
    if not is_temporary(name):
        return None
    pid = name[: name.index(TEMPORARY_MARK)].rpartition(".")[2]
    return int(pid) if pid.isdigit() else None


def sync_folder(folder: str | os.PathLike) -> None:
    """Flushes a folder's entries (a rename in it) to disk, where the OS allows it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows, which cannot open a folder
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


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
        CorruptFileError: the file is not valid JSON, e.g. truncated or empty (the
            message names it).
    """
    try:
        with open(path, "rb") as file:
            content = file.read()
    except FileNotFoundError:
        return None
    try:
        return json.loads(content)
    except ValueError as error:  # UnicodeDecodeError included
        problem = "is empty" if not content else f"is not valid JSON ({error})"
        raise CorruptFileError(f"{os.fspath(path)} {problem}") from error


def load_keras_model(path: str | os.PathLike, *, advice: str = "Use a copy of it or save the model again."):
    """`keras.saving.load_model(path, compile=False)` (safe mode), whose error on a
    damaged file names the file and what is wrong with it.

    Keras says "File not found" of any file that is no zip archive (truncated or
    emptied), and raises zipfile's, json's or a bare KeyError without the path for a
    damaged or incomplete archive.

    Args:
        path: the `.keras` file.
        advice: the way out, for the message.

    Raises:
        CorruptFileError: the file is truncated, emptied or damaged (a `ValueError`).
    """
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:
        problem = _keras_archive_problem(path)
        if problem is None:
            raise  # Not a damaged file: Keras' own error (an unknown layer, ...) says what is wrong.
        raise CorruptFileError(
            f"{os.fspath(path)} is not a readable .keras model: {problem}, so it is truncated, emptied or damaged. "
            f"{advice} Received: path={os.fspath(path)!r}"
        ) from error


#: What every `.keras` archive holds (Keras 3's `saving_lib`).
_KERAS_ARCHIVE_MEMBERS = ("config.json", "model.weights.h5")


def _keras_archive_problem(path) -> str | None:
    """What is wrong with a `.keras` file that did not load, or None when its archive is
    whole (the failure is another one)."""
    import zipfile
    import zlib

    path = pathlib.Path(path)
    if not path.is_file():
        return None
    if not zipfile.is_zipfile(path):
        return f"it is no zip archive ({path.stat().st_size:,} bytes)"
    try:
        with zipfile.ZipFile(path) as archive:
            missing = [name for name in _KERAS_ARCHIVE_MEMBERS if name not in archive.namelist()]
            if missing:
                return f"its archive lacks {', '.join(missing)}"
            damaged = archive.testzip()
            if damaged is not None:
                return f"its archive member {damaged} is damaged (its CRC-32 differs from the one recorded)"
            json.loads(archive.read("config.json"))
    except ValueError:  # json's, and a UnicodeDecodeError
        return "its config.json is not valid JSON"
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as error:
        return f"its archive cannot be read ({type(error).__name__}: {error})"
    return None


def file_digest(path: str | os.PathLike) -> dict[str, Any]:
    """`{"size", "sha256"}` of a file: what a checkpoint record keeps of the files it
    names, to tell a complete file from a truncated or damaged one."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def check_digest(path: str | os.PathLike, expected: dict[str, Any]) -> str | None:
    """Why `path` is not the file `expected` (`file_digest`'s) describes, or None
    when it is."""
    path = pathlib.Path(path)
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    if size != expected.get("size"):
        return f"{path.name} has {size:,} bytes where {expected.get('size', 0):,} were written"
    if file_digest(path)["sha256"] != expected.get("sha256"):
        return f"{path.name} is damaged (its SHA-256 differs from the one recorded)"
    return None


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"Not JSON-serializable: {value!r}")
