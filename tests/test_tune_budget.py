"""kcnn.tune's time budget and pruning (`kcnn.tune.budget`, `kcnn.tune.stopping`): the
duration parser, the budget against a fake clock (no timing thresholds), the median
stopping rule against a reference, and searches whose objective a callback scripts."""

import json
import statistics
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import test_tune as search_tests  # its tiny data and trials.csv reader

from kcnn import tune
from kcnn.cli import main
from kcnn.tune import budget as budget_module
from kcnn.tune import report
from kcnn.tune.budget import TimeBudget, format_duration, parse_duration
from kcnn.tune.stopping import MIN_COMPLETED, WARMUP_EPOCHS, median_rule

# Enough distinct configurations that a random search never runs out of them.
RANGES = dict(depth=1, filters=(4, 8, 16), kernel_size=(3, 5), convs_per_stage=(1, 2), hidden_units=8, batch_norm=False)


def tiny_data(size=12, n=32, classes=4, seed=0):
    return search_tests.tiny_data(size=size, n=n, classes=classes, seed=seed)


read_trials = search_tests.read_trials


# --------------------------------------------------------------------------
# Durations.


@pytest.mark.parametrize(
    "text, seconds",
    [("300", 300), ("2.5", 2.5), ("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1m30s", 90),
     ("1.5h", 5400), (" 2M ", 120), (45, 45), (0.5, 0.5), (None, None), ("none", None)],
)  # fmt: skip
def test_durations_are_read_in_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "30m1h", "-5", "0", "0s", "inf", "nan", "5 minutes", True])
def test_a_bad_duration_says_what_was_expected_and_received(text):
    with pytest.raises(ValueError, match=r"^Expected a positive duration: .* Received: time_budget="):
        parse_duration(text)
    with pytest.raises(ValueError, match="Received: time_budget="):
        tune.SearchConfig(time_budget=text)


def test_durations_are_written_in_their_two_largest_units():
    assert [format_duration(s) for s in (0, 42, 60, 192, 3600, 3900, 5400.4)] == [
        "0s", "42s", "1m", "3m12s", "1h", "1h05m", "1h30m",
    ]  # fmt: skip


