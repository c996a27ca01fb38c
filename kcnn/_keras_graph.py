"""The one module that reads Keras' private structures.

A functional model keeps its layer graph only in private attributes: each symbolic
tensor's `_keras_history` names the layer that produced it, and each layer's
`_inbound_nodes` holds its calls (`keras.src.ops.node.Node`: the layer, its input and
output tensors, and the call's arguments). kcnn walks that graph to count MACs and
receptive fields (`kcnn.shapes`), to find a classifier's input (`kcnn.train`) and to
name a model's outputs.

Inside `keras.StatelessScope(initialize_variables=False)` a layer's weights are created
without memory: Keras records each as uninitialized in a process-wide list
(`keras.src.backend.common.global_state`, "uninitialized_variables") and allocates them
when a scope that initializes variables ends. kcnn lays a model out that way to count
its parameters before any is allocated (`kcnn.models._base`, `kcnn.registry`), and a
refused model's variables must then leave that list unallocated, which Keras has no
public way to do (`deferred_variables`, `unallocated_variables`).

Everything kcnn reads of Keras' internals is read here, so an upstream change breaks
this module and its tests (`tests/test_keras_graph.py`, `tests/test_keras_variables.py`),
not the whole package.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import keras
from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import in_stateless_scope

__all__ = [
    "LayerCall",
    "calls_of",
    "deferred_variables",
    "fit_iterations_per_epoch",
    "get_layer",
    "input_layer_name",
    "layer_call",
    "leaf_layers",
    "producer",
    "unallocated_variables",
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


# The registry of variables created without memory (the module docstring).
_PENDING = "uninitialized_variables"


def _pending() -> list:
    return global_state.get_global_attribute(_PENDING, [], set_to_default=True)


@contextlib.contextmanager
def deferred_variables() -> Iterator[None]:
    """Variables created in the block take no memory until it ends: then they are
    allocated and initialized, in the order they were created (the same values as
    without the block); if it raises, they are dropped, never allocated.

    Within a stateless scope already (a caller's), the block is that scope's.
    """
    if in_stateless_scope():
        yield
        return
    start = len(_pending())
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    except BaseException:
        del _pending()[start:]
        raise
    created = _pending()[start:]
    del _pending()[start:]
    for variable in created:
        variable._deferred_initialize()


@contextlib.contextmanager
def unallocated_variables() -> Iterator[None]:
    """Variables created in the block are never allocated: they are dropped when it
    ends, however it ends (to lay out a model and count its parameters only)."""
    start = len(_pending())
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        del _pending()[start:]
