"""kcnn's keras-tuner tuners: trial records, progress callbacks, quiet rejected
configurations, a Hyperband whose unreadable checkpoints retrain, and `make_tuner`
(what is read back from a tuner's trials: `trials.py`)."""

from __future__ import annotations

import logging
import math
import os
import pathlib
import time
import traceback
import warnings

import keras
import keras_tuner
from keras_tuner.src.distribute import utils as dist_utils

from kcnn._files import CorruptFileError, read_json, write_json
from kcnn.tune import report
from kcnn.tune._keras_tuner.oracles import (
    _BayesianOptimizationOracle,
    _GridSearchOracle,
    _has_state,
    _HyperbandOracle,
    _RandomSearchOracle,
)
from kcnn.tune._keras_tuner.stopping import PRUNED, _StoppingTuner, last_round, record_status
from kcnn.tune._keras_tuner.trials import metric_value, public_values, score_objective
from kcnn.tune.cost import bounded, ceiling
from kcnn.tune.report import RECORD_FILE, TrialRecord

logger = logging.getLogger("kcnn")

# Random and Bayesian searches need a trial budget; this is theirs unless given.
DEFAULT_MAX_TRIALS = 10


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

    def search(self, *fit_args, **fit_kwargs):
        # The chief only serves proposals: keras-tuner's BaseTuner.search, its chief
        # branch served by `serve` (which does not wait in steps of 20 s).
        if not dist_utils.is_chief_oracle():
            return super().search(*fit_args, **fit_kwargs)
        if "verbose" in fit_kwargs:
            self.oracle.verbose = fit_kwargs["verbose"]
        self.save()
        serve(self.oracle)

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

    def follow(self, on_trial, planned, metric):
        """Sets the progress callback, the number of trials planned and the objective's
        own name (`metric`: the score's, or with a cost term the quantity it weighs)."""
        self._on_trial = on_trial
        self._planned = planned
        self.metric = metric
        self._started = {}
        self._epochs = {}
        self._objective_histories = {}  # {trial id: {epoch: objective}}, read back on resume.
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
        self.hypermodel.execution = -1
        self._notify(trial, "RUNNING", score=None)

    def _build_and_fit_model(self, trial, *args, **kwargs):
        # keras-tuner's hook, called once per execution of a trial: the space numbers
        # them, so that each starts from other initial weights (`SearchSpace.build`).
        self.hypermodel.execution = getattr(self.hypermodel, "execution", -1) + 1
        return super()._build_and_fit_model(trial, *args, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        histories = super().run_trial(trial, *args, **kwargs)
        # The epochs the model has trained by the end (Hyperband continues a trial).
        histories_ = [h for h in histories if isinstance(h, keras.callbacks.History) and h.epoch]
        epochs = [max(h.epoch) + 1 for h in histories_]
        if epochs:
            self._epochs[trial.trial_id] = max(epochs)
        # The score's objective at each epoch (averaged over executions), which
        # keras-tuner 1.4 does not keep: the median stopping rule's reference.
        per_epoch = {}
        for h in histories_:
            for epoch, value in zip(h.epoch, h.history.get(self.oracle.objective.name, ())):
                per_epoch.setdefault(int(epoch), []).append(float(value))
        self._objective_histories[trial.trial_id] = {e: sum(v) / len(v) for e, v in sorted(per_epoch.items())}
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
            "objective_history": {str(e): v for e, v in self._objective_histories.get(trial.trial_id, {}).items()},
            # Only when measured: a search that measures nothing writes the records it always did.
            **{key: facts[key] for key in report.LATENCY_KEYS if key in facts},
        }
        path = pathlib.Path(self.get_trial_dir(trial.trial_id)) / RECORD_FILE
        write_json(path, record)
        super().on_trial_end(trial)  # Reports to the oracle (the chief's, when distributed).
        ended = self.oracle.get_trial(trial.trial_id)
        # With a copy of the ended trial, from which its trial.json can be made again.
        write_json(path, {**record, "trial": ended.get_state()})
        self.ran.append(trial.trial_id)
        if self._on_trial is not None:
            self._notify(ended, record_status(ended), score=ended.score, record=record)
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
        budget = getattr(self, "budget", None)
        self._on_trial(
            TrialRecord(
                trial_id=trial.trial_id,
                number=int(trial.trial_id) + 1,
                total=total,
                status=status,
                score=float(score) if status == "COMPLETED" and score is not None else None,
                metric=metric_value(trial, self.metric) if status in ("COMPLETED", PRUNED) else None,
                best_score=float(best[0].score) if best else None,
                hyperparameters=public_values(trial.hyperparameters),
                params=record.get("params"),
                macs=record.get("macs"),
                latency_ms=record.get("latency_ms"),
                latency_spread_ms=record.get("latency_spread_ms"),
                seconds=record.get("seconds"),
                epochs=record.get("epochs"),
                reason=record.get("reason"),
                tuner_id=self.tuner_id,
                time_left=None if budget is None else budget.left(),
                time_budget=None if budget is None else budget.total,
            )
        )


#: How often the chief checks whether its workers are done, once no trial is left to
#: propose. keras-tuner's `start_server` checks every 20 s, so that a distributed search
#: ended on average 10 s after its last trial.
CHIEF_POLL_SECONDS = 0.5


