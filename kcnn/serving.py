"""A trained classifier as a model of raw images: the run's preprocessing
(`kcnn.data.preprocess_images`: resize, channels, rounding, normalization) as graph
ops in front of the network, and class probabilities out (per pixel, at the images'
size, for a segmentation network). `kcnn.export` writes it in
each format; `load_exported` runs a written file (SavedModel, ONNX, LiteRT) on raw
images, as a check or for inference without kcnn's training code.

    serving = serving_model(model, metadata["preprocessing"])   # uint8 NHWC -> probabilities
    run = load_exported("lenet5.onnx")
    probabilities = run(images)                                  # uint8, any size
"""

from __future__ import annotations

import os
import pathlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kcnn import data as kdata
from kcnn.train.compile import outputs_logits

__all__ = ["CHANNELS", "ProbabilitiesAtInputSize", "RawImagePreprocessing", "load_exported", "raw_pixels", "serving_model"]

#: The channels a serving model takes: grey, RGB, RGBA (alpha is dropped).
CHANNELS = (1, 3, 4)


def _resize_weights(in_size, out_size):
    """The `(out_size, in_size)` matrix of `tf.image.resize(..., "bilinear",
    antialias=True)` along one axis (TensorFlow's ScaleAndTranslate with its triangle
    kernel: weights of the source pixels within the kernel's support, normalized to
    sum to one), for sizes that may be known only when the graph runs."""
    in_float = tf.cast(in_size, tf.float32)
    inverse_scale = in_float / (float(out_size) if isinstance(out_size, int) else tf.cast(out_size, tf.float32))
    kernel_scale = tf.maximum(inverse_scale, 1.0)
    sample = (tf.range(out_size, dtype=tf.float32) + 0.5) * inverse_scale
    source = tf.cast(tf.range(in_size), tf.float32) + 0.5
    position = (source[None, :] - sample[:, None]) / kernel_scale
    weights = tf.maximum(0.0, 1.0 - tf.abs(position))
    # A division, not a multiplication by the reciprocal: the TFLite converter of
    # TensorFlow 2.21 broadcasts `w * (1 / s)` wrongly when the sizes are dynamic.
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def _portable_resize(images, size):
    """Antialiased bilinear resizing by two matrix products, for the formats whose
    converters have no ScaleAndTranslate (ONNX, LiteRT): the same function as
    `tf.image.resize`, computed in another order (equal to ~1e-5 of a grey level)."""
    shape = tf.shape(images)
    rows = _resize_weights(shape[1], size[0])
    columns = _resize_weights(shape[2], size[1])
    x = tf.transpose(images, [0, 3, 1, 2])  # NCHW: the spatial axes last, for matmul
    x = tf.matmul(x, columns, transpose_b=True)  # columns first, as ScaleAndTranslate
    x = tf.matmul(rows, x)
    return tf.transpose(x, [0, 2, 3, 1])


class RawImagePreprocessing(keras.layers.Layer):
    """A run's preprocessing as a layer: uint8 NHWC images of any height and width,
    with 1, 3 or 4 channels (alpha dropped), in; the network's input out, as
    `kcnn.data.preprocess_images` computes it (antialiased bilinear resize, grey <->
    RGB, rounding to whole grey levels, normalization).

    Args:
        preprocessing: a run's `metadata["preprocessing"]` (`Dataset.preprocessing`).
        portable: resize with matrix products instead of TensorFlow's ScaleAndTranslate
            op, which the ONNX and LiteRT converters lack. The result is the same up to
            float rounding: a pixel that falls exactly between two grey levels may
            round the other way (about 1 in 20,000 at sizes that are not a power-of-two
            multiple of the model's; none at the model's own size).
    """

    def __init__(self, preprocessing: Mapping[str, Any], *, portable: bool = False, **kwargs):
        super().__init__(**kwargs)
        # The same validation as preprocess_images: a run's dict that it accepts.
        kdata.preprocess_images(np.zeros((1, 1, 1, 1), np.uint8), preprocessing)
        self.preprocessing = dict(preprocessing)
        self.image_size = tuple(int(v) for v in preprocessing["image_size"])
        self.channels = int(preprocessing["channels"])
        self.portable = portable

    def call(self, images):
        x = tf.cast(images, tf.float32)[..., :3]
        if self.portable:
            x = _portable_resize(x, self.image_size)
        else:
            x = tf.image.resize(x, self.image_size, method="bilinear", antialias=True)
        rgb = tf.broadcast_to(x, tf.concat([tf.shape(x)[:-1], [3]], axis=0))  # grey repeated, RGB as is
        if self.channels == 1:
            # Both branches are computed; a grey image keeps its level exactly.
            x = tf.where(tf.shape(x)[-1] == 1, x[..., :1], tf.image.rgb_to_grayscale(rgb))
        else:
            x = rgb
        x = tf.clip_by_value(tf.round(x), 0.0, 255.0)
        x = tf.reshape(x, [-1, *self.image_size, self.channels])
        mode = self.preprocessing["normalization"]
        if mode == "unit":
            return x / 255.0
        if mode == "symmetric":
            return x / 127.5 - 1.0
        if mode == "standardize":
            mean = tf.constant(self.preprocessing["mean"], tf.float32)
            std = tf.constant(self.preprocessing["std"], tf.float32)
            return (x - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.image_size, self.channels)

    def get_config(self):
        return {**super().get_config(), "preprocessing": self.preprocessing, "portable": self.portable}


