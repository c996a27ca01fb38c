"""Stopping a trial at an epoch boundary: when the search's time budget is spent
(`BudgetStopping`), and when it is hopeless by the median stopping rule
(`MedianStopping`, `SearchConfig.prune="median"`).

The median stopping rule (Golovin et al. 2017, "Google Vizier: A Service for Black-Box
Optimization", KDD, section 3.2.1): at the end of epoch e, a trial whose best objective
so far is worse than the median of the completed trials' best objective up to epoch e
(their running best, in the objective's direction) is stopped. Vizier compares running
averages; the running best is Optuna's `MedianPruner`'s choice, and the one that
matches the score a trial is ranked by (its best epoch). A pruned trial ends as PRUNED
with its epoch and the reason, not as a failure, and is no candidate for the best model
or the Pareto front. Rules of thumb from the same sources keep it from judging on
noise: `MIN_COMPLETED` completed trials before it judges (and `WARMUP_EPOCHS` epochs
of each, none by default); and it never stops a trial at its last epoch, which would
save nothing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence

import keras

__all__ = ["MIN_COMPLETED", "WARMUP_EPOCHS", "BudgetStopping", "MedianStopping", "median_rule", "running_best"]

#: Epochs a trial trains before the rule judges it (Optuna's `n_warmup_steps`, 0 by
#: default there too). The rule's warm-up is in trials (`MIN_COMPLETED`): a trial is
#: judged after its first epoch against the completed trials' first epochs, where a
#: hopeless configuration already shows (on the default digits search, a warm-up
#: epoch saved 21% of the trained trial-epochs, none 29%, and 32% on another CPU,
#: for the same chosen network: docs/tune_digits.md).
WARMUP_EPOCHS = 0
#: Completed trials, with the epoch recorded, the median is taken over: the median of
#: one or two trials is one trial's luck (Optuna's `n_startup_trials`, 5 there; a
#: search of 10 trials would prune nothing before its second half).
MIN_COMPLETED = 3


def running_best(history: Mapping[int, float], epoch: int, *, maximize: bool) -> float | None:
    """The best value of `history` ({epoch: objective}) at epochs up to `epoch`, or None."""
    values = [value for step, value in history.items() if step <= epoch and not math.isnan(value)]
    if not values:
        return None
    return max(values) if maximize else min(values)


def median_rule(
    history: Mapping[int, float], epoch: int, completed: Sequence[Mapping[int, float]], *, maximize: bool
) -> tuple[float, int] | None:
    """The median stopping rule at the end of `epoch` (from 0) for a trial's `history`
    ({epoch: objective}) against the `completed` trials' histories.

    Returns:
        (median, trials) when the trial is to stop: its running best is worse than
        the median of the running bests of the completed trials that recorded
        `epoch`; None when it goes on, is in its warm-up (`epoch < WARMUP_EPOCHS`),
        or fewer than `MIN_COMPLETED` trials recorded that epoch.
    """
    if epoch < WARMUP_EPOCHS:
        return None
    others = [running_best(h, epoch, maximize=maximize) for h in completed if epoch in h]
    others = [value for value in others if value is not None]
    if len(others) < MIN_COMPLETED:
        return None
    median = statistics.median(others)
    own = running_best(history, epoch, maximize=maximize)
    if own is None or (own < median if maximize else own > median):
        return median, len(others)
    return None


class MedianStopping(keras.callbacks.Callback):
    """Stops training at the end of an epoch when `median_rule` says so, and reports
    why to `on_prune(epoch, reason)`.

    Args:
        monitor: the logged objective.
        completed: the completed trials' histories, {epoch: objective} each.
        maximize: the objective's direction.
        on_prune: called once, with the epoch (from 0) and a one-line reason.
    """

    def __init__(
        self,
        monitor: str,
        completed: Sequence[Mapping[int, float]],
        *,
        maximize: bool,
        on_prune: Callable[[int, str], None],
    ):
        super().__init__()
        self.monitor = monitor
        self.completed = list(completed)
        self.maximize = maximize
        self.on_prune = on_prune
        self.history: dict[int, float] = {}

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        self.history[epoch] = float(value)
        if epoch >= self.params.get("epochs", math.inf) - 1:
            return  # Its last epoch: stopping saves nothing.
        verdict = median_rule(self.history, epoch, self.completed, maximize=self.maximize)
        if verdict is None:
            return
        median, trials = verdict
        own = running_best(self.history, epoch, maximize=self.maximize)
        self.model.stop_training = True
        self.on_prune(
            epoch,
            f"pruned after epoch {epoch + 1} of {self.params.get('epochs')}: best {self.monitor} "
            f"{own:.4f}, below the median {median:.4f} of {trials} completed trials at that epoch "
            "(median stopping rule)",
        )


class BudgetStopping(keras.callbacks.Callback):
    """Stops training at the end of the epoch in which the search's time budget
    (`kcnn.tune.budget.TimeBudget`) is spent; `on_epoch()` is called first at the end of
    every epoch (the search keeps its time used with it)."""

    def __init__(self, budget, *, on_epoch: Callable[[], None] | None = None, on_stop: Callable[[int], None] | None = None):
        super().__init__()
        self.budget = budget
        self.on_epoch = on_epoch
        self.on_stop = on_stop

    def on_epoch_end(self, epoch, logs=None):
        if self.on_epoch is not None:
            self.on_epoch()
        if self.budget.spent() and epoch < self.params.get("epochs", math.inf) - 1:
            self.model.stop_training = True
            if self.on_stop is not None:
                self.on_stop(epoch)
