"""`SearchResult`: what `kcnn.tune.search` returns, and the text made of it (the
verdict, the results tables)."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import keras

from kcnn.tune import report, selection, verdict
from kcnn.tune.report import TrialRecord

__all__ = ["SearchResult", "maximizes"]


def maximizes(objective: str) -> bool:
    """Whether the search maximizes `objective` (keras-tuner's direction for it)."""
    from kcnn.tune._keras_tuner import objective as tuner_objective

    return tuner_objective(objective).direction == "max"


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a search produced.

    Attributes:
        best_hyperparameters: the best trial's hyperparameter values (None on a
            worker): the finish's best-ranked retrained trial, or without a finish
            the best trial by score.
        best_score: its score in the search: the objective, weighed by the cost
            term when there is one (`target_macs`).
        best_trial: its trial id.
        model: the model in best/ (`chosen`'s), None on a worker.
        path: best/, the run folder of the model kept (model.keras + metadata.json):
            the best trial (retrained with the full recipe, or without a finish
            restored or retrained), or a reference that it did not beat (`chosen`).
        project_dir: the project folder.
        trials: every trial of the search (on a worker: the ones it ran).
        trials_csv: path of trials.csv.
        plot: path of the Pareto plot.
        role: "local", "chief" or "worker".
        objective: the objective the scores are of.
        target_macs: the cost term's target (`kcnn.tune.cost`): trials of more MACs
            per image were charged; None: no cost term on MACs.
        target_latency_ms: with `config.cost="latency"`, the latency target (ms per
            call, measured or given) above which trials were charged; else None.
        bar: with a cost term, the cheapest reference's objective trained as a
            trial (`kcnn.tune.references.reference_bar`): proposals that could not beat
            it even at 100% accuracy were drawn again; None without one.
        retrained: the finish's runs of the top trials (`kcnn.tune.FinishRecord`),
            ranked; empty without a finish (`top_k=0`) and on a worker.
        references: the finish's reference nets, in `config.references`' order,
            ranked with the retrained trials (a candidate for best/ like them).
        chosen: the `FinishRecord` of the run in best/: rank 1 of the retrained
            trials and the references, or without a finish of the best trial and
            the reference trained as a trial (the bar's); None on a worker.
        comparisons: `chosen` against each other reference trained alike
            (`kcnn.tune.verdict.compare`), as in best/metadata.json; with
            `config.seeds` > 1, each with its spread over seeds and the verdict.
        over_seeds: with `config.seeds` > 1 and a finish, `chosen`'s validation and
            test accuracies over the seeds, their mean and sample standard deviation
            (`kcnn.tune.verdict.over_seeds`); None otherwise.
        over_folds: with `config.folds` on the digits, the k-fold scores of `chosen`
            and each reference and the paired verdict (`kcnn.tune.folds.fold_facts`,
            as best/metadata.json's "over_folds"); None otherwise.
        time_budget: the search's time budget in seconds (`SearchConfig.time_budget`).
        search_seconds: the wall time of the search (the trials and the bar) over
            all its runs, what the budget counts.
        finish_seconds: the wall time of this run's finish (retraining and saving
            best/), which the budget does not count.
    """

    best_hyperparameters: dict[str, Any] | None
    best_score: float | None
    best_trial: str | None
    model: keras.Model | None = dataclasses.field(repr=False)
    path: pathlib.Path | None
    project_dir: pathlib.Path
    trials: tuple[TrialRecord, ...]
    trials_csv: pathlib.Path | None
    plot: pathlib.Path | None
    role: str = "local"
    objective: str = "val_accuracy"
    target_macs: int | None = None
    target_latency_ms: float | None = None
    bar: float | None = None
    retrained: tuple[selection.FinishRecord, ...] = ()
    references: tuple[selection.FinishRecord, ...] = ()
    chosen: selection.FinishRecord | None = None
    comparisons: tuple[dict[str, Any], ...] = ()
    over_seeds: dict[str, Any] | None = None
    over_folds: dict[str, Any] | None = None
    time_budget: float | None = None
    search_seconds: float | None = None
    finish_seconds: float | None = None

    @property
    def best_metric(self) -> float | None:
        """The chosen trial's objective value in the search (its own, not weighed)."""
        return next((r.value for r in self.trials if r.trial_id == self.best_trial), None)

    @property
    def best_test_accuracy(self) -> float | None:
        """The test accuracy of the model in best/ after the full recipe (None without
        a finish or a test split)."""
        return self.chosen.test if self.retrained and self.chosen is not None else None

    def verdict(self) -> str:
        """What best/ holds and how it compares with each reference trained alike,
        every split on which it is less accurate named, and with several seeds its
        test accuracy and each reference's over them, with whether it beats each
        beyond the spread, and its k-fold scores (`kcnn.tune.verdict`)."""
        note = ""
        if self.chosen is not None and self.chosen.kind == "trial":
            note = ", retrained with the full recipe" if self.retrained else ", as it trained"
        elif self.chosen is not None:
            note = " (no " + ("retrained trial" if self.retrained else "trial") + " beat it)"
        return "\n".join(verdict.lines(self.chosen, self.comparisons, note=note, seeds=self.over_seeds, folds=self.over_folds))

    def table(self, top: int = 10) -> str:
        """The results table (best trials first, then failures), and the finish's
        (retrained trials, ranked, and references) when there is one."""
        text = report.format_results(self.trials, self.objective, maximize=maximizes(self.objective), top=top)
        if self.retrained or self.references:
            text += "\n\n" + report.format_finish(self.retrained, self.references)
        return text
