"""kcnn/tune/_keras_tuner/ overrides keras-tuner's private methods: these tests fail as
soon as the installed keras-tuner no longer has what it overrides."""

import ast
import inspect
import json
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
        (keras_tuner.Tuner, "_build_and_fit_model", ["self", "trial", "args", "kwargs"]),
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


def test_what_the_stopping_of_trials_relies_on_is_still_there():
    """kcnn.tune._keras_tuner.stopping: STOPPED is keras-tuner's early-stop status, which
    gRPC carries; Hyperband promotes only completed trials, and numbers its rounds; the
    Bayesian oracle vectorizes its trials in `_vectorize_trials`; keras-tuner does not keep
    a trial's per-epoch metrics (kcnn keeps the objective's)."""
    from keras_tuner.src.engine import oracle as oracle_module
    from keras_tuner.src.engine import tuner as tuner_module
    from keras_tuner.src.tuners import hyperband

    status = keras_tuner.engine.trial.TrialStatus
    assert status.STOPPED == "STOPPED" and status.to_proto(status.STOPPED) != status.to_proto(None)
    assert 'To signal early stopping, set Trial.status to "STOPPED"' in inspect.getsource(oracle_module)
    assert 't.status == "COMPLETED"' in inspect.getsource(hyperband.HyperbandOracle.populate_space)
    oracle = keras_tuner.oracles.HyperbandOracle(keras_tuner.Objective("val_accuracy", "max"), max_epochs=9)
    assert [oracle._get_num_rounds(b) for b in range(3)] == [1, 2, 3]
    assert list(inspect.signature(keras_tuner.oracles.BayesianOptimizationOracle._vectorize_trials).parameters) == ["self"]
    assert "Intermediate results are not passed to the Oracle" in inspect.getsource(tuner_module.Tuner.on_epoch_end)


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
    ours = _function_node(inspect.getsource(_keras_tuner.oracles), "create_trial", "_TrialIds")
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


# --------------------------------------------------------------------------
# The search state: written atomically, reloaded from what is left.


@pytest.mark.parametrize(
    "owner,method,parameters",
    [
        (keras_tuner.Oracle, "save", ["self"]),
        (keras_tuner.Oracle, "reload", ["self"]),
        (keras_tuner.Oracle, "_save_trial", ["self", "trial"]),
        (keras_tuner.Oracle, "_get_oracle_fname", ["self"]),
        (keras_tuner.Oracle, "_get_trial_dir", ["self", "trial_id"]),
        (keras_tuner.Oracle, "_compute_values_hash", ["self", "values"]),
        (keras_tuner.Oracle, "_record_values", ["self", "trial"]),
        (keras_tuner.Oracle, "_random_values", ["self"]),
        (keras_tuner.Tuner, "save", ["self"]),
        (keras_tuner.Tuner, "reload", ["self"]),
        (keras_tuner.Tuner, "_get_tuner_fname", ["self"]),
        (keras_tuner.Tuner, "_get_checkpoint_fname", ["self", "trial_id"]),
        (keras_tuner.Tuner, "_get_build_config_fname", ["self", "trial_id"]),
        (keras_tuner.Tuner, "_is_worker", ["self"]),
        (keras_tuner.Hyperband, "_build_hypermodel", ["self", "hp"]),
        (keras_tuner.oracles.HyperbandOracle, "_get_size", ["self", "bracket_num", "round_num"]),
        (keras_tuner.oracles.HyperbandOracle, "_get_epochs", ["self", "bracket_num", "round_num"]),
        (keras_tuner.oracles.HyperbandOracle, "_get_num_brackets", ["self"]),
        (keras_tuner.oracles.HyperbandOracle, "_increment_bracket_num", ["self"]),
        (keras_tuner.oracles.HyperbandOracle, "_start_new_bracket", ["self"]),
    ],
)
def test_the_state_methods_kcnn_overrides_or_calls_exist(owner, method, parameters):
    assert list(inspect.signature(getattr(owner, method)).parameters) == parameters


