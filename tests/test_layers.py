import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.layers import (
    ConnectionTableConv2D,
    EuclideanRBF,
    FusedBatchNormalization,
    LocalResponseNormalization,
    Subsampling2D,
    lecun_tanh,
)
from kcnn.models.lenet import C3_TABLE


def lrn_reference(a, depth, k, alpha, beta):
    """The paper's formula, channel by channel, with the sum clipped at the edges."""
    channels = a.shape[-1]
    out = np.empty_like(a)
    for c in range(channels):
        low, high = max(0, c - depth // 2), min(channels - 1, c + depth // 2)
        total = np.sum(a[..., low : high + 1] ** 2, axis=-1)
        out[..., c] = a[..., c] / (k + alpha * total) ** beta
    return out


@pytest.mark.parametrize(
    "kwargs",
    [{}, dict(depth=3, k=1.0, alpha=0.5, beta=0.5), dict(depth=7, k=0.5, alpha=2.0, beta=1.0)],
)
def test_lrn_matches_the_paper_formula_including_channel_edges(rng, kwargs):
    a = rng.normal(scale=3.0, size=(2, 4, 5, 9)).astype("float32")
    layer = LocalResponseNormalization(**kwargs)
    expected = lrn_reference(
        a.astype("float64"),
        kwargs.get("depth", 5),
        kwargs.get("k", 2.0),
        kwargs.get("alpha", 1e-4),
        kwargs.get("beta", 0.75),
    )
    np.testing.assert_allclose(np.asarray(layer(a)), expected, rtol=1e-5, atol=1e-6)


def test_lrn_edges_differ_from_an_unclipped_window(rng):
    # With a strong alpha the first channel sees only 3 of 5 neighbours: check that the
    # first channel's value is what the clipped sum gives, not a wrapped one.
    a = np.ones((1, 1, 1, 5), "float32")
    out = np.asarray(LocalResponseNormalization(k=1.0, alpha=1.0, beta=1.0)(a))[0, 0, 0]
    np.testing.assert_allclose(out, [1 / 4, 1 / 5, 1 / 6, 1 / 5, 1 / 4], rtol=1e-6)


def test_lrn_defaults_are_alexnets_and_it_serializes():
    layer = LocalResponseNormalization(name="norm1")
    config = layer.get_config()
    assert (config["depth"], config["k"], config["alpha"], config["beta"]) == (5, 2.0, 1e-4, 0.75)
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, LocalResponseNormalization)
    assert restored.get_config() == config


@pytest.mark.parametrize("depth", [0, 4, 2.5, True])
def test_lrn_refuses_a_window_that_is_not_a_positive_odd_int(depth):
    with pytest.raises(ValueError, match=r"Received: depth="):
        LocalResponseNormalization(depth=depth)


def test_lecun_tanh_is_one_at_one():
    np.testing.assert_allclose(np.asarray(lecun_tanh(np.array([1.0, -1.0, 0.0]))), [1.0, -1.0, 0.0], atol=1e-4)


def test_subsampling_is_window_sum_times_coefficient_plus_bias(rng):
    x = rng.normal(size=(1, 4, 6, 2)).astype("float32")
    layer = Subsampling2D(2)
    layer.build(x.shape)
    layer.coefficient.assign([2.0, -1.0])
    layer.bias.assign([0.5, 1.0])
    expected = x.reshape(1, 2, 2, 3, 2, 2).sum(axis=(2, 4)) * [2.0, -1.0] + [0.5, 1.0]
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5)
    assert layer.count_params() == 4


def test_c3_connection_table_matches_table_one_and_has_1516_parameters(rng):
    assert len(C3_TABLE) == 16
    assert [len(inputs) for inputs in C3_TABLE] == [3] * 6 + [4] * 9 + [6]
    assert C3_TABLE[0] == (0, 1, 2) and C3_TABLE[5] == (0, 1, 5) and C3_TABLE[14] == (0, 2, 3, 5)
    layer = ConnectionTableConv2D(C3_TABLE, 5)
    x = rng.normal(size=(2, 14, 14, 6)).astype("float32")
    y = np.asarray(layer(x))
    assert y.shape == (2, 10, 10, 16)
    assert layer.count_params() == 1516
    # Output map j must not depend on input maps outside table[j].
    x_changed = x.copy()
    x_changed[..., 3] += 10.0
    y_changed = np.asarray(layer(x_changed))
    for j, inputs in enumerate(C3_TABLE):
        moved = not np.allclose(y[..., j], y_changed[..., j])
        assert moved == (3 in inputs), j


def test_euclidean_rbf_is_minus_squared_distance_to_fixed_centres(rng):
    x = rng.normal(size=(3, 84)).astype("float32")
    layer = EuclideanRBF(10)
    out = np.asarray(layer(x))
    centres = np.asarray(layer.centres)
    assert set(np.unique(centres)) == {-1.0, 1.0}
    assert not layer.trainable_weights and layer.count_params() == 840
    expected = -((x[:, :, None] - centres[None]) ** 2).sum(axis=1)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-3)


