"""The epoch-end checkpoint a run resumes from: kcnn's own, consistent after a kill at
any point.

At the end of each epoch (`kcnn.train.callbacks.EpochCheckpoint`, the last callback,
once everything else of the epoch is on disk) the run's `checkpoint/` folder
receives, each file written atomically:

    phase1-epoch0003.weights.h5   the training model's weights and its optimizer's
                                  state (step count, moments): where training resumes
    phase1-epoch0003.model.weights.h5   at a phase's last epoch when another phase
                                  follows: the model's weights alone, the next phase's start
    best-epoch0002.keras          the best epoch's model, when this epoch is the best
                                  (model.keras is then made the same file)
    phase1-epoch0003.json         the record, written LAST: phase, epoch, whether the
                                  phase is done, the files above with their sizes and
                                  SHA-256, the best value and epoch, the history rows,
                                  the state of the model's random generators (dropout)

A record names a complete checkpoint: the files it lists were on disk, whole, before
it was written. The previous record and its files are kept until a newer one is
complete (and the last record of an earlier phase, the current phase's start), so a
record whose files are missing, truncated or damaged falls back to the one before,
with a warning naming what was unusable; with none usable the run starts again from
the beginning of the earliest phase it can, with a warning. Nothing resumes from half
a state.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from kcnn._files import (
    CorruptFileError,
    atomic_path,
    check_digest,
    file_digest,
    is_temporary,
    read_json,
    sync_folder,
    write_json,
)

CHECKPOINT_FORMAT = "kcnn.checkpoint/1"
_RECORD = re.compile(r"^phase(\d+)-epoch(\d+)\.json$")


def _stem(phase: int, epoch: int) -> str:
    return f"phase{phase + 1}-epoch{epoch:04d}"


def best_file_name(epoch: int) -> str:
    return f"best-epoch{epoch:04d}.keras"


@dataclasses.dataclass(frozen=True)
class Restored:
    """Where a run resumes: the newest usable checkpoint record.

    Attributes:
        phase: the phase (from 0) of the record.
        phase_start: the epoch the phase began at (0-based: epochs before it).
        epoch: epochs finished across phases (the next one is `epoch + 1`).
        phase_done: the phase ended at this epoch (the next phase starts from `model_weights`).
        weights: the training state file (model and optimizer).
        model_weights: the model's weights alone, for the next phase (when phase_done).
        best_value, best_epoch: the best epoch by the monitor so far (None before any).
        best_model: the best epoch's model file in the checkpoint folder.
        stopped_early: whether a phase stopped early so far.
        history: the rows of history.csv up to `epoch`.
        record: the record's path.
        run: what the run is (kind, model, config: metadata.json's), to resume it
            when metadata.json is unreadable.
        random: the state of the model's random generators at `epoch`
            (`kcnn.train.random_state`); {} in records of earlier kcnn versions.
    """

    phase: int
    phase_start: int
    epoch: int
    phase_done: bool
    weights: pathlib.Path
    model_weights: pathlib.Path | None
    best_value: float | None
    best_epoch: int | None
    best_model: pathlib.Path | None
    stopped_early: bool
    history: list[dict[str, Any]]
    record: pathlib.Path
    run: dict[str, Any] | None = None
    random: dict[str, list[int]] = dataclasses.field(default_factory=dict)

    @property
    def phases_done(self) -> int:
        return self.phase + 1 if self.phase_done else self.phase

    def state(self) -> dict[str, Any]:
        """The progress as a dict (`RunFolder.read_state`)."""
        return {
            "phases_done": self.phases_done,
            "next_epoch": self.epoch,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
        }


class Checkpoint:
    """The `checkpoint/` folder of a run (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = pathlib.Path(directory)
        self._kept: list[pathlib.Path] = []  # Records this process committed or restored.
        # {file name: (its version, its digest)}: each version of a file is hashed once.
        self._digests: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}

    # -- reading -------------------------------------------------------------

    def records(self) -> list[pathlib.Path]:
        """The record files, newest first (by phase and epoch, from their names)."""
        if not self.directory.is_dir():
            return []
        found = [(tuple(map(int, m.groups())), p) for p in self.directory.iterdir() if (m := _RECORD.match(p.name))]
        return [path for _, path in sorted(found, reverse=True)]

    def restore_point(self) -> tuple[Restored | None, list[str]]:
        """The newest usable record, and what was found unusable on the way (one
        message per record, naming its file and why), newest first."""
        problems = []
        for path in self.records():
            try:
                restored = self._read(path)
            except CorruptFileError as error:
                problems.append(str(error))
                continue
            records = self.records()
            self._kept = records[records.index(path) :]
            return restored, problems
        return None, problems

    def _read(self, path: pathlib.Path) -> Restored:
        record = read_json(path)
        if record is None:
            raise CorruptFileError(f"{path} is missing")
        try:
            if record.get("format") != CHECKPOINT_FORMAT:
                raise KeyError("format")
            files = record["files"]
            for name in ("weights", "model_weights", "best_model"):
                entry = files.get(name)
                if entry is not None:
                    problem = check_digest(self.directory / entry["name"], entry)
                    if problem:
                        raise CorruptFileError(f"{path} names {problem}")
                    self._remember(self.directory / entry["name"], {"size": entry["size"], "sha256": entry["sha256"]})
            best = record["best"]
            restored = Restored(
                phase=int(record["phase"]),
                phase_start=int(record["phase_start"]),
                epoch=int(record["epoch"]),
                phase_done=bool(record["phase_done"]),
                weights=self.directory / files["weights"]["name"],
                model_weights=self.directory / files["model_weights"]["name"] if files.get("model_weights") else None,
                best_value=best["value"],
                best_epoch=best["epoch"],
                best_model=self.directory / files["best_model"]["name"] if files.get("best_model") else None,
                stopped_early=bool(record["stopped_early"]),
                history=list(record["history"]),
                record=path,
                run=record.get("run"),
                random=dict(record.get("random") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            if isinstance(error, CorruptFileError):
                raise
            raise CorruptFileError(f"{path} is not a kcnn checkpoint record (missing or invalid {error})") from error
        if restored.phase_done and restored.model_weights is None and record.get("more_phases"):
            raise CorruptFileError(f"{path} ends a phase but names no weights for the next one")
        return restored

    # -- writing -------------------------------------------------------------

    def commit(
        self,
        *,
        phase: int,
        phase_start: int,
        epoch: int,
        phase_done: bool,
        more_phases: bool,
        model: keras.Model,
        model_only: keras.Model | None,
        best_value: float | None,
        best_epoch: int | None,
        stopped_early: bool,
        history: Sequence[Mapping[str, Any]],
        run: Mapping[str, Any] | None = None,
        random: Mapping[str, list[int]] | None = None,
    ) -> pathlib.Path:
        """Writes the checkpoint of an epoch: its files, then its record, then drops
        the checkpoints no longer needed.

        Args:
            phase, phase_start, epoch, phase_done: where the run is (the phase's
                index, the epochs before it, the epochs finished, whether it ended).
            more_phases: another phase follows this one.
            model: the compiled training model (weights and optimizer state saved).
            model_only: at a phase's end when more phases follow, the model to save the
                weights of (without optimizer), the next phase's start.
            best_value, best_epoch: the best so far; the best epoch's model is
                `best-epoch<N>.keras` in the folder.
            stopped_early: whether a phase stopped early so far.
            history: the history rows up to this epoch.
            run: what the run is (metadata.json's kind, model and config).
            random: the state of the model's random generators (`random_state`).

        Returns:
            The record's path.
        """
        stem = _stem(phase, epoch)
        files = {"weights": self._save_weights(model, f"{stem}.weights.h5")}
        if phase_done and more_phases and model_only is not None:
            files["model_weights"] = self._save_weights(model_only, f"{stem}.model.weights.h5")
        if best_epoch is not None:
            best_path = self.directory / best_file_name(best_epoch)
            files["best_model"] = {"name": best_path.name, **self._digest(best_path)}
        record = {
            "format": CHECKPOINT_FORMAT,
            "phase": phase,
            "phase_start": phase_start,
            "epoch": epoch,
            "phase_done": phase_done,
            "more_phases": more_phases,
            "files": files,
            "best": {"value": best_value, "epoch": best_epoch},
            "stopped_early": stopped_early,
            "history": [dict(row) for row in history],
            "run": dict(run) if run is not None else None,
            "random": dict(random or {}),
        }
        path = self.directory / f"{stem}.json"
        write_json(path, record)  # The commit: the checkpoint is complete.
        self._kept = [path, *[p for p in self._kept if p != path]]
        self.prune()
        return path

    def _save_weights(self, model: keras.Model, name: str) -> dict[str, Any]:
        path = self.directory / name
        with atomic_path(path) as temporary:
            model.save_weights(temporary)
        return {"name": name, **self._digest(path)}

    def _digest(self, path: pathlib.Path) -> dict[str, Any]:
        """`file_digest(path)`, computed once per version of the file: the best
        epoch's model, which every record names until a better epoch comes (100 MB
        for a ResNet-50), is read when it is written or restored, not at every epoch.
        A version is the file's inode, size and modification time: kcnn replaces a
        file by renaming a new one over it (`atomic_path`), a new inode."""
        version = _version(path)
        cached = self._digests.get(path.name)
        if cached is None or cached[0] != version:
            cached = (version, file_digest(path))
            self._digests[path.name] = cached
        return dict(cached[1])

    def _remember(self, path: pathlib.Path, digest: dict[str, Any]) -> None:
        """Records the digest just checked of `path` as its current version's."""
        self._digests[path.name] = (_version(path), dict(digest))

    def prune(self) -> None:
        """Removes every file no kept record needs: the kept records are the newest
        two this process committed or restored, and the newest of them that ends a
        phase with the next phase's weights (the current phase's start). Leftovers of
        killed writers and unusable records go too."""
        kept = self._kept[:2]
        phase_start = next((p for p in self._kept[2:] if _ends_phase(p)), None)
        if phase_start is not None and not any(_ends_phase(p) for p in kept):
            kept.append(phase_start)
        self._kept = kept
        needed = set()
        for record in kept:
            needed.add(record.name)
            try:
                files = (read_json(record) or {}).get("files", {})
            except CorruptFileError:
                continue
            needed.update(entry["name"] for entry in files.values() if entry)
        for path in self.directory.iterdir() if self.directory.is_dir() else ():
            if path.name not in needed and (path.is_file() or path.is_symlink()):
                path.unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _version(path: pathlib.Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _ends_phase(record: pathlib.Path) -> bool:
    try:
        content = read_json(record) or {}
    except CorruptFileError:
        return False
    return bool(content.get("phase_done")) and bool(content.get("files", {}).get("model_weights"))


def restore_training_state(model: keras.Model, path: pathlib.Path, strategy=None) -> None:
    """Loads a checkpoint's training state (weights and optimizer) into the compiled
    `model`, its optimizer built first so that its variables exist to receive theirs.

    Raises:
        ValueError: the file does not fit the model (another architecture), naming it.
    """
    import contextlib

    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        load_weights(model, path)


def load_weights(model: keras.Model, path: pathlib.Path) -> None:
    """`model.load_weights(path)` whose errors name the file and the way out."""
    try:
        with warnings.catch_warnings():
            # A mismatch is an error here, not a warning to scroll past.
            warnings.filterwarnings("error", message=".*(Skipping variable loading|could not be loaded).*")
            model.load_weights(path)
    except (OSError, ValueError, KeyError, UserWarning) as error:
        raise ValueError(
            f"The checkpoint {os.fspath(path)} does not fit the model being trained ({type(error).__name__}: "
            f"{error}). The run folder holds a run of another model; train into another folder, or delete "
            f"{os.fspath(path.parent)} to start this run again from its beginning. Received: model={model.name!r}"
        ) from error


def cleanup_leftovers(directory: pathlib.Path) -> None:
    """Removes temporary files that killed writers left in `directory`."""
    if directory.is_dir():
        for path in directory.iterdir():
            if is_temporary(path):
                path.unlink(missing_ok=True)


def make_current(best_model: pathlib.Path, model_path: pathlib.Path) -> None:
    """Makes `model_path` (model.keras) the file `best_model`: a hard link (no copy of
    a big model) where the file system allows, else a copy; atomically either way."""
    with atomic_path(model_path) as temporary:
        temporary.unlink(missing_ok=True)
        try:
            os.link(best_model, temporary)
        except OSError:
            shutil.copyfile(best_model, temporary)
    sync_folder(model_path.parent)


def is_current(best_model: pathlib.Path, model_path: pathlib.Path) -> bool:
    """Whether model.keras is the file `best_model` (the same file, or the same bytes)."""
    try:
        if os.path.samefile(best_model, model_path):
            return True
    except OSError:
        return False
    return file_digest(best_model) == file_digest(model_path)
