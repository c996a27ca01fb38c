"""kcnn.tune.latency: the latency of a model's inference path, measured (medians of timed
runs with their interquartile range), cached per configuration in a search's project, and
the cost term and trials.csv that use it. No timing thresholds: only orderings."""

import json
import subprocess
import sys

import keras
import pytest

from kcnn import shapes
from kcnn.tune import cost, latency

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
    for figure in (fast, slow):
        assert figure.spread_ms >= 0 and figure.repeats == 5 and figure.batch_size == 1
        assert figure.precision == "float32"  # "auto" on this CPU for models this small
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
