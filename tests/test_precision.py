"""Precision "auto" per device: the CPU's bfloat16 units read from (fake) cpuinfo files,
the choice per model, and float32 saved models from mixed-precision runs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn import _cpu, data, lenet5, train
from kcnn.train import distribute
from kcnn.train.distribute import resolve_device

# Mixed precision and XLA are properties of the compiled steps.
pytestmark = pytest.mark.compiled

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
bogomips\t: 5200.00

processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ZEN4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw\n"
GRAVITON = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd sve bf16 i8mm\n"

needs_cpu_only = pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="GPUs decide 'auto' there")


def _fake(tmp_path, text, monkeypatch=None):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    if monkeypatch:
        monkeypatch.setattr(_cpu, "CPUINFO", str(path))
    return path


@pytest.mark.parametrize(
    "text, units",
    [(SAPPHIRE_RAPIDS, ("amx_bf16", "avx512_bf16")), (ZEN4, ("avx512_bf16",)), (SKYLAKE, ()), (GRAVITON, ()), ("", ())],
    ids=["sapphire_rapids", "zen4", "skylake", "graviton", "empty"],
)
def test_bfloat16_units_from_cpuinfo(tmp_path, text, units):
    assert _cpu.bfloat16_units(_fake(tmp_path, text)) == units


def test_cpu_flags_of_the_first_processor_and_of_a_missing_file(tmp_path):
    assert "amx_tile" in _cpu.cpu_flags(_fake(tmp_path, SAPPHIRE_RAPIDS))
    assert _cpu.cpu_flags(_fake(tmp_path, GRAVITON)) == {"fp", "asimd", "sve", "bf16", "i8mm"}
    assert _cpu.cpu_flags(tmp_path / "missing") == frozenset()


@needs_cpu_only
def test_auto_precision_on_cpus_by_units_and_model_size(tmp_path, monkeypatch):
    small = lenet5()  # 416,520 MACs per image
    _fake(tmp_path, SAPPHIRE_RAPIDS, monkeypatch)
    device = resolve_device(train.TrainConfig())
    assert (device.precision, device.cpu_bfloat16, device.xla) == ("mixed_bfloat16", ("amx_bf16", "avx512_bf16"), False)
    assert device.to_dict()["cpu_bfloat16"] == ["amx_bf16", "avx512_bf16"]
    assert resolve_device(train.TrainConfig(), small).precision == "float32"
    monkeypatch.setattr(distribute, "CPU_BFLOAT16_MIN_MACS", 416_520)
    assert resolve_device(train.TrainConfig(), small).precision == "mixed_bfloat16"
    assert resolve_device(train.TrainConfig(mixed_precision="off"), small).precision == "float32"
    _fake(tmp_path, SKYLAKE, monkeypatch)
    assert resolve_device(train.TrainConfig(), small).precision == "float32"
    assert resolve_device(train.TrainConfig()).precision == "float32"
    assert resolve_device(train.TrainConfig(mixed_precision="mixed_bfloat16")).precision == "mixed_bfloat16"


def test_a_bfloat16_run_saves_and_returns_a_float32_model(tmp_path, rng):
    x = rng.integers(0, 256, (32, 32, 32, 1), dtype=np.uint8)
    y = np.arange(32) % 2
    loaded = data.load((x, y), batch_size=16, validation_split=0.25, test_split=0.25, seed=0)
    config = train.TrainConfig(epochs=1, batch_size=16, augment=None, mixed_precision="mixed_bfloat16")
    result = train.fit("lenet5", loaded, config, output=tmp_path / "run", verbose=0)
    assert result.metadata["device"]["precision"] == "mixed_bfloat16"
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras", compile=False)
    for model in (result.model, saved):
        assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
        assert {v.dtype for v in model.variables} == {"float32"}
    for a, b in zip(result.model.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@needs_cpu_only
def test_inference_resolves_auto_as_training_does_and_computes_in_a_copy(tmp_path, monkeypatch, rng):
    model = lenet5()  # 416,520 MACs per image
    x = rng.random((8, 32, 32, 1), dtype=np.float32)
    _fake(tmp_path, SKYLAKE, monkeypatch)
    assert train.inference_model(model) is model
    _fake(tmp_path, SAPPHIRE_RAPIDS, monkeypatch)
    assert train.inference_model(model, "off") is model
    monkeypatch.setattr(distribute, "CPU_BFLOAT16_MIN_MACS", 416_520)
    fast = train.inference_model(model, "mixed_bfloat16")
    assert fast is not model and train.inference_model(model, "mixed_bfloat16") is fast  # made once
    policies = {layer.name: layer.dtype_policy.name for layer in fast.layers[1:]}
    assert policies.pop("predictions") == "float32" and set(policies.values()) == {"mixed_bfloat16"}
    assert [layer.name for layer in fast.layers] == [layer.name for layer in model.layers]
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}  # the model is left alone
    # bfloat16 keeps 8 bits of mantissa: probabilities of about 0.1 differ by about
    # 2e-4 from float32's. The tolerance is ten times that, and far below what the
    # change of weights below does to them, so a stale copy fails.
    tolerance = 2e-3
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(fast.predict(x, verbose=0), expected, rtol=0, atol=tolerance)
    # Weights changed after the copy was made are the ones it predicts with.
    kernel, bias = model.get_layer("conv1").kernel, model.get_layer("predictions").bias
    kernel.assign(kernel * 2)
    bias.assign(bias + np.linspace(-1, 1, 10, dtype=np.float32))  # about 0.1 on each probability
    changed = model.predict(x, verbose=0)
    assert np.abs(changed - expected).max() > 20 * tolerance  # a change the comparison sees
    np.testing.assert_allclose(fast.predict(x, verbose=0), expected, rtol=0, atol=tolerance)  # the copy as it was
    assert train.inference_model(model, "mixed_bfloat16") is fast  # the same copy, its weights taken again
    np.testing.assert_allclose(fast.predict(x, verbose=0), changed, rtol=0, atol=tolerance)
    with pytest.raises(ValueError, match=r"one of \('auto', 'off', 'mixed_float16', 'mixed_bfloat16'\)\. Received: mixed_precision='bf16'"):
        train.inference_model(model, "bf16")


def test_the_copies_for_inference_do_not_keep_a_model_alive():
    import gc
    import weakref

    model = lenet5()
    train.inference_model(model, "off")
    train.inference_model(model, "mixed_bfloat16")
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_evaluate_and_predict_in_bfloat16_agree_with_float32(rng):
    x = rng.integers(0, 256, (24, 32, 32, 1), dtype=np.uint8)
    loaded = data.load((x, np.arange(24) % 3), batch_size=8, validation_split=0.25, test_split=0.25, seed=0)
    model = lenet5(classes=3)
    exact = train.evaluate(model, loaded, mixed_precision="off")
    rounded = train.evaluate(model, loaded, mixed_precision="mixed_bfloat16")
    assert rounded["examples"] == exact["examples"] == 6
    assert rounded["loss"] == pytest.approx(exact["loss"], rel=0.02)
    images = data.as_numpy(loaded.test)[0]
    exact, rounded = (
        [dict(row) for row in train.predict(model, images, top_k=3, mixed_precision=precision)]
        for precision in ("off", "mixed_bfloat16")
    )
    assert len(rounded) == 6 and all(row.keys() == {"0", "1", "2"} for row in rounded)
    for a, b in zip(exact, rounded, strict=True):
        assert all(abs(a[name] - b[name]) < 0.02 for name in a)
