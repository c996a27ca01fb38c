"""Transfer learning: fine-tuning a new head, feature extraction and image search."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from kcnn import blocks
from kcnn import data as kdata
from kcnn._keras_graph import get_layer, leaf_layers, producer
from kcnn.train.config import TrainConfig
from kcnn.train.distribute import resolve_device
from kcnn.train.driver import TrainResult, train_phases
from kcnn.train.inference import check_compatible, resolve_model
from kcnn.train.inputs import load_data
from kcnn.train.metadata import start_metadata
from kcnn.train.phases import Phase
from kcnn.train.runs import RunFolder, claim_output, open_run
from kcnn.weights import preprocessing_layer, weight_set_of

# Names of the layers `replace_head` adds.
HEAD_LAYERS = ("avg_pool", "dropout", "predictions")
# The lecture's names for AlexNet's fully connected layers, which VGG (keras.applications
# naming) calls fc1/fc2: "fc7" means the second fully connected layer in both.
FC_ALIASES = {"fc6": "fc1", "fc7": "fc2"}
# A stage is a layer-name prefix made of one of these words and a number: conv5,
# block5, inception5, block_16 (MobileNetV2), mixed10 (Inception v3), stage4. Lower
# case only: keras.applications capitalizes the single layers after the last stage
# (MobileNetV2's `Conv_1`), which then come along as layers after the stage.
_STAGE = re.compile(r"^((?:conv|block|inception|mixed|stage|layer)_?\d+)")


def _classifier_input(model: keras.Model):
    """The tensor the model's classifier reads, and whether it has a classifier.

    Walks back from the (main) output over a softmax activation, the classifier (a
    Dense layer, or LeNet's RBF layer) and any dropout in front of it. A model without
    a classifier (`include_top=False`) gives its output.
    """
    tensor = model.outputs[0]
    layer = producer(tensor)
    if isinstance(layer, keras.layers.Activation) and getattr(layer.activation, "__name__", "") in ("softmax", "sigmoid"):
        tensor = layer.input
        layer = producer(tensor)
    if not (isinstance(layer, keras.layers.Dense) or layer.name in ("predictions", "rbf")):
        return model.outputs[0], False
    tensor = layer.input
    while isinstance(producer(tensor), keras.layers.Dropout):
        tensor = producer(tensor).input
    return tensor, True


def replace_head(model: keras.Model, classes: int, *, dropout: float = 0.2, name: str | None = None) -> keras.Model:
    """A new classifier for `classes` on `model`'s features (its layers are shared).

    The features are what the old classifier read (auxiliary heads are dropped), or
    the output of a model without a top; a feature map is average-pooled. The head is
    the builders' own (`kcnn.blocks.classifier_head`): `avg_pool` (if pooling) ->
    `dropout` (if `dropout`) -> `predictions`, as GoogLeNet's and ResNet's.

    Args:
        model: a Keras classifier or backbone.
        classes: number of classes of the new head.
        dropout: dropout before the new classifier.
        name: the new model's name (default: `model.name`).
    """
    features, _ = _classifier_input(model)
    if len(features.shape) not in (2, 4):
        raise ValueError(f"Expected features of rank 2 or 4 (a vector or a feature map). Received: shape {features.shape}")
    outputs = blocks.classifier_head(
        features, classes, pooling="avg" if len(features.shape) == 4 else None, dropout=dropout
    )
    return keras.Model(model.inputs, outputs, name=name or model.name)


def _containers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield layer
            yield from _containers(layer)


def stage_prefix(model: keras.Model) -> str:
    """The last stage of a backbone, by layer name: "conv5" for a ResNet, "block5" for
    VGG, "inception5" for GoogLeNet, "block_16" for MobileNetV2.

    Raises:
        ValueError: if no layer is named like a stage.
    """
    names = [layer.name for layer in leaf_layers(model) if layer.name not in HEAD_LAYERS]
    for name in reversed(names):
        match = _STAGE.match(name)
        if match:
            return match.group(1)
    raise ValueError(
        "Could not find the model's last stage by layer name (conv5*, block5*, inception5*, ...): pass `unfreeze` "
        f"with layer-name prefixes. Received: layers {names[-5:]}"
    )


def _matches(name, prefixes):
    # "block1" must not match "block10_conv1": the prefix ends where a digit cannot follow.
    return any(re.match(re.escape(prefix) + r"(?!\d)", name) for prefix in prefixes)


def set_trainable(model: keras.Model, unfreeze: Sequence[str] = (), *, train_batch_norm: bool = False) -> list[str]:
    """Freezes the backbone except its layers from the first one named by a prefix on.

    The head (`HEAD_LAYERS`) is always trainable. BatchNormalization layers stay
    frozen unless `train_batch_norm`: in Keras a frozen BatchNormalization runs in
    inference mode, so its moving statistics are neither used from the batch nor
    updated, which is what keeps a pretrained backbone's features intact.

    Args:
        model: the model with its new head.
        unfreeze: layer-name prefixes, e.g. ["conv5"]; () freezes the whole backbone.
        train_batch_norm: let unfrozen BatchNormalization layers train.

    Returns:
        The names of the trainable layers that have weights.
    """
    for container in _containers(model):
        container.trainable = True  # Resets the nested layers; the leaves decide below.
    unfrozen = False
    trainable = []
    for layer in leaf_layers(model):
        unfrozen = unfrozen or (bool(unfreeze) and _matches(layer.name, unfreeze))
        train = layer.name in HEAD_LAYERS or unfrozen
        if isinstance(layer, keras.layers.BatchNormalization) and not train_batch_norm:
            train = False
        layer.trainable = train
        if train and layer.weights:
            trainable.append(layer.name)
    if unfreeze and not unfrozen:
        raise ValueError(f"No layer name starts with any of the `unfreeze` prefixes. Received: unfreeze={list(unfreeze)}")
    return trainable


def fine_tune(
    model: keras.Model | str | os.PathLike,
    data: Any,
    config: TrainConfig | None = None,
    *,
    head_epochs: int | None = None,
    unfreeze: str | Sequence[str] = "auto",
    learning_rate_factor: float = 0.1,
    dropout: float = 0.2,
    train_batch_norm: bool = False,
    output: str | os.PathLike | None = None,
    data_options: Mapping[str, Any] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
) -> TrainResult:
    """Transfer learning in two phases, as one run folder.

    1. The classifier is replaced by a new one for the data's classes (see
       `replace_head`) and trained on the frozen backbone, whose BatchNormalization
       layers run in inference mode: no backbone weight (moving statistics included)
       changes.
    2. The top stages are unfrozen by layer-name prefix (every layer from the first
       one named by `unfreeze` on; BatchNormalization stays frozen) and the model
       trains again at `learning_rate_factor` times the learning rate.

    Args:
        model: a Keras model (a kcnn or keras.applications model, with or without its
            top), or a run folder / .keras file. A kcnn model built with pretrained
            weights (`kcnn.resnet50(weights="imagenet", include_top=False)`) gets
            their normalization as its first layer, and its data is loaded as
            0..255 pixels (normalization "none"), recorded in metadata.json so that
            `predict` and `evaluate` feed it the same. A model's layers are shared with
            the new one and train in place, as in `fit`: they end with the best
            epoch's weights, on every device.
        data: a `kcnn.data.Dataset` or a `kcnn.data.load` source (loaded at the
            model's input size, with the base run's normalization if any).
        config: a `TrainConfig`; `epochs` counts both phases.
        head_epochs: epochs of phase 1 (default: half of `config.epochs`); phase 2
            gets the rest (0 skips it).
        unfreeze: "auto" (the last stage, see `stage_prefix`), a prefix, or a list.
        learning_rate_factor: phase 2's learning rate relative to phase 1's.
        dropout: dropout before the new classifier.
        train_batch_norm: let BatchNormalization layers of unfrozen stages train.
        output: the run folder; an unfinished run there is resumed.
        data_options: more `kcnn.data.load` arguments when `data` is loaded here
            (`kcnn.data.DATA_OPTIONS`, e.g. `{"data_dir": DIR, "download": True}`);
            the size and channels are the model's.
        callbacks: extra Keras callbacks.
        verbose: `model.fit` verbosity.

    Returns:
        A `TrainResult` (its metadata has a "fine_tuning" entry).
    """
    config = config or TrainConfig()
    device = resolve_device(config)  # First: a multi-worker strategy needs TensorFlow without ops yet.
    # Before the base model loads and the data: another trainer in `output` is refused at once.
    with claim_output(output, device) as claimed:
        base, base_metadata = resolve_model(model)
        if head_epochs is None:
            head_epochs = max(1, config.epochs // 2)
        if isinstance(head_epochs, bool) or not isinstance(head_epochs, int) or not 1 <= head_epochs <= config.epochs:
            raise ValueError(f"`head_epochs` must be an int in [1, config.epochs={config.epochs}]. Received: head_epochs={head_epochs!r}")
        if not 0 < learning_rate_factor <= 1:
            raise ValueError(f"`learning_rate_factor` must be in (0, 1]. Received: learning_rate_factor={learning_rate_factor!r}")
        loaded_here = not isinstance(data, kdata.Dataset)
        # The base run's normalization, which its features expect; a model without run
        # metadata takes data_options["normalize"] or "unit". Pretrained weights
        # (`weights="imagenet..."`) bring their own: the new model normalizes 0..255
        # images itself, as its first layer, so a saved run needs nothing else.
        pretrained = weight_set_of(base)
        normalize = "none" if pretrained else base_metadata.get("preprocessing", {}).get("normalization")
        data = load_data(data, config, input_shape=base.input_shape[1:], normalize=normalize, data_options=data_options)
        new = replace_head(base, data.num_classes, dropout=dropout)
        if pretrained:
            new = _normalizing(new, pretrained)
        check_compatible(new, data)
        prefixes = [stage_prefix(new)] if unfreeze == "auto" else [unfreeze] if isinstance(unfreeze, str) else list(unfreeze)

        head = Phase(
            dataclasses.replace(config, epochs=head_epochs),
            lambda m: set_trainable(m),
            "the new classifier on the frozen backbone",
        )
        phases = [head]
        if config.epochs > head_epochs:
            second = dataclasses.replace(
                config, epochs=config.epochs - head_epochs, learning_rate=config.learning_rate * learning_rate_factor
            )
            phases.append(
                Phase(
                    second,
                    lambda m: set_trainable(m, prefixes, train_batch_norm=train_batch_norm),
                    f"unfrozen from {', '.join(prefixes)} at {learning_rate_factor:g}x the learning rate",
                )
            )
        if output is None:
            output = RunFolder.new(f"{new.name}_finetuned", data.name or "data").path
        run = open_run(claimed or output, new.name, data, config, kind="fine_tune", worker=None if device.is_chief else device.task)
        metadata = start_metadata(run, new, data, config, None, kind="fine_tune", loaded_here=loaded_here)
        metadata["fine_tuning"] = {
            "base": os.fspath(model) if isinstance(model, (str, os.PathLike)) else base.name,
            "base_model": base_metadata.get("model"),
            "head_epochs": head_epochs,
            "unfreeze": prefixes,
            "unfrozen_layers": set_trainable(new, prefixes, train_batch_norm=train_batch_norm),
            "learning_rate_factor": learning_rate_factor,
            "dropout": dropout,
            "train_batch_norm": train_batch_norm,
        }
        if pretrained:
            metadata["fine_tuning"]["weights"] = {
                "name": pretrained.name,
                "url": pretrained.url,
                "license": pretrained.license,
                "preprocessing": pretrained.preprocessing.as_dict(),
                "applied_by": "the model's first layer (image_normalization) to 0..255 RGB images",
            }
        return train_phases(run, metadata, new, data, phases, callbacks=callbacks, verbose=verbose, device=device)


def _normalizing(model: keras.Model, weight_set) -> keras.Model:
    """`model` behind its weights' input normalization (`kcnn.weights.preprocessing_layer`):
    the new model takes 0..255 RGB images. The graph is rebuilt flat, with `model`'s
    own layers (shared, not copied), so the output layer, the stages and the layer
    names are what they were (a nested model would hide them from the loss set-up and
    from `set_trainable`)."""
    inputs = keras.Input(model.input_shape[1:], name="image")
    normalized = preprocessing_layer(weight_set)(inputs)

    def call(layer, *args, **kwargs):
        if args and args[0] is inputs:
            args = (normalized, *args[1:])
        return layer(*args, **kwargs)

    structure = [inputs] if isinstance(model.input, (list, tuple)) else inputs
    return keras.models.clone_model(model, input_tensors=structure, clone_function=lambda layer: layer, call_function=call)


def feature_extractor(model: keras.Model | str | os.PathLike, layer: str | None = None, *, pooling: str | None = None) -> keras.Model:
    """A model mapping images to the features of one layer.

    Args:
        model: a Keras model, a run folder or a .keras file.
        layer: the layer whose output is the feature, e.g. "fc2" (VGG's second fully
            connected layer, 4096-d), "fc7" (the lecture's name: `fc7` in AlexNet,
            `fc2` in VGG), "avg_pool" (ResNet's pooled 512-d/2048-d features) or
            "conv5_block3_out". Default: what the classifier reads (VGG fc2,
            ResNet/GoogLeNet avg_pool), or the output of a model without a top.
        pooling: None, "avg" or "max": pool a feature map to a vector.

    Returns:
        A `keras.Model` sharing `model`'s layers.
    """
    model, _ = resolve_model(model)
    if layer is None:
        tensor, _ = _classifier_input(model)
    else:
        names = {each.name for each in model.layers}
        tensor = get_layer(model, layer if layer in names else FC_ALIASES.get(layer, layer)).output
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if pooling and len(tensor.shape) == 4:
        pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
        tensor = pool(name=f"features_{pooling}_pool")(tensor)
    return keras.Model(model.inputs, tensor, name=f"{model.name}_features")


def nearest_neighbours(features_db, query, k: int = 5, *, metric: str = "cosine"):
    """The `k` database entries closest to each query (image search on features).

    Args:
        features_db: `(n, d)` features of the database images.
        query: `(d,)` or `(q, d)` features of the query images.
        k: neighbours per query (at most n).
        metric: "cosine" (distance 1 - cosine similarity) or "l2" (Euclidean).

    Returns:
        `(indices, distances)`, each `(q, k)` (or `(k,)` for a single query), nearest
        first.
    """
    db = np.asarray(features_db, np.float64)
    q = np.asarray(query, np.float64)
    single = q.ndim == 1
    q = q[None] if single else q
    if db.ndim != 2 or q.ndim != 2 or q.shape[1] != db.shape[1]:
        raise ValueError(f"Expected features_db (n, d) and query (d,) or (q, d). Received: shapes {db.shape} and {np.shape(query)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(db):
        raise ValueError(f"`k` must be an int in [1, {len(db)}]. Received: k={k!r}")
    metrics = {"cosine": "cosine", "l2": "euclidean"}
    if metric not in metrics:
        raise ValueError(f"`metric` must be 'cosine' or 'l2'. Received: metric={metric!r}")
    from sklearn.neighbors import NearestNeighbors  # Deferred: only image search needs it.

    index = NearestNeighbors(n_neighbors=k, metric=metrics[metric], algorithm="brute").fit(db)
    distances, indices = index.kneighbors(q)
    return (indices[0], distances[0]) if single else (indices, distances)
