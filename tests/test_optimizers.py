"""Adam and AdamW on TensorFlow's fused kernel (`kcnn.train.optimizers`) follow
Keras' own step for step."""

import keras
import numpy as np
import pytest

from kcnn.layers import FusedBatchNormalization
from kcnn.train import compile as kcompile
from kcnn.train._keras_optimizer import adam_moments
from kcnn.train.config import TrainConfig
from kcnn.train.distribute import DeviceSettings, prepare_model
from kcnn.train.optimizers import FusedAdam, FusedAdamW

# The fused optimizers' updates are traced into the train step: compiled, as users run them.
pytestmark = pytest.mark.compiled


def _trajectory(optimizer, rng_seed=0, steps=5):
    """Weights and optimizer variables of a small conv net after `steps` updates with
    fixed gradients; the bias is excluded from weight decay, as kcnn does."""
    keras.utils.set_random_seed(rng_seed)
    model = keras.Sequential(
        [keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, name="conv"), keras.layers.Flatten(), keras.layers.Dense(4, name="dense")]
    )
    rng = np.random.default_rng(rng_seed)
    grads = [[rng.normal(size=v.shape).astype(np.float32) for v in model.trainable_variables] for _ in range(steps)]
    if optimizer.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    for step in grads:
        optimizer.apply(step, model.trainable_variables)
    return [v.numpy() for v in model.trainable_variables] + [v.numpy() for v in optimizer.variables]


@pytest.mark.parametrize(
    "fused, keras_class, options",
    [
        (FusedAdam, keras.optimizers.Adam, {}),
        (FusedAdam, keras.optimizers.Adam, {"weight_decay": 0.1}),
        (FusedAdamW, keras.optimizers.AdamW, {"weight_decay": 0.05}),
        (FusedAdamW, keras.optimizers.AdamW, {"weight_decay": 0.05, "amsgrad": True}),  # Keras' own step
    ],
    ids=["adam", "adam-decay", "adamw", "adamw-amsgrad"],
)
def test_fused_adam_follows_keras_step_for_step(fused, keras_class, options):
    schedule = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=10)
    expected = _trajectory(keras_class(learning_rate=schedule, **options))
    got = _trajectory(fused(learning_rate=schedule, **options))
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        # Float32 rounding of another order of operations: 1e-6 of steps of about 1e-2.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected[0], _trajectory(keras_class(learning_rate=schedule, **options), steps=0)[0])  # it moved


def test_make_optimizer_uses_the_fused_kernels_and_they_round_trip():
    adamw = kcompile.make_optimizer(TrainConfig(), steps_per_epoch=10)
    assert type(adamw) is FusedAdamW and isinstance(adamw, keras.optimizers.AdamW)
    assert type(kcompile.make_optimizer(TrainConfig(optimizer="adam"), 10)) is FusedAdam
    assert type(kcompile.make_optimizer(TrainConfig(optimizer="sgd"), 10)) is keras.optimizers.SGD
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(adamw))
    assert type(restored) is FusedAdamW and restored.weight_decay == adamw.weight_decay


