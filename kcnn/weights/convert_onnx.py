"""ONNX graphs (the ONNX Model Zoo's exports of the BVLC Caffe models) -> kcnn layers'
weights, matched by the graph's structure, not by tensor names.

Both graphs are walked the same way: from the output back through each operation's
inputs in their order (a concatenation's branches in the order they are joined),
listing an operation once all it reads is listed. That gives one order of the
convolutions, dense layers, local response normalizations and max pools that depends
on how the network is wired, not on the order the file lists its nodes or on any name.
The two lists must agree operation by operation (kind, kernel, strides, padding,
groups, LRN constants, channels), and each ONNX convolution and `Gemm` fills the kcnn
layer at its place; every float initializer of the file must find one.

Layout conversions: convolution kernels OIHW -> HWIO (`w.transpose(2, 3, 1, 0)`; a
grouped convolution keeps its groups contiguous in both), `Gemm` weights (out, in)
with transB=1 -> (in, out). ONNX flattens an NCHW map in C,H,W order, so the first
dense layer after a map larger than 1x1 is loaded only into a model that flattens
C,H,W as well (`variant="caffe"`'s `Permute` before its `Flatten`).

Checked against onnxruntime by tests/test_weights_onnx.py on graphs that
tests/fixtures/make_onnx_fixtures.py builds with the zoo files' structure.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from kcnn._keras_graph import layer_call
from kcnn.layers import LocalResponseNormalization
from kcnn.weights.convert import WeightMapError
from kcnn.weights.formats import check_finite

__all__ = ["from_onnx"]

# Operations that carry a tensor through without changing what the mapping compares, and
# those that only compute their arguments (a Reshape's shape, opset 12's Dropout ratio):
# their constant inputs are no weights.
_PASS_THROUGH = frozenset({
    "Relu", "Dropout", "Softmax", "Reshape", "Flatten", "Identity", "Concat", "AveragePool", "GlobalAveragePool",
    "Constant", "Shape", "Gather", "Unsqueeze", "Cast",
})


@dataclasses.dataclass
class _Op:
    """One operation of either graph, as the two are compared."""

    kind: str  # "conv", "dense", "lrn", "maxpool"
    attributes: dict
    where: str  # the ONNX node's or the kcnn layer's name, for messages
    arrays: list = dataclasses.field(default_factory=list)
    layer: object = None


def _attribute_values(node):
    import onnx

    return {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}


def _onnx_ops(model, path):
    """The ONNX graph's operations in the walk's order, with their weights."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    used, ops, seen = set(), [], set()

    def weight(name):
        used.add(name)
        return check_finite(path, name, numpy_helper.to_array(initializers[name]))

    def visit(name):
        node = producers.get(name)
        if node is None or id(node) in seen:
            return
        seen.add(id(node))
        for input_name in node.input:
            if input_name and input_name not in initializers:
                visit(input_name)
        if node.op_type in _PASS_THROUGH:
            used.update(node.input)
        ops.extend(_onnx_op(node, weight))

    for output in graph.output:
        visit(output.name)
    unused = sorted(name for name, tensor in initializers.items() if name not in used and tensor.data_type in (1, 10, 11))
    if unused:
        raise WeightMapError(f"{len(unused)} weight tensors of the file have no place in the walk from its output, e.g. {unused[:5]}")
    return ops


