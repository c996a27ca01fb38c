"""Trial records and what is made of them: trials.csv, the Pareto front, the results
table (the Pareto plot: `kcnn.tune.pareto_plot`)."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from kcnn._files import atomic_write
from kcnn.tune.budget import format_duration

__all__ = [
    "TrialRecord",
    "cost_of",
    "format_finish",
    "format_results",
    "pareto_front",
    "ranked_records",
    "write_finish_csv",
    "write_trials_csv",
]

#: The per-trial file the process that ran a trial writes into its trial folder:
#: params, MACs, seconds, epochs, the objective at each epoch (`objective_history`,
#: the median stopping rule's reference) and the reason of a failure or a pruning. keras-tuner's own
#: trial.json keeps the status, score and hyperparameters, but its failure message
#: does not travel from a worker to the chief.
RECORD_FILE = "kcnn_trial.json"
#: The measured latency's facts a trial's record holds when the search measures it
#: (`kcnn.tune.latency`): the median and the interquartile range, in ms per call.
LATENCY_KEYS = ("latency_ms", "latency_spread_ms")
#: The Pareto plot's cost axes: the `TrialRecord` attribute and the axis label.
COST_AXES = {"macs": ("macs", "MACs per image"), "params": ("params", "parameters"), "latency": ("latency_ms", "latency, ms per call (median, measured)")}


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial of a search, as trials.csv and the live progress lines show it.

    Attributes:
        trial_id: the trial's id, its index from 0 in four digits ("0000", "0001",
            ...; `kcnn.tune._keras_tuner.format_trial_id`).
        number: the trial's number from 1.
        total: trials planned for the search (None when unknown).
        status: "RUNNING" (started; a trial of an interrupted search that will
            run again on resume), "COMPLETED" (a trial the time budget stopped at
            an epoch boundary too, with the epochs it did), "PRUNED" (stopped by the
            median stopping rule, `kcnn.tune.stopping`: no candidate for the best
            model or the Pareto front), "FAILED" or "INVALID".
        score: the best value over the trial's epochs of what the search ranks by:
            the objective, or with a cost term (`kcnn.tune.cost`) the objective
            weighed by the trial's MACs (None unless completed).
        metric: the objective's own value at that epoch (None unless completed);
            `score` without a cost term, or at or below its target. Of a pruned
            trial: its best value before it was stopped.
        best_score: the best score of the search so far (live records only).
        hyperparameters: the sampled values (active ones), by name.
        params: parameters of the model (None when no model was built).
        macs: multiply-accumulates per image (None when no model was built).
        latency_ms: the median latency of the model's inference path on the machine
            that ran the trial, in ms per call (`kcnn.tune.latency`; None when the
            search did not measure it).
        latency_spread_ms: the interquartile range of those timed runs, in ms.
        seconds: wall time of the trial.
        epochs: epochs the model had trained at the end of the trial.
        reason: why the trial failed or was pruned (one line), else None.
        tuner_id: the tuner (process) that ran it.
        time_left: seconds left of the search's time budget (live records only).
        time_budget: the search's time budget in seconds (None: none).
    """

    trial_id: str
    number: int
    total: int | None
    status: str
    score: float | None = None
    metric: float | None = None
    best_score: float | None = None
    hyperparameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    params: int | None = None
    macs: int | None = None
    seconds: float | None = None
    epochs: int | None = None
    reason: str | None = None
    latency_ms: float | None = None
    latency_spread_ms: float | None = None
    tuner_id: str | None = None
    time_left: float | None = None
    time_budget: float | None = None

    def progress_line(self, objective: str) -> str:
        """The one-line report of a finished (or started) trial, with the time left of
        the search's budget ("  3m12s left of 5m") when it has one."""
        line = self._line(objective)
        if self.time_budget is not None and self.time_left is not None:
            line += f"  {format_duration(self.time_left)} left of {format_duration(self.time_budget)}"
        return line

    def _line(self, objective: str) -> str:
        of = f"/{self.total}" if self.total else ""
        head = f"trial {self.number}{of} ({self.trial_id})"
        if self.status == "RUNNING":
            values = " ".join(f"{key}={_short(value)}" for key, value in self.hyperparameters.items())
            return f"{head} started: {values}"
        best = f"  best {self.best_score:.4f}" if self.best_score is not None else ""
        if self.status == "COMPLETED":
            cost = f"  {_human(self.params)} params  {_human(self.macs)} MACs" if self.params is not None else ""
            if self.latency_ms is not None:
                cost += f"  {self.latency_ms:.3g} ms (IQR {self.latency_spread_ms:.2g})"
            seconds = f"  {self.seconds:.1f}s" if self.seconds is not None else ""
            return f"{head}  {objective} {self.value:.4f}{self.score_note}{best}{cost}{seconds}"
        return f"{head}  {self.status}: {self.reason or 'no reason recorded'}{best}"


    @property
    def value(self) -> float | None:
        """The objective's own value (`metric`), or the score where it is not recorded."""
        return self.score if self.metric is None else self.metric

    @property
    def score_note(self) -> str:
        """" (score 0.9312)" where the score is not the objective's own value (a cost
        was charged), else ""."""
        if self.score is None or self.metric is None or math.isclose(self.score, self.metric, rel_tol=1e-9):
            return ""
        return f" (score {self.score:.4f})"