def test_the_oracle_state_has_the_keys_kcnn_rebuilds():
    oracle = keras_tuner.oracles.RandomSearchOracle(keras_tuner.Objective("val_accuracy", "max"), max_trials=2)
    assert set(oracle.get_state()) == {
        "ongoing_trials", "hyperparameters", "start_order", "end_order", "run_times", "retry_queue",
        "seed", "seed_state", "tried_so_far", "id_to_hash", "display",
    }  # fmt: skip
    hyperband = keras_tuner.oracles.HyperbandOracle(keras_tuner.Objective("val_accuracy", "max"), max_epochs=3)
    assert set(hyperband.get_state()) - set(oracle.get_state()) == {
        "hyperband_iterations", "max_epochs", "min_epochs", "factor", "brackets", "current_bracket", "current_iteration",
    }  # fmt: skip
    assert set(oracle._display.get_state()) == {"search_start", "trial_start", "trial_number"}


def test_hyperbands_checkpoint_loading_is_the_one_kcnn_guards():
    from keras_tuner.src.tuners import hyperband

    upstream = _function_node(inspect.getsource(hyperband), "_build_hypermodel", "Hyperband")
    expected = ast.parse(
        """
def _build_hypermodel(self, hp):
    model = super()._build_hypermodel(hp)
    if "tuner/trial_id" in hp.values:
        trial_id = hp.values["tuner/trial_id"]
        if backend.config.multi_backend():
            model.build_from_config(utils.load_json(self._get_build_config_fname(trial_id)))
        model.load_weights(self._get_checkpoint_fname(trial_id))
    return model
"""
    ).body[0]
    assert ast.dump(upstream) == ast.dump(expected)


OBJECTIVE = keras_tuner.Objective("val_accuracy", "max")
ORACLES = {
    "random": lambda: _keras_tuner._RandomSearchOracle(OBJECTIVE, max_trials=12, seed=3),
    "bayesian": lambda: _keras_tuner._BayesianOptimizationOracle(OBJECTIVE, max_trials=12, seed=3, num_initial_points=3),
    "hyperband": lambda: _keras_tuner._HyperbandOracle(OBJECTIVE, max_epochs=9, factor=3, seed=3),
    "hyperband2": lambda: _keras_tuner._HyperbandOracle(OBJECTIVE, max_epochs=9, factor=3, hyperband_iterations=2, seed=3),
}


def _score(trial):
    values = trial.hyperparameters.values
    return (values["units"] * 7 + values["depth"] * 3) % 11 / 10


def _small(hp):
    """A budget: about a quarter of the `_drive` space fits it."""
    return hp.values["units"] <= 10


def _drive(oracle, project, trials, *, fail=(), leave_running=False, fits=None):
    """Runs `trials` trials through the oracle, scored without training; trials in
    `fail` fail; with `leave_running` one more is created and left running; `fits`:
    the space's check of its random proposals."""
    oracle.fits = fits
    oracle._set_project_dir(str(project.parent), project.name)
    hp = keras_tuner.HyperParameters()
    hp.Int("units", 1, 40)
    hp.Int("depth", 1, 6)
    oracle.update_space(hp)
    for _ in range(trials):
        trial = oracle.create_trial("tuner0")
        assert trial.status == "RUNNING"
        if trial.trial_id in fail:
            trial.status, trial.message = "FAILED", "FailedTrialError: too small"
        else:
            oracle.update_trial(trial.trial_id, {"val_accuracy": _score(trial)})
            trial.status = "COMPLETED"
        oracle.end_trial(trial)
    if leave_running:
        oracle.create_trial("tuner0")
    return oracle


def _progress(oracle):
    state = oracle.get_state()
    if hasattr(oracle, "_brackets"):
        oracle._remove_completed_brackets()
        state = oracle.get_state()
    skip = {"display", "hyperparameters"}
    return {key: sorted(value) if key == "tried_so_far" else value for key, value in state.items() if key not in skip}


def _reloaded(kind, project, fits=None):
    oracle = ORACLES[kind]()
    oracle.fits = fits
    oracle._set_project_dir(str(project.parent), project.name)
    return oracle


