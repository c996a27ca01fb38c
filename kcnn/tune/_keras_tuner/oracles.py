"""kcnn's keras-tuner oracles: state written atomically and rebuilt from the trials
when a kill or a damaged disk left it unreadable, and one trial-id format."""

from __future__ import annotations

import glob
import logging
import os
import pathlib
import warnings

import keras_tuner
from keras_tuner.engine import trial as trial_module

from kcnn._files import CorruptFileError, read_json, write_json
from kcnn.tune._keras_tuner.stopping import _BudgetedOracle
from kcnn.tune.report import RECORD_FILE

logger = logging.getLogger("kcnn")

# Random and Bayesian searches need a trial budget; this is theirs unless given.
DEFAULT_MAX_TRIALS = 10

#: Trial ids are the trial's index from 0 in this many digits ("0006") in every tuner.
#: keras-tuner pads to the digits of `max_trials` ("06" of 10, "6" of 4, and "0006"
#: for Hyperband, whose `max_trials` is None), so the ids of one project changed with
#: the tuner and with the budget of a resumed search.
TRIAL_ID_DIGITS = 4


def format_trial_id(index: int) -> str:
    """The id of the trial with this index (from 0): "0006"."""
    return f"{index:0{TRIAL_ID_DIGITS}d}"


class _TrialIds:
    """An oracle whose trial ids are `format_trial_id`'s, whatever its `max_trials`."""

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        # keras-tuner 1.4's `Oracle.create_trial` (Apache License 2.0) but for the one
        # line that makes the id: keras-tuner has no hook for it.
        # tests/test_keras_tuner.py checks that upstream's is this code but for that line.
        if tuner_id in self.ongoing_trials:
            return self.ongoing_trials[tuner_id]

        self.tuner_ids.add(tuner_id)

        if len(self._retry_queue) > 0:
            trial = self.trials[self._retry_queue.pop()]
            trial.status = trial_module.TrialStatus.RUNNING
            self.ongoing_trials[tuner_id] = trial
            self.save()
            self._display.on_trial_begin(trial)
            return trial

        trial_id = format_trial_id(len(self.trials))

        if self.max_trials and len(self.trials) >= self.max_trials:
            status = trial_module.TrialStatus.STOPPED
            values = None
        else:
            response = self.populate_space(trial_id)
            status = response["status"]
            values = response["values"] if "values" in response else None  # noqa: SIM401 (upstream, verbatim)

        hyperparameters = self.hyperparameters.copy()
        hyperparameters.values = values or {}

        trial = trial_module.Trial(hyperparameters=hyperparameters, trial_id=trial_id, status=status)

        if status == trial_module.TrialStatus.RUNNING:
            self._record_values(trial)

            self.ongoing_trials[tuner_id] = trial
            self.trials[trial_id] = trial
            self.start_order.append(trial_id)
            self._save_trial(trial)
            self.save()
            self._display.on_trial_begin(trial)

        if status == trial_module.TrialStatus.STOPPED:
            self.tuner_ids.remove(tuner_id)

        return trial


class _FittingDraws:
    """An oracle whose random proposals are configurations the space can build within
    its budget.

    `fits` (set by `make_tuner`: `SearchSpace.fits`) is asked about every configuration
    drawn at random; one that does not fit (too small for the input, over
    `max_params`/`max_macs`) is drawn again instead of becoming a failed trial. The
    redraws take their seeds from streams of their own (`_REDRAW_SEEDS` apart), and the
    oracle's seed state moves on exactly as keras-tuner's after one draw: the same seed
    proposes the same configurations, and a search whose first draws fit proposes what
    keras-tuner would. After `MAX_MISFITS` draws in a row that do not fit, the space
    holds (almost) nothing within the budget: draws are proposed unchecked, each then
    fails as a trial with its reason, and `max_consecutive_failed_trials` ends the search.
    """

    MAX_MISFITS = 64
    _REDRAW_SEEDS = 2**32
    fits = None
    _misfits = 0

    def _random_values(self):
        start = self._seed_state
        values = super()._random_values()
        seed_after_first = self._seed_state
        redraws = 0
        while values is not None and self.fits is not None and self._misfits < self.MAX_MISFITS:
            if self.fits(self._configuration(values)):
                self._misfits = 0
                break
            self._misfits += 1
            redraws += 1
            self._seed_state = start + redraws * self._REDRAW_SEEDS
            values = super()._random_values()
        self._seed_state = seed_after_first
        if redraws:
            logger.debug("%d configurations drawn did not fit the input or the budget and were drawn again.", redraws)
        return values

    def _configuration(self, values):
        hyperparameters = self.hyperparameters.copy()
        hyperparameters.values = dict(values)
        return hyperparameters