def test_lenet5_paper_macs_count_the_custom_layers():
    import kcnn
    from kcnn import shapes

    trace = shapes.trace(kcnn.lenet5(variant="paper"))
    assert trace.row("conv3").macs == 10 * 10 * 25 * 60  # connected kernels only
    assert trace.row("pool2").macs == 14 * 14 * 6
    assert trace.row("rbf").macs == 84 * 10
    modern = shapes.trace(kcnn.lenet5())
    assert modern.row("conv3").macs == 10 * 10 * 16 * 25 * 6


# --------------------------------------------------------------------------
# FusedBatchNormalization: the same function as keras.layers.BatchNormalization.


def _bn_pair(rng, shape, **kwargs):
    """A Keras and a fused BatchNormalization with the same random weights
    (gamma, beta, moving mean, moving variance: whichever the arguments create)."""
    keras_bn, fused_bn = keras.layers.BatchNormalization(**kwargs), FusedBatchNormalization(**kwargs)
    for layer in (keras_bn, fused_bn):
        layer.build(shape)
    weights = [
        rng.uniform(0.5, 2.0, size=w.shape) if "variance" in w.path else rng.normal(size=w.shape) for w in keras_bn.weights
    ]
    for layer in (keras_bn, fused_bn):
        layer.set_weights([w.astype("float32") for w in weights])
    return keras_bn, fused_bn, weights


def _forward_and_gradients(layer, x, training):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * tf.sin(y))  # a non-uniform upstream gradient
    return [np.asarray(t) for t in (y, *tape.gradient(loss, [x, *layer.trainable_weights]))]


# Keras' default, ResNet v1's, and torchvision's (VGG-BN, ResNet v1.5): cuDNN's smallest.
@pytest.mark.parametrize("epsilon", [1e-3, 1.001e-5, 1e-5])
@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_matches_numpy_and_keras_outputs_gradients_and_moving_statistics(rng, epsilon, training):
    x = rng.normal(2.0, 3.0, size=(3, 5, 4, 6)).astype("float32")
    keras_bn, fused_bn, (gamma, beta, moving_mean, moving_variance) = _bn_pair(rng, x.shape, epsilon=epsilon, momentum=0.9)
    assert fused_bn._fused_applies(tf.constant(x), None)
    if training:
        mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased, as Keras normalizes
        expected_moving = [0.9 * moving_mean + 0.1 * mean, 0.9 * moving_variance + 0.1 * variance]
    else:
        mean, variance = moving_mean, moving_variance
        expected_moving = [moving_mean, moving_variance]
    expected = (x - mean) / np.sqrt(variance + epsilon) * gamma + beta

    fused = _forward_and_gradients(fused_bn, x, training)
    reference = _forward_and_gradients(keras_bn, x, training)
    np.testing.assert_allclose(fused[0], expected, rtol=1e-4, atol=1e-4)
    for got, want in zip(fused, reference):  # output, d/dx, d/dgamma, d/dbeta
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    for layer in (fused_bn, keras_bn):
        np.testing.assert_allclose(layer.get_weights()[2], expected_moving[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.get_weights()[3], expected_moving[1], rtol=1e-5, atol=1e-6)


def test_fused_batch_norm_frozen_runs_in_inference_mode(rng):
    x = rng.normal(size=(4, 3, 3, 2)).astype("float32")
    keras_bn, fused_bn, weights = _bn_pair(rng, x.shape)
    for layer in (keras_bn, fused_bn):
        layer.trainable = False
    y = np.asarray(fused_bn(x, training=True))
    np.testing.assert_allclose(y, np.asarray(keras_bn(x, training=True)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused_bn.get_weights()[2], weights[2].astype("float32"))  # no update


@pytest.mark.parametrize(
    "shape,kwargs",
    [((4, 6), {}), ((2, 3, 3, 4), {"epsilon": 1e-6}), ((2, 3, 3, 4), {"axis": 1}), ((2, 3, 3, 4), {"center": False})],
)
def test_fused_batch_norm_falls_back_to_keras_where_the_kernel_does_not_apply(rng, shape, kwargs):
    x = rng.normal(size=shape).astype("float32")
    keras_bn, fused_bn, _ = _bn_pair(rng, shape, **kwargs)
    assert not fused_bn._fused_applies(tf.constant(x), None)
    for training in (True, False):
        np.testing.assert_allclose(np.asarray(fused_bn(x, training=training)), np.asarray(keras_bn(x, training=training)), rtol=1e-5, atol=1e-5)


def test_fused_batch_norm_weights_are_keras_batch_norm_weights_and_it_serializes(rng, tmp_path):
    inputs = keras.Input((5, 5, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    model = keras.Model(inputs, FusedBatchNormalization(epsilon=1.001e-5, name="conv_bn")(x))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    plain = keras.Model(inputs, keras.layers.BatchNormalization(epsilon=1.001e-5, name="conv_bn")(x))
    assert [w.path for w in model.weights] == [w.path for w in plain.weights]
    plain.set_weights([rng.normal(size=w.shape).astype("float32") ** 2 for w in plain.weights])
    model.set_weights(plain.get_weights())
    images = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(images)), np.asarray(plain(images)), rtol=1e-5, atol=1e-5)
    path = tmp_path / "fused.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.get_layer("conv_bn")) is FusedBatchNormalization
    np.testing.assert_allclose(np.asarray(restored(images)), np.asarray(model(images)), rtol=1e-6)
