"""keras-tuner's tuners and oracles with what kcnn adds: trial records, progress callbacks, quiet
rejected configurations, a Hyperband that replaces failed trials, and a search state
that survives a kill at any point.

keras-tuner writes its state (oracle.json, tuner0.json, trial_*/trial.json) in place
and cannot reload a project whose file a kill cut short. Here every one is written
atomically, and a project whose oracle.json or trial.json is unreadable anyway (a
project of an older version, a damaged disk) is reloaded from what is left: a warning
names the file, the finished trials are kept, not run again, and the search goes on.

This package is the one place that overrides keras-tuner's private methods
(`Tuner._populate_initial_space`, `Tuner._try_run_and_update_trial`,
`Tuner._build_and_fit_model`,
`Tuner._build_hypermodel` of Hyperband, `Oracle._save_trial`, `Oracle.save` and
`reload`, `BaseTuner.save` and `reload`) and state (`Oracle.get_state`'s keys,
`HyperbandOracle._brackets`), and copies two of its functions (`Oracle.create_trial`,
for the trial ids; `oracle_chief.start_server`, for the chief's wait); `tests/test_keras_tuner.py` checks that they still exist, and that
the copy is still upstream's, in the installed keras-tuner, whose version
`pyproject.toml` pins below its next minor.

    oracles.py  the oracles: atomic, recoverable state and one trial-id format
    tuners.py   the tuners: trial records, progress, make_tuner
    trials.py   what is read back from the trials: collect_trials, objectives
    stopping.py the time budget's and the median rule's stops of a trial
"""

# The private names are re-exported for the tests that check them against upstream.
from kcnn.tune._keras_tuner.oracles import (  # noqa: F401
    TRIAL_ID_DIGITS,
    _BayesianOptimizationOracle,
    _GridSearchOracle,
    _HyperbandOracle,
    _RandomSearchOracle,
    format_trial_id,
)
from kcnn.tune._keras_tuner.trials import (
    checkpoint_path,
    collect_trials,
    metric_value,
    objective,
    public_values,
    score_objective,
)
from kcnn.tune._keras_tuner.tuners import _TUNERS, make_tuner  # noqa: F401

__all__ = [
    "TRIAL_ID_DIGITS",
    "checkpoint_path",
    "collect_trials",
    "format_trial_id",
    "make_tuner",
    "metric_value",
    "objective",
    "public_values",
    "score_objective",
]