_ENDED = ("COMPLETED", "FAILED", "STOPPED")  # STOPPED: pruned (`kcnn.tune._keras_tuner.stopping`).
TRIAL_FILE = "trial.json"
ORACLE_FILE = "oracle.json"


def _has_state(project: pathlib.Path) -> bool:
    """Whether a project folder holds a search's state (its oracle or any trial)."""
    return (project / ORACLE_FILE).exists() or any(project.glob(f"trial_*/{TRIAL_FILE}"))


class _Durable:
    """An oracle whose state survives a kill at any point.

    keras-tuner writes oracle.json and each trial.json in place (a kill inside a write
    leaves a file that no reload can read), and writes a trial's end to trial.json
    before oracle.json (a kill between reruns a finished trial). Here each file is
    written atomically, and `reload` reads what it can: a trial.json that cannot be
    read is made again from the copy in the trial's kcnn_trial.json (or the trial is
    marked failed, its id kept); an oracle.json that cannot be read is rebuilt from
    the trials; a trial whose end oracle.json missed is ended, not run again.
    """

    def save(self):
        # keras-tuner's Oracle.save, atomically.
        write_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        # keras-tuner's Oracle._save_trial, atomically.
        write_json(os.path.join(self._get_trial_dir(trial.trial_id), TRIAL_FILE), trial.get_state())

    def reload(self):
        """keras-tuner's `Oracle.reload`, which a damaged file does not stop.

        Returns:
            Whether the state was rebuilt from the trials (the space must then be
            declared again).
        """
        project = pathlib.Path(self._project_dir)
        try:
            state = read_json(self._get_oracle_fname())
            if state is None:
                raise CorruptFileError(f"{self._get_oracle_fname()} is missing")
        except CorruptFileError as error:
            problem, state = str(error), None
        referenced = set(state.get("start_order", ())) if isinstance(state, dict) else set()
        self.trials = self._load_trials(project, referenced)
        rebuilt = state is None
        if state is not None:
            try:
                self.set_state(state)
            except (KeyError, TypeError, ValueError) as error:  # A file cut at a valid JSON boundary, or edited.
                problem, rebuilt = f"{self._get_oracle_fname()} is not a keras-tuner oracle state ({error!r})", True
        if rebuilt:
            finished = sum(t.status == "COMPLETED" for t in self.trials.values())
            warnings.warn(
                f"{problem}; the search state is rebuilt from the {len(self.trials)} trials in {project} "
                f"({finished} completed, kept and not run again) and the search goes on.",
                stacklevel=2,
            )
            self._rebuild_state()
        else:
            self._reconcile()
        # Upstream: the trials that were running are run again.
        for trial in self.ongoing_trials.values():
            self._retry_queue.append(trial.trial_id)
        self.ongoing_trials = {}
        return rebuilt

    def _load_trials(self, project, referenced):
        """Every trial of the project, each from its trial.json, else from the copy in
        its kcnn_trial.json, else as a failed trial of unknown configuration."""
        ids = {pathlib.Path(p).parent.name[len("trial_") :] for p in glob.glob(os.fspath(project / f"trial_*/{TRIAL_FILE}"))}
        ids |= {pathlib.Path(p).parent.name[len("trial_") :] for p in glob.glob(os.fspath(project / f"trial_*/{RECORD_FILE}"))}
        ids |= referenced
        trials = {}
        for trial_id in sorted(ids, key=_trial_order):
            folder = project / f"trial_{trial_id}"
            try:
                state = read_json(folder / TRIAL_FILE)
                if state is None:
                    raise CorruptFileError(f"{folder / TRIAL_FILE} is missing")
                trials[trial_id] = trial_module.Trial.from_state(state)
                continue
            except (KeyError, TypeError, ValueError) as error:
                problem = (
                    str(error) if isinstance(error, CorruptFileError) else f"{folder / TRIAL_FILE} is not a trial ({error!r})"
                )
            try:
                copy = (read_json(folder / RECORD_FILE) or {}).get("trial")
                trial = trial_module.Trial.from_state(copy) if copy else None
            except (KeyError, TypeError, ValueError, AttributeError):
                trial = None
            if trial is not None:
                warnings.warn(
                    f"{problem}; trial {trial_id} is restored from the copy in {RECORD_FILE} ({trial.status}).", stacklevel=3
                )
                self._save_trial(trial)
            else:
                warnings.warn(
                    f"{problem}, and no copy of it was kept: trial {trial_id} counts as failed, its configuration unknown.",
                    stacklevel=3,
                )
                hyperparameters = self.hyperparameters.copy()
                hyperparameters.values = {}
                trial = trial_module.Trial(
                    hyperparameters, trial_id=trial_id, status=trial_module.TrialStatus.FAILED, message=problem
                )
                self._save_trial(trial)
            trials[trial_id] = trial
        return trials

    def _reconcile(self):
        """Brings a reloaded oracle.json up to the trials: a trial created or ended
        after its last write (a kill between the two files) is started or ended."""
        unknown = [i for i in sorted(self.trials, key=_trial_order) if i not in self.start_order]
        self.start_order.extend(unknown)
        for trial_id in unknown:
            if self.trials[trial_id].status not in _ENDED:
                self._retry_queue.append(trial_id)
        for tuner_id, trial in list(self.ongoing_trials.items()):
            if self.trials[trial.trial_id].status in _ENDED:
                del self.ongoing_trials[tuner_id]
        for trial_id in sorted(self.trials, key=_trial_order):
            trial = self.trials[trial_id]
            if trial.status in _ENDED and trial_id not in self.end_order:
                self.end_order.append(trial_id)
                self._run_times[trial_id] = max(self._run_times[trial_id], 1)
            if trial.hyperparameters.values and self._id_to_hash[trial_id] is None:
                self._record_values(trial)
        if unknown and hasattr(self, "_brackets"):
            self._rebuild_brackets()

    def _rebuild_state(self):
        """The oracle's state, made from its trials (oracle.json lost): the order they
        started and ended in (their ids'), the configurations tried, the interrupted
        ones to run again, where the random draws resume, Hyperband's brackets."""
        ids = sorted(self.trials, key=_trial_order)
        ended = [i for i in ids if self.trials[i].status in _ENDED]
        known = [i for i in ids if self.trials[i].hyperparameters.values]
        hashes = {i: self._compute_values_hash(self.trials[i].hyperparameters.values) for i in known}
        state = self.get_state()  # The constructor's settings, and no progress.
        state.update(
            ongoing_trials={},
            start_order=ids,
            end_order=ended,
            run_times=dict.fromkeys(ended, 1),
            retry_queue=[i for i in ids if i not in ended],
            tried_so_far=sorted(set(hashes.values())),
            id_to_hash=hashes,
            display={**state["display"], "trial_number": {i: n + 1 for n, i in enumerate(ids)}},
        )
        self.set_state(state)
        for trial in self.trials.values():
            self.update_space(trial.hyperparameters)
        # The random draws go on where they were: each configuration drawn at random
        # drew one value per active hyperparameter.
        self._seed_state = self.seed + sum(
            len([key for key in self.trials[i].hyperparameters.values if not key.startswith("tuner/")])
            for i in self._drawn_at_random(known)
        )
        if hasattr(self, "_brackets"):
            self._rebuild_brackets()

    def _drawn_at_random(self, ids):
        """Which of the trials (in creation order) had their values drawn at random."""
        return ids


