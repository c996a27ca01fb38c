"""kcnn/_keras_graph.py reads Keras' private structures: these tests fail as soon as an
upstream change moves what it reads, naming what moved."""

import keras

from kcnn._keras_graph import input_layer_name, layer_call, producer


def small_model():
    inputs = keras.Input((8, 8, 3), name="pixels")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    left = keras.layers.ReLU(name="left")(x)
    right = keras.layers.Activation("tanh", name="right")(x)
    merged = keras.layers.Add(name="merge")([left, right])
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten(name="flat")(merged))
    return keras.Model(inputs, outputs), inputs, x, merged


def test_producer_and_layer_call_follow_the_functional_graph():
    model, inputs, conv_out, merged = small_model()
    assert producer(model.outputs[0]) is model.get_layer("head")
    call = layer_call(merged)
    assert call.layer is model.get_layer("merge") and not call.is_input
    assert [producer(t).name for t in call.inputs] == ["left", "right"]
    assert call.outputs == (merged,)
    assert layer_call(merged).key == call.key  # the same call, found twice
    assert layer_call(conv_out).inputs == (inputs,)
    assert layer_call(inputs).is_input and input_layer_name(inputs) == "pixels"
    assert producer(keras.KerasTensor((1, 2))) is None and layer_call(keras.KerasTensor((1, 2))) is None


def test_output_spec_recomputes_a_call_on_other_shapes():
    _, _, conv_out, _ = small_model()
    call = layer_call(conv_out)
    spec = call.output_spec({id(call.inputs[0]): keras.KerasTensor((1, 20, 30, 3))})
    assert tuple(spec.shape) == (1, 18, 28, 4)



def test_fit_iterations_per_epoch_follows_the_dataset_length():
    import tensorflow as tf

    from kcnn._keras_graph import fit_iterations_per_epoch

    known = tf.data.Dataset.range(8).batch(2)
    assert fit_iterations_per_epoch(known) == 2
    assert fit_iterations_per_epoch(known.filter(lambda x: True)) == 1  # length unknown


def test_get_layer_names_the_missing_layer_and_the_last_ones():
    import pytest

    from kcnn import train
    from kcnn._keras_graph import get_layer

    model, _, _, _ = small_model()
    assert get_layer(model, "merge") is model.get_layer("merge")
    with pytest.raises(ValueError, match=r"has no layer 'fc7'\. Layers: \['pixels', 'conv', .*'head'\] \(last 12\)\. Received: layer='fc7'"):
        get_layer(model, "fc7")
    with pytest.raises(ValueError, match=r"Received: layer='fc2'"):  # "fc7" is the lecture's name of VGG's fc2
        train.feature_extractor(model, "fc7")
