"""The statistics of the search's choices: which trials the finish retrains
(`select_candidates`) and which of its runs `best/` keeps (`rank`, `choose`).

Both use one rule, on the score (the validation accuracy weighed by the search's cost
term, `kcnn.tune.cost`; without one, the validation accuracy itself):

    the best is the cheapest (fewest MACs, then parameters; with the latency cost the
    fastest first) candidate whose score is within one standard error of the
    difference from the top one's,

the standard error of an accuracy measured on n images being sqrt(q (1 - q) / n), q
its Laplace estimate (`standard_error`), and that of the difference of two
sqrt(se1**2 + se2**2). On the digits' 179 validation images one image is 0.56 points:
100% and 99.44%, or 99.44% and 98.88%, differ by less than their standard error (0.96
and 1.23 points), and the data does not tell them apart, so the cheaper is taken. The
test split is reported, never used to choose.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Sequence

from kcnn.tune.cost import factor, weigh
from kcnn.tune.report import cost_of

__all__ = ["FinishRecord", "choose", "rank", "select_candidates", "standard_error"]


@dataclasses.dataclass(frozen=True)
class FinishRecord:
    """One full-recipe run of the finish: a retrained trial or a reference net.

    Attributes:
        name: the trial id ("0006") or the registered model's name ("lenet5").
        kind: "trial" or "reference".
        validation: validation accuracy of the run's best epoch (None without a
            validation split).
        validation_examples: images it is measured on.
        test: test accuracy (None without a test split).
        test_examples: images it is measured on.
        params: parameters of the model.
        macs: multiply-accumulates per image.
        latency_ms: the median latency of the model's inference path on this
            machine, in ms per call (`kcnn.tune.latency`; the search's figure of the
            configuration); None when the search measures no latency.
        latency_spread_ms: the interquartile range of those timed runs, in ms.
        search_score: the trial's score in the search (None for a reference).
        score: the validation accuracy weighed by the search's cost term (`rank`
            sets it).
        rank: 1 for the chosen model, then the order of the ranking (None for a
            run not ranked: a reference not trained).
        path: the run folder.
        reason: why a reference was not trained (it does not fit the data), else None.
    """

    name: str
    kind: str
    validation: float | None = None
    validation_examples: int | None = None
    test: float | None = None
    test_examples: int | None = None
    params: int | None = None
    macs: int | None = None
    latency_ms: float | None = None
    latency_spread_ms: float | None = None
    search_score: float | None = None
    score: float | None = None
    rank: int | None = None
    path: pathlib.Path | None = None
    reason: str | None = None

    @property
    def validation_error(self) -> float | None:
        """The standard error of `validation`."""
        return standard_error(self.validation, self.validation_examples)

    @property
    def test_error(self) -> float | None:
        """The standard error of `test`."""
        return standard_error(self.test, self.test_examples)

    @property
    def label(self) -> str:
        return f"trial {self.name}" if self.kind == "trial" else self.name


def standard_error(accuracy: float | None, examples: int | None) -> float | None:
    """sqrt(q (1 - q) / n), the standard error of an accuracy measured on n images,
    with q = (k + 1) / (n + 2) for k right of n (Laplace's rule: 179 of 179 right is
    no proof that the error rate is 0, and its standard error is not 0)."""
    if accuracy is None or not examples:
        return None
    q = (accuracy * examples + 1) / (examples + 2)
    return math.sqrt(q * (1 - q) / examples)


def rank(records: Sequence[FinishRecord], target: float | None = None, *, cost: str = "macs") -> list[FinishRecord]:
    """The candidates in the order of the module's rule, with their `score`:
    those whose score (validation accuracy times `kcnn.tune.cost.factor(c, target)`,
    c the record's `cost`: "macs", or "latency", its `latency_ms`, as the search
    charged it, `SearchConfig.cost`) is within one standard error of the difference
    from the top one's (the errors scaled by the same factors), cheapest first (by
    `cost`, then MACs, then parameters, then the higher score, then the name), then
    the others by score; the records without a validation accuracy last, unranked."""
    charged = cost_of(cost)
    scored = [
        dataclasses.replace(r, score=weigh(r.validation, charged(r), target))
        for r in records
        if r.validation is not None
    ]
    if not scored:
        return list(records)

    def error(r):
        return (r.validation_error or 0.0) * factor(charged(r), target)

    top = max(scored, key=lambda r: r.score)
    tied = [r for r in scored if top.score - r.score <= math.hypot(error(top), error(r)) + 1e-12]
    rest = [r for r in scored if r not in tied]
    tied.sort(key=lambda r: (_cost(charged(r)), _cost(r.macs), _cost(r.params), -r.score, r.name))
    rest.sort(key=lambda r: (-r.score, _cost(charged(r)), _cost(r.macs), r.name))
    unscored = [r for r in records if r.validation is None]
    return [dataclasses.replace(r, rank=i + 1) for i, r in enumerate([*tied, *rest])] + unscored


def select_candidates(records, k: int, examples: int | None, *, accuracy: bool = True) -> list:
    """The `k` trials the finish retrains, from the completed `records` ranked best first
    (`kcnn.tune.report.ranked_records`): those whose search score is within one standard
    error of the difference from the best one's (when the score is an accuracy measured
    on `examples` images, or one weighed by the cost term: its error weighed alike),
    cheapest first, then the next best by score; the best one always among them (in place
    of the last), so that the cheaper ties are retrained against it."""
    if not records:
        return []
    top = records[0]

    def error(record):
        if not accuracy or not record.value:
            return 0.0
        return (standard_error(record.value, examples) or 0.0) * record.score / record.value

    tied = [r for r in records if abs(top.score - r.score) <= math.sqrt(error(top) ** 2 + error(r) ** 2) + 1e-12]
    tied.sort(key=lambda r: (_cost(r.macs), _cost(r.params), r.number))
    rest = [r for r in records if r not in tied]
    chosen = [*tied, *rest][:k]
    return chosen if top in chosen else [*chosen[: k - 1], top]


def choose(records: Sequence[FinishRecord]) -> FinishRecord | None:
    """The chosen model: rank 1."""
    return next((r for r in records if r.rank == 1), None)


def _cost(value) -> float:
    return math.inf if value is None else value
