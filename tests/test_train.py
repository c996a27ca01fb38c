"""kcnn.train: config, optimizer, fit on every family, resumption (after SIGKILL: test_lock.py),
divergence, saved models, fine-tuning, features and image search. Tiny data throughout."""

import csv
import functools
import inspect
import json
import os
import warnings

import keras
import numpy as np
import pytest

import kcnn
from kcnn import _cpu, data, train
from kcnn.train.compile import make_optimizer, make_schedule, steps_per_execution
from kcnn.train.distribute import DeviceSettings, prepare_model, resolve_device
from kcnn.train.driver import save_run
from kcnn.train.runs import RunFolder

# Plain SGD: no optimizer slots to create for the big fully connected layers.
FAST = dict(epochs=1, batch_size=16, augment=None, warmup_epochs=0.0, optimizer="sgd", momentum=0.0, learning_rate=0.01)


@functools.cache
def tiny(size=32, channels=3, classes=3, n=48, holdout=True):
    """Seeded random images with a class-dependent brightness, split 50/25/25, or all
    for training when not `holdout` (no validation or test pass to compile: faster)."""
    rng = np.random.default_rng(size * 10 + channels)
    y = np.arange(n) % classes
    x = rng.integers(0, 128, size=(n, size, size, channels)) + (y * 127 // max(classes - 1, 1))[:, None, None, None]
    fraction = 0.25 if holdout else 0.0
    return data.load((x.astype(np.uint8), y), batch_size=16, validation_split=fraction, test_split=fraction, seed=0)


def weights_by_layer(model):
    return {layer.name: [np.array(w) for w in layer.weights] for layer in _leaves(model) if layer.weights}


def _leaves(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaves(layer)
        else:
            yield layer


def changed_layers(before, after):
    return {name for name in before if any(not np.array_equal(a, b) for a, b in zip(before[name], after[name]))}


# --------------------------------------------------------------------------
# Config, schedule, optimizer.


@pytest.mark.parametrize(
    "field, value",
    [("epochs", 0), ("batch_size", 1.5), ("optimizer", "rmsprop"), ("learning_rate", 0), ("label_smoothing", 1.0),
     ("schedule", "linear"), ("augment", "rotate"), ("mixed_precision", "float16"), ("learning_rate", float("nan")),
     ("steps_per_execution", 0), ("steps_per_execution", "fast")],
)
def test_config_refuses_bad_values(field, value):
    with pytest.raises(ValueError, match=f"Received: {field}="):
        train.TrainConfig(**{field: value})


def test_config_round_trips_through_json():
    config = train.TrainConfig(optimizer="sgd", augment=None, epochs=3)
    assert train.TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="Unknown TrainConfig fields"):
        train.TrainConfig.from_dict({"epoch": 3})


def test_auto_steps_per_execution_amortizes_the_call_for_small_models_only():
    lenet = kcnn.lenet5()  # 416,520 MACs per image
    # ceil(2e9 / (3 * 416,520 * 64)) = 26, clipped to the 20 steps of a digits epoch.
    assert steps_per_execution(lenet, train.TrainConfig(), 20) == 20
    # A run of fewer than 128 steps is too short to repay the loop's tracing.
    assert steps_per_execution(lenet, train.TrainConfig(epochs=7), 20) == 20  # 140 steps
    assert steps_per_execution(lenet, train.TrainConfig(epochs=6), 21) == 1  # 126 steps
    assert steps_per_execution(lenet, train.TrainConfig(), 100) == 26
    assert steps_per_execution(lenet, train.TrainConfig(batch_size=256), 100) == 7
    assert steps_per_execution(lenet, train.TrainConfig(batch_size=1), 1000) == 32  # at most 32
    resnet = kcnn.resnet18(input_shape=(32, 32, 3), classes=10, stem="small")  # 555 M MACs
    assert steps_per_execution(resnet, train.TrainConfig(), 100) == 1
    assert steps_per_execution(lenet, train.TrainConfig(steps_per_execution=4), 23) == 4
    # Two replicas: 1, "auto" or not (keras-team/keras#19246), an explicit value with a warning.
    assert steps_per_execution(lenet, train.TrainConfig(), 20, replicas=2) == 1
    with pytest.warns(UserWarning, match="does not work with 2 replicas"):
        assert steps_per_execution(lenet, train.TrainConfig(steps_per_execution=4), 20, replicas=2) == 1
    inputs = keras.Input((None, None, 1))  # MACs unknown without a size
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    assert steps_per_execution(keras.Model(inputs, keras.layers.Dense(3)(pooled)), train.TrainConfig(), 100) == 1


def test_schedules_warm_up_then_decay():
    config = train.TrainConfig(epochs=10, learning_rate=0.1, warmup_epochs=2, schedule="cosine")
    schedule = make_schedule(config, steps_per_epoch=10)
    rates = np.array([float(schedule(step)) for step in range(100)])
    np.testing.assert_allclose(rates[:20], 0.1 * np.arange(1, 21) / 20, rtol=1e-6)
    assert rates[20] == pytest.approx(0.1) and rates[-1] < 1e-3 and np.all(np.diff(rates[20:]) <= 1e-9)
    step = make_schedule(train.TrainConfig(schedule="step", learning_rate=0.1, warmup_epochs=0, decay_epochs=3), 10)
    assert [float(step(s)) for s in (0, 29, 30, 60)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert make_schedule(train.TrainConfig(schedule="constant", warmup_epochs=0), None) == 3e-3
    with pytest.raises(ValueError, match="steps per epoch"):
        make_schedule(train.TrainConfig(), None)


def test_make_optimizer_follows_the_config():
    sgd = make_optimizer(train.TrainConfig(optimizer="sgd", momentum=0.8, weight_decay=0), 10)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.8 and sgd.weight_decay is None
    adamw = make_optimizer(train.TrainConfig(optimizer="adamw", weight_decay=0.05), 10)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == 0.05
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    assert adamw._use_weight_decay(dense.kernel) and not adamw._use_weight_decay(dense.bias)


def test_label_smoothing_loss_matches_keras():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    train.compile_model(model, train.TrainConfig(label_smoothing=0.1), steps_per_epoch=1)
    y = np.array([0, 2])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(3)[y], p)
    assert float(model.loss(y, p)) == pytest.approx(float(expected), rel=1e-5)


# --------------------------------------------------------------------------
# fit on every family.

# GoogLeNet's nine Inception modules (its stage layout, hence its auxiliary heads after
# 4a and 4d) at 1/16 of the paper's widths: the same layers in a file 40x smaller.
TINY_INCEPTION = tuple(tuple(tuple(max(1, width // 16) for width in block) for block in stage) for stage in inspect.signature(kcnn.googlenet).parameters["stages"].default)

FAMILIES = [
    ("mlp", {}, 32, 3),
    ("convnet", {}, 32, 3),
    ("lenet5", {}, 32, 1),
    ("alexnet", {}, 67, 3),  # the smallest input AlexNet accepts
    ("vgg11", {}, 32, 3),
    ("googlenet", {"aux_logits": True, "stem_width": 8, "stages": TINY_INCEPTION}, 65, 3),  # the smallest with auxiliary heads
    ("resnet18", {"stem": "small", "width": 8}, 32, 3),
]


# AlexNet's 58M dense weights cost more stepped eagerly (13.7 s) than traced (9.1 s).
COMPILED = {"alexnet"}


@pytest.mark.parametrize(
    "name, kwargs, size, channels",
    [pytest.param(*f, id=f[0], marks=[pytest.mark.compiled] if f[0] in COMPILED else []) for f in FAMILIES],
)
def test_fit_trains_every_family_and_saves_a_loadable_model(tmp_path, name, kwargs, size, channels):
    dataset = tiny(size, channels, n=32, holdout=False)
    result = train.fit(name, dataset, train.TrainConfig(**FAST), output=tmp_path / "run", model_kwargs=kwargs, verbose=0)
    assert result.path == tmp_path / "run"
    loaded = keras.saving.load_model(result.path / "model.keras")
    images, _ = data.as_numpy(dataset.train)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), result.model.predict(images, verbose=0), atol=1e-6)
    # One output: GoogLeNet's auxiliary heads are dropped from the saved model.
    assert len(loaded.outputs) == 1 and not any(layer.name.startswith("aux") for layer in loaded.layers)
    metadata = json.loads((result.path / "metadata.json").read_text())
    assert metadata["status"] == "completed" and metadata["model"]["name"] == name
    assert metadata["model"]["builder_arguments"]["input_shape"] == [size, size, channels]
    assert metadata["model"]["parameters"]["total"] == loaded.count_params()
    assert len(result.history) == 1 and np.isfinite(result.history[0]["loss"])
    if name == "googlenet":
        assert metadata["model"]["training_outputs"] == ["predictions", "aux1_predictions", "aux2_predictions"]
        assert {"aux1_predictions_loss", "accuracy"} <= set(result.history[0])


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("lenet") / "run"
    config = train.TrainConfig(epochs=2, batch_size=16, augment=None)
    return train.fit("lenet5", tiny(32, 1, classes=4), config, output=output, verbose=0)


def test_fit_writes_the_documented_run_folder(lenet_run):
    path = lenet_run.path
    names = {p.name for p in path.iterdir()}
    assert {"model.keras", "metadata.json", "history.csv", "curves.png"} <= names
    assert "checkpoint" not in names  # removed once the run is finished
    assert not any(name.startswith(".") for name in names)  # no temporary files left
    if _has_tensorboard():
        assert any((path / "logs").rglob("events.out.tfevents.*"))
    metadata = json.loads((path / "metadata.json").read_text())
    assert {"model", "dataset", "class_names", "preprocessing", "config", "metrics", "versions", "device"} <= set(metadata)
    assert metadata["class_names"] == ["0", "1", "2", "3"]
    assert metadata["config"] == train.TrainConfig(epochs=2, batch_size=16, augment=None).to_dict()
    # LeNet-5 trains in float32 even on a CPU with bfloat16 units (too small to gain).
    cpu_bfloat16 = list(_cpu.bfloat16_units())
    assert metadata["device"] == {"precision": "float32", "xla": False, "strategy": None, "replicas": 1, "devices": [], "cpu_bfloat16": cpu_bfloat16}
    # 24 training images at batch 16, 2 epochs: 4 steps, too few for "auto" to take the
    # multi-step loop (AUTO_MIN_RUN_STEPS).
    assert metadata["steps_per_execution"] == {"0": 1}
    assert metadata["metrics"]["best_epoch"] in (1, 2) and metadata["metrics"]["epochs"] == 2
    assert set(metadata["metrics"]["test"]) == {"loss", "crossentropy", "accuracy", "examples"}
    with open(path / "history.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"} <= set(rows[0])
    assert (path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _has_tensorboard():
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def test_evaluate_and_predict_use_the_run_metadata(lenet_run):
    dataset = tiny(32, 1, classes=4)
    metrics = train.evaluate(lenet_run.path, dataset)
    assert metrics == lenet_run.metrics["test"]
    images, labels = data.as_numpy(dataset.test)
    probabilities = lenet_run.model.predict(images, verbose=0)
    assert metrics["accuracy"] == pytest.approx(np.mean(probabilities.argmax(1) == labels))
    # Raw 0..255 pixels go through the run's preprocessing, as in training.
    top = train.predict(lenet_run.path, (images * 255).round().astype(np.uint8), top_k=2)
    assert len(top) == len(images) and all(len(t) == 2 for t in top)
    assert [t[0][0] for t in top] == [str(i) for i in probabilities.argmax(1)]
    assert sum(p for _, p in train.predict(lenet_run.path, images[:1], top_k=10)[0]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="Received: top_k=0"):
        train.predict(lenet_run.path, images[:1], top_k=0)


def test_predict_in_batches_equals_keras_predict_over_uneven_batches(rng):
    from kcnn.train.inference import predict_in_batches

    inputs = keras.Input((6, 6, 1))
    features = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, name="conv")(inputs))
    main, aux = keras.layers.Dense(3, name="main")(features), keras.layers.Dense(2, name="aux")(features)
    model = keras.Model(inputs, [main, aux])
    x = rng.random((7, 6, 6, 1), dtype=np.float32)
    expected = model.predict(x, verbose=0)[0]
    for batch_size in (1, 3, 7, 64):
        np.testing.assert_allclose(predict_in_batches(model, x, batch_size=batch_size), expected, rtol=1e-6, atol=1e-6)
    assert predict_in_batches(model, x[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="`batch_size` must be a positive int. Received: batch_size=0"):
        predict_in_batches(model, x, batch_size=0)


def test_predict_warns_on_images_unlike_the_training_images(tmp_path):
    # The digits are white on black: a dark border around brighter strokes.
    from kcnn import lenet5

    digits = data.load("digits", batch_size=64)
    save_run(lenet5(), digits, train.TrainConfig(**FAST), tmp_path / "run")
    statistics = json.loads((tmp_path / "run" / "metadata.json").read_text())["input_statistics"]
    assert statistics == digits.input_statistics and statistics["source_size"] == [8, 8]
    raw, _ = data.as_numpy(data.load("digits", normalize=False, batch_size=64).test)
    seven = raw[0].astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train.predict(tmp_path / "run", [seven, seven[::2, ::2]], top_k=1)  # as trained: no warning
    with pytest.warns(UserWarning, match=r"image 1 looks inverted: the model was trained on images with a dark background") as caught:
        top = train.predict(tmp_path / "run", [seven, 255 - seven], top_k=1)
    assert len(top) == 2 and len(caught) == 1  # predicted all the same
    photo = np.full((480, 640, 1), 200, np.uint8)
    photo[:, :, 0] = np.linspace(0, 255, 640).astype(np.uint8)
    with pytest.warns(UserWarning, match=r"image 0 is 480x640 pixels; the model was trained on images of about 8x8"):
        train.predict(tmp_path / "run", [photo], top_k=1)


def test_save_run_writes_a_model_trained_elsewhere(tmp_path):
    from kcnn import lenet5

    dataset = tiny(32, 1, classes=4)
    metadata = save_run(lenet5(classes=4), dataset, train.TrainConfig(**FAST), tmp_path / "run", kind="search")
    assert metadata["status"] == "completed" and metadata["kind"] == "search"
    assert train.evaluate(tmp_path / "run", dataset) == metadata["metrics"]["test"]
    assert train.load(tmp_path / "run")[1] == json.loads((tmp_path / "run" / "metadata.json").read_text())
    with pytest.raises(ValueError, match="already holds a run"):
        save_run(lenet5(classes=4), dataset, train.TrainConfig(**FAST), tmp_path / "run")


def test_fit_refuses_to_overwrite_a_finished_run(lenet_run):
    with pytest.raises(ValueError, match="holds a finished run"):
        train.fit("lenet5", tiny(32, 1, classes=4), train.TrainConfig(**FAST), output=lenet_run.path, verbose=0)


def test_fit_checks_model_and_data(tmp_path):
    with pytest.raises(ValueError, match="3 classes"):
        train.fit(keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(5, activation="softmax")]), tiny(), output=tmp_path)
    with pytest.raises(ValueError, match="do not fit"):
        train.fit("lenet5", tiny(32, 3), model_kwargs={"input_shape": (32, 32, 1)}, output=tmp_path)


# --------------------------------------------------------------------------
# Resumption (after a real SIGKILL, in a second process: tests/test_lock.py).


def test_resuming_with_another_config_is_refused(tmp_path):
    run = RunFolder(tmp_path)
    run.write_metadata({"format": "kcnn.run/1", "kind": "fit", "status": "running", "model": {"name": "lenet5"}, "config": train.TrainConfig(**FAST).to_dict()})
    with pytest.raises(ValueError, match="learning_rate"):
        train.fit("lenet5", tiny(32, 1), train.TrainConfig(**{**FAST, "learning_rate": 0.1}), output=tmp_path, verbose=0)


def test_early_stopping_counts_epochs_since_the_best(tmp_path):
    config = train.TrainConfig(epochs=10, batch_size=16, augment=None, learning_rate=1e-12, early_stopping=2, monitor="val_accuracy")
    result = train.fit("lenet5", tiny(32, 1), config, output=tmp_path, verbose=0)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.metrics["stopped_early"] and result.metrics["best_epoch"] == 1


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.at = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.at:
            raise KeyboardInterrupt


def test_fine_tune_resumes_in_its_second_phase(tmp_path):
    from kcnn import convnet

    def base():
        return convnet(filters=(4, 8), hidden_units=(), input_shape=(16, 16, 1), classes=5)

    dataset = tiny(16, 1, n=32, holdout=False)
    config = train.TrainConfig(epochs=4, batch_size=16, augment=None)
    with pytest.raises(KeyboardInterrupt):
        train.fine_tune(base(), dataset, config, head_epochs=2, output=tmp_path, callbacks=[Interrupt(3)], verbose=0)
    run = RunFolder(tmp_path)
    assert [row["epoch"] for row in run.read_history()] == [1, 2, 3] and run.read_state()["phases_done"] == 1
    result = train.fine_tune(base(), dataset, config, head_epochs=2, output=tmp_path, verbose=0)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert result.metadata["fine_tuning"]["unfreeze"] == ["block2"] and result.metadata["status"] == "completed"
    # Each phase warms up for an epoch (2 steps) to its peak; phase 2's is a tenth.
    assert result.history[0]["learning_rate"] == pytest.approx(3e-3)
    assert result.history[2]["learning_rate"] == pytest.approx(3e-4)


# --------------------------------------------------------------------------
# Divergence, precision.


def test_nan_loss_stops_the_run_with_a_clear_message(tmp_path):
    config = train.TrainConfig(epochs=3, batch_size=8, optimizer="sgd", learning_rate=1e30, warmup_epochs=0, augment=None)
    with pytest.raises(train.NonFiniteLossError, match=r"Training diverged: `loss` is (nan|inf) at epoch 1, batch \d+.*too high"):
        train.fit("lenet5", tiny(32, 1), config, output=tmp_path, verbose=0)
    metadata = RunFolder(tmp_path).read_metadata()
    assert metadata["status"] == "diverged" and "diverged" in metadata["error"]


def test_mixed_precision_is_applied_per_layer_not_globally():
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv"), keras.layers.Flatten(name="flatten"), keras.layers.Dense(3, activation="softmax", name="predictions")]
    )
    device = DeviceSettings(precision="mixed_bfloat16", xla=False, strategy=None, devices=())
    mixed = prepare_model(model, device)
    assert keras.config.dtype_policy().name == "float32"
    assert mixed.get_layer("conv").dtype_policy.name == "mixed_bfloat16"
    assert mixed.get_layer("predictions").dtype_policy.name == "float32"  # softmax and loss in float32
    assert [layer.name for layer in mixed.layers] == [layer.name for layer in model.layers]
    for a, b in zip(model.get_weights(), mixed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert mixed(np.ones((1, 8, 8, 1), np.float32)).dtype == "float32"
    float32 = DeviceSettings(precision="float32", xla=False, strategy=None, devices=())
    assert prepare_model(model, float32) is model


@pytest.mark.compiled  # A mirrored or bfloat16 copy trains as it would for a user.
@pytest.mark.parametrize(
    "device",
    [dict(), dict(mixed_precision="mixed_bfloat16"), dict(distribution="mirrored")],
    ids=["float32", "mixed_bfloat16", "mirrored"],
)
def test_fit_leaves_the_best_weights_in_the_given_model_on_every_device(device, tmp_path):
    # The same contract whether the model itself trains (float32, no strategy) or a
    # copy with another dtype policy or mirrored variables does.
    from kcnn import lenet5

    model = lenet5(classes=4)
    config = train.TrainConfig(epochs=2, batch_size=16, augment=None, **device)
    result = train.fit(model, tiny(32, 1, classes=4), config, output=tmp_path, verbose=0)
    assert result.metadata["device"]["precision"] == device.get("mixed_precision", "float32")
    expected_strategy = "MirroredStrategy" if device.get("distribution") == "mirrored" else None
    assert result.metadata["device"]["strategy"] == expected_strategy
    assert result.model is not model
    trained = dict(zip([w.path for w in result.model.weights], result.model.get_weights()))
    assert len(trained) == len(model.weights)
    for weight, value in zip(model.weights, model.get_weights()):
        np.testing.assert_array_equal(value, trained[weight.path])
    assert model.get_layer("conv1").dtype_policy.name == "float32"  # the given model keeps its policy


def test_loss_means_the_same_in_history_and_evaluate(tmp_path):
    # Label smoothing makes the training loss larger than the plain cross-entropy: each
    # name means one quantity, the same in history.csv and in evaluate().
    config = train.TrainConfig(epochs=2, batch_size=16, augment=None, label_smoothing=0.2)
    result = train.fit("lenet5", tiny(32, 1, classes=4), config, output=tmp_path, verbose=0)
    best = next(row for row in result.history if row["epoch"] == result.metrics["best_epoch"])
    validation = train.evaluate(result.path, tiny(32, 1, classes=4), split="validation")
    assert validation["loss"] == pytest.approx(best["val_loss"], rel=1e-4)
    assert validation["crossentropy"] == pytest.approx(best["val_crossentropy"], rel=1e-4)
    assert validation["loss"] > validation["crossentropy"]
    assert result.metrics["validation"]["loss"] == best["val_loss"]


def test_bn_momentum_sets_how_fast_the_moving_statistics_follow_the_batches(rng):
    from kcnn.layers import FusedBatchNormalization
    from kcnn.train.compile import compile_model

    inputs = keras.Input((4, 4, 2))
    nested = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.BatchNormalization(name="inner_bn")], name="nested")
    x = FusedBatchNormalization(name="bn")(nested(inputs))
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    config = train.TrainConfig(bn_momentum=0.25, steps_per_execution=1, schedule="constant", warmup_epochs=0)
    compile_model(model, config, steps_per_epoch=1)
    assert model.get_layer("bn").momentum == 0.25 and nested.get_layer("inner_bn").momentum == 0.25
    x = rng.normal(3.0, 2.0, size=(8, 4, 4, 2)).astype("float32")
    model.train_on_batch(x, np.array([0, 1] * 4))
    # moving = momentum * moving + (1 - momentum) * batch mean, from moving mean 0.
    np.testing.assert_allclose(nested.get_layer("inner_bn").moving_mean, 0.75 * x.mean(axis=(0, 1, 2)), rtol=1e-5)
    with pytest.raises(ValueError, match=r"Received: bn_momentum=1"):
        train.TrainConfig(bn_momentum=1)