def _onnx_op(node, weight):
    attributes = _attribute_values(node)
    where = f"ONNX node {node.name or node.output[0]!r} ({node.op_type})"
    if node.op_type == "Conv":
        kernel = weight(node.input[1])
        if any(d != 1 for d in attributes.get("dilations", (1, 1))) or attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise WeightMapError(f"{where} is dilated or auto-padded, which no kcnn layer of these networks is")
        arrays = [np.transpose(kernel, (2, 3, 1, 0))] + ([weight(node.input[2])] if len(node.input) > 2 and node.input[2] else [])
        return [_Op("conv", {
            "kernel": tuple(kernel.shape[2:]),
            "strides": tuple(attributes.get("strides", (1, 1))),
            "pads": tuple(attributes.get("pads", (0, 0, 0, 0))),
            "groups": attributes.get("group", 1),
            "channels": (kernel.shape[1] * attributes.get("group", 1), kernel.shape[0]),
            "bias": len(arrays) == 2,
        }, where, arrays)]
    if node.op_type == "Gemm":
        if attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0:
            raise WeightMapError(f"{where} has transA, alpha or beta other than a dense layer's")
        matrix = weight(node.input[1])
        matrix = matrix.T if attributes.get("transB", 0) else matrix
        arrays = [matrix] + ([weight(node.input[2]).reshape(-1)] if len(node.input) > 2 and node.input[2] else [])
        return [_Op("dense", {"channels": tuple(matrix.shape), "bias": len(arrays) == 2}, where, arrays)]
    if node.op_type == "LRN":
        size = attributes["size"]
        alpha, beta, bias = (_float32(attributes.get(key, default)) for key, default in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
        return [_Op("lrn", {"size": size, "alpha": alpha / size, "beta": beta, "k": bias}, where)]
    if node.op_type == "MaxPool":
        kernel, strides = tuple(attributes["kernel_shape"]), tuple(attributes.get("strides", (1, 1)))
        pads = list(attributes.get("pads", (0, 0, 0, 0)))
        if attributes.get("ceil_mode", 0):
            if pads[:2] != [0, 0]:
                raise WeightMapError(f"{where} rounds up with padding in front, which no kcnn layer of these networks does")
            # Rounding up is one stride less one of padding at the end (the last window still holds a value).
            pads = [0, 0, pads[2] + strides[0] - 1, pads[3] + strides[1] - 1]
        return [_Op("maxpool", {"kernel": kernel, "strides": strides, "pads": tuple(pads)}, where)]
    if node.op_type in _PASS_THROUGH:
        return []
    raise WeightMapError(f"{where}: kcnn maps convolutions, Gemm, LRN and pooling only, not {node.op_type}")


def _float32(value):
    """An ONNX float attribute (stored as float32) as the decimal it was written as."""
    return float(f"{value:.7g}")


def _padding(layer, tensor, kernel, strides):
    """The (top, left, bottom, right) padding a kcnn convolution or pool applies: that
    of a ZeroPadding2D right before a "valid" one, or "same"'s at stride 1."""
    if layer.padding == "same":
        if strides != (1, 1):
            return "same"  # Depends on the input size: equals no ONNX file's fixed pads in general.
        return tuple((k - 1) // 2 for k in kernel) + tuple(k // 2 for k in kernel)
    call = layer_call(tensor)
    before = layer_call(call.inputs[0]) if call and call.inputs else None
    if before is not None and isinstance(before.layer, keras.layers.ZeroPadding2D):
        (top, bottom), (left, right) = before.layer.padding
        return (top, left, bottom, right)
    return (0, 0, 0, 0)


def _keras_ops(model):
    """The kcnn model's operations in the walk's order."""
    ops, seen = [], set()

    def visit(tensor):
        call = layer_call(tensor)
        if call is None or call.is_input or call.key in seen:
            return
        seen.add(call.key)
        for source in call.inputs:
            visit(source)
        ops.extend(_keras_op(call.layer, tensor))

    for output in model.outputs:
        visit(output)
    return ops


def _keras_op(layer, tensor):
    where = f"layer `{layer.name}`"
    if isinstance(layer, keras.layers.Conv2D):
        kernel = tuple(layer.kernel_size)
        return [_Op("conv", {
            "kernel": kernel,
            "strides": tuple(layer.strides),
            "pads": _padding(layer, tensor, kernel, tuple(layer.strides)),
            "groups": layer.groups,
            "channels": (layer.kernel.shape[2] * layer.groups, layer.filters),
            "bias": layer.use_bias,
        }, where, layer=layer)]
    if isinstance(layer, keras.layers.Dense):
        _check_flatten_order(layer, tensor)
        return [_Op("dense", {"channels": tuple(layer.kernel.shape), "bias": layer.use_bias}, where, layer=layer)]
    if isinstance(layer, LocalResponseNormalization):
        return [_Op("lrn", {"size": layer.depth, "alpha": layer.alpha, "beta": layer.beta, "k": layer.k}, where)]
    if isinstance(layer, keras.layers.MaxPooling2D):
        kernel, strides = tuple(layer.pool_size), tuple(layer.strides)
        return [_Op("maxpool", {"kernel": kernel, "strides": strides, "pads": _padding(layer, tensor, kernel, strides)}, where)]
    return []


def _check_flatten_order(layer, tensor):
    """A dense layer reading a flattened map larger than 1x1 must flatten it C,H,W."""
    call = layer_call(tensor)
    source = layer_call(call.inputs[0])
    while source is not None and isinstance(source.layer, keras.layers.Dropout):
        source = layer_call(source.inputs[0])
    if source is None or not isinstance(source.layer, keras.layers.Flatten):
        return
    before = layer_call(source.inputs[0])
    spatial = tuple(source.inputs[0].shape[1:3])
    chw = before is not None and isinstance(before.layer, keras.layers.Permute) and tuple(before.layer.dims) == (3, 1, 2)
    if not chw and math.prod(spatial) != 1:
        raise WeightMapError(
            f"layer `{layer.name}` reads a {spatial[0]}x{spatial[1]} map flattened H,W,C; the file's (ONNX, from "
            "Caffe) is flattened C,H,W: build the model with variant='caffe'"
        )


def _same(expected, received):
    if expected.keys() != received.keys():
        return False
    for key, value in expected.items():
        other = received[key]
        if isinstance(value, float) or isinstance(other, float):
            if not math.isclose(value, other, rel_tol=1e-5):
                return False
        elif value != other:
            return False
    return True


def from_onnx(onnx_model, model, path):
    """{kcnn layer name: weights in Keras order} from an ONNX graph of the same
    structure as `model`.

    Args:
        onnx_model: an `onnx.ModelProto` (`kcnn.weights.formats.read_onnx`).
        model: the kcnn model (its top may be absent: the file's dense layers are
            then left out).
        path: the file, for the errors about its tensors.

    Raises:
        WeightMapError: the graphs differ (the first operation that does is named,
            with both sides' attributes), or a file tensor has no place.
    """
    source = _onnx_ops(onnx_model, path)
    target = _keras_ops(model)
    target_trunk = [op for op in target if op.kind != "dense"]
    source_trunk = [op for op in source if op.kind != "dense"]
    target_dense = [op for op in target if op.kind == "dense"]
    source_dense = [op for op in source if op.kind == "dense"]
    if target_dense:  # With its top, the whole network; without, the file's top is left out.
        pairs = list(zip(source_trunk, target_trunk)) + list(zip(source_dense, target_dense))
        lengths = (len(source_trunk), len(target_trunk), len(source_dense), len(target_dense))
    else:
        pairs = list(zip(source_trunk, target_trunk))
        lengths = (len(source_trunk), len(target_trunk), 0, 0)
    for mine, theirs in pairs:
        if mine.kind != theirs.kind or not _same(mine.attributes, theirs.attributes):
            hint = " (the BVLC files load into variant='caffe')" if mine.kind == theirs.kind in ("lrn", "maxpool", "conv") else ""
            raise WeightMapError(
                f"The graphs differ at {theirs.where}{hint}: the file's {mine.where} is a {mine.kind} with "
                f"{mine.attributes}. Received: a {theirs.kind} with {theirs.attributes}"
            )
    if lengths[0] != lengths[1] or lengths[2] != lengths[3]:
        raise WeightMapError(
            f"The file has {lengths[0]} convolutions, LRNs and max pools and {len(source_dense)} dense layers, "
            f"`{model.name}` {lengths[1]} and {len(target_dense)}: it is another network"
            + (" (the file has no auxiliary heads: build with aux_logits=False)" if len(model.outputs) > 1 else "")
        )
    return {theirs.layer.name: mine.arrays for mine, theirs in pairs if theirs.layer is not None}
