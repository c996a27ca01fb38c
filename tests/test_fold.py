"""Batch normalization folded into the layer before it for inference
(`kcnn.train.fold`, through `kcnn.train.inference_model`): which pairs fold, and the
same function computed with fewer layers."""

import keras
import numpy as np
import pytest

from kcnn import lenet5, resnet18, train
from kcnn.train import fold


def _randomize_statistics(model, rng):
    """Moving statistics and affine parameters far from their initial 0 / 1, so that a
    wrong fold shows."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.5, channels))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, channels))
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            layer.beta.assign(rng.normal(0, 0.5, channels))


def _graph():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    a = keras.layers.BatchNormalization(name="a_bn")(a)  # folds
    b = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="b")(a)
    b = keras.layers.BatchNormalization(name="b_bn")(b)  # no: after an activation
    c = keras.layers.Conv2D(4, 1, name="c")(b)
    c_bn = keras.layers.BatchNormalization(name="c_bn")(c)  # no: c's output is also added
    d = keras.layers.Add(name="add")([c, c_bn])
    e = keras.layers.BatchNormalization(axis=1, name="e_bn")(keras.layers.Conv2D(8, 1, name="e")(d))  # no: axis
    f = keras.layers.Dense(5, use_bias=False, name="f")(keras.layers.GlobalAveragePooling2D(name="pool")(e))
    f = keras.layers.BatchNormalization(name="f_bn")(f)  # folds: a dense layer without bias
    return keras.Model(inputs, keras.layers.Dense(3, name="predictions")(f))


def test_foldable_pairs_and_the_ones_that_cannot_fold():
    assert fold.foldable(_graph()) == {"a": "a_bn", "f": "f_bn"}
    assert fold.foldable(lenet5()) == {}
    model = resnet18(input_shape=(32, 32, 3), classes=10)
    pairs = fold.foldable(model)
    # Every convolution of ResNet-18 is followed by its own normalization: the stem,
    # 16 in the blocks and 3 projection shortcuts.
    convolutions = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert sorted(pairs) == sorted(convolutions) and len(pairs) == 20
    assert all(model.get_layer(norm).__class__.__name__.endswith("BatchNormalization") for norm in pairs.values())


@pytest.mark.parametrize("build", [_graph, lambda: resnet18(input_shape=(32, 32, 3), classes=10)], ids=["graph", "resnet18"])
def test_the_folded_copy_computes_the_same_function(build, rng):
    model = build()
    _randomize_statistics(model, rng)
    x = rng.normal(size=(4, *model.input_shape[1:])).astype(np.float32)
    copy, pairs = fold.folded_copy(model)
    assert [layer.name for layer in copy.layers[1:]] == [layer.name for layer in model.layers[1:]]
    assert all(isinstance(copy.get_layer(norm), fold.FoldedNormalization) for norm in pairs.values())
    assert all(copy.get_layer(name).use_bias for name in pairs)
    assert len(copy.weights) == len(model.weights) - 4 * len(pairs) + sum(not model.get_layer(n).use_bias for n in pairs)
    np.testing.assert_allclose(copy.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-4, atol=1e-4)
    # New statistics: copy_weights folds them in.
    _randomize_statistics(model, rng)
    fold.copy_weights(model, copy, pairs)
    np.testing.assert_allclose(copy.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-4, atol=1e-4)


def test_inference_folds_in_reduced_precision_and_leaves_float32_exact(rng):
    model = resnet18(input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    _randomize_statistics(model, rng)
    x = rng.normal(size=(4, 32, 32, 3)).astype(np.float32)
    assert train.inference_model(model, "off") is model  # the saved model's outputs, to the bit
    copy = train.inference_model(model, "mixed_bfloat16")
    assert all(isinstance(copy.get_layer(norm), fold.FoldedNormalization) for norm in fold.foldable(model).values())
    assert {copy.get_layer(name).dtype_policy.name for name in fold.foldable(model)} == {"mixed_bfloat16"}
    expected = model.predict_on_batch(x)
    # 8 bits of mantissa through 18 layers: logits within a few percent of their spread.
    np.testing.assert_allclose(copy.predict_on_batch(x), expected, atol=0.05 * np.ptp(expected))
    # Statistics changed after the copy was made are the ones the next call folds in.
    _randomize_statistics(model, rng)
    assert train.inference_model(model, "mixed_bfloat16") is copy
    expected = model.predict_on_batch(x)
    np.testing.assert_allclose(copy.predict_on_batch(x), expected, atol=0.05 * np.ptp(expected))