class ProbabilitiesAtInputSize(keras.layers.Layer):
    """A segmentation network's per-pixel probabilities resized to the raw images'
    height and width: `[probabilities, images]` in, probabilities `(batch, height,
    width, classes)` of the images out, as `kcnn.train.predict` resizes them
    (antialiased bilinear: each pixel's probabilities still sum to one).

    Args:
        portable: resize with matrix products (`RawImagePreprocessing`'s `portable`).
    """

    def __init__(self, *, portable: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.portable = portable

    def call(self, inputs):
        probabilities, images = inputs
        size = tf.shape(images)[1:3]
        if self.portable:
            return _portable_resize(probabilities, size)
        return tf.image.resize(probabilities, size, method="bilinear", antialias=True)

    def compute_output_shape(self, input_shapes):
        probabilities, images = input_shapes
        return (probabilities[0], images[1], images[2], probabilities[-1])

    def get_config(self):
        return {**super().get_config(), "portable": self.portable}


def serving_model(model: keras.Model, preprocessing: Mapping[str, Any], *, portable: bool = False) -> keras.Model:
    """`model` behind its preprocessing: uint8 images in, class probabilities out.

    Args:
        model: a classifier (its first output is used: GoogLeNet's auxiliary heads
            are training aids).
        preprocessing: the run's `metadata["preprocessing"]`.
        portable: see `RawImagePreprocessing`.

    Returns:
        A functional model with one input, `images`, uint8 `(None, None, None, None)`
        (NHWC), and one output, `probabilities` (softmax of the network's logits, or
        its own softmax output); of a segmentation network, per-pixel probabilities
        at the images' own height and width (`ProbabilitiesAtInputSize`).
    """
    network = model if len(model.outputs) == 1 else keras.Model(model.inputs, model.outputs[0], name=model.name)
    if len(network.inputs) != 1:
        raise ValueError(f"Expected a classifier with one image input. Received: `{model.name}` with {len(network.inputs)} inputs")
    expected = (*preprocessing["image_size"], preprocessing["channels"])
    received = tuple(network.input_shape[1:])
    if len(received) != 3 or any(r is not None and r != e for r, e in zip(received, expected)):
        raise ValueError(
            f"The preprocessing makes {expected} images, which `{model.name}` does not take. "
            f"Received: model input {received}, preprocessing image_size={preprocessing['image_size']}, "
            f"channels={preprocessing['channels']}"
        )
    images = keras.Input((None, None, None), dtype="uint8", name="images")
    x = RawImagePreprocessing(preprocessing, portable=portable, name="preprocessing")(images)
    outputs = network(x, training=False)
    segments = len(network.outputs[0].shape) == 4
    name = "network_probabilities" if segments else "probabilities"
    if outputs_logits(network):
        outputs = keras.layers.Softmax(name=name)(outputs)
    else:
        outputs = keras.layers.Identity(name=name)(outputs)
    if segments:
        outputs = ProbabilitiesAtInputSize(portable=portable, name="probabilities")([outputs, images])
    return keras.Model(images, outputs, name=f"{model.name}_serving")


def raw_pixels(images: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """Undoes a split's normalization: the uint8 images a `kcnn.data` split was made of
    (resized and channel-adapted, as stored before normalization), to feed a serving
    model the images the network saw."""
    x = np.asarray(images, np.float64)
    mode = preprocessing["normalization"]
    if mode == "unit":
        x = x * 255.0
    elif mode == "symmetric":
        x = (x + 1.0) * 127.5
    elif mode == "standardize":
        x = x * np.asarray(preprocessing["std"]) + np.asarray(preprocessing["mean"])
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def load_exported(path: str | os.PathLike) -> Callable[[Any], np.ndarray]:
    """Opens a model written by `kcnn.export.export` for inference.

    Args:
        path: a SavedModel folder, an `.onnx` file (needs onnxruntime: `pip install
            "kcnn[export]"`) or a `.tflite` file (LiteRT: the `ai_edge_litert`
            interpreter when installed, else TensorFlow's `tf.lite.Interpreter`).

    Returns:
        A function of raw images returning float32 class probabilities `(N, classes)`,
        or for a segmentation model `(N, height, width, classes)` (a list of images
        of several sizes: a list of `(height, width, classes)` arrays). It takes a
        uint8 NHWC array, an NHW array of grey images, or a list of HWC / HW arrays
        of any sizes, with 1, 3 or 4 channels (`CHANNELS`). It raises a ValueError,
        before running the model, for another dtype, another channel count, an empty
        batch, and a 3-D array whose last axis looks like channels (one HWC image:
        pass `image[None]` or `[image]`; N grey images: `images[..., None]`).
    """
    path = pathlib.Path(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        loaded = tf.saved_model.load(os.fspath(path))  # kept: its function reads its variables
        run = lambda batch: np.asarray(loaded.serve(tf.constant(batch)))
    elif path.suffix == ".onnx" and path.is_file():
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError('Running an ONNX model needs onnxruntime: pip install "kcnn[export]"') from error
        session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        run = lambda batch: session.run(None, {name: batch})[0]
    elif path.suffix == ".tflite" and path.is_file():
        run = _litert_runner(path)
    else:
        raise ValueError(
            "Expected a SavedModel folder, an .onnx file or a .tflite file written by kcnn.export. "
            f"Received: path={os.fspath(path)!r}"
        )

    def predict(images) -> np.ndarray:
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError(f"Expected at least one image. Received: images={images!r}")
            outputs = [np.asarray(run(_one_image(image, index)), np.float32) for index, image in enumerate(images)]
            if outputs[0].ndim == 4 and len({o.shape for o in outputs}) > 1:
                return [o[0] for o in outputs]  # per-pixel probabilities of images of several sizes
            return np.concatenate(outputs)
        return np.asarray(run(_checked_batch(_as_batch(np.asarray(images)), "images")), np.float32)

    return predict


_CONTRACT = "uint8 images: an NHWC array, an NHW array of grey images, or a list of HWC / HW arrays"


def _as_batch(batch: np.ndarray) -> np.ndarray:
    """An NHWC batch from an NHWC or NHW array. A 3-D array whose last axis could be
    channels is one HWC image or a batch of grey images 1, 3 or 4 pixels wide: it is
    refused rather than guessed."""
    if batch.ndim == 3 and batch.shape[-1] in CHANNELS:
        raise ValueError(
            f"Expected {_CONTRACT}; a 3-D array is read as NHW (N grey images), and the last axis of this one looks "
            "like channels. Pass one image as `image[None]` or `[image]`, or N grey images as `images[..., None]`. "
            f"Received: images of shape {batch.shape}"
        )
    return batch[..., None] if batch.ndim == 3 else batch


def _one_image(image, index: int) -> np.ndarray:
    """One HWC or HW image of a list, as a batch of one."""
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"Expected {_CONTRACT}. Received: images[{index}] of shape {image.shape}")
    batch = (image[..., None] if image.ndim == 2 else image)[None]
    return _checked_batch(batch, f"images[{index}]", shape=image.shape)


def _checked_batch(batch: np.ndarray, what: str, *, shape: tuple | None = None) -> np.ndarray:
    """`batch` as the exported graph's input, or a ValueError that says what was
    expected: the runtimes take a wrong channel count silently (5: the first three) or
    with an error of their own (2), and an empty batch with a runtime error.

    Args:
        batch: the NHWC batch.
        what: how the message names it ("images", "images[3]").
        shape: the shape the caller gave, when it was not `batch`'s.
    """
    shape = batch.shape if shape is None else shape
    if batch.dtype != np.uint8 or batch.ndim != 4:
        raise ValueError(f"Expected {_CONTRACT}. Received: {what} of dtype {batch.dtype} and shape {shape}")
    if batch.shape[-1] not in CHANNELS:
        raise ValueError(
            f"Expected images with 1 (grey), 3 (RGB) or 4 (RGBA) channels, the last axis. "
            f"Received: {what} of shape {shape}, {batch.shape[-1]} channels"
        )
    if 0 in batch.shape[:3]:
        raise ValueError(f"Expected at least one image of at least 1x1 pixels. Received: {what} of shape {shape}")
    return np.ascontiguousarray(batch)


def _litert_runner(path: pathlib.Path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        # TensorFlow 2.21 still ships it; it warns that ai_edge_litert replaces it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=os.fspath(path))
    else:
        interpreter = Interpreter(model_path=os.fspath(path))
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    shapes = []

    def run(batch):
        if shapes != [batch.shape]:
            # The input's height, width and channels are dynamic: size the graph per shape.
            interpreter.resize_tensor_input(input_index, batch.shape, strict=False)
            interpreter.allocate_tensors()
            shapes[:] = [batch.shape]
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        return interpreter.get_tensor(output_index).copy()

    return run
