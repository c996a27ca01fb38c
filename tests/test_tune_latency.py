"""kcnn.tune.latency: the latency of a model's inference path, measured (medians of timed
runs with their interquartile range), cached per configuration in a search's project, and
the cost term and trials.csv that use it. No timing thresholds: only orderings."""

import dataclasses
import json
import re
import subprocess
import sys

import keras
import pytest

from kcnn import shapes
from kcnn.train import distribute
from kcnn.tune import cost, finish, latency

FEW = dict(warmup=2, repeats=5)


def one_layer():
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(2, 3, strides=4, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="predictions")(x), name="small")


def three_layers():
    inputs = keras.Input((64, 64, 3))
    x = inputs
    for index in range(3):
        x = keras.layers.Conv2D(48, 3, padding="same", name=f"conv{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="predictions")(x), name="big")


def test_a_model_far_larger_in_macs_measures_slower_and_pays_more_cost():
    small, big = one_layer(), three_layers()
    assert shapes.count_macs(big) > 1000 * shapes.count_macs(small)
    fast, slow = latency.measure_latency(small, **FEW), latency.measure_latency(big, **FEW)
    assert fast.median_ms < slow.median_ms
    for model, figure in ((small, fast), (big, slow)):
        assert figure.spread_ms >= 0 and figure.repeats == 5 and figure.batch_size == 1
        # The precision "auto" picks here: float32, but mixed bfloat16 for the big one
        # (1.8e8 MACs) on a CPU with bfloat16 units.
        assert figure.precision == distribute.resolve_precision("auto", model)
    assert fast.precision == "float32"
    # MnasNet's form (Tan et al. 2019, eq. 2) on milliseconds: a target below both charges both.
    target = fast.median_ms / 2
    assert 1.0 > cost.factor(fast.median_ms, target) > cost.factor(slow.median_ms, target)
    assert cost.factor(fast.median_ms, fast.median_ms * 2) == 1.0
    batched = latency.measure_latency(small, batch_size=3, **FEW)
    assert batched.batch_size == 3


def test_measure_latency_checks_its_arguments():
    with pytest.raises(ValueError, match=r"`repeats` must be an int >= 1. Received: repeats=0"):
        latency.measure_latency(one_layer(), repeats=0)
    with pytest.raises(ValueError, match=r"`batch_size` must be an int >= 1. Received: batch_size=True"):
        latency.measure_latency(one_layer(), batch_size=True)
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs)))
    with pytest.raises(ValueError, match=r"input size is known.*Received: input shape \(None, None, 3\)"):
        latency.measure_latency(model)


