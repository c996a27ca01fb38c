"""keras-tuner's side of stopping trials early (`kcnn.tune.stopping`): the time budget
(`kcnn.tune.budget`) and the median stopping rule, worked into keras-tuner's trials.

- A pruned trial ends with keras-tuner's status STOPPED, which keras-tuner reserves for
  this ("To signal early stopping, set Trial.status to 'STOPPED'", `Oracle.update_trial`),
  and its reason as the trial's message: the oracle neither scores it nor retries it,
  Hyperband promotes no STOPPED trial, the consecutive-failure count passes over it,
  and gRPC carries the status to a distributed search's chief. kcnn's records call it
  PRUNED (`record_status`).
- The oracle refuses a new trial, with keras-tuner's own STOPPED answer that ends the
  search loop, when the budget has no room for a typical trial (`create_trial`,
  before its retry queue: an interrupted trial does not run again past the budget),
  and keeps the budget's account in its state (oracle.json), so a resumed search
  goes on with it.
- The tuner keeps each trial's objective at every epoch in its kcnn_trial.json (keras-tuner
  keeps only the best epoch's), the completed trials' reference for the median rule,
  read back when a search resumes.
- The tuner adds the stopping callbacks to each execution's own callbacks (after
  keras-tuner's deep copy of the user's, so their verdicts reach it), and in Hyperband
  prunes only the trials of a bracket's last round: nothing is promoted from those,
  while keras-tuner promotes from an earlier round only once enough of its trials
  completed, which a pruned one never does.
"""

from __future__ import annotations

import logging
import pathlib

import keras_tuner
from keras_tuner.engine import trial as trial_module

from kcnn._files import CorruptFileError, read_json
from kcnn.tune.budget import format_duration
from kcnn.tune.report import RECORD_FILE
from kcnn.tune.stopping import BudgetStopping, MedianStopping

logger = logging.getLogger("kcnn")

STOPPED = trial_module.TrialStatus.STOPPED
#: kcnn's name of a trial the median stopping rule stopped (keras-tuner's STOPPED).
PRUNED = "PRUNED"
#: The oracle state's key of the budget's account (`TimeBudget.state`).
BUDGET_KEY = "kcnn_budget"


def record_status(trial) -> str:
    """A keras-tuner trial's status as kcnn's records show it: PRUNED for STOPPED."""
    return PRUNED if trial.status == STOPPED else trial.status


class _BudgetedOracle:
    """An oracle that starts no trial the time budget has no room for, and keeps the
    budget's account in its state. `budget` is set by `make_tuner`."""

    budget = None
    _budget_state: dict | None = None  # The account read from oracle.json.

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        if self.budget is not None and tuner_id not in self.ongoing_trials and not self.budget.allows_trial():
            # keras-tuner's answer when the search is over, which ends the tuner's loop.
            self.tuner_ids.discard(tuner_id)
            return trial_module.Trial(self.get_space(), status=STOPPED)
        return super().create_trial(tuner_id)

    def get_state(self):
        state = super().get_state()
        state[BUDGET_KEY] = self.budget.state() if self.budget is not None else (self._budget_state or {})
        return state

    def set_state(self, state):
        super().set_state(state)
        self._budget_state = state.get(BUDGET_KEY) or {}


class _StoppingTuner:
    """A tuner whose trials stop at an epoch boundary when the budget is spent or the
    median stopping rule prunes them. `stop_early` sets it up (`make_tuner`)."""

    budget = None
    prune = "none"

    def stop_early(self, budget, prune, *, save_state=True):
        """`budget`: the search's `TimeBudget`; `prune`: "median" or "none";
        `save_state`: whether this process keeps the oracle's state (not a worker)."""
        self.budget = budget
        self.prune = prune
        self._save_state = save_state
        self._pruned = {}

    def on_trial_begin(self, trial):
        if self.budget is not None:
            self.budget.trial_started(trial.trial_id)
        super().on_trial_begin(trial)

    def _build_and_fit_model(self, trial, *args, **kwargs):
        # Called per execution with keras-tuner's copy of the callbacks.
        callbacks = list(kwargs.get("callbacks") or ())
        if self.budget is not None:
            # Without a budget too: the time used is kept, for a budget given on resume.
            callbacks.append(
                BudgetStopping(
                    self.budget,
                    on_epoch=self.oracle.save if self._save_state else None,
                    on_stop=lambda epoch: self._budget_stopped(trial, epoch),
                )
            )
        if self.prune == "median" and self._prunable(trial):
            callbacks.append(
                MedianStopping(
                    self.oracle.objective.name,
                    self._completed_histories(),
                    maximize=self.oracle.objective.direction == "max",
                    on_prune=lambda epoch, reason: self._pruned.__setitem__(trial.trial_id, reason),
                )
            )
        kwargs["callbacks"] = callbacks
        return super()._build_and_fit_model(trial, *args, **kwargs)

    def _try_run_and_update_trial(self, trial, *fit_args, **fit_kwargs):
        super()._try_run_and_update_trial(trial, *fit_args, **fit_kwargs)
        reason = self._pruned.pop(trial.trial_id, None)
        if reason is not None and trial.status == trial_module.TrialStatus.COMPLETED:
            trial.status, trial.message = STOPPED, reason

    def on_trial_end(self, trial):
        if self.budget is not None:
            # Before the oracle saves its state at the trial's end, with this duration.
            self.budget.trial_ended(trial.trial_id, trained=trial.status in ("COMPLETED", STOPPED))
        super().on_trial_end(trial)

    def _budget_stopped(self, trial, epoch):
        total = format_duration(self.budget.total)
        logger.info("trial %s stopped after epoch %d: the time budget of %s is spent", trial.trial_id, epoch + 1, total)

    def _prunable(self, trial) -> bool:
        return True

    def _completed_histories(self):
        """{epoch: objective} of each completed trial: kept by this process, else read
        from the trial's kcnn_trial.json (so they survive a resume; keras-tuner keeps
        only a trial's best epoch). A worker's oracle is the chief's proxy, without
        the trials: a worker does not prune."""
        trials = getattr(self.oracle, "trials", None) or {}
        histories = []
        for trial_id, trial in list(trials.items()):
            if trial.status != trial_module.TrialStatus.COMPLETED:
                continue
            if trial_id not in self._objective_histories:
                try:
                    record = read_json(pathlib.Path(self.get_trial_dir(trial_id)) / RECORD_FILE) or {}
                except CorruptFileError:
                    record = {}
                history = record.get("objective_history") or {}
                self._objective_histories[trial_id] = {int(e): float(v) for e, v in history.items()}
            if self._objective_histories[trial_id]:
                histories.append(self._objective_histories[trial_id])
        return histories


def last_round(oracle, trial) -> bool:
    """Whether a Hyperband trial is of its bracket's last round (nothing is promoted
    from it)."""
    values = trial.hyperparameters.values
    if "tuner/round" not in values or not hasattr(oracle, "_get_num_rounds"):
        return False
    return values["tuner/round"] == oracle._get_num_rounds(values.get("tuner/bracket", 0)) - 1