def _trial_order(trial_id: str) -> tuple:
    return (0, int(trial_id), "") if trial_id.isdigit() else (1, 0, trial_id)


class _RandomSearchOracle(_BudgetedOracle, _FittingDraws, _Durable, _TrialIds, keras_tuner.oracles.RandomSearchOracle):
    pass


class _BayesianOptimizationOracle(
    _BudgetedOracle, _FittingDraws, _Durable, _TrialIds, keras_tuner.oracles.BayesianOptimizationOracle
):
    def _drawn_at_random(self, ids):
        # keras-tuner's `populate_space`: at random while fewer trials than its initial
        # points have completed, then from the Gaussian process.
        initial = self.num_initial_points or max(3 * len(self.hyperparameters.space), 3)
        drawn, completed = [], 0
        for trial_id in ids:
            if completed < initial:
                drawn.append(trial_id)
            completed += self.trials[trial_id].status == "COMPLETED"
        return drawn

    def _vectorize_trials(self):
        # keras-tuner's skips failed trials but takes a STOPPED (pruned) one with the
        # score of the trial before it (or none): a pruned trial is skipped as a failed
        # one is, its configuration still excluded from the draws (`tried_so_far`).
        trials = self.trials
        self.trials = {key: trial for key, trial in trials.items() if trial.status != "STOPPED"}
        try:
            return super()._vectorize_trials()
        finally:
            self.trials = trials


