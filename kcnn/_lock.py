"""One process at a time in a run folder or a tuning project.

The lock is an OS lock (`fcntl.flock`) on `kcnn.lock` in the folder: the kernel releases
it when its process ends, however it ends (SIGKILL and power loss included), so a
killed run never leaves a folder locked. The file names its holder (pid, host, start
time, what it runs) for the message of a process that is refused. It is removed when
the holder releases the lock; left behind by a killed process, it blocks nothing. A
folder the lock created is removed with it when nothing was written in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import sys
import time
from typing import Any

LOCK_FILE = "kcnn.lock"


class FolderInUseError(ValueError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """An exclusive, non-blocking lock on a folder (see the module docstring).

    The same instance can be taken again by its holder (`with lock:` inside `with
    lock:`), and is released when the outermost hold ends; another instance, in this
    process or another, is refused.

    Args:
        folder: the run folder or tuning project (created if needed).
        purpose: what the holder does, for the message of a refused process, e.g.
            "kcnn training run".
    """

    def __init__(self, folder: str | os.PathLike, purpose: str):
        self.folder = pathlib.Path(folder)
        self.path = self.folder / LOCK_FILE
        self.purpose = purpose
        self._descriptor: int | None = None
        self._holds = 0
        self._created_folder = False

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def acquire(self) -> FolderLock:
        """Takes the lock at once (again, when this instance holds it), or raises.

        Raises:
            FolderInUseError: another live process holds it (the message names it).
        """
        import fcntl

        if self.held:
            self._holds += 1
            return self
        created = not self.folder.is_dir()
        while True:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # A releasing holder removed the empty folder it had made.
                continue
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # BlockingIOError: held by another open file
                holder = _read_holder(descriptor)
                os.close(descriptor)
                raise FolderInUseError(self._refusal(holder)) from None
            # A holder releasing the lock removes the file: locked after it was
            # removed, this descriptor locks a file nobody else will open. Retry.
            try:
                same = os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(descriptor)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "purpose": self.purpose,
            "command": " ".join(sys.argv)[:500],
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(holder) + "\n").encode(), 0)
        os.fsync(descriptor)
        self._descriptor = descriptor
        self._holds = 1
        self._created_folder = created
        return self

    def release(self) -> None:
        """Ends a hold; the outermost one releases the lock, removes the lock file and
        the folder, if the lock created it and it is empty (nothing if not held)."""
        if self._descriptor is None:
            return
        self._holds -= 1
        if self._holds > 0:
            return
        descriptor, self._descriptor = self._descriptor, None
        try:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(descriptor).st_ino:
                    self.path.unlink()
        finally:
            os.close(descriptor)  # Releases the flock.
        if self._created_folder:
            with contextlib.suppress(OSError):  # Not empty: something was written, it stays.
                self.folder.rmdir()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _refusal(self, holder: dict[str, Any] | None) -> str:
        if holder:
            who = (
                f"process {holder.get('pid')} on {holder.get('host')}, running since {holder.get('started')} "
                f"({holder.get('purpose')}: {holder.get('command') or '?'})"
            )
        else:
            who = "another process (it is starting: its details are not written yet)"
        return (
            f"{os.fspath(self.folder)} is in use by {who}. Two processes writing one folder would interleave "
            f"their epochs or trials: wait for that one to finish or stop it (a stopped or killed process "
            f"releases the folder by itself), or choose another folder. Received: {os.fspath(self.folder)!r}"
        )


def check_free(folder: str | os.PathLike, purpose: str) -> None:
    """Raises `FolderInUseError` at once if another process holds `folder`'s lock
    (takes the lock and releases it; nothing happens when the folder does not exist)."""
    folder = pathlib.Path(folder)
    if folder.is_dir():
        with FolderLock(folder, purpose):
            pass


def _read_holder(descriptor: int) -> dict[str, Any] | None:
    try:
        text = os.pread(descriptor, 4096, 0).decode(errors="replace")
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
