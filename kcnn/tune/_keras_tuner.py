"""keras-tuner's tuners with what kcnn adds: trial records, progress callbacks, quiet
rejected configurations, a Hyperband that replaces failed trials, and a search state
that survives a kill at any point.

keras-tuner writes its state (oracle.json, tuner0.json, trial_*/trial.json) in place
and cannot reload a project whose file a kill cut short. Here every one is written
atomically, and a project whose oracle.json or trial.json is unreadable anyway (a
project of an older version, a damaged disk) is reloaded from what is left: a warning
names the file, the finished trials are kept, not run again, and the search goes on.

This is the one module that overrides keras-tuner's private methods
(`Tuner._populate_initial_space`, `Tuner._try_run_and_update_trial`,
`Tuner._build_hypermodel` of Hyperband, `Oracle._save_trial`, `Oracle.save` and
`reload`, `BaseTuner.save` and `reload`) and state (`Oracle.get_state`'s keys,
`HyperbandOracle._brackets`), and copies one of its methods (`Oracle.create_trial`,
for the trial ids); `tests/test_keras_tuner.py` checks that they still exist, and that
the copy is still upstream's, in the installed keras-tuner, whose version
`pyproject.toml` pins below its next minor.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import pathlib
import time
import traceback
import warnings
from typing import Any

import keras
import keras_tuner
from keras_tuner.engine import trial as trial_module

from kcnn._files import CorruptFileError, read_json, write_json
from kcnn.tune import report
from kcnn.tune.report import RECORD_FILE, TrialRecord

__all__ = ["TRIAL_ID_DIGITS", "checkpoint_path", "collect_trials", "format_trial_id", "make_tuner", "objective", "public_values"]

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


class _Records:
    """What kcnn adds to a keras-tuner tuner: no model built to declare the space,
    a record per trial (written by the process that ran it), a progress callback, and
    failed trials recorded without a traceback on stderr."""

    def __init__(self, oracle, hypermodel=None, **kwargs):
        # keras-tuner reloads a project only when this tuner's own file (tuner0.json,
        # chief.json) is there, and otherwise starts afresh, writing its trials over
        # the ones on disk: a project with any state is reloaded.
        if not kwargs.get("overwrite"):
            project = pathlib.Path(kwargs.get("directory") or ".") / (kwargs.get("project_name") or "untitled_project")
            own = project / f"{os.environ.get('KERASTUNER_TUNER_ID', 'tuner0')}.json"
            if not own.exists() and _has_state(project):
                write_json(own, {})
        # keras_tuner.Tuner's, past the subclass' __init__ that would make its own oracle.
        keras_tuner.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)

    def save(self):
        # keras-tuner's BaseTuner.save, atomically.
        if not self._is_worker():
            self.oracle.save()
        write_json(self._get_tuner_fname(), self.get_state())

    def reload(self):
        # keras-tuner's BaseTuner.reload, which a damaged file does not stop.
        if not self._is_worker() and self.oracle.reload():
            self._populate_initial_space()  # The space was in the oracle.json lost.
        try:
            state = read_json(self._get_tuner_fname()) or {}
        except CorruptFileError as error:
            warnings.warn(f"{error}; it holds nothing the search needs and is written anew.", stacklevel=2)
            state = {}
        self.set_state(state)

    def follow(self, on_trial, planned):
        """Sets the progress callback and the number of trials planned."""
        self._on_trial = on_trial
        self._planned = planned
        self._started = {}
        self._epochs = {}
        self.ran = []  # Trial ids this process ran, in order.

    def _populate_initial_space(self):
        # keras-tuner builds the default model here, once per conditional branch; the
        # space declares every hyperparameter (conditions included) without building.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def _try_run_and_update_trial(self, trial, *fit_args, **fit_kwargs):
        # keras-tuner's own (1.4) prints the traceback of every failed trial while its
        # global DEBUG flag is on, which is its default. A configuration the space
        # rejects (input too small, budget) is an expected outcome of a search: its reason goes
        # to trials.csv and the progress line. Any other error is an invalid trial, as
        # keras-tuner has it, logged with its traceback (at DEBUG level) instead of printed.
        try:
            self._run_and_update_trial(trial, *fit_args, **fit_kwargs)
            trial.status = keras_tuner.engine.trial.TrialStatus.COMPLETED
        except keras_tuner.errors.FatalError:
            raise
        except keras_tuner.errors.FailedTrialError:
            trial.status = keras_tuner.engine.trial.TrialStatus.FAILED
            trial.message = traceback.format_exc()
        except Exception as error:
            trial.status = keras_tuner.engine.trial.TrialStatus.INVALID
            trial.message = traceback.format_exc()
            logger.warning("Trial %s failed: %s: %s", trial.trial_id, type(error).__name__, error)
            logger.debug("Trial %s failed:\n%s", trial.trial_id, trial.message)

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._started[trial.trial_id] = time.perf_counter()
        self.hypermodel.last_build = {}
        self._notify(trial, "RUNNING", score=None)

    def run_trial(self, trial, *args, **kwargs):
        histories = super().run_trial(trial, *args, **kwargs)
        # The epochs the model has trained by the end (Hyperband continues a trial).
        epochs = [max(h.epoch) + 1 for h in histories if isinstance(h, keras.callbacks.History) and h.epoch]
        if epochs:
            self._epochs[trial.trial_id] = max(epochs)
        return histories

    def on_trial_end(self, trial):
        seconds = time.perf_counter() - self._started.pop(trial.trial_id, time.perf_counter())
        facts = dict(self.hypermodel.last_build)
        reason = None if trial.status == "COMPLETED" else report.failure_reason(trial.message)
        record = {
            "trial_id": trial.trial_id,
            "tuner_id": self.tuner_id,
            "params": facts.get("params"),
            "macs": facts.get("macs"),
            "seconds": round(seconds, 3),
            "epochs": self._epochs.pop(trial.trial_id, None),
            "reason": reason,
        }
        path = pathlib.Path(self.get_trial_dir(trial.trial_id)) / RECORD_FILE
        write_json(path, record)
        super().on_trial_end(trial)  # Reports to the oracle (the chief's, when distributed).
        ended = self.oracle.get_trial(trial.trial_id)
        # With a copy of the ended trial, from which its trial.json can be made again.
        write_json(path, {**record, "trial": ended.get_state()})
        self.ran.append(trial.trial_id)
        if self._on_trial is not None:
            self._notify(ended, ended.status, score=ended.score, record=record)
        # No clear_session here: keras-tuner clears the session (and collects garbage)
        # before it builds each trial's model, and a full collection costs ~0.2 s.

    def _notify(self, trial, status, *, score, record=None):
        if self._on_trial is None:
            return
        best = [t for t in self.oracle.get_best_trials(1) if t.status == "COMPLETED"]
        record = record or {}
        total = self._planned
        if total is not None:
            # Hyperband draws a new configuration in place of each failed one.
            total += getattr(self.oracle, "replaced", 0)
            if self.oracle.max_trials:
                total = min(total, self.oracle.max_trials)
        self._on_trial(
            TrialRecord(
                trial_id=trial.trial_id,
                number=int(trial.trial_id) + 1,
                total=total,
                status=status,
                score=float(score) if status == "COMPLETED" and score is not None else None,
                best_score=float(best[0].score) if best else None,
                hyperparameters=public_values(trial.hyperparameters),
                params=record.get("params"),
                macs=record.get("macs"),
                seconds=record.get("seconds"),
                epochs=record.get("epochs"),
                reason=record.get("reason"),
                tuner_id=self.tuner_id,
            )
        )


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

        trial = trial_module.Trial(
            hyperparameters=hyperparameters, trial_id=trial_id, status=status
        )

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


_ENDED = ("COMPLETED", "FAILED")
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
                problem = str(error) if isinstance(error, CorruptFileError) else f"{folder / TRIAL_FILE} is not a trial ({error!r})"
            try:
                copy = (read_json(folder / RECORD_FILE) or {}).get("trial")
                trial = trial_module.Trial.from_state(copy) if copy else None
            except (KeyError, TypeError, ValueError, AttributeError):
                trial = None
            if trial is not None:
                warnings.warn(f"{problem}; trial {trial_id} is restored from the copy in {RECORD_FILE} ({trial.status}).", stacklevel=3)
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


class _RandomSearchOracle(_Durable, _TrialIds, keras_tuner.oracles.RandomSearchOracle):
    pass


class _BayesianOptimizationOracle(_Durable, _TrialIds, keras_tuner.oracles.BayesianOptimizationOracle):
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


class _GridSearchOracle(_Durable, _TrialIds, keras_tuner.oracles.GridSearchOracle):
    pass


class _HyperbandOracle(_Durable, _TrialIds, keras_tuner.oracles.HyperbandOracle):
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
                            if b["bracket_num"] == number
                            and not complete(b)
                            and len(b["rounds"][0]) < self._get_size(number, 0)
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
        return sum(
            t.status == "FAILED" and t.hyperparameters.values.get("tuner/round") == 0 for t in self.trials.values()
        )


class _UnusableCheckpoint(Exception):
    """The checkpoint a Hyperband trial continues from cannot be read."""


class _Hyperband(_Records, keras_tuner.Hyperband):
    """Hyperband whose trial that continues an earlier one (a later round) trains from
    scratch, for all its epochs and with a warning, when the earlier trial's
    checkpoint cannot be read, instead of failing."""

    def _build_hypermodel(self, hp):
        # keras-tuner's Hyperband._build_hypermodel, the reading of the checkpoint guarded.
        model = keras_tuner.Tuner._build_hypermodel(self, hp)
        if "tuner/trial_id" in hp.values:
            trial_id = hp.values["tuner/trial_id"]
            files = [self._get_build_config_fname(trial_id), self._get_checkpoint_fname(trial_id)]
            try:
                model.build_from_config(read_json(files[0]) or {})
                model.load_weights(files[1])
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise _UnusableCheckpoint(
                    f"the checkpoint of trial {trial_id} it continues cannot be read ({' and '.join(files)}: "
                    f"{type(error).__name__}: {error})"
                ) from error
        return model

    def run_trial(self, trial, *fit_args, **fit_kwargs):
        try:
            return super().run_trial(trial, *fit_args, **fit_kwargs)
        except _UnusableCheckpoint as error:
            values = trial.hyperparameters.values
            warnings.warn(
                f"Trial {trial.trial_id}: {error}; it trains from scratch for its {values['tuner/epochs']} epochs.",
                stacklevel=2,
            )
            values.pop("tuner/trial_id")
            values["tuner/initial_epoch"] = 0
            return super().run_trial(trial, *fit_args, **fit_kwargs)


class _RandomSearch(_Records, keras_tuner.RandomSearch):
    pass


class _BayesianOptimization(_Records, keras_tuner.BayesianOptimization):
    pass


class _GridSearch(_Records, keras_tuner.GridSearch):
    pass


# By `config.tuner`: the tuner and its oracle. keras-tuner's tuners make their oracle in
# their __init__ (all it does, but for Hyperband, whose trial methods are inherited);
# kcnn gives them its own oracles and calls `keras_tuner.Tuner.__init__`.
_TUNERS = {
    "hyperband": (_Hyperband, _HyperbandOracle),
    "random": (_RandomSearch, _RandomSearchOracle),
    "bayesian": (_BayesianOptimization, _BayesianOptimizationOracle),
    "grid": (_GridSearch, _GridSearchOracle),
}


def make_tuner(space, config, project_dir, role, on_trial):
    """The keras-tuner tuner of `config.tuner` over `space`, in `project_dir`
    (reloaded from there unless `config.overwrite`)."""
    tuner_class, oracle_class = _TUNERS[config.tuner]
    options = dict(
        objective=objective(config.objective),
        seed=config.seed,
        max_consecutive_failed_trials=config.max_consecutive_failed_trials,
    )
    if config.tuner == "hyperband":
        oracle = oracle_class(
            max_epochs=config.max_epochs,
            factor=config.hyperband_factor,
            hyperband_iterations=config.hyperband_iterations,
            **options,
        )
        planned = _hyperband_trials(config)
    elif config.tuner == "grid":
        oracle = oracle_class(max_trials=config.max_trials, **options)
        planned = config.max_trials
    else:
        planned = config.max_trials or DEFAULT_MAX_TRIALS
        oracle = oracle_class(max_trials=planned, **options)
    tuner = tuner_class(
        oracle,
        hypermodel=space,
        executions_per_trial=config.executions_per_trial,
        distribution_strategy=space.device.strategy,
        directory=os.fspath(project_dir.parent),
        project_name=project_dir.name,
        # A worker never wipes the project: the chief and the other workers use it.
        overwrite=config.overwrite and role != "worker",
    )
    if config.tuner == "hyperband":
        # keras-tuner's Hyperband has no trial budget of its own; the oracle's
        # `max_trials` is what every other oracle stops at.
        tuner.oracle.max_trials = config.max_trials
    tuner.follow(on_trial, planned)
    return tuner


def _hyperband_trials(config) -> int:
    """Trials of Hyperband's brackets (keras-tuner's sizes), over its iterations."""
    factor, epochs, brackets = config.hyperband_factor, config.max_epochs, 0
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    end_size = math.ceil(1 + math.log(config.max_epochs, factor))
    per_iteration = sum(
        math.ceil(end_size / (bracket + 1) * factor ** (bracket - round_))
        for bracket in range(brackets)
        for round_ in range(bracket + 1)
    )
    return per_iteration * config.hyperband_iterations


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
        status = trial.status
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
                hyperparameters=public_values(trial.hyperparameters),
                params=facts.get("params"),
                macs=facts.get("macs"),
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


def public_values(hyperparameters) -> dict[str, Any]:
    """The sampled values without Hyperband's bookkeeping (`tuner/epochs`, ...)."""
    return {key: value for key, value in hyperparameters.values.items() if not key.startswith("tuner/")}
