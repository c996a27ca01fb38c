"""How each layer changes what is known of a tensor: its size, the MACs of the call
and the receptive field, propagated arithmetically from the layer's configuration."""

import math

import keras

from kcnn.dense.layers import CropToReference, ResizeToReference
from kcnn.shapes.arithmetic import _out_len
from kcnn.shapes.report import LayerRow
from kcnn.shapes.resampling import _kcnn_window, _to_reference, _transposed
from kcnn.shapes.states import (
    _check_nonempty,
    _grow_rf,
    _Info,
    _require_image,
    _SizeError,
    _State,
    _where,
)


def _layer_classes(*names):
    # getattr keeps this working if a Keras version lacks one of the layers.
    found = (getattr(keras.layers, n, None) for n in names)
    return tuple(c for c in found if isinstance(c, type))


_CONV = _layer_classes("Conv2D")
_TRANSPOSED = _layer_classes("Conv2DTranspose")
_DEPTHWISE = _layer_classes("DepthwiseConv2D")
_SEPARABLE = _layer_classes("SeparableConv2D")
_POOL = _layer_classes("MaxPooling2D", "AveragePooling2D")
_GLOBAL_POOL = _layer_classes("GlobalAveragePooling2D", "GlobalMaxPooling2D")
_ELEMENTWISE = _layer_classes(
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"
)
_PASS_THROUGH = _layer_classes(
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "UnitNormalization",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Softmax",
    "Dropout",
    "SpatialDropout2D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
    "Rescaling",
    "Normalization",
)


def _whole_input_rf(state):
    # A unit that mixes all positions sees the receptive field of a kernel
    # as large as the whole (H, W) map.
    if len(state.shape) != 3:
        return state.rf, state.jump
    return _grow_rf(state, state.shape[:2], state.shape[:2])


def _make_row(node, in_states, out_states, info, prefix):
    op = node.layer
    params = op.count_params() if isinstance(op, keras.Layer) else 0
    out = out_states[0]
    return LayerRow(
        name=prefix + op.name,
        class_name=type(op).__name__,
        input_shape=in_states[0].shape if in_states else None,
        output_shape=out.shape,
        kernel_size=info.kernel_size,
        strides=info.strides,
        padding=info.padding,
        params=int(params),
        macs=int(info.macs),
        receptive_field=out.rf,
        jump=out.jump,
        input_shapes=tuple(s.shape for s in in_states),
    )


def _windowed(node, in_states, prefix, kernel, strides, padding, dilation):
    h, w, c = _require_image(node, in_states, prefix)
    padding = padding.lower()
    out_hw = tuple(
        _out_len(n, k, s, padding, d)
        for n, k, s, d in zip((h, w), kernel, strides, dilation)
    )
    detail = f"kernel {kernel}, strides {strides}, padding {padding!r}"
    if tuple(dilation) != (1, 1):
        detail += f", dilation {tuple(dilation)}"
    _check_nonempty(node, in_states, prefix, out_hw, detail)
    rf, jump = _grow_rf(in_states[0], kernel, strides, dilation)
    info = _Info(tuple(kernel), tuple(strides), padding)
    return out_hw, c, rf, jump, info


def _check_kernel_channels(node, in_states, prefix, expected):
    op = node.layer
    c_in = in_states[0].shape[-1]
    if op.built and expected is not None and c_in != expected:
        raise ValueError(
            f"{_where(node, in_states, prefix)}: its weights expect "
            f"{expected} input channels. Received: {c_in} channels"
        )


