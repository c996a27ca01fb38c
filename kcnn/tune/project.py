"""The project folder of a search (`kcnn.tune.search`), and its rules: where it is, the
settings a resumed search must share, its overwrite, and the distributed roles.

The project folder (default `saved_models/tuning/<project>/`) holds keras-tuner's own
state (oracle.json, tuner*.json, trial_*/trial.json and checkpoints, which are what a
resumed search reloads), and what kcnn adds:

    search.json       the settings, to refuse resuming with different ones
    trial_*/kcnn_trial.json   params, MACs, seconds, epochs, objective per epoch, failure or
                      pruning reason of a trial
    oracle.json       keras-tuner's, with kcnn's time account (`kcnn_budget`: seconds used,
                      trial durations), which a resumed search's time budget goes on from
    trials.csv        every trial: hyperparameters, score, params, MACs, seconds, status
                      (COMPLETED, PRUNED, FAILED, ...), reason,
                      and the finish's rank, validation and test accuracy of the retrained ones
    finish/           the finish's runs (`kcnn.tune.finish`): top trials retrained, references
    finish.csv        their validation and test accuracy, standard errors, params, MACs
    pareto.png        score against MACs, Pareto front marked, the finish's test scores
    best/             the chosen model, saved as a `kcnn.train` run: model.keras + metadata.json
    kcnn.lock         while a local search or the chief of a distributed one runs

Every state file is written atomically, and a project whose oracle.json or a
trial.json is unreadable anyway resumes from what is left, with a warning (see
`kcnn.tune._keras_tuner`); the temporary files of writers killed mid-write are removed
when the search starts again (`remove_leftovers`).

The chief (or a local search) alone writes the project's state, under the lock;
workers share the folder. A search's role comes from keras-tuner's environment
variables (`ENV_IP`, `ENV_PORT`, `ENV_ID`), which `distributed_env` sets from the
config. This module imports neither TensorFlow nor keras-tuner.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import warnings
from typing import Any

from kcnn._files import CorruptFileError, is_temporary, read_json, temporary_writer
from kcnn._lock import LOCK_FILE
from kcnn.tune.config import parse_address

DEFAULT_ROOT = os.path.join("saved_models", "tuning")
SETTINGS_FILE = "search.json"
# keras-tuner reads its distributed settings from these variables only.
ENV_IP, ENV_PORT, ENV_ID = "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"


def directory(config, space, data) -> pathlib.Path:
    """The project folder: `config.directory`, else DEFAULT_ROOT/<project>, the project
    named by `config.project` or after the space and the dataset."""
    if config.directory is not None:
        return pathlib.Path(config.directory)
    project = config.project or f"{space.name}-{slug(data.name or 'data')}"
    return pathlib.Path(DEFAULT_ROOT) / project


def settings(space, config, data) -> dict[str, Any]:
    """What a resumed search must share with the one it resumes (search.json)."""
    return {
        "space": space.name,
        "ranges": {key: list(value) for key, value in space.ranges.items()},
        "input_shape": list(space.input_shape),
        "classes": space.classes,
        "dataset": data.name,
        **{
            key: getattr(config, key)
            for key in (
                "tuner",
                "objective",
                "target_macs",
                "max_epochs",
                "seed",
                "hyperband_factor",
                "hyperband_iterations",
            )
        },
        # Only with the latency cost: the projects of MACs searches keep their settings.
        **(
            {key: getattr(config, key) for key in ("cost", "target_latency_ms", "latency_batch_size")}
            if config.cost == "latency"
            else {}
        ),
    }


def check_settings(project_dir, expected):
    """Refuses a project that holds a search with other settings: resuming it would
    mix two searches (or fail inside keras-tuner)."""
    try:
        previous = read_json(project_dir / SETTINGS_FILE)
    except CorruptFileError as error:
        warnings.warn(
            f"{error}; the settings of the search in the project cannot be checked against these, with which "
            "it resumes (search.json is written anew).",
            stacklevel=3,
        )
        previous = None
    if previous is not None:
        changed = {key: (previous.get(key), value) for key, value in expected.items() if previous.get(key) != value}
        if changed:
            raise ValueError(
                "The project folder holds a search with other settings, which cannot be resumed with these; pass "
                f"overwrite=True (--overwrite) or another project. Changed (old, new): {changed}. "
                f"Received: directory={os.fspath(project_dir)!r}"
            )


def clear(project_dir) -> None:
    """Removes everything in the project folder but its lock (`overwrite`)."""
    if project_dir.is_dir():
        for path in project_dir.iterdir():
            if path.name == LOCK_FILE:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def remove_leftovers(project_dir, role: str) -> list[pathlib.Path]:
    """Removes the temporary files (`kcnn._files.atomic_path`'s) that writers killed
    mid-write left anywhere in the project folder; returns them.

    Called by the process that holds the project's lock, before its search starts: a
    local search is the project's only writer, and removes them all; a chief's
    workers may already be writing, so it leaves those of processes alive on this
    machine. (A worker on another machine sharing the folder writes its tuner file
    as it starts: a worker started in the very instant of the chief's sweep could
    lose that write, and stops with an error; run the command again.)
    """
    removed = []
    if not pathlib.Path(project_dir).is_dir():
        return removed
    for path in pathlib.Path(project_dir).rglob("*"):
        if not is_temporary(path) or (role != "local" and _alive(temporary_writer(path))):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _alive(pid) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Another user's process.
        return True
    return True


@contextlib.contextmanager
def distributed_env(config):
    """keras-tuner takes its chief/worker settings from environment variables only:
    set them for the duration of the search when the config asks, then restore them.
    Without `config.chief`, variables the caller set are used as they are."""
    if config.chief is None:
        yield
        return
    host, port = parse_address(config.chief)
    values = {ENV_IP: host, ENV_PORT: str(port), ENV_ID: config.worker or "chief"}
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def role() -> str:
    if ENV_IP not in os.environ:
        return "local"
    return "chief" if "chief" in os.environ.get(ENV_ID, "") else "worker"


def slug(name) -> str:
    name = os.path.basename(os.path.normpath(str(name))) or str(name)
    return re.sub(r"[^a-z0-9_.]+", "_", name.lower()).strip("_.") or "data"
