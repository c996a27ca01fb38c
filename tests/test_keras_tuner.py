"""kcnn/tune/_keras_tuner.py overrides keras-tuner's private methods: these tests fail as
soon as the installed keras-tuner no longer has what it overrides."""

import ast
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


def _function_node(source, name, owner):
    """The ast of method `name` of class `owner` in `source`, without its docstring and
    decorators (keras-tuner's `synchronized` keeps no `__wrapped__`, so the source is
    read from the module)."""
    classes = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ClassDef) and node.name == owner]
    function = next(node for node in classes[0].body if isinstance(node, ast.FunctionDef) and node.name == name)
    function.decorator_list = []
    body = function.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        function.body = body[1:]
    return function


def test_create_trial_is_upstreams_but_for_the_trial_id():
    from keras_tuner.src.engine import oracle as oracle_module

    upstream = _function_node(inspect.getsource(oracle_module), "create_trial", "Oracle")
    ours = _function_node(inspect.getsource(_keras_tuner), "create_trial", "_TrialIds")
    # Upstream's id: two statements assigning `trial_id` (a format of max_trials' digits).
    ids = [i for i, node in enumerate(upstream.body) if isinstance(node, ast.Assign) and ast.unparse(node.targets) == "trial_id"]
    assert len(ids) == 2 and ids[1] == ids[0] + 1 and "self.max_trials" in ast.unparse(upstream.body[ids[0]])
    upstream.body[ids[0] : ids[1] + 1] = ast.parse("trial_id = format_trial_id(len(self.trials))").body
    assert ast.dump(ours) == ast.dump(upstream)


def _first_ids(oracle, tmp_path):
    oracle._set_project_dir(str(tmp_path), type(oracle).__name__)
    hp = keras_tuner.HyperParameters()
    hp.Choice("units", [1, 2, 3, 4])
    oracle.update_space(hp)
    return [oracle.create_trial(f"tuner{i}").trial_id for i in range(2)]


@pytest.mark.parametrize(
    "kind,kwargs,upstream_ids",
    [
        ("RandomSearchOracle", dict(max_trials=10), ["00", "01"]),
        ("RandomSearchOracle", dict(max_trials=4), ["0", "1"]),
        ("BayesianOptimizationOracle", dict(max_trials=100), ["000", "001"]),
        ("GridSearchOracle", dict(max_trials=None), ["0000", "0001"]),
        ("HyperbandOracle", dict(max_epochs=3), ["0000", "0001"]),
    ],
)
def test_trial_ids_have_one_format_in_every_tuner(tmp_path, kind, kwargs, upstream_ids):
    objective = keras_tuner.Objective("val_accuracy", "max")
    upstream = getattr(keras_tuner.oracles, kind)(objective, seed=1, **kwargs)
    assert _first_ids(upstream, tmp_path / "upstream") == upstream_ids
    ours = getattr(_keras_tuner, f"_{kind}")(objective, seed=1, **kwargs)
    assert _first_ids(ours, tmp_path / "kcnn") == ["0000", "0001"]
    assert type(ours) in {oracle for _, oracle in _keras_tuner._TUNERS.values()}  # what make_tuner uses


def test_the_tuner_classes_add_nothing_kcnn_skips_but_their_oracle():
    # kcnn's tuners call keras_tuner.Tuner.__init__ with their own oracle, past these
    # classes' __init__ (which makes theirs): they must have no other state or method.
    for tuner in (keras_tuner.RandomSearch, keras_tuner.BayesianOptimization, keras_tuner.GridSearch):
        assert {key for key in vars(tuner) if not key.startswith("_")} == set()
    assert {key for key in vars(keras_tuner.Hyperband) if not key.startswith("__")} >= {"run_trial", "_build_hypermodel"}
