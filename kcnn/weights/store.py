"""Download, cache and verify weight files.

Files are kept in `$KCNN_HOME/weights/` (default: `$XDG_CACHE_HOME/kcnn`, else
`~/.cache/kcnn`). A file is checked against the table's hash every time before it
loads (a file unchanged since its last check, same size and modification time, is not
read again); a download is written to a temporary name, checked, and only then renamed into
the cache (`kcnn._files.atomic_path`), so the cache never holds a file that would later
load as valid without being so. `KCNN_OFFLINE=1` never opens a connection.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pathlib
import shutil
import urllib.error
import urllib.request

from kcnn._files import atomic_path
from kcnn.weights import table
from kcnn.weights.table import WeightsUnavailableError, local_file_advice

__all__ = ["HashMismatchError", "WeightsUnavailableError", "cache_dir", "fetch", "file_hash", "identify"]

_CHUNK = 1 << 20
_TIMEOUT = 60


class HashMismatchError(ValueError):
    """A file's hash differs from the table's: it is damaged, truncated or another file."""


def cache_dir() -> pathlib.Path:
    """`$KCNN_HOME/weights`, default `$XDG_CACHE_HOME/kcnn/weights` or `~/.cache/kcnn/weights`."""
    home = os.environ.get("KCNN_HOME")
    if not home:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(base, "kcnn")
    return pathlib.Path(home) / "weights"


def file_hash(path, algorithm: str) -> str:
    """The hex digest of a file ("md5" or "sha256"), read in chunks; each version of a
    file (its size and modification time) is read once per algorithm."""
    stat = os.stat(path)
    return _digest(os.path.realpath(path), stat.st_size, stat.st_mtime_ns, algorithm)


@functools.lru_cache(maxsize=32)
def _digest(path, size, mtime, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check(path, expected, what):
    algorithm, _, value = expected.partition(":")
    actual = file_hash(path, algorithm)
    if actual != value:
        raise HashMismatchError(
            f"{what} {os.fspath(path)} has {algorithm} {actual}, the weights table {value}: it is truncated, damaged or "
            f"another file, and is not loaded. Delete it and kcnn downloads it again. Received: {algorithm} {actual}"
        )


def fetch(weight_set, include_top: bool = True) -> pathlib.Path:
    """The checked local path of a weight set's file, downloaded into the cache if
    needed: the no-top file where the source publishes one and `include_top` is False.

    Raises:
        WeightsUnavailableError: offline (or unreachable) with no cached file (the
            message names the URL, the file name and where to put it), or no hash is
            recorded for the file.
        HashMismatchError: the cached or downloaded file's hash is wrong (a download
            is not kept).
    """
    url, expected = weight_set.source(include_top)
    path = cache_dir() / weight_set.file_name(include_top)
    if expected is None:
        raise WeightsUnavailableError(
            f"No published hash is recorded for {weight_set.name}, and kcnn downloads no file it cannot check. "
            f"{local_file_advice(weight_set)}"
        )
    if path.is_file():
        _check(path, expected, "The cached file")
        return path
    if os.environ.get("KCNN_OFFLINE", "") not in ("", "0"):
        raise WeightsUnavailableError(_offline_message(weight_set, url, path, "KCNN_OFFLINE is set"))
    logging.getLogger("kcnn").info("downloading %s to %s", url, path)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response, atomic_path(path) as temporary:
            with open(temporary, "wb") as file:
                shutil.copyfileobj(response, file, _CHUNK)
            _check(temporary, expected, f"The download of {url}, saved as")
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise WeightsUnavailableError(_offline_message(weight_set, url, path, f"the download failed: {error}")) from None
    return path



def identify(path) -> tuple[object, str]:
    """Which row of the weights table a local file is, and how that is known.

    By its hash first: a file whose md5/sha256 equals a row's (its top or no-top file)
    is that row's file. Else by its name: a file named as kcnn's cache names a row's
    file (`resnet34.tv_in1k.safetensors`, `vgg16_weights_tf_dim_ordering_tf_kernels.h5`)
    declares itself that row's, which is how a set without a recorded hash is loaded.
    Only files of a format the table has are hashed (each version of a file once).

    Returns:
        (row, "hash") or (row, "name") or (row, "name, but not the published file:
        its hash differs"), or (None, "") when neither tells.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    # A Keras 3 `.weights.h5` is never a table file (keras_h5 rows are Keras 2's `.h5`).
    suffix = "" if name.endswith(".weights.h5") else os.path.splitext(name)[1]
    rows = [row for row in table.WEIGHTS if row.file_name().endswith(suffix)] if suffix else []
    for row in rows:
        for expected in (row.hash, row.notop_hash):
            algorithm, _, value = (expected or "").partition(":")
            if expected and file_hash(path, algorithm) == value:
                return row, "hash"
    for row in rows:
        if name in (row.file_name(True), row.file_name(False)):
            return row, "name" if not row.hash else "name, but not the published file: its hash differs"
    return None, ""


def _offline_message(weight_set, url, path, why):
    return (
        f"The weights {weight_set.name} are not in the cache and cannot be downloaded ({why}). Download {url} "
        f"on a machine with a network and put it at {path} (file name {path.name}; set KCNN_HOME to move the "
        "cache): its hash is checked before it loads."
    )
