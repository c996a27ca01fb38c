"""Why a classifier predicts what it does: Grad-CAM heat maps and saliency maps.

    from kcnn import explain
    result = explain.explain("saved_models/lenet5-digits-...", "seven.png")   # Grad-CAM
    print(result.predictions)          # [('7', 0.98), ('1', 0.01), ('9', 0.004)]
    result.save("seven-gradcam.png")   # the image, the heat map over it, the classes

`gradcam` weights the feature maps of a convolutional layer (by default the last one
that still has a spatial map: `gradcam_layer`) by the gradient of the class score,
averaged over positions, and keeps the positive part: where the evidence for the class
is (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017). `saliency` is the vanilla gradient of the
class score with respect to the input pixels (Simonyan, Vedaldi, Zisserman, "Deep
Inside Convolutional Networks", ICLR 2014 workshop): which pixels would change it. Both
use the score before the softmax, which does not saturate for a confident prediction.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from kcnn._keras_graph import get_layer, producer
from kcnn.layers import Subsampling2D

__all__ = ["METHODS", "Explanation", "explain", "gradcam", "gradcam_layer", "saliency"]

#: Explanation methods of `explain`.
METHODS = ("gradcam", "saliency")

_POOLING = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalAveragePooling2D,
    Subsampling2D,
)
# Layers that only rescale or gate what they receive: after a pooling layer they are
# part of the pooling stage (LeNet-5's subsampling and its squashing function).
_ELEMENTWISE = (keras.layers.Activation, keras.layers.ReLU, keras.layers.BatchNormalization, keras.layers.Dropout)


def gradcam_layer(model: keras.Model) -> str:
    """The layer Grad-CAM uses by default: the output of the last convolutional stage,
    i.e. the last layer whose output is a feature map of more than one position and
    that is not pooling (ResNet's `conv5_block3_out`, GoogLeNet's `inception5b_concat`,
    VGG's `block5_conv3`, AlexNet's `conv5`, LeNet-5's `conv3`, as its `conv5` is 1x1).
    """
    for layer in reversed(model.layers):
        if isinstance(layer, (keras.layers.InputLayer, *_POOLING)):
            continue
        shape = _output_shape(layer)
        if shape is None or len(shape) != 4 or (shape[1] is not None and shape[2] is not None and shape[1] * shape[2] <= 1):
            continue
        if isinstance(layer, _ELEMENTWISE) and isinstance(producer(layer.input), _POOLING):
            continue
        return layer.name
    raise ValueError(
        f"Expected a model with a convolutional feature map of more than one position for Grad-CAM. Received: `{model.name}`, which has none"
    )


def gradcam(model: keras.Model, images, *, class_index=None, layer: str | None = None) -> np.ndarray:
    """Grad-CAM heat maps.

    Args:
        model: a Keras classifier (its first output).
        images: the network's input, a float batch `(N, H, W, C)` (preprocessed).
        class_index: the class to explain: None (the predicted one), an int, or one
            per image.
        layer: the convolutional layer; default `gradcam_layer(model)`.

    Returns:
        float32 `(N, H, W)` in [0, 1] (each map divided by its maximum; all zeros where
        no position supports the class), resized (bilinear) to the input's size.
    """
    name = layer or gradcam_layer(model)
    target = get_layer(model, name)
    shape = _output_shape(target)
    if shape is None or len(shape) != 4:
        raise ValueError(f"Grad-CAM needs a layer whose output is a feature map (height, width, channels). Received: layer={name!r} with output shape {shape}")
    x = tf.convert_to_tensor(np.asarray(images, np.float32))
    features, head = _score_tensor(model)
    tapped = keras.Model(_input(model), [target.output, features])

    @_traced
    def maps_and_gradients(x):
        with tf.GradientTape() as tape:
            maps, pre_scores = tapped(x, training=False)
            score = _class_scores(head(pre_scores), class_index)
        return maps, tape.gradient(score, maps)

    maps, gradients = maps_and_gradients(x)
    weights = tf.reduce_mean(gradients, axis=(1, 2))  # (N, channels): each map's importance
    cam = tf.nn.relu(tf.einsum("nhwk,nk->nhw", maps, weights))
    cam = tf.image.resize(cam[..., None], x.shape[1:3], method="bilinear")[..., 0]
    return _normalized(cam.numpy())


def saliency(model: keras.Model, images, *, class_index=None) -> np.ndarray:
    """Saliency maps: the magnitude of the class score's gradient with respect to each
    input pixel (the largest over its channels).

    Args:
        model: a Keras classifier (its first output).
        images: the network's input, a float batch `(N, H, W, C)` (preprocessed).
        class_index: None (the predicted class), an int, or one per image.

    Returns:
        float32 `(N, H, W)` in [0, 1] (each map divided by its maximum); exactly zero
        where a pixel does not affect the score.
    """
    x = tf.convert_to_tensor(np.asarray(images, np.float32))
    features, head = _score_tensor(model)
    scorer = keras.Model(_input(model), features)

    @_traced
    def input_gradients(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = _class_scores(head(scorer(x, training=False)), class_index)
        return tape.gradient(score, x)

    gradients = input_gradients(x)
    return _normalized(tf.reduce_max(tf.abs(gradients), axis=-1).numpy())


@dataclasses.dataclass(frozen=True)
class Explanation:
    """One image's prediction and heat map (`explain`).

    Attributes:
        image: the image as the network sees it (resized, channel-adapted), 0..255,
            `(H, W, C)` float32.
        heatmap: `(H, W)` in [0, 1].
        method: "gradcam" or "saliency".
        layer: Grad-CAM's layer (None for saliency).
        class_index, class_name: the class explained.
        predictions: the `top_k` most likely `(class name, probability)` pairs.
    """

    image: np.ndarray
    heatmap: np.ndarray
    method: str
    layer: str | None
    class_index: int
    class_name: str
    predictions: list[tuple[str, float]]

    def figure(self, figure=None):
        """The image, the heat map over it and the predicted classes, as a Matplotlib
        figure (see `kcnn.visualize.explanation_figure`)."""
        from kcnn import visualize

        return visualize.explanation_figure(self, figure)

    def save(self, path: str | os.PathLike, *, dpi: int = 100) -> None:
        """Writes `figure()` to `path` (PNG, PDF, SVG ... by extension), atomically."""
        from kcnn import visualize

        visualize.save(self.figure(), path, dpi=dpi)


def explain(
    model_or_run,
    image,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    class_name: str | None = None,
    top_k: int = 3,
) -> Explanation:
    """Predicts an image's class and explains it with a heat map.

    Args:
        model_or_run: a run folder or `.keras` file (the run's preprocessing is applied
            to the image), or a Keras classifier (the image must be preprocessed).
        image: an image file, or one image array (raw 0..255 pixels for a run).
        method: "gradcam" or "saliency".
        layer: Grad-CAM's layer (default `gradcam_layer`).
        class_name: the class to explain (default the predicted one).
        top_k: how many predicted classes to keep.

    Returns:
        An `Explanation`.
    """
    from kcnn import visualize
    from kcnn.train.inference import resolve_model

    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive int. Received: top_k={top_k!r}")
    if method == "saliency" and layer is not None:
        raise ValueError(f"`layer` is Grad-CAM's; saliency is taken at the input. Received: method='saliency', layer={layer!r}")
    model, metadata = resolve_model(model_or_run)
    images = image if isinstance(image, (str, os.PathLike)) else [np.asarray(image)]
    inputs, pictures = visualize.model_input(images, metadata.get("preprocessing"))
    features, head = _score_tensor(model)
    scores = head(keras.Model(_input(model), features)(inputs, training=False))
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(scores, axis=-1))[0].astype(np.float64)
    names = list(metadata.get("class_names") or map(str, range(len(probabilities))))
    if class_name is None:
        index = int(np.argmax(probabilities))
    elif str(class_name) in names:
        index = names.index(str(class_name))
    else:
        raise ValueError(f"`class_name` must be one of the model's classes {names[:20]}. Received: class_name={class_name!r}")
    if method == "gradcam":
        layer = layer or gradcam_layer(model)
        heatmap = gradcam(model, inputs, class_index=index, layer=layer)[0]
    else:
        heatmap = saliency(model, inputs, class_index=index)[0]
    order = np.argsort(-probabilities)[: min(top_k, len(probabilities))]
    return Explanation(
        image=pictures[0].astype(np.float32),
        heatmap=heatmap,
        method=method,
        layer=layer if method == "gradcam" else None,
        class_index=index,
        class_name=names[index],
        predictions=[(names[j], float(probabilities[j])) for j in order],
    )


# --------------------------------------------------------------------------



def _output_shape(layer) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):  # never called, or called several times
        return None


def _score_tensor(model: keras.Model):
    """`(tensor, head)`: a tensor of the model and a function of its value giving the
    class scores before the softmax (the logits), whether the model ends with a softmax
    activation (of its Dense classifier or a layer of its own) or outputs logits."""
    output = model.outputs[0]
    layer = producer(output)
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    if isinstance(layer, keras.layers.Softmax) or (isinstance(layer, keras.layers.Activation) and activation == "softmax"):
        return layer.input, lambda values: values
    if isinstance(layer, keras.layers.Dense) and activation == "softmax":

        def logits(values):
            scores = keras.ops.matmul(values, layer.kernel)
            return scores + layer.bias if layer.use_bias else scores

        return layer.input, logits
    if activation not in (None, "linear"):
        raise ValueError(
            f"Expected a classifier whose output is softmax probabilities or logits. Received: output layer `{layer.name}` with activation {activation!r}"
        )
    return output, lambda values: values


def _traced(gradients):
    """`gradients` as a TensorFlow graph, so that only the gradients it returns are
    computed. Run eagerly, TensorFlow's Conv2D gradient computes the kernel's gradient
    beside the input's, which a heat map never needs, and on AVX-512 CPUs TensorFlow
    2.21's oneDNN kernel for it crashes the process at odd batch sizes (1, 3, 5, 7
    measured) for some small channel counts (a 1x1 stride-2 convolution from 8 or 12
    to 16 channels, as in a ResNet of width 8; the README says where training meets
    it). Tracing costs a call more time than it saves: one saliency map of
    ResNet-50 at 224x224 took 1.2 s instead of 0.4 s eagerly (2-core EPYC)."""
    return tf.function(gradients, autograph=False)


def _class_scores(scores, class_index):
    """The score of each image's class: `class_index` (None: the highest)."""
    if class_index is None:
        classes = tf.argmax(scores, axis=-1, output_type=tf.int32)
    else:
        indices = np.broadcast_to(np.asarray(class_index, np.int32), (scores.shape[0],))
        if np.any(indices < 0) or np.any(indices >= scores.shape[-1]):
            raise ValueError(f"`class_index` must be in [0, {scores.shape[-1]}). Received: class_index={class_index!r}")
        classes = tf.constant(indices)
    return tf.gather(scores, classes, axis=1, batch_dims=1)


def _normalized(maps: np.ndarray) -> np.ndarray:
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(peak > 0, maps / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)


def _input(model: keras.Model):
    """The model's one input tensor (a single tensor, not a list: a model built on the
    list expects to be called on one)."""
    if len(model.inputs) != 1:
        raise ValueError(f"Expected a classifier with one image input. Received: `{model.name}` with {len(model.inputs)} inputs")
    return model.inputs[0]