def test_the_command_line_refuses_a_bad_duration_before_importing_tensorflow():
    script = textwrap.dedent(
        """
        import contextlib, io, json, sys
        from kcnn.cli import main
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                main(["tune", "--time-budget", "5x"])
            except SystemExit as exit_:
                code = exit_.code
        print(json.dumps({"code": code, "err": err.getvalue(), "tensorflow": "tensorflow" in sys.modules}))
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["code"] == 2 and not result["tensorflow"]
    assert "kcnn tune: error: argument --time-budget: Expected a positive duration" in result["err"]
    assert "Received: --time-budget='5x'" in result["err"]


def test_the_command_line_documents_the_budget_and_pruning(capsys):
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--time-budget DURATION" in text and "the finish (retraining) is not counted in" in text
    assert "--prune {median,none}" in text and "Golovin et al. 2017" in text


def test_a_distributed_search_has_no_budget():
    with pytest.raises(ValueError, match="a distributed search has none"):
        tune.SearchConfig(time_budget="5m", chief="127.0.0.1:8000")


# --------------------------------------------------------------------------
# The budget's account, on a fake clock.


@pytest.fixture
def clock(monkeypatch):
    """A clock that moves only when told: `clock.now`."""

    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    fake = Clock()
    monkeypatch.setattr(budget_module, "clock", fake)
    return fake


def test_no_trial_starts_that_a_typical_one_would_take_past_the_budget(clock):
    budget = TimeBudget(90)
    assert budget.allows_trial()  # No trial yet: only the time left counts.
    for trial, seconds in (("0", 20), ("1", 40)):
        budget.trial_started(trial)
        clock.now += seconds
        budget.trial_ended(trial, trained=True)
    budget.trial_started("2")
    clock.now += 1
    budget.trial_ended("2", trained=False)  # Refused before training: not a typical trial.
    assert budget.typical_trial() == 30 and budget.used() == 61
    assert budget.allows_trial() is False  # 61 + 30 > 90
    assert budget.describe() == "29s left of 1m30s"
    resumed = TimeBudget(200, state=budget.state())
    assert resumed.used() == 61 and resumed.allows_trial()


class Shared(keras.callbacks.Callback):
    """A callback that keras-tuner's deep copy for each execution leaves as it is, so
    that it shares the test's clock and state."""

    def __deepcopy__(self, memo):
        return self


class Tick(Shared):
    """Moves the fake clock by `seconds[trial]` at the end of each epoch of that trial."""

    def __init__(self, clock, seconds, current, stop_at=None):
        super().__init__()
        self.clock, self.seconds, self.current, self.stop_at = clock, seconds, current, stop_at

    def on_epoch_begin(self, epoch, logs=None):
        if self.stop_at == (self.current["trial"], epoch):
            raise KeyboardInterrupt  # A kill, mid-trial.

    def on_epoch_end(self, epoch, logs=None):
        self.clock.now += self.seconds[self.current["trial"]]


def _follow(current, lines=None):
    def on_trial(record):
        if record.status == "RUNNING":
            current["trial"] = record.number - 1
        elif lines is not None:
            lines.append(record.progress_line("val_accuracy"))

    return on_trial


def _search(directory, callbacks, on_trial, **options):
    settings = dict(tuner="random", max_trials=5, max_epochs=3, seed=3, top_k=0, references=None, ranges=RANGES)
    return tune.search("convnet", tiny_data(), directory=directory, callbacks=callbacks, on_trial=on_trial,
                       **{**settings, **options})  # fmt: skip


def test_a_budget_spent_mid_search_stops_the_running_trial_at_an_epoch_boundary_and_starts_no_other(tmp_path, clock):
    # Trial 0: 3 epochs of 5 s (15 s). Trial 1 may start (15 + 15 <= 40) and takes 20 s
    # an epoch: the budget is spent at the end of its 2nd epoch (55 s), where it stops.
    current, lines = {}, []
    tick = Tick(clock, {0: 5, 1: 20, 2: 1}, current)
    result = _search(tmp_path, [tick], _follow(current, lines), time_budget=40)
    rows = read_trials(result.trials_csv)
    assert [(row["trial"], row["status"], row["epochs"]) for row in rows] == [
        ("0000", "COMPLETED", "3"), ("0001", "COMPLETED", "2"),
    ]  # fmt: skip
    assert result.search_seconds == 55 and result.time_budget == 40 and result.finish_seconds >= 0
    assert lines[0].endswith("  25s left of 40s") and lines[1].endswith("  0s left of 40s")


def test_a_killed_search_resumes_with_the_time_it_used(tmp_path, clock):
    # 10 s an epoch, 30 s a trial, 95 s of budget. Killed at the start of trial 1's
    # second epoch (40 s used, kept at its first epoch's end), then resumed in a
    # "new process" (another clock origin): trial 1 runs again (40 + 30 <= 95), ending
    # at 70 s; a third would end past 95 s and does not start.
    current = {}
    with pytest.raises(KeyboardInterrupt):
        _search(tmp_path, [Tick(clock, dict.fromkeys(range(5), 10), current, stop_at=(1, 1))], _follow(current))
    state = json.loads((tmp_path / "oracle.json").read_text())["kcnn_budget"]
    assert state == {"seconds_used": 40.0, "trial_seconds": [30.0]}
    clock.now = 1000.0
    started = []

    def on_trial(record):
        _follow(current)(record)
        if record.status == "RUNNING":
            started.append(record.trial_id)

    result = _search(tmp_path, [Tick(clock, dict.fromkeys(range(5), 10), current)], on_trial, time_budget=95)
    assert started == ["0001"]
    assert result.search_seconds == 70
    assert [row["status"] for row in read_trials(result.trials_csv)] == ["COMPLETED", "COMPLETED"]
    # Resumed once more: the budget has no room for a trial, none starts.
    clock.now = 5000.0
    started.clear()
    result = _search(tmp_path, [Tick(clock, dict.fromkeys(range(5), 10), current)], on_trial, time_budget=95)
    assert started == [] and result.search_seconds == 70


# --------------------------------------------------------------------------
# The median stopping rule.


def reference_rule(histories, maximize=True):
    """The median stopping rule, by hand with NumPy: trials in order, each judged at
    every epoch but its last against the earlier trials that completed; returns the
    epoch (from 0) each trial stops at, None for those that complete."""
    sign = 1.0 if maximize else -1.0
    stopped, completed = [], []
    for history in histories:
        values = sign * np.asarray(history, dtype=float)
        stop = None
        for epoch in range(WARMUP_EPOCHS, len(values) - 1):
            others = [np.max(sign * np.asarray(h[: epoch + 1])) for h in completed if len(h) > epoch]
            if len(others) >= MIN_COMPLETED and np.max(values[: epoch + 1]) < np.median(others):
                stop = epoch
                break
        stopped.append(stop)
        if stop is None:
            completed.append(history)
    return stopped


def rule_by_kcnn(histories, maximize=True):
    stopped, completed = [], []
    for history in histories:
        stop = None
        seen = {}
        for epoch, value in enumerate(history[:-1]):
            seen[epoch] = value
            if median_rule(seen, epoch, completed, maximize=maximize) is not None:
                stop = epoch
                break
        stopped.append(stop)
        if stop is None:
            completed.append(dict(enumerate(history)))
    return stopped


HISTORIES = [
    [0.2, 0.5, 0.6, 0.7],
    [0.3, 0.6, 0.7, 0.8],
    [0.1, 0.7, 0.8, 0.9],
    [0.9, 0.1, 0.1, 0.1],  # Its first epoch's 0.9 is its best so far: goes on.
    [0.5, 0.55, 0.9, 0.9],  # Below the median 0.65 at epoch 1 (of 0.5, 0.6, 0.7, 0.9): stops.
    [0.3, 0.65, 0.65, 0.95],  # At epoch 1 at the median 0.65, not below; at epoch 2 below 0.75: stops.
    [0.3, 0.9, 0.2, 0.2],
    [0.05, 0.9, 0.9, 0.9],  # Below the median 0.25 at epoch 0 (no warm-up epoch): stops.
]


def test_the_median_rule_matches_a_reference_on_hand_written_histories():
    assert reference_rule(HISTORIES) == rule_by_kcnn(HISTORIES) == [None, None, None, None, 1, 2, None, 0]
    losses = [[1 - v for v in h] for h in HISTORIES]  # The same, minimized.
    assert reference_rule(losses, maximize=False) == rule_by_kcnn(losses, maximize=False) == [None] * 4 + [1, 2, None, 0]
    rng = np.random.default_rng(0)
    for _ in range(20):
        histories = rng.uniform(size=(12, 5)).cumsum(axis=1).tolist()
        assert rule_by_kcnn(histories) == reference_rule(histories)


def test_the_median_rule_waits_for_enough_completed_trials():
    completed = [{0: 0.9, 1: 0.9}, {0: 0.9, 1: 0.9}]
    assert median_rule({0: 0.1, 1: 0.1}, 1, completed, maximize=True) is None  # Only 2 completed.
    completed.append({0: 0.9, 1: 0.9})
    assert WARMUP_EPOCHS == 0  # Judged from its first epoch on, once 3 trials completed.
    assert median_rule({0: 0.1}, 0, completed, maximize=True) == (0.9, 3)
    assert median_rule({0: 0.1, 1: 0.1}, 1, completed, maximize=True) == (0.9, 3)
    assert median_rule({0: 0.1, 1: 0.1}, 1, [{0: 0.9}] * 3, maximize=True) is None  # None recorded epoch 1.
    assert statistics.median([0.9] * 3) == 0.9


# --------------------------------------------------------------------------
# Pruned trials in a search.


class Script(Shared):
    """Sets each trial's val_accuracy per epoch from `values[trial]`, before the tuner
    and the stopping rule read it."""

    def __init__(self, values, current):
        super().__init__()
        self.values, self.current = values, current

    def on_epoch_end(self, epoch, logs=None):
        logs["val_accuracy"] = self.values[self.current["trial"]][epoch]


SCRIPT = {0: [0.5, 0.6, 0.7], 1: [0.5, 0.7, 0.8], 2: [0.5, 0.8, 0.9], 3: [0.5, 0.5, 0.99], 4: [0.5, 0.75, 0.95]}


def test_pruned_trials_are_recorded_not_chosen_and_survive_resume(tmp_path):
    current, lines = {}, []
    # Three trials complete; then, resumed, trial 3 is judged against their histories
    # (read back from the project) and pruned after its 2nd epoch (at the median after its 1st), trial 4 is not.
    _search(tmp_path, [Script(SCRIPT, current)], _follow(current), max_trials=3, prune="median")
    result = _search(tmp_path, [Script(SCRIPT, current)], _follow(current, lines), prune="median")
    rows = read_trials(result.trials_csv)
    assert [(row["status"], row["epochs"]) for row in rows] == [("COMPLETED", "3")] * 3 + [
        ("PRUNED", "2"), ("COMPLETED", "3"),
    ]  # fmt: skip
    pruned = rows[3]
    assert pruned["reason"] == (
        "pruned after epoch 2 of 3: best val_accuracy 0.5000, below the median 0.7000 of 3 completed trials at "
        "that epoch (median stopping rule)"
    )
    assert pruned["val_accuracy"] == "0.5" and pruned["score"] == "" and pruned["pareto"] == "False"
    assert lines[0].startswith("trial 4/5 (0003)  PRUNED: pruned after epoch 2 of 3")
    assert result.best_trial == "0004" and "1 pruned (median stopping rule): 0003" in result.table()
    # Resumed again: the pruned trial stays pruned, nothing runs again.
    again = _search(tmp_path, [Script(SCRIPT, current)], _follow(current, lines), prune="median")
    assert read_trials(again.trials_csv) == rows and len(lines) == 2


def test_a_pruned_trial_is_never_on_the_front_nor_ranked():
    records = [
        report.TrialRecord("0000", 1, None, "COMPLETED", score=0.8, metric=0.8, macs=1000),
        report.TrialRecord("0001", 2, None, "PRUNED", metric=0.99, macs=10, reason="pruned"),
    ]
    assert [r.trial_id for r in report.pareto_front(records)] == ["0000"]
    assert [r.trial_id for r in report.ranked_records(records)] == ["0000"]
    assert report.best_record(records).trial_id == "0000"
