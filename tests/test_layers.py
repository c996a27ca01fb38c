import keras
import numpy as np
import pytest

from kcnn.layers import (
    ConnectionTableConv2D,
    EuclideanRBF,
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
