import keras
import numpy as np
import pytest

import kcnn
from kcnn.weights import load_weights, transfer_weights

# (keras.applications constructor, kcnn builder, input shape, classes): the default
# 224x224 / 1000 classes for ResNet50 and VGG16, 64x64 for the deeper ones (2 cores).
PAIRS = [
    (keras.applications.ResNet50, kcnn.resnet50, (224, 224, 3), 1000),
    (keras.applications.VGG16, kcnn.vgg16, (224, 224, 3), 1000),
    (keras.applications.ResNet101, kcnn.resnet101, (64, 64, 3), 10),
    (keras.applications.VGG19, kcnn.vgg19, (64, 64, 3), 10),
]


def randomize_batchnorm_statistics(model, rng):
    # Fresh BatchNorm layers are the identity at inference; random statistics make the
    # comparison check that they are carried over too.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(scale=0.1, size=channels).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size=channels).astype("float32"))


@pytest.mark.parametrize("application,builder,shape,classes", PAIRS, ids=lambda f: getattr(f, "__name__", str(f)))
def test_keras_applications_weights_transfer_by_name_with_equal_predictions(application, builder, shape, classes, rng):
    source = application(weights=None, input_shape=shape, classes=classes, classifier_activation=None)
    randomize_batchnorm_statistics(source, rng)
    target = builder(input_shape=shape, classes=classes, classifier_activation=None)
    copied = transfer_weights(source, target, require_all=True)
    assert len(copied) == len([layer for layer in target.layers if layer.weights])
    x = rng.uniform(0, 255, size=(2, *shape)).astype("float32")
    expected = np.asarray(source(x, training=False))
    np.testing.assert_allclose(np.asarray(target(x, training=False)), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_mismatched_classes_are_refused_with_a_hint(tmp_path):
    source = kcnn.resnet18(input_shape=(32, 32, 3), classes=10)
    path = tmp_path / "resnet18.keras"
    source.save(path)
    with pytest.raises(ValueError, match=r"different number of classes.*include_top=False.*Received: shapes"):
        kcnn.resnet18(input_shape=(32, 32, 3), classes=5, weights=path)
    # The backbone alone loads, and equals the source's.
    backbone = kcnn.resnet18(input_shape=(32, 32, 3), include_top=False, weights=path)
    np.testing.assert_array_equal(
        backbone.get_layer("conv5_block2_2_conv").get_weights()[0],
        source.get_layer("conv5_block2_2_conv").get_weights()[0],
    )


def test_weights_h5_file_loads_into_the_same_architecture(tmp_path, rng):
    source = kcnn.lenet5()
    path = tmp_path / "lenet.weights.h5"
    source.save_weights(path)
    loaded = kcnn.lenet5(weights=path)
    x = rng.uniform(size=(2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(source(x)), rtol=1e-6)
    with pytest.raises(ValueError, match="same arguments"):
        load_weights(kcnn.lenet5(classes=3), path)


def test_no_shared_layer_is_an_error():
    inputs = keras.Input((4,))
    other = keras.Model(inputs, keras.layers.Dense(2, name="unrelated")(inputs))
    with pytest.raises(ValueError, match="share no weighted layer"):
        transfer_weights(other, kcnn.lenet5())