@pytest.mark.parametrize("kind", sorted(ORACLES))
@pytest.mark.parametrize(
    "damage,fits",
    # The three damages lose the same file; with a budget, the redraws' seeds must
    # not be replayed: once per oracle is enough.
    [("truncated", None), ("emptied", None), ("removed", None), ("removed", _small)],
    ids=["truncated", "emptied", "removed", "removed-budget"],
)
def test_an_unreadable_oracle_json_is_rebuilt_from_the_trials_exactly(tmp_path, kind, damage, fits):
    project = tmp_path / "project"
    # Hyperband over 2 iterations of its 3 brackets (23 trials each): promotions,
    # new brackets and a new iteration, failed first-round trials replaced.
    # Bayesian optimization: its 3 initial points (one failed, drawn again), then 2 of the
    # Gaussian process' proposals, each a fit of the process (seconds): the rebuilt state
    # proposes as upstream's after them.
    trials, fail = {"hyperband2": (30, ("0002", "0014", "0019", "0024")), "bayesian": (5, ("0002",))}.get(kind, (9, ("0002",)))
    original = _drive(ORACLES[kind](), project, trials, fail=fail, leave_running=True, fits=fits)
    expected = _reloaded(kind, project, fits)
    expected.reload()  # upstream's way: the running trial goes to the retry queue
    path = project / "oracle.json"
    if damage == "removed":
        path.unlink()
    else:
        path.write_text(path.read_text()[:200] if damage == "truncated" else "")
    rebuilt = _reloaded(kind, project, fits)
    completed = trials - len(fail)
    with pytest.warns(UserWarning, match=rf"oracle\.json (is not valid JSON|is empty|is missing).*the search state is rebuilt from the {trials + 1} trials .*\({completed} completed, kept and not run again\)"):
        assert rebuilt.reload() is True
    rebuilt.update_space(original.get_space())  # what the tuner declares again
    assert _progress(rebuilt) == _progress(expected)
    # And the search goes on as it would have: the same next trials.
    for _ in range(3):
        ours, theirs = rebuilt.create_trial("tuner0"), expected.create_trial("tuner0")
        assert (ours.trial_id, ours.status, ours.hyperparameters.values) == (theirs.trial_id, theirs.status, theirs.hyperparameters.values)
        for oracle, trial in ((rebuilt, ours), (expected, theirs)):
            if trial.status == "RUNNING":
                oracle.update_trial(trial.trial_id, {"val_accuracy": _score(trial)})
                trial.status = "COMPLETED"
                oracle.end_trial(trial)
    assert original.get_state()["seed"] == rebuilt.get_state()["seed"]


@pytest.mark.parametrize("kind", ["random", "bayesian", "hyperband"])
def test_random_proposals_are_drawn_again_until_they_fit(tmp_path, kind):
    checked = []

    def fits(hp):
        checked.append(dict(hp.values))
        return _small(hp)

    # Bayesian optimization: its 3 initial points and 2 of the Gaussian process' proposals
    # (each a fit of the process, seconds).
    trials = 5 if kind == "bayesian" else 12
    oracle = _drive(ORACLES[kind](), tmp_path / "a", trials, fits=fits)
    drawn = [trial.hyperparameters.values for trial in oracle.trials.values() if not trial.hyperparameters.values.get("tuner/round")]
    # Bayesian optimization: its 3 initial points are drawn at random; the Gaussian
    # process' proposals are not checked.
    random = drawn[:3] if kind == "bayesian" else drawn
    assert random and all(values["units"] <= 10 for values in random)
    assert len(checked) > len(random)  # some draws did not fit and were drawn again
    # The same seed proposes the same configurations; the oracle's seed state moved on
    # as keras-tuner's does after one draw per proposal (what a rebuild replays).
    again = _drive(ORACLES[kind](), tmp_path / "b", trials, fits=_small)
    assert [t.hyperparameters.values for t in again.trials.values()] == [t.hyperparameters.values for t in oracle.trials.values()]
    if kind != "bayesian":  # its Gaussian process' proposals draw no seeds
        assert again._seed_state == _drive(ORACLES[kind](), tmp_path / "c", trials)._seed_state


def test_a_space_where_nothing_fits_proposes_unchecked_after_max_misfits(tmp_path):
    calls = []
    oracle = _drive(ORACLES["random"](), tmp_path / "p", 3, fits=lambda hp: calls.append(1) and False)
    assert len(calls) == _keras_tuner.oracles._FittingDraws.MAX_MISFITS
    assert len(oracle.trials) == 3  # proposed anyway: each fails as a trial with its reason


