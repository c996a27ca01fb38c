import keras
import numpy as np
import pytest

from kcnn import blocks


def build(fn, shape=(8, 8, 16), **kwargs):
    inputs = keras.Input(shape)
    return keras.Model(inputs, fn(inputs, **kwargs))


def test_conv_bn_act_names_and_fused_activation():
    with_bn = build(lambda x: blocks.conv_bn_act(x, 4, 3, name="conv1"))
    assert [layer.name for layer in with_bn.layers[1:]] == ["conv1_conv", "conv1_bn", "conv1_relu"]
    fused = build(lambda x: blocks.conv_bn_act(x, 4, 3, name="block1_conv1", conv_suffix="", batch_norm=False))
    assert [layer.name for layer in fused.layers[1:]] == ["block1_conv1"]
    assert fused.layers[1].activation is keras.activations.relu


@pytest.mark.parametrize("strides,filters,projected", [(1, 16, False), (2, 16, True), (1, 32, True)])
def test_basic_block_projects_only_where_the_shape_changes(strides, filters, projected):
    model = build(lambda x: blocks.basic_block(x, filters, strides=strides, name="b"))
    names = {layer.name for layer in model.layers}
    assert ("b_0_conv" in names) == projected
    assert model.output_shape == (None, 8 // strides, 8 // strides, filters)


def test_identity_basic_block_with_zero_residual_is_relu_of_input(rng):
    model = build(lambda x: blocks.basic_block(x, 16, name="b"))
    model.get_layer("b_2_bn").gamma.assign(np.zeros(16, "float32"))
    x = rng.normal(size=(1, 8, 8, 16)).astype("float32")
    beta = np.asarray(model.get_layer("b_2_bn").beta)
    np.testing.assert_allclose(np.asarray(model(x)), np.maximum(x + beta, 0), atol=1e-6)


@pytest.mark.parametrize("variant,strided,bias,epsilon", [("v1", "b_1_conv", True, 1.001e-5), ("v1.5", "b_2_conv", False, 1e-5)])
def test_bottleneck_variants_put_the_stride_where_the_paper_says(variant, strided, bias, epsilon):
    model = build(lambda x: blocks.bottleneck_block(x, 8, strides=2, variant=variant, name="b"))
    assert model.output_shape == (None, 4, 4, 32)
    strides = {layer.name: layer.strides for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}
    assert strides == {"b_0_conv": (2, 2), "b_1_conv": (1, 1), "b_2_conv": (1, 1), "b_3_conv": (1, 1), strided: (2, 2)}
    assert model.get_layer("b_1_conv").use_bias is bias
    assert model.get_layer("b_1_bn").epsilon == pytest.approx(epsilon)


def test_unknown_residual_variant_is_refused():
    with pytest.raises(ValueError, match=r"Received: variant='v2'"):
        build(lambda x: blocks.basic_block(x, 16, variant="v2", name="b"))


def test_inception_block_concatenates_four_branches_with_paper_names():
    model = build(lambda x: blocks.inception_block(x, (64, 96, 128, 16, 32, 32), name="inception3a"), shape=(28, 28, 192))
    assert model.output_shape == (None, 28, 28, 256)
    names = [layer.name for layer in model.layers[1:]]
    for column in ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool", "pool_proj", "concat"):
        assert f"inception3a_{column}" in names
    assert model.get_layer("inception3a_5x5").kernel_size == (5, 5)
    # Parameters of 3a in table 1 (weights + biases).
    expected = (192 * 64 + 64) + (192 * 96 + 96) + (9 * 96 * 128 + 128) + (192 * 16 + 16) + (25 * 16 * 32 + 32) + (192 * 32 + 32)
    assert model.count_params() == expected


def test_inception_block_needs_six_widths():
    with pytest.raises(ValueError, match="6 numbers"):
        build(lambda x: blocks.inception_block(x, (1, 2, 3), name="i"))


@pytest.mark.parametrize("pooling,reduce", [("avg", np.mean), ("max", np.max)])
def test_classifier_head_pooling_does_what_it_says(rng, pooling, reduce):
    model = build(lambda x: blocks.classifier_head(x, 3, pooling=pooling, classifier_activation=None), shape=(4, 4, 5))
    x = rng.normal(size=(2, 4, 4, 5)).astype("float32")
    kernel, bias = model.get_layer("predictions").get_weights()
    np.testing.assert_allclose(np.asarray(model(x)), reduce(x, axis=(1, 2)) @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_classifier_head_names_hidden_layers_and_dropouts():
    model = build(
        lambda x: blocks.classifier_head(x, 3, pooling="flatten", hidden_units=(7, 6), hidden_names=("fc6", "fc7"), dropout=0.5, name="aux1"),
        shape=(2, 2, 1),
    )
    assert [layer.name for layer in model.layers[1:]] == ["aux1_flatten", "fc6", "fc6_dropout", "fc7", "fc7_dropout", "aux1_predictions"]


@pytest.mark.parametrize("pooling", ["mean", "flat", 1])
def test_bad_pooling_is_refused(pooling):
    with pytest.raises(ValueError, match="Received: pooling="):
        build(lambda x: blocks.classifier_head(x, 3, pooling=pooling))
    with pytest.raises(ValueError, match="Received: pooling="):
        build(lambda x: blocks.global_pool(x, pooling))


def test_classifier_head_dropout_precedes_the_classifier_without_hidden_layers():
    model = build(lambda x: blocks.classifier_head(x, 3, pooling="flatten", dropout=0.3), shape=(2, 2, 1))
    assert [layer.name for layer in model.layers[1:]] == ["flatten", "dropout", "predictions"]
    assert model.get_layer("dropout").rate == 0.3
    with_hidden = build(lambda x: blocks.classifier_head(x, 3, pooling="flatten", hidden_units=(4,), dropout=0.3), shape=(2, 2, 1))
    assert [layer.name for layer in with_hidden.layers[1:]] == ["flatten", "fc1", "fc1_dropout", "predictions"]
