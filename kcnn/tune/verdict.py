"""What `best/` holds and how it compares with each reference net trained alike: the
facts (`compare`, written to best/metadata.json) and the lines that state them
(`lines`, the command line's last ones and `SearchResult.verdict()`).

A reference is a candidate for `best/` like the retrained trials (`kcnn.tune.finish`;
without a finish, the reference trained as a trial, `kcnn.tune.references`), chosen
by the same score and rule (`kcnn.tune.selection`). The rule takes the cheapest
candidate within one standard error of the top score, and the test split never
chooses, so the model kept can be less accurate than a reference on validation (a
cheaper tie, or a reference charged for its cost) or on test: each such split is
named, never left unsaid.

With repeats (`SearchConfig.seeds` > 1, `kcnn.tune.finish.repeat`), the chosen run and
each reference are trained again from other seeds, and the verdict states their
accuracies over the seeds (`spread`: mean and sample standard deviation) and whether
the chosen model beats each reference beyond that spread (`difference`: Welch's t
interval on the difference of the means). One run's binomial standard error says
how precisely a test split of n images measures one model; the spread over seeds
says how much that model's accuracy moves with its initialization and batch order
(on the digits, LeNet-5 scores 98.9% to 99.4% test by its seed, docs/tune_digits.md).

With k-fold runs on the digits (`SearchConfig.folds`, `kcnn.tune.folds`), each model
is also tested on every one of the 1,797 images once, over K folds, and the verdict
states the `spread` of its K test accuracies and, against each reference, the
`paired_difference`: both are tested on the same images in each fold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from kcnn.tune.report import _human
from kcnn.tune.selection import FinishRecord

__all__ = ["CONFIDENCE", "SPLITS", "below", "compare", "difference", "lines", "over_seeds", "paired_difference", "spread"]

#: The splits compared, in order.
SPLITS = ("validation", "test")

#: The two-sided confidence of the interval on a difference of means over seeds.
CONFIDENCE = 0.95


def compare(
    chosen: FinishRecord,
    references: Sequence[FinishRecord],
    seeds: Mapping[tuple[str, str], Sequence[FinishRecord]] | None = None,
) -> list[dict[str, Any]]:
    """The chosen run against each trained reference but itself: per split, both
    accuracies, their difference (chosen minus reference) and its standard error
    (that of the difference of two accuracies, sqrt(se1**2 + se2**2)); the scores and
    costs (MACs, parameters, and where the search measures latency "latency" and
    "latency_spread", the medians and interquartile ranges in ms, None for a run not
    measured); and `below`, the splits on which the chosen model is less accurate.

    With `seeds` ({(kind, name): runs, seed 0 first}, `kcnn.tune.finish.repeat`) of
    at least two runs of the chosen model and of a reference, its entry has "seeds":
    per split both `spread`s and their `difference`, and "verdict", that of the test
    split (of validation without one): "beats", "within" or "below".

    Returns:
        One JSON-serializable dict per reference, in the given order.
    """
    chosen_runs = (seeds or {}).get((chosen.kind, chosen.name), ())
    comparisons = []
    for reference in references:
        if reference.reason is not None or (reference.kind, reference.name) == (chosen.kind, chosen.name):
            continue
        entry: dict[str, Any] = {
            "reference": reference.name,
            "score": [chosen.score, reference.score],
            "macs": [chosen.macs, reference.macs],
            "params": [chosen.params, reference.params],
        }
        if chosen.latency_ms is not None or reference.latency_ms is not None:
            entry["latency"] = [chosen.latency_ms, reference.latency_ms]
            entry["latency_spread"] = [chosen.latency_spread_ms, reference.latency_spread_ms]
        for split in SPLITS:
            mine, theirs = getattr(chosen, split), getattr(reference, split)
            if mine is None or theirs is None:
                continue
            errors = (getattr(chosen, f"{split}_error"), getattr(reference, f"{split}_error"))
            entry[split] = {
                "chosen": mine,
                "reference": theirs,
                "difference": mine - theirs,
                "error": math.hypot(*(error or 0.0 for error in errors)),
            }
        entry["below"] = [split for split in SPLITS if split in entry and entry[split]["difference"] < 0]
        reference_runs = (seeds or {}).get((reference.kind, reference.name), ())
        if len(chosen_runs) > 1 and len(reference_runs) > 1:
            entry["seeds"] = _over_seeds_against(chosen_runs, reference_runs)
        comparisons.append(entry)
    return comparisons


def spread(values: Sequence[float]) -> dict[str, Any]:
    """The accuracies of one model over seeds: the values, their mean and their
    sample standard deviation sqrt(sum (x - mean)**2 / (n - 1)) (None for one value)."""
    values = [float(v) for v in values]
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"values": values, "mean": mean, "std": std}


def difference(chosen: Sequence[float], reference: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Whether the chosen model's accuracies over seeds beat a reference's beyond
    their spread: Welch's t interval on the difference of the means (Welch 1947),
    which assumes neither the same spread nor paired runs.

    With means m1, m2, sample standard deviations s1, s2 over n1, n2 >= 2 seeds:

        d  = m1 - m2                                       "difference"
        se = sqrt(s1**2 / n1 + s2**2 / n2)                 "error"
        df = se**4 / ((s1**2/n1)**2/(n1-1) + (s2**2/n2)**2/(n2-1))   "df" (Welch-Satterthwaite)
        h  = t(df, (1 + confidence) / 2) * se              "interval", Student's t quantile

    "verdict" is "beats" when d - h > 0, "below" when d + h < 0, else "within". With
    3 seeds each, t is 2.78 at 4 degrees of freedom (equal spreads) to 4.30 at 2 (one
    spread 0): h is 2.1 to 2.5 times the larger of the two standard deviations. Runs
    whose accuracies do not move with the seed (se = 0, on a small test split) have no
    spread: h = 0, df None, and any nonzero difference is beyond it.
    """
    from scipy.special import stdtrit  # Student's t quantile (scipy comes with scikit-learn).

    a, b = spread(chosen), spread(reference)
    if a["std"] is None or b["std"] is None:
        raise ValueError(f"A spread needs two seeds or more of each. Received: {len(chosen)} and {len(reference)} values")
    d = a["mean"] - b["mean"]
    va, vb = a["std"] ** 2 / len(chosen), b["std"] ** 2 / len(reference)
    se = math.sqrt(va + vb)
    if se > 0:
        df = (va + vb) ** 2 / (va**2 / (len(chosen) - 1) + vb**2 / (len(reference) - 1))
        half = float(stdtrit(df, (1 + confidence) / 2)) * se
    else:
        df, half = None, 0.0
    return {"difference": d, "error": se, "df": df, "interval": half, "confidence": confidence, "verdict": _verdict(d, half)}