def _propagate(node, in_states, prefix):
    """Output states and row extras of one layer call."""
    op = node.layer
    first = in_states[0] if in_states else None

    if isinstance(op, _CONV):
        out_hw, c_in, rf, jump, info = _windowed(
            node, in_states, prefix, op.kernel_size, op.strides, op.padding,
            op.dilation_rate,
        )
        kernel = getattr(op, "kernel", None) if op.built else None
        _check_kernel_channels(
            node, in_states, prefix,
            None if kernel is None else kernel.shape[-2] * op.groups,
        )
        k_h, k_w = op.kernel_size
        info.macs = (
            out_hw[0] * out_hw[1] * op.filters * k_h * k_w * c_in // op.groups
        )
        return [_State((*out_hw, op.filters), rf, jump)], info

    if isinstance(op, _DEPTHWISE + _SEPARABLE):
        out_hw, c_in, rf, jump, info = _windowed(
            node, in_states, prefix, op.kernel_size, op.strides, op.padding,
            op.dilation_rate,
        )
        k_h, k_w = op.kernel_size
        positions = out_hw[0] * out_hw[1]
        mid = c_in * op.depth_multiplier
        info.macs = positions * mid * k_h * k_w
        c_out = mid
        if isinstance(op, _SEPARABLE):
            info.macs += positions * mid * op.filters
            c_out = op.filters
        return [_State((*out_hw, c_out), rf, jump)], info

    if isinstance(op, _TRANSPOSED):
        return _transposed(node, in_states, prefix)

    if isinstance(op, (CropToReference, ResizeToReference)):
        return [_to_reference(node, in_states, prefix)], _Info()

    if isinstance(op, _POOL):
        out_hw, c, rf, jump, info = _windowed(
            node, in_states, prefix, op.pool_size, op.strides, op.padding,
            (1, 1),
        )
        return [_State((*out_hw, c), rf, jump)], info

    if isinstance(op, keras.layers.ZeroPadding2D):
        h, w, c = _require_image(node, in_states, prefix)
        (top, bottom), (left, right) = op.padding
        shape = (h + top + bottom, w + left + right, c)
        # Padding adds no view of real pixels: receptive field unchanged.
        info = _Info(padding=tuple(tuple(p) for p in op.padding))
        return [_State(shape, first.rf, first.jump)], info

    if isinstance(op, keras.layers.Cropping2D):
        h, w, c = _require_image(node, in_states, prefix)
        (top, bottom), (left, right) = op.cropping
        out_hw = (h - top - bottom, w - left - right)
        _check_nonempty(
            node, in_states, prefix, out_hw, f"cropping {op.cropping}"
        )
        info = _Info(padding=tuple(tuple(p) for p in op.cropping))
        return [_State((*out_hw, c), first.rf, first.jump)], info

    if isinstance(op, _GLOBAL_POOL):
        h, w, c = _require_image(node, in_states, prefix)
        rf, jump = _whole_input_rf(first)
        shape = (1, 1, c) if op.keepdims else (c,)
        return [_State(shape, rf, jump)], _Info()

    if isinstance(op, keras.layers.Flatten):
        rf, jump = _whole_input_rf(first)
        return [_State((math.prod(first.shape),), rf, jump)], _Info()

    if isinstance(op, keras.layers.Dense):
        *lead, features = first.shape
        kernel = getattr(op, "kernel", None) if op.built else None
        if kernel is not None and kernel.shape[0] != features:
            raise _SizeError(
                f"{_where(node, in_states, prefix)}: its weights expect "
                f"{kernel.shape[0]} input features (the model's own input "
                "size fixes this when a Flatten feeds the Dense layer). "
                f"Received: {features} features"
            )
        info = _Info(macs=math.prod(lead) * features * op.units)
        return [_State((*lead, op.units), first.rf, first.jump)], info

    if isinstance(op, keras.layers.Reshape):
        return _reshape(node, in_states, prefix), _Info()

    if isinstance(op, keras.layers.Concatenate):
        return [_concatenate(node, in_states, prefix)], _Info()

    if isinstance(op, _ELEMENTWISE):
        return [_elementwise(node, in_states, prefix)], _Info()

    if isinstance(op, _PASS_THROUGH) and len(in_states) == 1:
        return [first], _Info()

    out_states = _fallback(node, in_states, prefix)
    window = _kcnn_window(op)
    if window is not None:  # LeNet's custom layers: a valid window, kcnn knows where
        rf, jump = _grow_rf(first, *window)
        out_states = [_State(out_states[0].shape, rf, jump)]
    # Custom layers that multiply (kcnn.layers' LeNet-5 layers) report their own
    # count: `count_macs(input_shape, output_shape)` without the batch axis.
    count = getattr(op, "count_macs", None)
    macs = int(count(in_states[0].shape, out_states[0].shape)) if callable(count) else 0
    return out_states, _Info(macs=macs)


def _merged_rf(in_states):
    # Merging branches: a unit sees the union of what its inputs see, i.e.
    # the largest receptive field (they are centred on the same pixel).
    if any(s.rf is None or s.jump is None for s in in_states):
        return None, None
    rf = tuple(max(s.rf[i] for s in in_states) for i in range(2))
    jump = tuple(max(s.jump[i] for s in in_states) for i in range(2))
    return rf, jump