def pareto_front(records: Sequence[TrialRecord], *, maximize: bool = True, cost_axis: str = "macs") -> list[TrialRecord]:
    """The completed trials no other trial beats on both the objective's own value and
    the cost (`cost_axis`: "macs", "params" or "latency"), cheapest first."""
    cost = cost_of(cost_axis)
    scored = [r for r in records if r.status == "COMPLETED" and r.value is not None and cost(r) is not None]
    sign = 1 if maximize else -1
    front, best = [], -math.inf
    for record in sorted(scored, key=lambda r: (cost(r), -sign * r.value)):
        if sign * record.value > best:
            front.append(record)
            best = sign * record.value
    return front


def cost_of(cost_axis: str):
    """The cost of a record on `cost_axis`, a function of the record (None: unknown)."""
    if cost_axis not in COST_AXES:
        raise ValueError(f"`cost_axis` must be one of {', '.join(map(repr, COST_AXES))}. Received: cost_axis={cost_axis!r}")
    attribute = COST_AXES[cost_axis][0]
    return lambda record: getattr(record, attribute, None)


def hyperparameter_names(records: Sequence[TrialRecord], order: Sequence[str] = ()) -> list[str]:
    """The hyperparameter columns: `order` first (the space's), then any others."""
    names = [name for name in order if any(name in r.hyperparameters for r in records)]
    for record in records:
        names.extend(name for name in record.hyperparameters if name not in names)
    return names


#: The columns trials.csv adds for the trials the finish retrained (blank for the others).
FINISH_COLUMNS = ("retrained_rank", "retrained_val_accuracy", "retrained_test_accuracy")