def test_a_trial_whose_end_oracle_json_missed_is_not_run_again(tmp_path):
    # keras-tuner writes a trial's end to trial.json, then oracle.json: a kill between
    # left the trial running in oracle.json, and reloading ran it again.
    project = tmp_path / "project"
    oracle = _drive(ORACLES["random"](), project, 2, leave_running=True)
    while_running = (project / "oracle.json").read_text()
    trial = oracle.trials["0002"]
    oracle.update_trial("0002", {"val_accuracy": 0.5})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    (project / "oracle.json").write_text(while_running)  # as if killed before it was written
    assert json.loads((project / "trial_0002" / "trial.json").read_text())["status"] == "COMPLETED"
    reloaded = _reloaded("random", project)
    assert reloaded.reload() is False
    assert reloaded._retry_queue == [] and reloaded.end_order == ["0000", "0001", "0002"]
    assert reloaded.create_trial("tuner0").trial_id == "0003"


@pytest.mark.parametrize("copy", [True, False])
def test_an_unreadable_trial_json_is_restored_from_its_copy_or_counted_failed(tmp_path, copy):
    project = tmp_path / "project"
    oracle = _drive(ORACLES["random"](), project, 3)
    finished = oracle.trials["0001"].get_state()
    if copy:
        (project / "trial_0001" / "kcnn_trial.json").write_text(json.dumps({"trial_id": "0001", "trial": finished}))
    (project / "trial_0001" / "trial.json").write_text('{"trial_id": "00')
    reloaded = _reloaded("random", project)
    expected = "; trial 0001 is restored from the copy in kcnn_trial.json \\(COMPLETED\\)" if copy else ", and no copy of it was kept: trial 0001 counts as failed"
    with pytest.warns(UserWarning, match=rf"trial_0001/trial\.json is not valid JSON \(.*\){expected}"):
        reloaded.reload()
    trial = reloaded.trials["0001"]
    if copy:
        assert trial.get_state() == finished
    else:
        assert trial.status == "FAILED" and trial.hyperparameters.values == {} and "trial.json is not valid JSON" in trial.message
    assert json.loads((project / "trial_0001" / "trial.json").read_text())["status"] == trial.status  # written anew
    assert sorted(reloaded.trials) == ["0000", "0001", "0002"] and reloaded.create_trial("tuner0").trial_id == "0003"


def test_the_state_files_are_written_atomically(tmp_path, monkeypatch):
    import kcnn._files

    written = []
    real = kcnn._files.os.replace
    monkeypatch.setattr(kcnn._files.os, "replace", lambda source, target: (written.append(pathlib.Path(target).name), real(source, target)))
    _drive(ORACLES["random"](), tmp_path / "project", 1)
    assert {"oracle.json", "trial.json"} <= set(written)


def test_the_chiefs_server_is_upstreams_but_for_its_wait():
    from keras_tuner.src.distribute import oracle_chief

    upstream = ast.parse(inspect.getsource(oracle_chief.start_server)).body[0]
    ours = ast.parse(inspect.getsource(_keras_tuner.tuners.serve)).body[0]
    ours.name = upstream.name
    # Ours: docstring and the imports upstream's module makes at its top, then upstream's body.
    ours.body = [node for node in ours.body[1:] if not isinstance(node, (ast.Import, ast.ImportFrom))]
    upstream.body = upstream.body[1:]
    waits = [node for node in ast.walk(upstream) if isinstance(node, ast.Call) and ast.unparse(node) == "time.sleep(20)"]
    assert len(waits) == 1
    waits[0].args[0] = ast.Name("CHIEF_POLL_SECONDS", ast.Load())
    assert ast.unparse(ours) == ast.unparse(upstream)
    assert _keras_tuner.tuners.CHIEF_POLL_SECONDS < 1
    # BaseTuner.search's chief branch, which `_Records.search` replaces, is still the one that calls it.
    search = inspect.getsource(keras_tuner.engine.base_tuner.BaseTuner.search)
    assert "if dist_utils.is_chief_oracle():" in search and "oracle_chief.start_server(self.oracle)" in search