def _concatenate(node, in_states, prefix):
    shapes = [s.shape for s in in_states]
    rank = len(shapes[0])
    axis = node.layer.axis
    # Keras' axis counts the batch dimension; our shapes do not.
    axis = axis - 1 if axis > 0 else axis + rank
    if any(len(s) != rank for s in shapes) or not 0 <= axis < rank:
        raise ValueError(
            f"{_where(node, in_states, prefix)}: expected inputs of equal "
            f"rank and a non-batch axis. Received: axis={node.layer.axis}"
        )
    for i in range(rank):
        if i != axis and len({s[i] for s in shapes}) > 1:
            raise _SizeError(
                f"{_where(node, in_states, prefix)}: expected all inputs to "
                f"agree on every axis but the concatenation axis. "
                f"Received: shapes {shapes}"
            )
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    rf, jump = _merged_rf(in_states)
    return _State(tuple(out), rf, jump)


def _elementwise(node, in_states, prefix):
    shapes = [s.shape for s in in_states]
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        raise ValueError(
            f"{_where(node, in_states, prefix)}: expected inputs of equal "
            f"rank. Received: shapes {shapes}"
        )
    declared = [tuple(t.shape[1:]) for t in node.inputs]
    out = []
    for i in range(rank):
        # Broadcasting is only meant where the graph itself says the axis is
        # 1 (e.g. squeeze-excitation scales). A size that merely happens to
        # be 1 at this input size is a mismatch: TF would silently broadcast
        # a 1x1 shortcut onto a 2x2 main path.
        sizes = {s[i] for s, d in zip(shapes, declared) if d[i] != 1}
        if len(sizes) > 1:
            raise _SizeError(
                f"{_where(node, in_states, prefix)}: expected all inputs of "
                f"the merge to have the same shape. Received: shapes {shapes}"
            )
        out.append(sizes.pop() if sizes else 1)
    rf, jump = _merged_rf(in_states)
    return _State(tuple(out), rf, jump)


def _reshape(node, in_states, prefix):
    first = in_states[0]
    target = list(node.layer.target_shape)
    total = math.prod(first.shape)
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if known == 0 or total % known:
            raise _SizeError(
                f"{_where(node, in_states, prefix)}: cannot reshape "
                f"{total} values to {tuple(target)}."
            )
        target[target.index(-1)] = total // known
    elif known != total:
        raise _SizeError(
            f"{_where(node, in_states, prefix)}: expected {known} values to "
            f"reshape to {tuple(target)}. Received: {total} values"
        )
    target = tuple(target)
    if len(first.shape) == 3 and target[:2] == first.shape[:2]:
        rf, jump = first.rf, first.jump
    elif len(target) == 3:
        rf, jump = None, None  # spatial layout changed: unknown
    else:
        rf, jump = _whole_input_rf(first)
    return [_State(target, rf, jump)]


def _fallback(node, in_states, prefix):
    """Unknown operations: ask Keras for the shape, else pass through.

    `compute_output_spec` on concrete placeholder shapes is arithmetic for
    most layers (and a symbolic trace for custom ones), never a rebuild.
    """
    values = {}
    for tensor, state in zip(node.inputs, in_states):
        values[id(tensor)] = keras.KerasTensor(
            (1, *state.shape), dtype=tensor.dtype
        )
    try:
        spec = node.output_spec(values)
        shapes = [tuple(t.shape[1:]) for t in keras.tree.flatten(spec)]
        if len(shapes) != len(node.outputs) or any(
            d is None for s in shapes for d in s
        ):
            raise ValueError(f"undefined output shapes {shapes}")
    except Exception as e:
        # Custom layers that the declared graph shows as shape-preserving
        # (e.g. LocalResponseNormalization) are safe to pass through.
        declared_in = [tuple(t.shape) for t in node.inputs]
        declared_out = [tuple(t.shape) for t in node.outputs]
        if len(in_states) == 1 and declared_out == declared_in:
            return [in_states[0]]
        raise _SizeError(
            f"{_where(node, in_states, prefix)}: cannot infer its output "
            f"size ({type(e).__name__}: {e})."
        ) from e
    # A layer that computed an empty output (LeNet's Subsampling2D at 1x1) is too
    # small, not shape-preserving: Keras' own layers raise there, a custom one may not.
    for shape in shapes:
        _check_nonempty(node, in_states, prefix, shape, "as the layer computes it")
    states = []
    for shape in shapes:
        same_map = (
            len(in_states) >= 1
            and len(shape) == 3
            and all(
                len(s.shape) == 3 and s.shape[:2] == shape[:2]
                for s in in_states
            )
        )
        # Only a layer that keeps the spatial grid provably keeps the
        # receptive field; anything else is reported as unknown.
        rf, jump = _merged_rf(in_states) if same_map else (None, None)
        states.append(_State(shape, rf, jump))
    return states