def paired_difference(chosen: Sequence[float], reference: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Whether the chosen model's accuracies over K folds beat a reference's beyond
    their spread: Student's paired t interval on the per-fold differences (Student
    1908, "The Probable Error of a Mean"), as in the k-fold cross-validated paired t test (Dietterich 1998,
    "Approximate Statistical Tests for Comparing Supervised Classification Learning
    Algorithms", section 3.4).

    Paired, not Welch's `difference`: in fold k both models are tested on the same
    images, so what makes fold k hard or easy for one (which digits it holds) is common
    to both and cancels in their difference; the test is of that difference alone.
    With the differences d_k = chosen_k - reference_k over K >= 2 folds:

        d  = mean(d_k)                                     "difference"
        se = s_d / sqrt(K), s_d their sample std           "error"
        df = K - 1                                         "df"
        h  = t(df, (1 + confidence) / 2) * se              "interval", Student's t quantile

    "verdict" as `difference`'s: "beats" when d - h > 0, "below" when d + h < 0,
    else "within". With 5 folds t is 2.78, with 2 it is 12.7. The folds' training
    sets overlap (two of K folds share (K - 2) / (K - 1) of their training images),
    so the d_k are not independent and the interval is somewhat too narrow: Dietterich
    measured this test's type I error above its nominal level. Equal differences in
    every fold (s_d = 0) have no spread: h = 0, and any nonzero d is beyond it.
    """
    from scipy.special import stdtrit

    if len(chosen) != len(reference) or len(chosen) < 2:
        raise ValueError(
            f"A paired difference needs two folds or more, as many of each. Received: {len(chosen)} and {len(reference)} values"
        )
    differences = spread([a - b for a, b in zip(chosen, reference, strict=True)])
    se = differences["std"] / math.sqrt(len(chosen))
    df = len(chosen) - 1
    half = float(stdtrit(df, (1 + confidence) / 2)) * se if se > 0 else 0.0
    d = differences["mean"]
    return {"difference": d, "error": se, "df": df, "interval": half, "confidence": confidence, "verdict": _verdict(d, half)}


def _verdict(d, half) -> str:
    """"beats", "within" or "below": the difference `d` beyond its interval ±`half`."""
    # A difference of equal scores is 0 to rounding, and no verdict.
    exact = abs(d) <= 1e-12
    return "within" if exact or abs(d) <= half else ("beats" if d > 0 else "below")


def over_seeds(runs: Sequence[FinishRecord]) -> dict[str, Any]:
    """The `spread` of each split's accuracies over one model's runs, seed 0 first
    ({"seeds": n, "validation": ..., "test": ...}; a split some run lacks is left out)."""
    facts: dict[str, Any] = {"seeds": len(runs)}
    for split in SPLITS:
        values = [getattr(run, split) for run in runs]
        if values and all(v is not None for v in values):
            facts[split] = spread(values)
    return facts


def _over_seeds_against(mine, theirs) -> dict[str, Any]:
    facts: dict[str, Any] = {"seeds": [len(mine), len(theirs)]}
    ours, others = over_seeds(mine), over_seeds(theirs)
    for split in SPLITS:
        if split in ours and split in others:
            facts[split] = {
                "chosen": ours[split],
                "reference": others[split],
                **difference(ours[split]["values"], others[split]["values"]),
            }
    decisive = next((split for split in reversed(SPLITS) if split in facts), None)
    facts["split"] = decisive
    facts["verdict"] = None if decisive is None else facts[decisive]["verdict"]
    return facts


def below(comparisons: Sequence[dict[str, Any]]) -> list[str]:
    """The references the chosen model is less accurate than, on any split."""
    return [c["reference"] for c in comparisons if c["below"]]


def lines(
    chosen: FinishRecord | None,
    comparisons: Sequence[dict[str, Any]],
    *,
    note: str = "",
    seeds: Mapping[str, Any] | None = None,
    folds: Mapping[str, Any] | None = None,
) -> list[str]:
    """The verdict as text: what best/ holds (with `note`, e.g. why no reference was
    trained), then one line per reference (the differences in accuracy, the MACs and,
    where both were measured, the latencies), marked where the chosen model is below it;
    with `seeds` (the chosen model's `over_seeds`, of two seeds or more) the test
    accuracies over the seeds (validation without a test split), the chosen model's and
    each reference's, and whether the chosen one beats each beyond the spread; with
    `folds` (best/metadata.json's "over_folds", `kcnn.tune.folds.fold_facts`) the same
    of the test accuracies over the folds, with the paired t interval."""
    if chosen is None:
        return []
    what = f"the reference {chosen.name}" if chosen.kind == "reference" else chosen.label
    facts = ", ".join(
        f"{split} {_percent(getattr(chosen, split), getattr(chosen, f'{split}_error'))}"
        for split in SPLITS
        if getattr(chosen, split) is not None
    )
    text = [f"best/: {what}{note}" + (f": {facts}" if facts else "")]
    for c in comparisons:
        parts = [
            f"{split} {_points(c[split]['difference'])} ±{100 * c[split]['error']:.2f} points"
            for split in SPLITS
            if split in c
        ]
        parts.append(f"{_human(c['macs'][0])} vs {_human(c['macs'][1])} MACs")
        if None not in c.get("latency", (None,)):
            parts.append(f"{c['latency'][0]:.3g} vs {c['latency'][1]:.3g} ms")
        mark = f"  BELOW it on {' and '.join(c['below'])}" if c["below"] else ""
        text.append(f"  vs {c['reference']}: {', '.join(parts)}{mark}")
    return text + _seed_lines(chosen, comparisons, seeds or {}) + _fold_lines(chosen, folds)


#: How the verdict over seeds or folds states each reference, by `difference`'s or
#: `paired_difference`'s "verdict".
_STATEMENTS = {
    "beats": "{chosen} beats it by {difference}",
    "within": "{chosen} is within the spread: {difference}",
    "below": "{chosen} is BELOW it by {difference}",
}


def _seed_lines(chosen, comparisons, seeds) -> list[str]:
    """The verdict over seeds (`lines`): a header, the chosen model's accuracies, then
    each reference's with the statement of `difference`."""
    split = next((split for split in reversed(SPLITS) if split in seeds), None)
    if seeds.get("seeds", 0) < 2 or split is None:
        return []
    against = {c["reference"]: c["seeds"][split] for c in comparisons if split in c.get("seeds", {})}
    header = f"over {seeds['seeds']} seeds, {split} accuracy: mean ±sample standard deviation (each seed's)"
    if against:
        header += f"; differences of the means ±their {100 * CONFIDENCE:.0f}% Welch t interval"
    return _spread_lines(chosen, header, seeds[split], against)


def _fold_lines(chosen, folds) -> list[str]:
    """The verdict over folds (`lines`), as `_seed_lines` states it over seeds."""
    if not folds:
        return []
    header = (
        f"k-fold, {folds['folds']} stratified folds of the {folds['images']:,} images, each the test split once, "
        "test accuracy: mean ±sample standard deviation (each fold's)"
    )
    if folds["against"]:
        header += f"; per-fold differences' mean ±its {100 * CONFIDENCE:.0f}% paired t interval"
    return _spread_lines(chosen, header, folds["test"], folds["against"])


def _spread_lines(chosen, header, spread_of_chosen, against) -> list[str]:
    """`header`, the chosen model's accuracies, then for each reference of `against`
    ({name: `difference` or `paired_difference` facts with the reference's "reference"
    spread}) its accuracies and the statement of the difference."""
    label = f"the reference {chosen.name}" if chosen.kind == "reference" else chosen.label
    text = [header, f"  {chosen.label}: {_spread_text(spread_of_chosen)}"]
    for name, facts in against.items():
        points = f"{_points(facts['difference'])} ±{100 * facts['interval']:.2f} points"
        statement = _STATEMENTS[facts["verdict"]].format(chosen=label, difference=points)
        text.append(f"  {name}: {_spread_text(facts['reference'])}; {statement}")
    return text


def _spread_text(facts) -> str:
    values = " ".join(f"{100 * v:.2f}" for v in facts["values"])
    return f"{100 * facts['mean']:.2f}% ±{100 * facts['std']:.2f} ({values})"


def _percent(value, error) -> str:
    return f"{100 * value:.2f}%" + ("" if error is None else f" ±{100 * error:.2f}")


def _points(difference) -> str:
    return f"{100 * difference:+.2f}"

