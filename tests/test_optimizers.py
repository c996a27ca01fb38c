"""Adam and AdamW on TensorFlow's fused kernel (`kcnn.train.optimizers`) follow
Keras' own step for step."""

import keras
import numpy as np
import pytest

from kcnn.train import compile as kcompile
from kcnn.train.config import TrainConfig
from kcnn.train.optimizers import FusedAdam, FusedAdamW


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