def test_a_checkpoint_written_with_keras_adamw_resumes_into_the_fused_one(tmp_path, rng):
    """Runs interrupted under an earlier kcnn (Keras' AdamW) resume: the optimizer's
    variables are the same, by name and shape."""

    def compiled(optimizer):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(3)])
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        return model

    x, y = rng.random((8, 4, 4, 1), dtype=np.float32), np.arange(8) % 3
    before = compiled(keras.optimizers.AdamW(0.01, weight_decay=0.01))
    before.fit(x, y, epochs=2, batch_size=4, verbose=0)
    before.save_weights(tmp_path / "state.weights.h5")
    after = compiled(FusedAdamW(0.01, weight_decay=0.01))
    after.optimizer.build(after.trainable_variables)
    after.load_weights(tmp_path / "state.weights.h5")
    assert int(after.optimizer.iterations.numpy()) == 4
    for a, b in zip(after.optimizer.variables, before.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # And it trains on from there as Keras' AdamW would.
    before.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    after.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    for a, b in zip(after.get_weights(), before.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("keras_class", [keras.optimizers.Adam, keras.optimizers.AdamW])
def test_the_moments_read_are_the_ones_keras_own_adam_step_updates(keras_class, rng):
    """Guards `kcnn.train._keras_optimizer`, the one reader of Keras' optimizer
    internals: it fails as soon as Keras moves or renames the moments, or stops
    updating the ones found there."""
    optimizer = keras_class(learning_rate=0.1, beta_1=0.5, beta_2=0.75)
    variables = [keras.Variable(np.ones((2, 3), np.float32), name="kernel"), keras.Variable(np.zeros(4, np.float32), name="bias")]
    optimizer.build(variables)
    gradients = [rng.normal(size=v.shape).astype(np.float32) for v in variables]
    optimizer.apply(gradients, variables)  # Keras' own step, not the fused one
    found = [adam_moments(optimizer, variable) for variable in variables]
    for (m, v), variable, gradient in zip(found, variables, gradients, strict=True):
        assert m.path.endswith(f"{variable.name}_momentum") and v.path.endswith(f"{variable.name}_velocity")
        # From zero, one step: m = (1 - beta_1) g and v = (1 - beta_2) g^2.
        np.testing.assert_allclose(m.numpy(), 0.5 * gradient, rtol=1e-6)
        np.testing.assert_allclose(v.numpy(), 0.25 * gradient**2, rtol=1e-6)
    # They are the optimizer's own state, which checkpoints save and restore.
    assert {id(slot) for pair in found for slot in pair} <= {id(variable) for variable in optimizer.variables}


def _float16_run(jit_compile, keras_class=None):
    """A conv net with FusedBatchNormalization trained as kcnn trains on a GPU: its
    layers in mixed_float16 (set per layer, `prepare_model`), AdamW in Keras'
    LossScaleOptimizer (`compile_model`); with `keras_class`, Keras' AdamW instead
    of the fused one."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(FusedBatchNormalization(name="bn")(x))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x))
    initial = model.get_weights()
    device = DeviceSettings("mixed_float16", xla=jit_compile, strategy=None, devices=())
    model = prepare_model(model, device)
    config = TrainConfig(epochs=2, batch_size=8, learning_rate=0.01, weight_decay=0.05, warmup_epochs=0.0, steps_per_execution=1)
    original = kcompile.FusedAdamW
    kcompile.FusedAdamW = keras_class or original
    try:
        kcompile.compile_model(model, config, steps_per_epoch=3, device=device)
    finally:
        kcompile.FusedAdamW = original
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(24, 8, 8, 3)).astype(np.float32), np.arange(24) % 3, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return model, initial


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_fused_adamw_under_loss_scaling_in_float16_follows_keras_adamw(jit_compile):
    """The default GPU path (mixed_float16: `LossScaleOptimizer(FusedAdamW)`, fused
    batch normalization), run on the CPU, against Keras' AdamW in its place, compiled
    the same way: XLA's float16 rounding differs from TensorFlow's by up to 5e-4 after
    two epochs (seen on this test's weights), more than the optimizers' difference."""
    fused, initial = _float16_run(jit_compile)
    reference, _ = _float16_run(jit_compile, keras.optimizers.AdamW)
    optimizer = fused.optimizer
    assert type(optimizer) is keras.optimizers.LossScaleOptimizer and type(optimizer.inner_optimizer) is FusedAdamW
    assert type(reference.optimizer.inner_optimizer) is keras.optimizers.AdamW and fused.jit_compile == jit_compile
    assert fused.get_layer("bn").compute_dtype == "float16" and isinstance(fused.get_layer("bn"), FusedBatchNormalization)
    assert keras.config.dtype_policy().name == "float32"  # set per layer: nothing process-wide
    for a, b, start in zip(fused.get_weights(), reference.get_weights(), initial, strict=True):
        # Float32 rounding of the update, through float16 forward and backward passes.
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)
        assert a.shape == start.shape
    moved = [np.abs(a - start).max() for a, start in zip(fused.get_weights(), initial, strict=True)]
    assert min(moved[:3]) > 1e-3  # the conv and the BatchNorm scale and offset trained
    for a, b in zip(optimizer.variables, reference.optimizer.variables, strict=True):
        assert a.name == b.name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=2e-5)  # the moments and the loss scale