def counting(monkeypatch):
    calls = []
    real = latency.measure_latency
    monkeypatch.setattr(latency, "measure_latency", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def test_the_cache_measures_a_configuration_once_and_is_read_back_from_disk(tmp_path, monkeypatch):
    calls = counting(monkeypatch)
    path = tmp_path / latency.CACHE_FILE
    meter = latency.LatencyMeter(latency.LatencyCache(path), **FEW)
    first = meter.latency(one_layer(), {"builder": "small"})
    assert meter.latency(one_layer(), {"builder": "small"}) == first and len(calls) == 1
    # Another configuration, or the same one at another batch size, is measured.
    meter.latency(three_layers(), {"builder": "big"})
    latency.LatencyMeter(latency.LatencyCache(path), batch_size=2, **FEW).latency(one_layer(), {"builder": "small"})
    assert len(calls) == 3
    # A new meter on the same file (a resumed search) measures nothing again.
    again = latency.LatencyMeter(latency.LatencyCache(path), **FEW)
    assert again.latency(one_layer(), {"builder": "small"}) == first and len(calls) == 3
    content = json.loads(path.read_text())
    assert content["version"] == 1 and len(content["entries"]) == 3
    # ... and so does another process.
    script = (
        "import json, sys; from kcnn.tune import latency; "
        "cache = latency.LatencyCache(sys.argv[1]); print(json.dumps([v.to_dict() for v in cache.entries.values()]))"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True).stdout
    assert first.to_dict() in json.loads(out)


@pytest.mark.parametrize("damage", ["", "{\"version\": 1, \"entr", "[1, 2]", "{\"version\": 1, \"entries\": {\"k\": 3}}"])
def test_a_damaged_cache_warns_and_is_measured_anew(tmp_path, monkeypatch, damage):
    path = tmp_path / latency.CACHE_FILE
    path.write_text(damage)
    calls = counting(monkeypatch)
    with pytest.warns(UserWarning, match=r"latency.json .*measured again and the file written anew"):
        cache = latency.LatencyCache(path)
    figure = latency.LatencyMeter(cache, **FEW).latency(one_layer(), {"builder": "small"})
    assert len(calls) == 1
    assert list(latency.LatencyCache(path).entries.values()) == [figure]  # Rebuilt, readable again.


# --------------------------------------------------------------------------
# The search: settings, the budget, the cost term, trials.csv, the plot.


def test_the_config_checks_the_latency_settings_in_keras_style():
    from kcnn import tune

    config = tune.SearchConfig()
    assert (config.cost, config.target_latency_ms, config.max_latency_ms, config.latency_batch_size) == ("macs", None, None, 1)
    assert not config.measures_latency and config.pareto_axis == "macs"
    assert tune.SearchConfig(cost="latency", target_latency_ms=2).target_latency_ms == 2.0
    assert tune.SearchConfig(max_latency_ms="none").max_latency_ms is None
    for options in (dict(cost="latency"), dict(max_latency_ms=5), dict(measure_latency=True), dict(pareto_axis="latency")):
        assert tune.SearchConfig(**options).measures_latency, options
    for name in ("target_latency_ms", "max_latency_ms"):
        for wrong in (-1, 0, True, "fast", float("inf")):
            with pytest.raises(ValueError, match=rf"^`{name}` must be a number > 0. Received: {name}={wrong!r}$"):
                tune.SearchConfig(cost="latency", **{name: wrong})
    with pytest.raises(ValueError, match=r"`cost` must be one of 'macs', 'latency'. Received: cost='time'"):
        tune.SearchConfig(cost="time")
    with pytest.raises(ValueError, match=r"pass cost='latency' too. Received: target_latency_ms=3.0, cost='macs'"):
        tune.SearchConfig(target_latency_ms=3)
    with pytest.raises(ValueError, match=r"`latency_batch_size` must be an int >= 1. Received: latency_batch_size=0"):
        tune.SearchConfig(latency_batch_size=0)
    with pytest.raises(ValueError, match=r"`pareto_axis` must be one of 'macs', 'params', 'latency'. Received: pareto_axis='ms'"):
        tune.SearchConfig(pareto_axis="ms")


def test_a_configuration_over_the_latency_budget_is_refused_like_one_over_the_macs_budget():
    import keras_tuner
    from keras_tuner.errors import FailedTrialError

    from kcnn import tune

    space = tune.ConvNetSpace((16, 16, 1), 4, depth=2, filters=4, hidden_units=8, convs_per_stage=1)
    space.latency = latency.LatencyMeter(None, **FEW)
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    space.max_latency_ms = 1e-6  # A nanosecond: no model runs that fast.
    assert not space.fits(hp)
    with pytest.raises(FailedTrialError, match=r"ms per call \(measured\), over the budget. Received: max_latency_ms=1e-06$"):
        space.build(hp)
    assert space.last_build["latency_ms"] > 1e-6 and space.last_build["latency_spread_ms"] >= 0
    space.max_latency_ms = 1e6
    assert space.fits(hp)


def test_a_latency_search_weighs_each_trial_by_its_measured_latency_and_resumes_without_measuring(tmp_path, monkeypatch):
    import csv

    import test_tune as search_tests  # its tiny data

    from kcnn import tune

    ranges = dict(depth=2, filters=(4, 8), kernel_size=(3, 5), hidden_units=8, convs_per_stage=1, strides=1, pool=True)
    options = dict(directory=tmp_path, ranges=ranges, tuner="random", max_trials=2, max_epochs=1, seed=5)
    options.update(references=None, cost="latency", target_latency_ms=1e-3, pareto_axis="latency")
    options.update(top_k=1, finish_epochs=1, seeds=1)
    data = search_tests.tiny_data(size=16, n=32)
    calls = counting(monkeypatch)
    in_finish = []
    real_finish = finish.finish_search

    def finish_search(*args, **kwargs):
        before = len(calls)
        try:
            return real_finish(*args, **kwargs)
        finally:
            in_finish.append(len(calls) - before)

    monkeypatch.setattr(finish, "finish_search", finish_search)
    result = tune.search("convnet", data, **options)
    completed = [r for r in result.trials if r.status == "COMPLETED"]
    assert len(completed) == 2 and result.target_latency_ms == 1e-3 and result.target_macs is None
    for record in completed:
        assert record.latency_ms > 1e-3 and record.latency_spread_ms >= 0
        assert record.score == pytest.approx(record.metric * (record.latency_ms / 1e-3) ** -0.07, rel=1e-6)
        assert " ms (IQR " in record.progress_line("val_accuracy")
    with open(result.trials_csv, newline="") as file:
        rows = {row["trial"]: row for row in csv.DictReader(file)}
    for record in completed:
        row = rows[record.trial_id]
        assert (float(row["latency_ms"]), float(row["latency_spread_ms"])) == (record.latency_ms, record.latency_spread_ms)
    assert json.loads((tmp_path / "search.json").read_text())["cost"] == "latency"
    assert len(json.loads((tmp_path / latency.CACHE_FILE).read_text())["entries"]) >= 1
    # The finish charges the retrained trial's latency, the search's figure, read from the cache.
    (retrained,) = result.retrained
    trial = next(r for r in completed if r.trial_id == retrained.name)
    assert in_finish == [0] and (retrained.latency_ms, retrained.latency_spread_ms) == (trial.latency_ms, trial.latency_spread_ms)
    assert retrained.score == pytest.approx(retrained.validation * (trial.latency_ms / 1e-3) ** -0.07, rel=1e-9)
    assert re.search(rf"^ +\*1 trial {trial.trial_id} .* {trial.latency_ms:.3g} ", result.table(), re.M)
    chosen = json.loads((result.path / "metadata.json").read_text())["search"]["chosen"]
    assert (chosen["latency_ms"], chosen["latency_spread_ms"], chosen["score"]) == (trial.latency_ms, trial.latency_spread_ms, retrained.score)
    with open(tmp_path / "finish.csv", newline="") as file:
        (row,) = csv.DictReader(file)
    assert (float(row["latency_ms"]), float(row["score"])) == (trial.latency_ms, retrained.score)
    # Resumed: every figure comes from the project's cache, the finish's too; none is measured again.
    calls.clear()
    again = tune.search("convnet", data, **options)
    assert calls == [] and [r.latency_ms for r in again.trials] == [r.latency_ms for r in result.trials]
    assert again.retrained == result.retrained


def test_trials_csv_has_blank_latency_columns_where_nothing_was_measured_and_the_plot_takes_each_axis(tmp_path):
    import csv

    from kcnn.tune import pareto_plot, report

    def record(number, value, macs, params, ms):
        return report.TrialRecord(
            f"{number:04d}", number + 1, None, "COMPLETED", score=value, metric=value, macs=macs, params=params,
            latency_ms=ms, latency_spread_ms=None if ms is None else ms / 10,
        )  # fmt: skip

    # 0002 is the cheapest in MACs, 0000 in latency, 0001 in parameters.
    records = [record(0, 0.9, 3_000, 500, 0.5), record(1, 0.8, 2_000, 100, 2.0), record(2, 0.7, 1_000, 900, 1.0)]
    assert [r.trial_id for r in report.pareto_front(records)] == ["0002", "0001", "0000"]
    assert [r.trial_id for r in report.pareto_front(records, cost_axis="latency")] == ["0000"]
    assert [r.trial_id for r in report.pareto_front(records, cost_axis="params")] == ["0001", "0000"]
    for axis, label in (("macs", "MACs per image"), ("params", "parameters"), ("latency", "latency, ms per call")):
        pareto_plot.plot_pareto(tmp_path / f"{axis}.png", records, "val_accuracy", cost_axis=axis)
        assert (tmp_path / f"{axis}.png").stat().st_size > 0, label
    with pytest.raises(ValueError, match=r"`cost_axis` must be one of 'macs', 'params', 'latency'. Received: cost_axis='ms'"):
        report.pareto_front(records, cost_axis="ms")
    unmeasured = [dataclasses_replace(r) for r in records]
    report.write_trials_csv(tmp_path / "trials.csv", unmeasured, "val_accuracy")
    with open(tmp_path / "trials.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0])[4:8] == ["params", "macs", "latency_ms", "latency_spread_ms"]
    assert {(row["latency_ms"], row["latency_spread_ms"]) for row in rows} == {("", "")}
    # A retrained trial the search did not measure (resumed with latency asked) has the finish's figure.
    from kcnn.tune.selection import FinishRecord

    retrained = FinishRecord("0001", "trial", rank=1, latency_ms=2.5, latency_spread_ms=0.25)
    report.write_trials_csv(tmp_path / "trials.csv", unmeasured, "val_accuracy", finish=[retrained])
    with open(tmp_path / "trials.csv", newline="") as file:
        rows = {row["trial"]: (row["latency_ms"], row["latency_spread_ms"]) for row in csv.DictReader(file)}
    assert rows == {"0000": ("", ""), "0001": ("2.5", "0.25"), "0002": ("", "")}


def dataclasses_replace(record):
    import dataclasses

    return dataclasses.replace(record, latency_ms=None, latency_spread_ms=None)


def test_the_latency_flags_reach_the_search_config(monkeypatch):
    from kcnn import tune
    from kcnn.cli import main

    seen = []

    def fake_search(space, data, config, **kwargs):
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(tune, "search", fake_search)
    command = ["tune", "--cost", "latency", "--target-latency-ms", "2.5", "--max-latency-ms", "40"]
    command += ["--latency-batch-size", "8", "--measure-latency", "--pareto-axis", "latency"]
    with pytest.raises(SystemExit):
        main(command)
    (config,) = seen
    assert (config.cost, config.target_latency_ms, config.max_latency_ms) == ("latency", 2.5, 40.0)
    assert (config.latency_batch_size, config.measure_latency, config.pareto_axis) == (8, True, "latency")


def test_the_default_latency_target_is_the_cheapest_references_measured_once(tmp_path, monkeypatch):
    path = tmp_path / latency.CACHE_FILE
    names = ("convnet", "lenet5")
    milliseconds, name = cost.resolve_latency_target(None, names, (32, 32, 1), 10, latency.LatencyMeter(latency.LatencyCache(path), **FEW))
    assert name == "lenet5" and milliseconds > 0  # The cheapest in MACs (416,520).
    calls = counting(monkeypatch)
    meter = latency.LatencyMeter(latency.LatencyCache(path), **FEW)
    assert cost.resolve_latency_target(None, names, (32, 32, 1), 10, meter) == (milliseconds, "lenet5") and calls == []
    assert cost.resolve_latency_target(2, names, (32, 32, 1), 10, meter) == (2.0, None)
    with pytest.warns(UserWarning, match=r"No reference net fits \(8, 8, 1\) images .*--target-latency-ms"):
        assert cost.resolve_latency_target(None, ("lenet5",), (8, 8, 1), 4, meter) == (None, None)


# --------------------------------------------------------------------------
# The finish: ranked by the cost the search charged, each run's latency measured alike.


class FixedMeter:
    """A `LatencyMeter` of fixed figures, `milliseconds(configuration)`: exact orderings,
    nothing timed; `calls` holds the configurations asked for."""

    def __init__(self, milliseconds):
        self.milliseconds, self.calls = milliseconds, []

    def latency(self, model, configuration):
        self.calls.append(dict(configuration))
        value = self.milliseconds(configuration)
        return latency.Latency(median_ms=value, spread_ms=value / 10, repeats=5, batch_size=1, precision="float32")


def small_space(meter=None, filters=(4, 32)):
    from kcnn import tune

    space = tune.ConvNetSpace((32, 32, 1), 4, depth=2, filters=filters, hidden_units=8, convs_per_stage=1)
    space.latency = meter
    return space


def trial_of(space, trial_id, **values):
    import keras_tuner
    from keras_tuner.engine.trial import Trial

    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    hp.values.update(values)
    return Trial(hp, trial_id=trial_id)


def fake_finish(monkeypatch, tmp_path, config, meter):
    """`finish_search` over two trials (32 filters first, 4) and LeNet-5, their runs not
    trained but given: 99% validation accuracy for the wide trial, 97% for the narrow
    one and LeNet-5, on 10,000 images (a standard error of 0.17 points)."""
    import types

    from kcnn.tune.selection import FinishRecord

    runs = {"0000": (0.99, 2_000_000), "0001": (0.97, 100_000), "lenet5": (0.97, 416_016)}

    def run(name, kind):
        validation, macs = runs[name]
        return FinishRecord(name, kind, validation=validation, validation_examples=10_000, macs=macs, params=macs // 10)

    monkeypatch.setattr(finish, "retrain", lambda trial, *args, **kwargs: run(trial.trial_id, "trial"))
    monkeypatch.setattr(finish, "train_reference", lambda name, *args, **kwargs: run(name, "reference"))
    space = small_space(meter)
    trials = [trial_of(space, "0000", filters=32), trial_of(space, "0001", filters=4)]
    data = types.SimpleNamespace(input_shape=(32, 32, 1), num_classes=4)
    return finish.finish_search(None, space, data, config, tmp_path, trials)


def by_configuration(configuration):
    """8 ms for the wide trial (4x the 2 ms target), 1.5 for the narrow one, 1 for LeNet-5."""
    if "reference" in configuration:
        return 1.0
    return 8.0 if configuration["arguments"]["filters"][0] == 32 else 1.5


def test_the_finish_ranks_by_the_latency_the_search_charged_and_states_it(tmp_path, monkeypatch):
    from kcnn import tune
    from kcnn.tune import report, verdict

    meter = FixedMeter(by_configuration)
    config = tune.SearchConfig(cost="latency", target_latency_ms=2.0, references="lenet5", top_k=2)
    retrained, (lenet,) = fake_finish(monkeypatch, tmp_path, config, meter)
    # Each run measured once, keyed as the search keys it: a trial by its configuration, LeNet-5 as the target.
    assert [c.get("reference") or c["arguments"]["filters"] for c in meter.calls] == [(32, 64), (4, 8), "lenet5"]
    assert meter.calls[2] == {"reference": "lenet5", "classes": 4}
    wide, narrow = sorted(retrained, key=lambda r: r.name)
    assert (wide.latency_ms, wide.latency_spread_ms, narrow.latency_ms, lenet.latency_ms) == (8.0, 0.8, 1.5, 1.0)
    # The wide trial pays (8 / 2) ** -0.07; the narrow one and LeNet-5 (within the target)
    # tie, and the faster of the two is chosen, though it has 4x the narrow one's MACs.
    assert wide.score == pytest.approx(0.99 * 4**-0.07) and (narrow.score, lenet.score) == (0.97, 0.97)
    assert [(r.name, r.rank) for r in (lenet, narrow, wide)] == [("lenet5", 1), ("0001", 2), ("0000", 3)]
    # The table's latency column, and the verdict's latencies next to the MACs.
    table = report.format_finish(retrained, [lenet])
    assert re.search(r"^rank model .* MACs +ms +search$", table, re.M)
    assert re.search(r"^ +\*1 lenet5 \(ref\) .* 416\.0K +1 +$", table, re.M)
    assert re.search(r"^ +3 trial 0000 .* 2\.0M +8 +$", table, re.M)
    (comparison,) = verdict.compare(narrow, [lenet])
    assert (comparison["latency"], comparison["latency_spread"]) == ([1.5, 1.0], [0.15, 0.1])
    assert "100.0K vs 416.0K MACs, 1.5 vs 1 ms" in verdict.lines(narrow, [comparison])[1]
    # By MACs (the target LeNet-5's), the narrow trial wins the tie: the cost the user chose ranks.
    meter.calls.clear()
    by_macs = dataclasses.replace(config, cost="macs", target_latency_ms=None, target_macs=416_016)
    retrained, (lenet,) = fake_finish(monkeypatch, tmp_path, by_macs, meter)
    assert [(r.name, r.rank) for r in [*retrained, lenet]] == [("0001", 1), ("0000", 3), ("lenet5", 2)]
    assert meter.calls != []  # The meter is the search's: it measures with `--measure-latency` too.


def test_with_the_macs_cost_and_no_latency_asked_the_finish_measures_nothing(tmp_path, monkeypatch):
    from kcnn import tune
    from kcnn.tune import report, verdict

    calls = counting(monkeypatch)
    config = tune.SearchConfig(references="lenet5", target_macs=416_016, top_k=2)
    assert not config.measures_latency  # So the search gives its space no meter.
    retrained, (lenet,) = fake_finish(monkeypatch, tmp_path, config, None)
    assert calls == [] and {r.latency_ms for r in [*retrained, lenet]} == {None}
    assert [(r.name, r.rank) for r in [*retrained, lenet]] == [("0001", 1), ("0000", 3), ("lenet5", 2)]
    assert " ms " not in report.format_finish(retrained, [lenet]).splitlines()[1]
    (comparison,) = verdict.compare(retrained[0], [lenet])
    assert "latency" not in comparison and " ms" not in verdict.lines(retrained[0], [comparison])[1]


def test_the_finish_reads_the_latencies_the_search_measured_from_the_project_cache(tmp_path, monkeypatch):
    from kcnn.tune.selection import FinishRecord

    path = tmp_path / latency.CACHE_FILE
    space = small_space(latency.LatencyMeter(latency.LatencyCache(path), **FEW), filters=4)
    trial = trial_of(space, "0000")
    calls = counting(monkeypatch)
    space.build(trial.hyperparameters.copy())  # The search's measurement of the trial,
    target, _ = cost.resolve_latency_target(None, ("lenet5",), (32, 32, 1), 4, space.latency)  # and of the target.
    assert len(calls) == 2
    records = [FinishRecord("0000", "trial"), FinishRecord("lenet5", "reference"), FinishRecord("vgg16", "reference", reason="too small")]
    measured = finish.with_latency(records, space, [trial])
    assert len(calls) == 2  # Both read from the cache, not measured again.
    assert (measured[0].latency_ms, measured[1].latency_ms, measured[2]) == (space.last_build["latency_ms"], target, records[2])
    # A resumed finish (a new meter on the project's file) measures nothing either.
    space.latency = latency.LatencyMeter(latency.LatencyCache(path), **FEW)
    assert finish.with_latency(records, space, [trial]) == measured and len(calls) == 2
