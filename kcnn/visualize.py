"""What a network's layers hold, as pictures: the first layer's filters as an image grid,
the activation maps of any layer for an image (the lecture's "activation maps"), and
heat maps over an image (`kcnn.explain`).

    from kcnn import visualize
    visualize.filters("saved_models/lenet5-digits-...")                     # conv1's 6 filters
    visualize.activation_maps("saved_models/lenet5-digits-...", "conv3", "seven.png")

Each plotting function returns a `matplotlib.figure.Figure` (Jupyter shows it) or draws
into the `figure` it is given (a Figure or a SubFigure, to compose several); `save`
writes one to a file atomically. Only Matplotlib's object-oriented API is used: no
pyplot, so no global figure state. The arrays behind each picture come from
`filter_images`, `activations` and `overlay`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from matplotlib.figure import Figure

from kcnn import data as kdata
from kcnn._files import atomic_path
from kcnn._keras_graph import get_layer

__all__ = [
    "activation_maps",
    "activations",
    "explanation_figure",
    "filter_images",
    "filters",
    "first_conv_layer",
    "model_input",
    "overlay",
    "save",
]


def first_conv_layer(model: keras.Model) -> str:
    """The name of the model's first convolution (a layer with a 4D kernel)."""
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) == 4:
            return layer.name
    raise ValueError(f"Expected a model with a convolutional layer. Received: `{model.name}`, which has none")


def filter_images(model_or_run, layer: str | None = None) -> np.ndarray:
    """A convolution's filters as images, each scaled to [0, 1] by its own minimum and
    maximum (a constant filter is 0.5).

    Args:
        model_or_run: a Keras model, a run folder or a `.keras` file.
        layer: a layer with a 4D kernel; default the first (`first_conv_layer`).

    Returns:
        float array `(filters, k, k, channels)`: RGB for a layer on 3 channels, else
        one grey image per filter (the mean over its input channels).
    """
    model, _ = _resolve(model_or_run)
    name = layer or first_conv_layer(model)
    kernel = getattr(get_layer(model, name), "kernel", None)
    if kernel is None or len(kernel.shape) != 4:
        raise ValueError(f"Expected a convolution with a 4D kernel. Received: layer={name!r} of `{model.name}`")
    weights = keras.ops.convert_to_numpy(kernel).astype(np.float64)  # (k, k, in, out)
    if weights.shape[2] != 3:
        weights = weights.mean(axis=2, keepdims=True)
    images = np.moveaxis(weights, 3, 0)  # (out, k, k, channels)
    low = images.min(axis=(1, 2, 3), keepdims=True)
    span = images.max(axis=(1, 2, 3), keepdims=True) - low
    return np.where(span > 0, (images - low) / np.where(span > 0, span, 1.0), 0.5).astype(np.float32)


def filters(model_or_run, layer: str | None = None, *, columns: int | None = None, figure=None):
    """Draws a convolution's filters, one small image each (`filter_images`).

    Args:
        model_or_run: a Keras model, a run folder or a `.keras` file.
        layer: the convolution; default the first.
        columns: images per row (default: all in one row up to 16).
        figure: a Matplotlib Figure or SubFigure to draw into; default a new Figure.

    Returns:
        The figure.
    """
    model, _ = _resolve(model_or_run)
    name = layer or first_conv_layer(model)
    images = filter_images(model, name)
    figure = _grid(
        images,
        columns,
        figure,
        titles=[f"#{i + 1}" for i in range(len(images))],
        colormap="gray",
        size=1.1,
    )
    kernel = images.shape[1]
    figure.suptitle(f"{name}: {len(images)} filters of {kernel}x{kernel}", fontsize=9)
    return figure


