"""Walking a Keras layer graph: the calls between a model's inputs and outputs, in
order, and the propagation of sizes through them (`propagation.py` has the rules)."""

import keras

from kcnn._keras_graph import layer_call
from kcnn.shapes.propagation import _make_row, _propagate


def _model_io(model):
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError) as e:
        raise ValueError(
            "Expected a functional or Sequential keras.Model built on an "
            f"`Input` (subclassed models have no layer graph). Received: "
            f"model={model.name!r} of type {type(model).__name__}"
        ) from e
    if not inputs or not outputs:
        raise ValueError(
            "Expected a built functional or Sequential keras.Model. "
            f"Received: model={model.name!r} with no inputs/outputs"
        )
    return inputs, outputs


def _topological_nodes(model, inputs, outputs):
    """Call nodes between `inputs` and `outputs`, producers first.

    An iterative depth-first post-order walk over the layer calls, so deep
    networks (ResNet-152 and beyond) do not hit Python's recursion limit.
    """
    input_ids = {id(t) for t in inputs}
    order, done, active = [], set(), set()
    for out in outputs:
        root = None if id(out) in input_ids else layer_call(out)
        if root is None or root.key in done:
            continue
        stack = [(root, iter(root.inputs))]
        active.add(root.key)
        while stack:
            node, pending = stack[-1]
            for tensor in pending:
                if id(tensor) in input_ids:
                    continue
                child = layer_call(tensor)
                if child is None or child.is_input:
                    raise ValueError(
                        f"Layer {node.layer.name!r} of model "
                        f"{model.name!r} uses a tensor that does not come "
                        "from the model's inputs. Expected a connected "
                        f"graph. Received: tensor={tensor!r}"
                    )
                if child.key in done:
                    continue
                if child.key in active:  # pragma: no cover - Keras forbids
                    raise ValueError(f"Cycle at layer {child.layer.name!r}")
                stack.append((child, iter(child.inputs)))
                active.add(child.key)
                break
            else:
                stack.pop()
                active.discard(node.key)
                done.add(node.key)
                order.append(node)
    return order


class _Graph:
    """The call graph of one functional model, compiled once for re-use."""

    def __init__(self, model):
        self.model = model
        self.inputs, self.outputs = _model_io(model)
        self.nodes = _topological_nodes(model, self.inputs, self.outputs)
        self.subgraphs = {}
        for node in self.nodes:
            op = node.layer
            if isinstance(op, keras.Model) and id(op) not in self.subgraphs:
                self.subgraphs[id(op)] = _Graph(op)

    def run(self, input_states, rows, prefix=""):
        """Propagates `input_states` and returns the output states.

        Args:
            input_states: One `_State` per model input.
            rows: A list to append `LayerRow`s to, or `None` to skip the
                bookkeeping (used by the `min_input_size` search).
            prefix: Name prefix for layers of nested models.
        """
        states = {id(t): s for t, s in zip(self.inputs, input_states)}
        for node in self.nodes:
            op = node.layer
            in_states = [states[id(t)] for t in node.inputs]
            sub = self.subgraphs.get(id(op))
            if sub is not None:
                out_states = sub.run(
                    in_states, rows, prefix=f"{prefix}{op.name}/"
                )
            else:
                out_states, info = _propagate(node, in_states, prefix)
                if rows is not None:
                    rows.append(
                        _make_row(node, in_states, out_states, info, prefix)
                    )
            for tensor, state in zip(node.outputs, out_states):
                states[id(tensor)] = state
        return [states[id(t)] for t in self.outputs]