def serve(oracle):
    """keras-tuner's `oracle_chief.start_server` but for the chief's wait for its workers
    (`CHIEF_POLL_SECONDS`, not 20 s): serves the oracle to the workers until the search
    is done (`tests/test_keras_tuner.py` checks the copy against upstream's)."""
    # Imported here, as keras-tuner does, to avoid inconsistent protobuf versions.
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer, exit_chief

    ip_addr = os.environ["KERASTUNER_ORACLE_IP"]
    port = os.environ["KERASTUNER_ORACLE_PORT"]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    oracle_servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(oracle_servicer, server)
    server.add_insecure_port(f"{ip_addr}:{port}")
    server.start()
    while True:
        # The server does not block otherwise.
        time.sleep(1)

        if oracle_servicer.stop_triggered:
            while not exit_chief(oracle):
                time.sleep(CHIEF_POLL_SECONDS)
            break


class _UnusableCheckpoint(Exception):
    """The checkpoint a Hyperband trial continues from cannot be read."""


class _Hyperband(_StoppingTuner, _Records, keras_tuner.Hyperband):
    """Hyperband whose trial that continues an earlier one (a later round) trains from
    scratch, for all its epochs and with a warning, when the earlier trial's
    checkpoint cannot be read, instead of failing."""

    def _prunable(self, trial) -> bool:
        return last_round(self.oracle, trial)

    def _build_hypermodel(self, hp):
        # keras-tuner's Hyperband._build_hypermodel, the reading of the checkpoint guarded.
        model = keras_tuner.Tuner._build_hypermodel(self, hp)
        if "tuner/trial_id" in hp.values:
            trial_id = hp.values["tuner/trial_id"]
            files = [self._get_build_config_fname(trial_id), self._get_checkpoint_fname(trial_id)]
            try:
                model.build_from_config(read_json(files[0]) or {})
                with warnings.catch_warnings():
                    # The trial goes on with the weights, not the optimizer's state (its
                    # optimizer is built at the first step), as keras-tuner's does; Keras
                    # says so at every promotion.
                    warnings.filterwarnings("ignore", "Skipping variable loading for optimizer", UserWarning)
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


class _RandomSearch(_StoppingTuner, _Records, keras_tuner.RandomSearch):
    pass


class _BayesianOptimization(_StoppingTuner, _Records, keras_tuner.BayesianOptimization):
    pass


class _GridSearch(_StoppingTuner, _Records, keras_tuner.GridSearch):
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


def make_tuner(space, config, project_dir, role, on_trial, bar=None, budget=None):
    """The keras-tuner tuner of `config.tuner` over `space`, in `project_dir`
    (reloaded from there unless `config.overwrite`), ranking trials by
    `score_objective(config.objective, target)` (the resolved `target_macs`, or
    with `config.cost="latency"` `target_latency_ms`);
    with a cost term, random proposals that could not beat the best score so far, or
    `bar`, are drawn again. `budget` (a `kcnn.tune.budget.TimeBudget`) takes up the
    time the project's earlier runs used; its trials stop early by it and by
    `config.prune` (`kcnn.tune._keras_tuner.stopping`)."""
    target_macs = config.target_macs if config.cost == "macs" else None
    target = config.cost_target
    tuner_class, oracle_class = _TUNERS[config.tuner]
    options = dict(
        objective=score_objective(config.objective, target),
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
        distribution_strategy=space.strategy,
        directory=os.fspath(project_dir.parent),
        project_name=project_dir.name,
        # A worker never wipes the project: the chief and the other workers use it.
        overwrite=config.overwrite and role != "worker",
    )
    # Random proposals are drawn again until the space can build them within its budget
    # (the grid's points are what they are), and, with a cost term on an accuracy, below
    # the MACs at which they could not beat the best score so far (with the latency cost
    # there is no such ceiling: it would time every proposal).
    oracle.fits = space.fits
    if target_macs is not None and bounded(config.objective, maximize=oracle.objective.direction == "max"):
        oracle.fits = _could_win(space, oracle, target_macs, bar)
    if config.tuner == "hyperband":
        # keras-tuner's Hyperband has no trial budget of its own; the oracle's
        # `max_trials` is what every other oracle stops at.
        tuner.oracle.max_trials = config.max_trials
    tuner.follow(on_trial, planned, config.objective)
    if budget is not None and role != "worker":
        budget.restore(oracle._budget_state)  # The time of the project's earlier runs.
        oracle.budget = budget
    tuner.stop_early(budget, config.prune, save_state=role == "local")
    return tuner


def _could_win(space, oracle, target_macs, bar=None):
    """`space.fits`, with the MACs `kcnn.tune.cost.ceiling` of the best score so far (or
    `bar`, the cheapest reference's score as a trial, when higher): a configuration
    that could not beat it even at accuracy 1 is no trial worth running."""

    def fits(hp):
        # Read in the oracle's create_trial, which holds its lock: its trials as they are.
        scores = [t.score for t in oracle.trials.values() if t.status == "COMPLETED" and t.score is not None]
        if bar is not None:
            scores.append(bar)
        return space.fits(hp, ceiling=ceiling(max(scores, default=None), target_macs))

    return fits


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