def model_input(images, preprocessing: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images as the network sees them.

    Args:
        images: an image file path, a list of paths, or images (a batch array, or a
            list of arrays of any size: raw 0..255 pixels when `preprocessing` is given).
        preprocessing: a run's `metadata["preprocessing"]`, applied to the images; None
            for images that are the network's input already (as `kcnn.train.predict`
            takes them for a bare model).

    Returns:
        `(inputs, pictures)`: the network's float32 input batch, and the same images to
        show on 0..255 (resized and channel-adapted as the network sees them; without
        `preprocessing`, each image's values scaled to 0..255).
    """
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, (str, os.PathLike)) for i in images):
        if preprocessing is None:
            raise ValueError("Reading image files needs the run's preprocessing: pass a run folder. Received: a bare model")
        images = [kdata.load_image(path) for path in images]
    if preprocessing is None:
        inputs = np.asarray(images, np.float32)
        if inputs.ndim == 3:
            inputs = inputs[..., None]
        low = inputs.min(axis=(1, 2, 3), keepdims=True)
        span = np.maximum(inputs.max(axis=(1, 2, 3), keepdims=True) - low, 1e-12)
        return inputs, (inputs - low) / span * 255.0
    pictures = kdata.preprocess_images(images, {**preprocessing, "normalization": "none"})
    return kdata.preprocess_images(images, preprocessing), pictures


def activations(model_or_run, layer: str, images) -> np.ndarray:
    """The output of a named layer for images (see `model_input` for `images`).

    Returns:
        float32 array `(N, height, width, channels)` for a feature map, `(N, units)`
        for a vector.
    """
    model, metadata = _resolve(model_or_run)
    return _activations(model, metadata, layer, images)


def _activations(model, metadata, layer, images) -> np.ndarray:
    from kcnn.train.transfer import feature_extractor

    inputs, _ = model_input(images, metadata.get("preprocessing"))
    get_layer(model, layer)
    return np.asarray(feature_extractor(model, layer).predict(inputs, verbose=0), np.float32)


def activation_maps(model_or_run, layer: str, image, *, columns: int | None = None, max_maps: int = 64, figure=None):
    """Draws the activation maps of a layer for one image: the image as the network
    sees it, then one map per channel (the first `max_maps`).

    Args:
        model_or_run: a Keras model, a run folder or a `.keras` file.
        layer: a layer with a feature-map output, e.g. "conv1", "conv5_block3_out".
        image: an image file, or one image (raw 0..255 pixels for a run; preprocessed
            for a bare model).
        columns: maps per row (default: up to 8 in a row, more for many maps).
        max_maps: at most this many maps are drawn.
        figure: a Matplotlib Figure or SubFigure to draw into; default a new Figure.

    Returns:
        The figure.
    """
    model, metadata = _resolve(model_or_run)
    images = image if isinstance(image, (str, os.PathLike)) else [np.asarray(image)]
    maps = _activations(model, metadata, layer, images)[0]
    if maps.ndim != 3:
        raise ValueError(f"Expected a layer whose output is a feature map (height, width, channels). Received: layer={layer!r} with output shape {maps.shape}")
    _, pictures = model_input(images, metadata.get("preprocessing"))
    channels = maps.shape[-1]
    shown = np.moveaxis(maps[..., :max_maps], -1, 0)
    if figure is None:
        columns = columns or _columns(len(shown))
        rows = math.ceil(len(shown) / columns)
        # The maps take 4/5 of 8 inches: square maps, a line of title above.
        figure = Figure(figsize=(8, max(1.8, rows * 6.4 / columns + 0.5)), layout="constrained")
    left, right = figure.subfigures(1, 2, width_ratios=[1, 4])
    ax = left.add_subplot()
    _show(ax, pictures[0] / 255.0)
    ax.set_title("input", fontsize=8)
    _grid(shown, columns, right, titles=None, colormap="viridis", size=None)
    height, width = maps.shape[:2]
    more = f" (first {len(shown)})" if channels > len(shown) else ""
    right.suptitle(f"{layer}: {channels} maps of {height}x{width}{more}", fontsize=9)
    return figure


def overlay(image, heatmap, *, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """A heat map blended over an image.

    Args:
        image: `(H, W)` or `(H, W, 1 or 3)` pixels on 0..255.
        heatmap: `(h, w)` values in [0, 1]; resized (bilinear) to the image's size.
        alpha: the heat map's weight.
        colormap: a Matplotlib colormap name.

    Returns:
        float RGB array `(H, W, 3)` in [0, 1]: `(1 - alpha) * image + alpha * colormap(heatmap)`.
    """
    from matplotlib import colormaps

    picture = np.asarray(image, np.float64) / 255.0
    if picture.ndim == 2:
        picture = picture[..., None]
    picture = np.broadcast_to(picture, (*picture.shape[:2], 3))
    heat = np.asarray(heatmap, np.float64)
    if heat.shape != picture.shape[:2]:
        import tensorflow as tf

        heat = tf.image.resize(heat[..., None], picture.shape[:2], method="bilinear").numpy()[..., 0]
    colours = colormaps[colormap](np.clip(heat, 0.0, 1.0))[..., :3]
    return np.clip((1.0 - alpha) * picture + alpha * colours, 0.0, 1.0)


def explanation_figure(explanation, figure=None):
    """Draws a `kcnn.explain.Explanation`: the image, the heat map over it, and the
    predicted classes."""
    figure = figure if figure is not None else Figure(figsize=(8, 2.8), layout="constrained")
    image_ax, heat_ax, bars_ax = figure.subplots(1, 3, width_ratios=[1, 1, 1.2])
    picture = explanation.image / 255.0
    _show(image_ax, picture)
    image_ax.set_title("input", fontsize=9)
    heat_ax.imshow(overlay(explanation.image, explanation.heatmap), interpolation="bilinear")
    heat_ax.axis("off")
    where = f" at {explanation.layer}" if explanation.layer else ""
    heat_ax.set_title(f"{_METHOD_NAMES.get(explanation.method, explanation.method)} for {explanation.class_name!r}{where}", fontsize=9)
    names = [name for name, _ in explanation.predictions][::-1]
    probabilities = [p for _, p in explanation.predictions][::-1]
    colours = ["tab:orange" if name == explanation.class_name else "tab:blue" for name in names]
    bars_ax.barh(range(len(names)), probabilities, color=colours)
    bars_ax.set_yticks(range(len(names)), names)
    bars_ax.set_xlim(0, 1)
    bars_ax.set_xlabel("probability", fontsize=8)
    bars_ax.set_title("predicted classes", fontsize=9)
    return figure


_METHOD_NAMES = {"gradcam": "Grad-CAM", "saliency": "saliency"}


def save(figure, path: str | os.PathLike, *, dpi: int = 100) -> None:
    """Writes a figure to `path` (format from its extension) atomically: a temporary
    file beside it, renamed when complete."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=dpi)


# --------------------------------------------------------------------------


def _resolve(model_or_run) -> tuple[keras.Model, dict[str, Any]]:
    from kcnn.train.inference import resolve_model

    return resolve_model(model_or_run)



def _show(ax, picture: np.ndarray) -> None:
    """An image on [0, 1]: grey (1 channel) or RGB."""
    picture = np.asarray(picture)
    if picture.ndim == 3 and picture.shape[-1] == 1:
        picture = picture[..., 0]
    if picture.ndim == 2:
        ax.imshow(picture, cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(np.clip(picture, 0.0, 1.0))
    ax.axis("off")


def _grid(images: np.ndarray, columns: int | None, figure, *, titles: Sequence[str] | None, colormap: str, size: float | None):
    count = len(images)
    if columns is None:
        columns = min(count, 16) if titles is not None else _columns(count)
    rows = math.ceil(count / columns)
    if figure is None:
        figure = Figure(figsize=(max(size * columns, 3.0), size * rows + 0.5), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for index, ax in enumerate(axes):
        ax.axis("off")
        if index >= count:
            continue
        picture = images[index]
        if picture.ndim == 3 and picture.shape[-1] == 1:
            picture = picture[..., 0]
        ax.imshow(picture, cmap=colormap if picture.ndim == 2 else None, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[index], fontsize=7)
    return figure


def _columns(count: int) -> int:
    """Maps per row: up to 8 in one row, about twice as many columns as rows beyond."""
    return min(count, max(8, math.ceil(math.sqrt(2 * count))))