def test_auto_device_settings_on_a_cpu_without_bfloat16(monkeypatch, tmp_path):
    # Precision "auto" on CPUs with bfloat16 units: tests/test_precision.py.
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    monkeypatch.setattr(_cpu, "CPUINFO", str(tmp_path / "cpuinfo"))
    device = resolve_device(train.TrainConfig())
    assert (device.precision, device.xla, device.strategy, device.cpu_bfloat16) == ("float32", False, None, ())


# --------------------------------------------------------------------------
# Fine-tuning.


class Snapshots(keras.callbacks.Callback):
    """Every layer's weights (BatchNorm statistics included) when a phase begins and ends."""

    def __init__(self):
        super().__init__()
        self.taken = []

    def on_train_begin(self, logs=None):
        self.taken.append(weights_by_layer(self.model))

    def on_train_end(self, logs=None):
        self.taken.append(weights_by_layer(self.model))


def test_fine_tune_freezes_then_unfreezes_the_top_stage_of_a_resnet(tmp_path, caplog):
    from kcnn import resnet18

    base = resnet18(stem="small", width=8, input_shape=(32, 32, 3), classes=10)
    original = weights_by_layer(base)
    snapshots = Snapshots()
    config = train.TrainConfig(epochs=2, batch_size=16, augment=None, learning_rate=0.01)
    with caplog.at_level("INFO", logger="kcnn"):
        result = train.fine_tune(base, tiny(n=32, holdout=False), config, head_epochs=1, output=tmp_path, callbacks=[snapshots], verbose=0)
    assert [record.getMessage() for record in caplog.records if record.name == "kcnn"] == [
        "phase 1/2, epochs 1-1: the new classifier on the frozen backbone",
        "phase 2/2, epochs 2-2: unfrozen from conv5 at 0.1x the learning rate",
    ]
    assert [phase["epochs"] for phase in result.metadata["phases"]] == [1, 1]
    start1, end1, start2, end2 = snapshots.taken
    backbone = set(original) - {"predictions"}
    assert not changed_layers({n: original[n] for n in backbone}, start1)
    assert changed_layers(start1, end1) == {"predictions"}  # the frozen backbone is bit-identical
    changed = changed_layers(start2, end2)
    assert changed - {"predictions"} and all(name.startswith("conv5_") for name in changed - {"predictions"})
    assert not any(name.endswith("_bn") for name in changed)  # BatchNorm stays in inference mode
    assert result.metadata["fine_tuning"]["unfreeze"] == ["conv5"]
    assert result.model.output_shape == (None, 3) and len(result.history) == 2