class _GridSearchOracle(_BudgetedOracle, _Durable, _TrialIds, keras_tuner.oracles.GridSearchOracle):
    pass


class _HyperbandOracle(_BudgetedOracle, _FittingDraws, _Durable, _TrialIds, keras_tuner.oracles.HyperbandOracle):
    """Hyperband whose failed first-round trials give their place in the bracket to a
    new configuration.

    keras-tuner's Hyperband promotes from a round only once all but the promoted
    places have completed, so each failed trial would cost the bracket a promotion (a
    configuration rejected before training costs little to replace).
    """

    @keras_tuner.synchronized
    def end_trial(self, trial):
        super().end_trial(trial)
        if self.trials[trial.trial_id].status == "FAILED":
            for bracket in self._brackets:
                first = bracket["rounds"][0]
                bracket["rounds"][0] = [info for info in first if info["id"] != trial.trial_id]
            self.save()

    def _drawn_at_random(self, ids):
        # The first round's configurations; later rounds continue one of them.
        return [i for i in ids if not self.trials[i].hyperparameters.values.get("tuner/round")]

    def _rebuild_brackets(self):
        """The brackets as keras-tuner made them, replayed from the trials in the order
        they were created: a first-round trial joins the first open bracket whose
        first-round epochs it has (starting brackets in keras-tuner's order as
        needed), a later-round one the bracket of the trial it continues; failed
        first-round trials gave their place up (`end_trial`)."""
        # A fresh oracle of the same settings holds the brackets as they begin.
        brackets = keras_tuner.oracles.HyperbandOracle(self.objective, max_epochs=self.max_epochs, factor=self.factor)
        brackets.hyperband_iterations = self.hyperband_iterations
        by_epochs = {self._get_epochs(b, 0): b for b in range(self._get_num_brackets())}

        def complete(bracket):
            last = len(bracket["rounds"]) - 1
            return len(bracket["rounds"][last]) == self._get_size(bracket["bracket_num"], last)

        for trial_id in sorted(self.trials, key=_trial_order):
            trial = self.trials[trial_id]
            values = trial.hyperparameters.values
            round_ = values.get("tuner/round")
            if round_ is None:  # A trial of unknown configuration.
                continue
            if round_ == 0:
                number = by_epochs.get(values.get("tuner/epochs"))
                if number is None:
                    continue
                target = None
                for _ in range(2 * self._get_num_brackets() + 1):
                    target = next(
                        (
                            b
                            for b in brackets._brackets
                            if b["bracket_num"] == number and not complete(b) and len(b["rounds"][0]) < self._get_size(number, 0)
                        ),
                        None,
                    )
                    if target is not None:
                        break
                    brackets._increment_bracket_num()
                    brackets._start_new_bracket()
                if target is None:
                    continue
                if trial.status != "FAILED":
                    target["rounds"][0].append({"past_id": None, "id": trial_id})
            else:
                past = values.get("tuner/trial_id")
                for bracket in brackets._brackets:
                    rounds = bracket["rounds"]
                    if round_ < len(rounds) and any(info["id"] == past for info in rounds[round_ - 1]):
                        rounds[round_].append({"past_id": past, "id": trial_id})
                        break
        self._brackets = brackets._brackets
        self._current_bracket = brackets._current_bracket
        self._current_iteration = brackets._current_iteration

    @property
    def replaced(self) -> int:
        """How many failed first-round trials were replaced."""
        return sum(t.status == "FAILED" and t.hyperparameters.values.get("tuner/round") == 0 for t in self.trials.values())
