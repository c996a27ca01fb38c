"""kcnn/tune/_keras_tuner.py overrides keras-tuner's private methods: these tests fail as
soon as the installed keras-tuner no longer has what it overrides."""

import inspect
import pathlib
import tomllib

import keras_tuner
import pytest
from packaging.version import Version

from kcnn.tune import _keras_tuner

PYPROJECT = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_keras_tuner_is_within_the_pinned_minor():
    requirement = next(r for r in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"] if r.startswith("keras-tuner"))
    assert "<1.5" in requirement
    assert Version("1.4") <= Version(keras_tuner.__version__) < Version("1.5")


@pytest.mark.parametrize(
    "owner,method,parameters",
    [
        (keras_tuner.Tuner, "_populate_initial_space", ["self"]),
        (keras_tuner.Tuner, "_try_run_and_update_trial", ["self", "trial", "fit_args", "fit_kwargs"]),
        (keras_tuner.Tuner, "_run_and_update_trial", ["self", "trial", "fit_args", "fit_kwargs"]),
        (keras_tuner.Tuner, "on_trial_end", ["self", "trial"]),
        (keras_tuner.Tuner, "run_trial", ["self", "trial", "args", "kwargs"]),
    ],
)
def test_the_overridden_methods_exist_with_their_signature(owner, method, parameters):
    assert list(inspect.signature(getattr(owner, method)).parameters) == parameters


def test_hyperband_keeps_its_brackets_where_the_override_edits_them():
    oracle = keras_tuner.oracles.HyperbandOracle(keras_tuner.Objective("val_accuracy", "max"), max_epochs=3)
    assert isinstance(oracle._brackets, list)
    oracle._start_new_bracket()
    assert {"bracket_num", "rounds"} <= set(oracle._brackets[0]) and isinstance(oracle._brackets[0]["rounds"][0], list)
    assert inspect.signature(keras_tuner.Hyperband.__init__).parameters.keys() >= {"max_epochs", "factor", "hyperband_iterations"}


def test_metric_directions_are_inferred_by_keras_tuner():
    assert _keras_tuner.objective("val_accuracy").direction == "max"
    assert _keras_tuner.objective("val_loss").direction == "min"
    with pytest.raises(ValueError, match="Received: objective='val_speed'"):
        _keras_tuner.objective("val_speed")