def test_fine_tune_works_on_a_keras_applications_model(tmp_path):
    base = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, include_top=False)
    snapshots = Snapshots()
    config = train.TrainConfig(epochs=2, batch_size=16, augment=None)
    result = train.fine_tune(base, tiny(n=32, holdout=False), config, head_epochs=1, output=tmp_path, callbacks=[snapshots], verbose=0)
    start1, end1, start2, end2 = snapshots.taken
    assert changed_layers(start1, end1) == {"predictions"}
    unfrozen = set(result.metadata["fine_tuning"]["unfrozen_layers"])
    assert result.metadata["fine_tuning"]["unfreeze"] == ["block_16"]
    assert changed_layers(start2, end2) <= unfrozen and "block_16_project" in unfrozen
    assert "avg_pool" in {layer.name for layer in result.model.layers}


def test_unfreeze_prefixes_stop_at_a_digit_boundary():
    inputs = keras.Input((4,))
    x = inputs
    for name in ("block1_dense", "block2_dense", "block10_dense", "predictions"):
        x = keras.layers.Dense(4, name=name)(x)
    model = keras.Model(inputs, x)
    assert train.set_trainable(model, ["block10"]) == ["block10_dense", "predictions"]
    assert train.set_trainable(model, ["block2"]) == ["block2_dense", "block10_dense", "predictions"]
    with pytest.raises(ValueError, match="Received: unfreeze=\\['block3'\\]"):
        train.set_trainable(model, ["block3"])


