"""What travels with ImageNet weights: their preprocessing and the class names.

`preprocess(images, weights)` is the NumPy counterpart of keras.applications'
`preprocess_input`, chosen by the weight set rather than by the family (the same
ResNet-50 takes caffe-style BGR input with keras.applications' weights and
mean/std-normalized RGB with torchvision's). `preprocessing_layer` is the same as a
Keras layer, which fine-tuning puts in front of the model so that a saved model takes
plain 0..255 images (`kcnn.train.fine_tune`).

The class list (kcnn/weights/imagenet_classes.txt) is the sorted-WordNet-id order every
weight set of the table uses: ids from tensorflow_datasets' imagenet2012 labels
(Apache-2.0), names from torchvision's category list (BSD-3-Clause).
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np

from kcnn.weights import table

__all__ = ["decode_predictions", "imagenet_classes", "imagenet_wnids", "preprocess", "preprocessing_layer", "weight_set"]

_CLASSES = pathlib.Path(__file__).with_name("imagenet_classes.txt")


@functools.cache
def _classes():
    rows = [line.split("\t") for line in _CLASSES.read_text().splitlines() if line and not line.startswith("#")]
    return tuple(wnid for wnid, _ in rows), tuple(name for _, name in rows)


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names in index order ("tench", "goldfish", ...)."""
    return list(_classes()[1])


def imagenet_wnids() -> list[str]:
    """The 1000 WordNet ids in index order ("n01440764", ...)."""
    return list(_classes()[0])


def decode_predictions(predictions, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """The `top` classes of each row of ImageNet predictions, as keras.applications'
    `decode_predictions`: one list per image of `(wnid, name, score)`, best first.

    Raises:
        ValueError: predictions not of shape (N, 1000).
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or predictions.shape[1] != 1000:
        raise ValueError(f"Expected ImageNet predictions of shape (N, 1000). Received: shape {predictions.shape}")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 1000:
        raise ValueError(f"`top` must be an int in [1, 1000]. Received: top={top!r}")
    wnids, names = _classes()
    order = np.argsort(-predictions, axis=1, kind="stable")[:, :top]
    return [[(wnids[j], names[j], float(row[j])) for j in indices] for row, indices in zip(predictions, order)]


def weight_set(weights) -> table.WeightSet:
    """The `WeightSet` meant by `weights`: a row, its name ("resnet50.tv2_in1k"), or a
    model built with `weights="imagenet..."`."""
    if isinstance(weights, table.WeightSet):
        return weights
    if isinstance(weights, str):
        return table.get_weight_set(weights)
    from kcnn.weights.transfer import weight_set_of

    found = weight_set_of(weights)
    if found is None:
        raise ValueError(
            "Expected a weight set, its name (e.g. 'resnet50.tv2_in1k') or a model built with weights='imagenet...'. "
            f"Received: {weights!r}"
        )
    return found


def preprocess(images, weights, *, resize: bool = False) -> np.ndarray:
    """Prepares RGB images of 0..255 pixels for a weight set.

    Args:
        images: an NHWC array (or a list of HWC arrays when `resize`).
        weights: see `weight_set`.
        resize: also resize the short side to the weights' resize size and take the
            center crop (`Preprocessing.resize_size`, `input_size`), with their
            interpolation, as they were evaluated.

    Returns:
        float32 NHWC array.
    """
    spec = weight_set(weights).preprocessing
    if resize:
        images = np.stack([_resize_and_crop(np.asarray(image, np.float32), spec) for image in images])
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"Expected RGB images as an NHWC array with 3 channels. Received: shape {x.shape}")
    if spec.mode == "caffe":
        return x[..., ::-1] - np.asarray(spec.mean, np.float32)
    return (x / 255.0 - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)


def _resize_and_crop(image, spec):
    import tensorflow as tf

    height, width = image.shape[:2]
    scale = spec.resize_size / min(height, width)
    size = (max(spec.input_size, round(height * scale)), max(spec.input_size, round(width * scale)))
    resized = tf.image.resize(image, size, method=spec.interpolation, antialias=True).numpy()
    top = (size[0] - spec.input_size) // 2
    left = (size[1] - spec.input_size) // 2
    return resized[top : top + spec.input_size, left : left + spec.input_size]


def preprocessing_layer(weights, name: str = "image_normalization"):
    """`preprocess` as a Keras layer (`kcnn.layers.ImageNormalization`)."""
    from kcnn.layers import ImageNormalization

    spec = weight_set(weights).preprocessing
    return ImageNormalization(spec.mode, spec.mean, spec.std, name=name)
