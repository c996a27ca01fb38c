"""The one module that reads Keras' private structures.

A functional model keeps its layer graph only in private attributes: each symbolic
tensor's `_keras_history` names the layer that produced it, and each layer's
`_inbound_nodes` holds its calls (`keras.src.ops.node.Node`: the layer, its input and
output tensors, and the call's arguments). kcnn walks that graph to count MACs and
receptive fields (`kcnn.shapes`), to find a classifier's input (`kcnn.train`) and to
name a model's outputs. Everything it reads of Keras' internals is read here, so an
upstream change breaks this module and its test (`tests/test_keras_graph.py`), not
the whole package.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

__all__ = [
    "LayerCall",
    "calls_of",
    "fit_iterations_per_epoch",
    "get_layer",
    "input_layer_name",
    "layer_call",
    "leaf_layers",
    "producer",
]


def producer(tensor) -> Any:
    """The layer (operation) that computed a functional model's tensor, or None for a
    tensor that no layer produced."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


@dataclasses.dataclass(frozen=True, eq=False)
class LayerCall:
    """One call of a layer in a functional graph (Keras' private `Node`).

    Attributes:
        layer: the layer (or nested model) called.
        inputs: the symbolic tensors it was called on, flattened.
        outputs: the tensors it returned, flattened.
        is_input: the call is an `Input`'s placeholder, not a computation.
        key: identifies the call (the same call gives the same key).
    """

    layer: Any
    inputs: tuple
    outputs: tuple
    is_input: bool
    key: int
    _node: Any = dataclasses.field(repr=False)

    def output_spec(self, values: dict[int, Any]) -> Any:
        """The layer's output spec when called on `values` ({id(input tensor): new
        tensor}) with the call's other arguments unchanged."""
        args, kwargs = self._node.arguments.fill_in(values)
        return self.layer.compute_output_spec(*args, **kwargs)


def layer_call(tensor) -> LayerCall | None:
    """The call that produced `tensor`, or None for a tensor that no layer produced."""
    history = getattr(tensor, "_keras_history", None)
    if history is None or history.operation is None:
        return None
    node = history.operation._inbound_nodes[history.node_index]
    return LayerCall(
        layer=node.operation,
        inputs=tuple(node.input_tensors),
        outputs=tuple(node.outputs),
        is_input=bool(node.is_input),
        key=id(node),
        _node=node,
    )


def calls_of(layer) -> list[LayerCall]:
    """Every call of `layer` in the functional graphs it belongs to (one per model it
    was called in, more for a shared layer)."""
    return [layer_call(node.outputs[0]) for node in layer._inbound_nodes if node.outputs]


def input_layer_name(tensor) -> str:
    """The name of the `Input` layer behind a model input (the one users gave, and the
    one `model.summary()` shows); KerasTensor names are generated."""
    layer = producer(tensor)
    return layer.name if layer is not None else tensor.name


def get_layer(model, name: str):
    """`model.get_layer(name)`, with an error that lists the model's last layers."""
    try:
        return model.get_layer(name)
    except ValueError:
        names = [layer.name for layer in model.layers]
        raise ValueError(
            f"`{model.name}` has no layer {name!r}. Layers: {names[-12:]} (last 12). Received: layer={name!r}"
        ) from None


def leaf_layers(model):
    """The layers of `model` in order, nested models replaced by their own layers
    (public API only: a keras.applications backbone inside a model is one layer)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def fit_iterations_per_epoch(dataset) -> int:
    """How many iterators of a `tf.data.Dataset` `Model.fit` starts per epoch.

    Keras' epoch iterator (keras/src/trainers/epoch_iterator.py, 3.15) starts one at each
    epoch's beginning and, when the dataset's length is known, one more at its end
    (which the next epoch drops); a length-unknown dataset gets one. kcnn's training
    split draws its shuffle and augmentation afresh per iterator, so a resumed run moves
    on by this many per finished epoch (`tests/test_reproducibility.py` checks a resumed
    run against an uninterrupted one).
    """
    return 2 if int(dataset.cardinality()) >= 0 else 1