# --------------------------------------------------------------------------
# Features and image search.


def test_feature_extractor_taps_fc7_and_pooled_features():
    from kcnn import alexnet, resnet18, vgg11
    from kcnn._keras_graph import producer

    vgg = vgg11(input_shape=(32, 32, 3), classes=3)
    fc7 = train.feature_extractor(vgg, "fc7")
    assert fc7.output_shape == (None, 4096) and producer(fc7.outputs[0]).name == "fc2"
    assert producer(train.feature_extractor(vgg).outputs[0]).name == "fc2"
    assert producer(train.feature_extractor(alexnet(input_shape=(67, 67, 3), classes=3), "fc7").outputs[0]).name == "fc7"
    resnet = resnet18(stem="small", input_shape=(32, 32, 3), classes=3)
    assert train.feature_extractor(resnet).output_shape == (None, 512)
    pooled = train.feature_extractor(resnet, "conv4_block2_out", pooling="max")
    assert pooled.output_shape == (None, 256)
    with pytest.raises(ValueError, match="Received: layer='fc9'"):
        train.feature_extractor(resnet, "fc9")


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_nearest_neighbours_matches_brute_force(metric, rng):
    db = rng.normal(size=(50, 8))
    queries = rng.normal(size=(4, 8))
    indices, distances = train.nearest_neighbours(db, queries, k=3, metric=metric)
    if metric == "cosine":
        unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
        full = 1 - unit(queries) @ unit(db).T
    else:
        full = np.linalg.norm(queries[:, None] - db[None], axis=2)
    np.testing.assert_array_equal(indices, np.argsort(full, axis=1)[:, :3])
    np.testing.assert_allclose(distances, np.sort(full, axis=1)[:, :3], atol=1e-9)
    index, distance = train.nearest_neighbours(db, db[7], k=1, metric=metric)
    assert index.tolist() == [7] and distance[0] == pytest.approx(0, abs=1e-7)
    with pytest.raises(ValueError, match="Received: k=51"):
        train.nearest_neighbours(db, db[0], k=51)


def test_metadata_names_the_files_the_loader_skipped(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "images" / label / f"{i}.png")
    (tmp_path / "images" / "b" / "broken.png").write_bytes(b"not a png")
    config = train.TrainConfig(**FAST)
    with pytest.warns(UserWarning, match="broken.png"):
        result = train.fit(kcnn.convnet(filters=(4,), hidden_units=(), input_shape=(16, 16, 3), classes=2), str(tmp_path / "images"),
                           config, output=tmp_path / "run", verbose=0)
    skipped = result.metadata["dataset"]["skipped_files"]
    assert [os.path.basename(entry["path"]) for entry in skipped] == ["broken.png"] and skipped[0]["reason"]
    assert json.loads((tmp_path / "run" / "metadata.json").read_text())["dataset"]["skipped_files"] == skipped


# --------------------------------------------------------------------------
# The suite's own switch (tests/conftest.py): eager steps unless a test is marked.


def _compiled_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model


def test_an_unmarked_test_runs_keras_steps_eagerly(request):
    assert _compiled_model().run_eagerly is not request.config.getoption("--compiled")


@pytest.mark.compiled
def test_a_test_marked_compiled_compiles_its_steps():
    assert _compiled_model().run_eagerly is False
