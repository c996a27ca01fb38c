"""The wall-clock budget of a search (`SearchConfig.time_budget`): durations as people
write them, and the account of the time a search has used, kept across its resumes.

The budget covers the search: the trials, and the cheapest reference trained as a
trial (the bar). The finish (the top trials and the references retrained with the full
recipe) is not counted in; its duration is reported apart (`SearchResult.finish_seconds`).

No new trial starts once the time used plus a typical trial's duration (the median of
the trials trained so far; before the first, nothing) would pass the budget, and the
trial running when it is spent stops at the end of its epoch (`kcnn.tune.stopping`).
The time used is kept in the project's state (keras-tuner's oracle.json), written at
the end of every epoch, so a search killed and resumed goes on with what was left.
This module imports no TensorFlow: the command line parses `--time-budget` with it.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from typing import Any

__all__ = ["TimeBudget", "format_duration", "parse_duration"]

#: The clock of budgets: monotonic, so that a change of the system time does not
#: spend or give back any. Tests replace it (`monkeypatch.setattr(budget, "clock", ...)`).
clock = time.monotonic

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s)?")


def parse_duration(text, name: str = "time_budget") -> float | None:
    """Seconds from a duration: a number of seconds (300, 2.5) or hours, minutes and
    seconds in that order ("90s", "5m", "1h", "1h30m", "1m30s"); None from None or
    "none".

    Raises:
        ValueError: on anything else, naming `name` (the argument or flag) with what
            it received.
    """
    if text is None or (isinstance(text, str) and text.strip().lower() == "none"):
        return None
    expected = "Expected a positive duration: seconds (300) or hours, minutes and seconds (90s, 5m, 1h, 1h30m)."
    if isinstance(text, bool):
        raise ValueError(f"{expected} Received: {name}={text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        compact = str(text).strip().lower().replace(" ", "")
        match = _DURATION.fullmatch(compact)
        if compact and match is None:
            try:
                seconds = float(compact)
            except ValueError:
                raise ValueError(f"{expected} Received: {name}={text!r}") from None
        elif compact and any(match.groups()):
            seconds = sum(float(value) * _UNITS[unit] for value, unit in zip(match.groups(), "hms") if value)
        else:
            raise ValueError(f"{expected} Received: {name}={text!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{expected} Received: {name}={text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """"1h05m", "3m12s", "42s": whole seconds, the two largest units."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{seconds:02d}s" if seconds else f"{minutes}m"
    return f"{seconds}s"


class TimeBudget:
    """The time a search has used, against its budget (None: no limit, the time is
    counted all the same, so that a budget given on resume counts what came before).

    Args:
        total: the budget in seconds, or None.
        state: what `state()` returned in an earlier run of the search (resumed).
    """

    def __init__(self, total: float | None = None, state: dict[str, Any] | None = None):
        self.total = total
        self.before = 0.0  # Seconds used by the earlier runs of the search.
        self.durations: list[float] = []  # Of the trials trained, in seconds.
        self.started = clock()
        self._trials: dict[str, float] = {}
        self.restore(state)

    def restore(self, state: dict[str, Any] | None) -> None:
        """Takes up an earlier run's account (`state()`)."""
        state = state or {}
        self.before = float(state.get("seconds_used", 0.0))
        self.durations = [float(seconds) for seconds in state.get("trial_seconds", ())]

    def state(self) -> dict[str, Any]:
        """The account, as JSON, for the project's state."""
        return {"seconds_used": self.used(), "trial_seconds": list(self.durations)}

    def used(self) -> float:
        """Seconds used, by this run and the earlier ones."""
        return self.before + clock() - self.started

    def left(self) -> float | None:
        """Seconds left (never below 0), or None without a budget."""
        return None if self.total is None else max(0.0, self.total - self.used())

    def spent(self) -> bool:
        return self.total is not None and self.used() >= self.total

    def typical_trial(self) -> float | None:
        """The median duration of the trials trained so far, or None before the first."""
        return statistics.median(self.durations) if self.durations else None

    def allows_trial(self) -> bool:
        """Whether a new trial may start: the time used plus a typical trial's duration
        stays within the budget (before any trial has trained: time is left)."""
        if self.total is None:
            return True
        typical = self.typical_trial() or 0.0
        return not self.spent() and self.used() + typical <= self.total

    def trial_started(self, trial_id: str) -> None:
        self._trials[trial_id] = clock()

    def trial_ended(self, trial_id: str, trained: bool) -> None:
        """Counts a trial's duration towards the typical one when it trained (a
        configuration refused before training says nothing about a trial's cost)."""
        start = self._trials.pop(trial_id, None)
        if trained and start is not None:
            self.durations.append(clock() - start)

    def describe(self) -> str | None:
        """"3m12s left of 5m", or None without a budget."""
        if self.total is None:
            return None
        return f"{format_duration(self.left())} left of {format_duration(self.total)}"
