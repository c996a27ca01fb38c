"""What kcnn reads back from keras-tuner's trials: the records of a search
(`collect_trials`), a trial's checkpoint, its objective's value at its best step and its
sampled values, and the `Objective` of a metric or of the cost-weighted score."""

from __future__ import annotations

import pathlib
import warnings
from typing import Any

import keras_tuner

from kcnn._files import read_json
from kcnn.tune import report
from kcnn.tune._keras_tuner.stopping import PRUNED, record_status
from kcnn.tune.cost import weighted_name
from kcnn.tune.report import RECORD_FILE, TrialRecord


def collect_trials(tuner, project_dir) -> list[TrialRecord]:
    """Every trial the oracle knows, with the records of the processes that ran them."""
    oracle = tuner.oracle
    trials = getattr(oracle, "trials", None)
    if trials is None:  # A worker's proxy to the chief: only its own trials.
        trials = {trial_id: oracle.get_trial(trial_id) for trial_id in tuner.ran}
    records = []
    # By number: a project begun before the ids had one format may mix "06" and "0007".
    for trial_id in sorted(trials, key=int):
        trial = trials[trial_id]
        try:
            facts = read_json(pathlib.Path(project_dir) / f"trial_{trial_id}" / RECORD_FILE) or {}
        except ValueError as error:  # Reported; the trial keeps keras-tuner's facts.
            warnings.warn(str(error), stacklevel=2)
            facts = {}
        status = record_status(trial)
        reason = facts.get("reason") if status != "COMPLETED" else None
        reason = reason or (report.failure_reason(getattr(trial, "message", None)) if status != "COMPLETED" else None)
        if status == "RUNNING":
            reason = "interrupted; runs again when the search resumes"
        records.append(
            TrialRecord(
                trial_id=trial_id,
                number=int(trial_id) + 1,
                total=None,
                status=status,
                score=float(trial.score) if status == "COMPLETED" and trial.score is not None else None,
                metric=metric_value(trial, tuner.metric) if status in ("COMPLETED", PRUNED) else None,
                hyperparameters=public_values(trial.hyperparameters),
                params=facts.get("params"),
                macs=facts.get("macs"),
                latency_ms=facts.get("latency_ms"),
                latency_spread_ms=facts.get("latency_spread_ms"),
                seconds=facts.get("seconds"),
                epochs=facts.get("epochs"),
                reason=reason,
                tuner_id=facts.get("tuner_id"),
            )
        )
    return records


def checkpoint_path(tuner, trial_id) -> str:
    """The file of a trial's best-epoch weights."""
    return tuner._get_checkpoint_fname(trial_id)


def objective(name):
    """keras-tuner's `Objective` for a logged metric, its direction inferred."""
    direction = keras_tuner.engine.metrics_tracking.infer_metric_direction(name)
    if direction is None:
        raise ValueError(
            "Cannot tell whether the objective is to be maximized or minimized; use an accuracy or loss "
            f"metric such as 'val_accuracy' or 'val_loss'. Received: objective={name!r}"
        )
    return keras_tuner.Objective(name, direction)


def score_objective(name, target=None):
    """keras-tuner's `Objective` of a search's score: the objective `name`, or with a
    cost target (MACs or milliseconds) its cost-weighted value (`kcnn.tune.cost`), in
    the same direction."""
    own = objective(name)
    return own if target is None else keras_tuner.Objective(weighted_name(name), own.direction)


def metric_value(trial, name) -> float | None:
    """The objective's own value of a trial at its best step (the score's, as the
    cost factor is the same at every step)."""
    metrics = trial.metrics
    if not metrics.exists(name):
        return None
    if trial.status == "COMPLETED" and trial.best_step is not None:  # A pruned trial has no best step.
        history = metrics.get_history(name)
        at_best = [observation.mean() for observation in history if observation.step == trial.best_step]
        if at_best:
            return float(at_best[0])
    value = metrics.get_best_value(name)
    return None if value is None else float(value)


def public_values(hyperparameters) -> dict[str, Any]:
    """The sampled values without Hyperband's bookkeeping (`tuner/epochs`, ...)."""
    return {key: value for key, value in hyperparameters.values.items() if not key.startswith("tuner/")}
