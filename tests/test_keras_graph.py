"""kcnn/_keras_graph.py reads Keras' private structures: these tests fail as soon as an
upstream change moves what it reads, naming what moved."""

import keras
import numpy as np
import pytest

from kcnn._keras_graph import fit_iterations_per_epoch, input_layer_name, layer_call, producer


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



# Keras' warning at the end of every epoch of a dataset of unknown length.
@pytest.mark.filterwarnings("ignore:Your input ran out of data")
@pytest.mark.parametrize("known_length", [True, False], ids=["known-length", "unknown-length"])
def test_fit_starts_the_iterators_per_epoch_that_fit_iterations_per_epoch_says(known_length):
    """Keras' own epoch loop, watched: epoch e of `Model.fit` sees the dataset's
    iteration number e * fit_iterations_per_epoch (its shuffle drawn afresh at each),
    which is what a resumed run skips to."""
    import tensorflow as tf

    def dataset():
        ds = tf.data.Dataset.range(8).shuffle(8, seed=1, reshuffle_each_iteration=True)
        ds = ds if known_length else ds.filter(lambda i: True)
        return ds.map(lambda i: (tf.cast(i, "float32")[None], 0.0)).batch(4)

    seen = []

    class Watch(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

        def train_step(self, data):
            seen.extend(int(v) for v in np.asarray(data[0])[:, 0])
            return {"seen": 0.0}

    model = Watch()
    model.compile("sgd", "mse", run_eagerly=True)
    model.fit(dataset(), epochs=3, shuffle=False, verbose=0)
    by_epoch = [seen[i : i + 8] for i in range(0, len(seen), 8)]
    orders = dataset()
    iterations = [[int(v) for x, _ in orders for v in np.asarray(x)[:, 0]] for _ in range(5)]
    assert len({tuple(order) for order in iterations}) == 5  # each iteration tells itself apart
    step = fit_iterations_per_epoch(orders)
    assert step == (2 if known_length else 1)
    assert by_epoch == [iterations[epoch * step] for epoch in range(3)]


def test_get_layer_names_the_missing_layer_and_the_last_ones():
    from kcnn import train
    from kcnn._keras_graph import get_layer

    model, _, _, _ = small_model()
    assert get_layer(model, "merge") is model.get_layer("merge")
    with pytest.raises(ValueError, match=r"has no layer 'fc7'\. Layers: \['pixels', 'conv', .*'head'\] \(last 12\)\. Received: layer='fc7'"):
        get_layer(model, "fc7")
    with pytest.raises(ValueError, match=r"Received: layer='fc2'"):  # "fc7" is the lecture's name of VGG's fc2
        train.feature_extractor(model, "fc7")