def write_trials_csv(path, records, objective, *, maximize=True, order=(), finish=()):
    """Writes trials.csv (atomically): one row per trial, hyperparameters as columns.

    Columns: trial, status (a pruned trial is PRUNED, its objective its best
    before it was stopped, no score and never on the front), the objective (its own value), score (what the search
    ranks by: the objective weighed by the cost term, `kcnn.tune.cost`, or the
    objective itself), params, macs, latency_ms and latency_spread_ms (the median
    and interquartile range of the measured latency, `kcnn.tune.latency`; blank when
    not measured; a retrained trial's, measured by the finish where the search did
    not), seconds, epochs, pareto (on the MACs axis),
    retrained_rank, retrained_val_accuracy and retrained_test_accuracy (the finish's
    full-recipe run of the trial, blank for the trials it did not retrain), the
    hyperparameters (blank where inactive), tuner, reason.
    """
    names = hyperparameter_names(records, order)
    front = {r.trial_id for r in pareto_front(records, maximize=maximize)}
    retrained = {r.name: r for r in finish if r.kind == "trial"}
    header = ["trial", "status", objective, "score", "params", "macs", *LATENCY_KEYS, "seconds", "epochs", "pareto"]
    header += FINISH_COLUMNS
    header += [*names, "tuner", "reason"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for r in records:
        again = retrained.get(r.trial_id)
        writer.writerow(
            [
                r.trial_id,
                r.status,
                _number(r.value),
                _number(r.score),
                _blank(r.params),
                _blank(r.macs),
                *(_number(_measured(r, again, key)) for key in LATENCY_KEYS),
                "" if r.seconds is None else f"{r.seconds:.2f}",
                _blank(r.epochs),
                r.trial_id in front,
                _blank(again and again.rank),
                _number(again and again.validation),
                _number(again and again.test),
                *(_blank(r.hyperparameters.get(name)) for name in names),
                _blank(r.tuner_id),
                _blank(r.reason),
            ]
        )
    atomic_write(path, buffer.getvalue())


def write_finish_csv(path, finish):
    """Writes finish.csv (atomically): the finish's runs (the retrained trials and the
    references, as given: by rank), with validation and test accuracy, their standard errors,
    the images they are measured on, params, MACs, latency_ms and latency_spread_ms
    (blank when not measured), the score the ranking used (the validation accuracy
    weighed by the cost term), the trial's search score and the run folder."""
    header = ["name", "kind", "rank", "val_accuracy", "val_error", "val_examples", "test_accuracy", "test_error"]
    header += ["test_examples", "params", "macs", *LATENCY_KEYS, "score", "search_score", "path", "reason"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for r in finish:
        writer.writerow(
            [
                r.name,
                r.kind,
                _blank(r.rank),
                _number(r.validation),
                _number(r.validation_error),
                _blank(r.validation_examples),
                _number(r.test),
                _number(r.test_error),
                _blank(r.test_examples),
                _blank(r.params),
                _blank(r.macs),
                _number(r.latency_ms),
                _number(r.latency_spread_ms),
                _number(r.score),
                _number(r.search_score),
                _blank(r.path),
                _blank(r.reason),
            ]
        )
    atomic_write(path, buffer.getvalue())


def format_finish(retrained, references) -> str:
    """The finish's table: the retrained trials and the references, ranked together
    (the chosen one marked), then the references not trained; accuracies in percent
    with their standard errors; where the search measures latency, a column of the
    median ms per call."""
    runs = sorted([*retrained, *references], key=lambda r: math.inf if r.rank is None else r.rank)
    measured = any(r.latency_ms is not None for r in runs)
    latency = f" {'ms':>7}" if measured else ""
    lines = [
        "retrained with the full recipe, and the references (best: the cheapest within one standard error of the "
        "difference from the top score, the validation accuracy weighed by the cost term)",
        f"{'rank':>4} {'model':<14} {'val %':>13} {'test %':>13} {'params':>9} {'MACs':>9}{latency} {'search':>8}",
    ]

    def row(r):
        rank = ("*" if r.rank == 1 else "") + _blank(r.rank)
        label = r.label if r.kind == "trial" else f"{r.name} (ref)"
        if r.reason:
            return f"{rank:>4} {label:<14} not trained: {r.reason}"
        search = "" if r.search_score is None else f"{r.search_score:.4f}"
        ms = "-" if r.latency_ms is None else f"{r.latency_ms:.3g}"
        latency = f" {ms:>7}" if measured else ""
        return (
            f"{rank:>4} {label:<14} {_percent(r.validation, r.validation_error):>13} "
            f"{_percent(r.test, r.test_error):>13} {_human(r.params):>9} {_human(r.macs):>9}{latency} {search:>8}"
        )

    lines.extend(row(r) for r in runs)
    return "\n".join(lines)


def ranked_records(records: Sequence[TrialRecord], *, maximize: bool = True) -> list[TrialRecord]:
    """The completed trials, best score first; of equal scores, the fewest MACs first
    (then the earliest)."""
    scored = [r for r in records if r.status == "COMPLETED" and r.score is not None]
    sign = 1 if maximize else -1
    return sorted(scored, key=lambda r: (-sign * r.score, math.inf if r.macs is None else r.macs, r.number))


def best_record(records: Sequence[TrialRecord], *, maximize: bool = True) -> TrialRecord | None:
    """The completed trial with the best score; of equal scores, the one with the fewest
    MACs (then the earliest)."""
    scored = [r for r in records if r.status == "COMPLETED" and r.score is not None]
    if not scored:
        return None
    sign = 1 if maximize else -1
    return min(scored, key=lambda r: (-sign * r.score, math.inf if r.macs is None else r.macs, r.number))


def format_results(
    records: Sequence[TrialRecord], objective: str, *, maximize: bool = True, top: int = 10, order=()
) -> str:
    """The results table: the best `top` completed trials (by score), then the failures.
    A score column follows the objective's where a cost was charged."""
    completed = ranked_records(records, maximize=maximize)
    names = hyperparameter_names(completed, order)
    weighted = any(r.score_note for r in completed)
    score = f" {'score':>8}" if weighted else ""
    lines = [f"{'trial':>5} {objective:>12}{score} {'params':>9} {'MACs':>9} {'seconds':>8}  hyperparameters"]
    for r in completed[:top]:
        values = " ".join(f"{name}={_short(r.hyperparameters[name])}" for name in names if name in r.hyperparameters)
        score = f" {r.score:>8.4f}" if weighted else ""
        lines.append(
            f"{r.trial_id:>5} {r.value:>12.4f}{score} {_human(r.params):>9} {_human(r.macs):>9} "
            f"{_blank(r.seconds and round(r.seconds, 1)):>8}  {values}"
        )
    if len(completed) > top:
        lines.append(f"... and {len(completed) - top} more completed trials")
    pruned = [r for r in records if r.status == "PRUNED"]
    if pruned:
        lines.append(f"{len(pruned)} pruned (median stopping rule): {', '.join(r.trial_id for r in pruned)}")
    failed = [r for r in records if r.status in ("FAILED", "INVALID")]
    if failed:
        lines.append(f"{len(failed)} failed:")
        lines.extend(f"{r.trial_id:>5} {r.reason or 'no reason recorded'}" for r in failed)
    running = [r.trial_id for r in records if r.status == "RUNNING"]
    if running:
        lines.append(f"interrupted, to run on resume: {', '.join(running)}")
    return "\n".join(lines)


def failure_reason(message: str | None) -> str | None:
    """The one-line reason in keras-tuner's failure message (a traceback): its last
    line without the exception's module path."""
    if not message:
        return None
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1]
    head, sep, rest = last.partition(": ")
    if sep and " " not in head:
        # "<module path>.FailedTrialError: ..." -> "...", other errors keep their class name.
        kind = head.rsplit(".", 1)[-1]
        return rest if kind == "FailedTrialError" else f"{kind}: {rest}"
    return last




def _measured(trial, retrained, key):
    """The latency fact `key` of a trial: the search's, else (a search that measured
    none, resumed with latency asked) its `retrained` run's, measured by the finish."""
    value = getattr(trial, key)
    return getattr(retrained, key) if value is None and retrained is not None else value


def _blank(value) -> str:
    return "" if value is None else str(value)


def _number(value) -> str:
    return "" if value is None else repr(float(value))


def _percent(value, error) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" + ("" if error is None else f" ±{100 * error:.2f}")


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _human(value) -> str:
    if value is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return str(value)
