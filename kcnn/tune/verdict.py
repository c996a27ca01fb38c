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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kcnn.tune.report import _human
from kcnn.tune.selection import FinishRecord

__all__ = ["SPLITS", "below", "compare", "lines"]

#: The splits compared, in order.
SPLITS = ("validation", "test")


def compare(chosen: FinishRecord, references: Sequence[FinishRecord]) -> list[dict[str, Any]]:
    """The chosen run against each trained reference but itself: per split, both
    accuracies, their difference (chosen minus reference) and its standard error
    (that of the difference of two accuracies, sqrt(se1**2 + se2**2)); the scores and
    costs; and `below`, the splits on which the chosen model is less accurate.

    Returns:
        One JSON-serializable dict per reference, in the given order.
    """
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
        comparisons.append(entry)
    return comparisons


def below(comparisons: Sequence[dict[str, Any]]) -> list[str]:
    """The references the chosen model is less accurate than, on any split."""
    return [c["reference"] for c in comparisons if c["below"]]


def lines(chosen: FinishRecord | None, comparisons: Sequence[dict[str, Any]], *, note: str = "") -> list[str]:
    """The verdict as text: what best/ holds (with `note`, e.g. why no reference was
    trained), then one line per reference, marked where the chosen model is below it."""
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
        mark = f"  BELOW it on {' and '.join(c['below'])}" if c["below"] else ""
        text.append(f"  vs {c['reference']}: {', '.join(parts)}{mark}")
    return text


def _percent(value, error) -> str:
    return f"{100 * value:.2f}%" + ("" if error is None else f" ±{100 * error:.2f}")


def _points(difference) -> str:
    return f"{100 * difference:+.2f}"

