"""Convolution arithmetic and a shape/MACs/receptive-field tracer.

This module is the lecture's "conv arithmetic" made executable:

* `conv_output_size` is the formula ``(N - F + 2P) / S + 1`` (plus Keras'
  ``"valid"``/``"same"`` conventions and dilation), with an optional
  ``strict`` mode that refuses filters which do not tile the input.
* `same_padding` is the ``(F - 1) / 2`` zero padding that keeps the size.
* `trace` walks the layer graph of a functional or Sequential `keras.Model`
  and, for a concrete input size, reports per layer the input/output sizes,
  kernel, stride, padding, parameters, multiply-accumulates (MACs) and the
  receptive field. Sizes are propagated arithmetically from each layer's
  configuration, so tracing never rebuilds the model or runs TensorFlow.
* `min_input_size` finds the smallest square input a (usually fully
  convolutional) trunk accepts.

MACs convention: only `Conv2D`, `DepthwiseConv2D`, `SeparableConv2D` and
`Dense` count, as one multiply-add per weight use:

* ``Conv2D``: ``H_out * W_out * C_out * (k_h * k_w * C_in / groups)``
* ``DepthwiseConv2D``: ``H_out * W_out * (C_in * depth_multiplier) * k_h * k_w``
* ``SeparableConv2D``: its depthwise part plus a 1x1 pointwise conv.
* ``Dense``: ``in_features * units`` (times the number of positions if it is
  applied to a non-flat tensor).

Pooling, normalization, activations, merges and bias additions count 0. A custom
layer that multiplies declares its own count with a method
``count_macs(input_shape, output_shape)`` (shapes without the batch axis), as
kcnn's LeNet-5 layers do.
Only channels-last image tensors ``(H, W, C)`` are supported.
"""

import dataclasses
import math
import numbers

import keras

__all__ = [
    "LayerRow",
    "Trace",
    "conv_output_size",
    "count_macs",
    "min_input_size",
    "pool_output_size",
    "same_padding",
    "trace",
]


# ---------------------------------------------------------------------------
# Scalar conv arithmetic
# ---------------------------------------------------------------------------


def _is_int(value):
    # `bool` is an `int` subclass, but `True` as a filter size is always a
    # bug; numpy integers are accepted because shapes often come from numpy.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_positive_int(name, value, context):
    if not _is_int(value) or value < 1:
        raise ValueError(
            f"Expected `{name}` to be a positive integer. Received: {context}"
        )


def _fmt_args(**kwargs):
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _effective_kernel(f, dilation):
    # A dilated kernel covers d * (F - 1) + 1 input pixels.
    return dilation * (f - 1) + 1


def _closest(candidates, target, limit=2):
    return sorted(candidates, key=lambda c: (abs(c - target), c))[:limit]


def _or_join(values):
    values = [str(v) for v in sorted(values)]
    if len(values) == 1:
        return values[0]
    return ", ".join(values[:-1]) + " or " + values[-1]


def _fit_hints(n, f_eff, stride, pad):
    """Describes paddings, strides and input sizes that would tile exactly."""
    span = n - f_eff + 2 * pad
    hints = []
    # 2P grows in steps of 2, so only P in [0, P + S] can be new residues
    # mod S; with an even S and an odd (N - F) no padding can ever fit.
    pads = [
        p
        for p in range(0, pad + stride + 1)
        if n - f_eff + 2 * p >= 0 and (n - f_eff + 2 * p) % stride == 0
    ]
    if pads:
        hints.append(
            "padding="
            + _or_join(
                f"{p} (output {(n - f_eff + 2 * p) // stride + 1})"
                for p in _closest(pads, pad)
            )
        )
    else:
        hints.append(f"no padding (N - F is odd and the stride {stride} even)")
    strides = [s for s in range(1, span + 1) if span % s == 0] or [1]
    hints.append(
        "stride="
        + _or_join(
            f"{s} (output {span // s + 1})" for s in _closest(strides, stride)
        )
    )
    below = n - span % stride
    above = below + stride
    sizes = [m for m in (below, above) if m - f_eff + 2 * pad >= 0]
    hints.append("input size " + _or_join(sizes))
    return "; ".join(hints)


def conv_output_size(
    n, f, stride=1, padding=0, *, dilation=1, strict=False
):
    """Output length of a convolution or pooling along one spatial axis.

    This is the lecture formula ``(N - F + 2P) / S + 1`` with a ``N x N``
    input, ``F x F`` filter, stride ``S`` and zero padding ``P``, extended
    with Keras' padding modes and dilation.

    Examples:
        >>> conv_output_size(7, 3, stride=2)
        3
        >>> conv_output_size(32, 5, padding=2)
        32
        >>> conv_output_size(227, 11, stride=4)  # AlexNet conv1
        55
        >>> conv_output_size(7, 3, stride=2, padding="same")
        4

    Args:
        n: Input size ``N`` (positive int).
        f: Filter size ``F`` (positive int).
        stride: Stride ``S`` (positive int).
        padding: Zero padding ``P`` per side (non-negative int), ``"valid"``
            (``P = 0``; a partial last window is dropped, i.e. the result is
            floored) or ``"same"`` (Keras/TensorFlow semantics: the output is
            ``ceil(N / S)`` and the padding is whatever makes that work,
            possibly one pixel more at the bottom/right).
        dilation: Dilation rate ``d``; the filter then spans
            ``d * (F - 1) + 1`` input pixels.
        strict: If `True`, refuse filters that do not tile the input, i.e.
            when ``(N - F + 2P) / S`` is not an integer, instead of flooring
            like Keras does. Ignored for ``"same"``, which pads to tile by
            construction.

    Returns:
        The output size as an `int` (at least 1).

    Raises:
        ValueError: If an argument is not a (positive) integer, the padding
            is unknown, the filter is larger than the padded input, or
            ``strict=True`` and the filter does not tile the input.
    """
    args = dict(n=n, f=f, stride=stride, padding=padding)
    if dilation != 1 or not _is_int(dilation):
        args["dilation"] = dilation
    context = _fmt_args(**args)
    for name, value in (
        ("n", n), ("f", f), ("stride", stride), ("dilation", dilation)
    ):
        _check_positive_int(name, value, context)
    # numpy integers are accepted, but the result should be a plain int.
    n, f, stride, dilation = int(n), int(f), int(stride), int(dilation)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in ("valid", "same"):
            raise ValueError(
                "Expected `padding` to be a non-negative integer, 'valid' or "
                f"'same'. Received: {context}"
            )
        pad = 0
    elif _is_int(padding) and padding >= 0:
        mode, pad = None, int(padding)
    else:
        raise ValueError(
            "Expected `padding` to be a non-negative integer, 'valid' or "
            f"'same'. Received: {context}"
        )

    if mode == "same":
        return -(-n // stride)

    f_eff = _effective_kernel(f, dilation)
    span = n - f_eff + 2 * pad
    if span < 0:
        what = "padded input" if pad else "input"
        raise ValueError(
            f"Expected the {what} to be at least as large as the "
            f"{'dilated ' if dilation != 1 else ''}filter "
            f"(N + 2P >= {f_eff}), otherwise the output is empty: "
            f"({n} - {f_eff} + 2*{pad}) / {stride} + 1 = "
            f"{span / stride + 1:.4g}. Received: {context}"
        )
    if strict and span % stride:
        raise ValueError(
            "The filter does not fit the input: (N - F + 2P) / S + 1 = "
            f"({n} - {f_eff} + 2*{pad}) / {stride} + 1 = "
            f"{span / stride + 1:.4g} is not an integer, so the last "
            f"{span % stride} row(s)/column(s) would be silently dropped. "
            f"Expected a configuration that tiles exactly, e.g. "
            f"{_fit_hints(n, f_eff, stride, pad)}. Received: {context}"
        )
    return span // stride + 1


def pool_output_size(n, f, stride=None, padding="valid", *, strict=False):
    """Output length of a pooling window along one spatial axis.

    Same arithmetic as `conv_output_size`, but with the Keras pooling
    defaults: the stride defaults to the pool size and padding to
    ``"valid"``.

    Args:
        n: Input size (positive int).
        f: Pool size (positive int).
        stride: Stride; `None` means ``f`` (non-overlapping windows).
        padding: ``"valid"``, ``"same"`` or a non-negative int.
        strict: Refuse windows that do not tile the input (see
            `conv_output_size`).

    Returns:
        The output size as an `int`.

    Raises:
        ValueError: Like `conv_output_size`.
    """
    return conv_output_size(
        n, f, f if stride is None else stride, padding, strict=strict
    )


def same_padding(f, dilation=1):
    """Zero padding per side that keeps the size of a stride-1 convolution.

    This is the lecture's ``P = (F - 1) / 2``: with it,
    ``(N - F + 2P) / 1 + 1 == N``.

    Args:
        f: Filter size (positive, odd once dilated).
        dilation: Dilation rate.

    Returns:
        ``(d * (F - 1)) / 2`` as an `int`.

    Raises:
        ValueError: If `f`/`dilation` are not positive integers, or the
            (dilated) filter size is even, since no symmetric padding then
            keeps the size (Keras' ``"same"`` pads one side more instead).
    """
    context = _fmt_args(f=f, dilation=dilation)
    _check_positive_int("f", f, context)
    _check_positive_int("dilation", dilation, context)
    f_eff = _effective_kernel(int(f), int(dilation))
    if (f_eff - 1) % 2:
        raise ValueError(
            "Expected an odd (dilated) filter size: (F - 1) / 2 = "
            f"{(f_eff - 1) / 2} is not an integer, so no symmetric zero "
            "padding keeps the size (Keras 'same' pads the bottom/right "
            f"one pixel more instead). Received: {context}"
        )
    return (f_eff - 1) // 2


def _out_len(n, k, s, padding, d=1):
    """Keras/TF output length; may be <= 0 (the caller reports that)."""
    if padding == "same":
        return -(-n // s)
    if padding == "valid":
        return (n - _effective_kernel(k, d)) // s + 1
    raise ValueError(
        "Expected padding 'valid' or 'same'. "
        f"Received: padding={padding!r}"
    )


# ---------------------------------------------------------------------------
# Trace result
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One layer call in a `Trace`.

    Attributes:
        name: Layer name; layers of nested models are prefixed with the
            nested model's name (``"outer/inner"``).
        class_name: Layer class name, e.g. ``"Conv2D"``.
        input_shape: Shape of the (first) input without batch dimension,
            e.g. ``(224, 224, 3)``.
        output_shape: Shape of the (first) output without batch dimension.
        kernel_size: ``(k_h, k_w)`` for convolutions and pooling, else
            `None`.
        strides: ``(s_h, s_w)`` for convolutions and pooling, else `None`.
        padding: ``"valid"``/``"same"`` for convolutions and pooling, the
            ``((top, bottom), (left, right))`` amounts for `ZeroPadding2D`
            and `Cropping2D`, else `None`.
        params: ``layer.count_params()`` (0 for non-layer operations).
        macs: Multiply-accumulates of this call (see the module docstring).
        receptive_field: ``(r_h, r_w)``: how many input pixels one output
            unit sees; for non-spatial outputs (after `Flatten`, global
            pooling) the whole input. `None` if unknown.
        jump: ``(j_h, j_w)``: distance in input pixels between adjacent
            output units (the product of the strides so far). `None` if
            unknown.
        input_shapes: Shapes of all inputs (several for merges).
    """

    name: str
    class_name: str
    input_shape: tuple
    output_shape: tuple
    kernel_size: tuple | None
    strides: tuple | None
    padding: object
    params: int
    macs: int
    receptive_field: tuple | None
    jump: tuple | None
    input_shapes: tuple


def _fmt_shape(shape):
    if shape is None:
        return "-"
    return "x".join(str(d) for d in shape)


def _fmt_pair(pair):
    if pair is None:
        return "-"
    if len(set(pair)) == 1:
        return str(pair[0])
    return "x".join(str(p) for p in pair)


def _fmt_padding(padding):
    if padding is None:
        return "-"
    if isinstance(padding, str):
        return padding
    flat = [p for side in padding for p in side]
    if len(set(flat)) == 1:
        return str(flat[0])
    return str(tuple(tuple(side) for side in padding))


def _human(value):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return str(value)


@dataclasses.dataclass(frozen=True)
class Trace:
    """Per-layer sizes, parameters, MACs and receptive fields of a model.

    Attributes:
        model_name: Name of the traced model.
        input_shapes: The concrete input shapes that were traced.
        rows: One `LayerRow` per layer call, in topological order
            (inputs first).
        total_macs: Sum of all rows' MACs.
        total_params: Parameters of the distinct layers traced (a shared
            layer counts once).
    """

    model_name: str
    input_shapes: tuple
    rows: tuple
    total_macs: int
    total_params: int

    def row(self, name):
        """Returns the row of the layer called `name` (its first call).

        Raises:
            KeyError: If no layer has that name.
        """
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_dicts(self):
        """Returns the rows as a list of plain dicts (e.g. for JSON)."""
        return [dataclasses.asdict(row) for row in self.rows]

    def format(self):
        """Renders the trace as a fixed-width text table."""
        header = (
            "Layer (type)",
            "Input",
            "Output",
            "Kernel",
            "Stride",
            "Pad",
            "Params",
            "MACs",
            "RF",
        )
        lines = [header]
        for r in self.rows:
            inputs = " + ".join(_fmt_shape(s) for s in r.input_shapes)
            lines.append(
                (
                    f"{r.name} ({r.class_name})",
                    inputs or "-",
                    _fmt_shape(r.output_shape),
                    _fmt_pair(r.kernel_size),
                    _fmt_pair(r.strides),
                    _fmt_padding(r.padding),
                    f"{r.params:,}",
                    f"{r.macs:,}",
                    _fmt_pair(r.receptive_field),
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(9)]
        # Text columns read better left-aligned, numbers right-aligned.
        right = {6, 7}

        def render(line):
            cells = (
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(line, widths))
            )
            return "  ".join(cells).rstrip()

        rule = "-" * len(render(header))
        shapes = ", ".join(_fmt_shape(s) for s in self.input_shapes)
        out = [f'Trace of "{self.model_name}" at input {shapes}', rule]
        out.append(render(header))
        out.append(rule)
        out.extend(render(line) for line in lines[1:])
        out.append(rule)
        out.append(
            f"Total params: {self.total_params:,} "
            f"({_human(self.total_params)})"
        )
        out.append(
            f"Total MACs:   {self.total_macs:,} ({_human(self.total_macs)})"
        )
        return "\n".join(out)

    def __str__(self):
        return self.format()


# ---------------------------------------------------------------------------
# Graph walking
# ---------------------------------------------------------------------------


class _SizeError(ValueError):
    """The input size is invalid for the model (empty output, mismatch)."""


@dataclasses.dataclass(frozen=True)
class _State:
    """What is known about one tensor: shape (no batch) and receptive field."""

    shape: tuple
    rf: tuple | None = None
    jump: tuple | None = None


@dataclasses.dataclass
class _Info:
    """Per-call extras that end up in a `LayerRow`."""

    kernel_size: tuple | None = None
    strides: tuple | None = None
    padding: object = None
    macs: int = 0


def _layer_classes(*names):
    # getattr keeps this working if a Keras version lacks one of the layers.
    found = (getattr(keras.layers, n, None) for n in names)
    return tuple(c for c in found if isinstance(c, type))


_CONV = _layer_classes("Conv2D")
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


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    if history is None or history.operation is None:
        return None
    return history.operation._inbound_nodes[history.node_index]


def _topological_nodes(model, inputs, outputs):
    """Call nodes between `inputs` and `outputs`, producers first.

    An iterative depth-first post-order walk over `_keras_history`, so deep
    networks (ResNet-152 and beyond) do not hit Python's recursion limit.
    """
    input_ids = {id(t) for t in inputs}
    order, done, active = [], set(), set()
    for out in outputs:
        root = None if id(out) in input_ids else _producer(out)
        if root is None or id(root) in done:
            continue
        stack = [(root, iter(root.input_tensors))]
        active.add(id(root))
        while stack:
            node, pending = stack[-1]
            for tensor in pending:
                if id(tensor) in input_ids:
                    continue
                child = _producer(tensor)
                if child is None or child.is_input:
                    raise ValueError(
                        f"Layer {node.operation.name!r} of model "
                        f"{model.name!r} uses a tensor that does not come "
                        "from the model's inputs. Expected a connected "
                        f"graph. Received: tensor={tensor!r}"
                    )
                if id(child) in done:
                    continue
                if id(child) in active:  # pragma: no cover - Keras forbids
                    raise ValueError(f"Cycle at layer {child.operation.name!r}")
                stack.append((child, iter(child.input_tensors)))
                active.add(id(child))
                break
            else:
                stack.pop()
                active.discard(id(node))
                done.add(id(node))
                order.append(node)
    return order


def _input_state(shape):
    spatial = len(shape) == 3
    return _State(
        tuple(shape), (1, 1) if spatial else None, (1, 1) if spatial else None
    )


def _grow_rf(state, kernel, strides, dilation=(1, 1)):
    """Receptive-field recurrence r += (k - 1) * d * j, j *= s, per axis."""
    if state.rf is None or state.jump is None:
        return None, None
    rf = tuple(
        r + (k - 1) * d * j
        for r, k, d, j in zip(state.rf, kernel, dilation, state.jump)
    )
    jump = tuple(j * s for j, s in zip(state.jump, strides))
    return rf, jump


def _whole_input_rf(state):
    # A unit that mixes all positions sees the receptive field of a kernel
    # as large as the whole (H, W) map.
    if len(state.shape) != 3:
        return state.rf, state.jump
    return _grow_rf(state, state.shape[:2], state.shape[:2])


class _Graph:
    """The call graph of one functional model, compiled once for re-use."""

    def __init__(self, model):
        self.model = model
        self.inputs, self.outputs = _model_io(model)
        self.nodes = _topological_nodes(model, self.inputs, self.outputs)
        self.subgraphs = {}
        for node in self.nodes:
            op = node.operation
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
            op = node.operation
            in_states = [states[id(t)] for t in node.input_tensors]
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


def _make_row(node, in_states, out_states, info, prefix):
    op = node.operation
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


def _where(node, in_states, prefix):
    op = node.operation
    shapes = ", ".join(str(s.shape) for s in in_states)
    return f"Layer {prefix + op.name!r} ({type(op).__name__}) at input {shapes}"


def _require_image(node, in_states, prefix):
    op = node.operation
    if getattr(op, "data_format", "channels_last") != "channels_last":
        raise ValueError(
            f"{_where(node, in_states, prefix)}: expected channels_last "
            f"data. Received: data_format={op.data_format!r}"
        )
    shape = in_states[0].shape
    if len(shape) != 3:
        raise ValueError(
            f"{_where(node, in_states, prefix)}: expected an (H, W, C) "
            f"image tensor. Received: shape={shape}"
        )
    return shape


def _check_nonempty(node, in_states, prefix, out_shape, detail):
    if any(d < 1 for d in out_shape):
        raise _SizeError(
            f"{_where(node, in_states, prefix)} would produce an empty "
            f"output {out_shape} ({detail}). Expected every output size to "
            f"be at least 1. Received: input shape {in_states[0].shape}"
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
    op = node.operation
    c_in = in_states[0].shape[-1]
    if op.built and expected is not None and c_in != expected:
        raise ValueError(
            f"{_where(node, in_states, prefix)}: its weights expect "
            f"{expected} input channels. Received: {c_in} channels"
        )


def _propagate(node, in_states, prefix):
    """Output states and row extras of one layer call."""
    op = node.operation
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
    axis = node.operation.axis
    # Keras' axis counts the batch dimension; our shapes do not.
    axis = axis - 1 if axis > 0 else axis + rank
    if any(len(s) != rank for s in shapes) or not 0 <= axis < rank:
        raise ValueError(
            f"{_where(node, in_states, prefix)}: expected inputs of equal "
            f"rank and a non-batch axis. Received: axis={node.operation.axis}"
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
    declared = [tuple(t.shape[1:]) for t in node.input_tensors]
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
    target = list(node.operation.target_shape)
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
    op = node.operation
    values = {}
    for tensor, state in zip(node.input_tensors, in_states):
        values[id(tensor)] = keras.KerasTensor(
            (1, *state.shape), dtype=tensor.dtype
        )
    try:
        args, kwargs = node.arguments.fill_in(values)
        spec = op.compute_output_spec(*args, **kwargs)
        shapes = [tuple(t.shape[1:]) for t in keras.tree.flatten(spec)]
        if len(shapes) != len(node.outputs) or any(
            d is None or d < 1 for s in shapes for d in s
        ):
            raise ValueError(f"undefined or empty output shapes {shapes}")
    except Exception as e:  # noqa: BLE001 - any failure means "unknown"
        # Custom layers that the declared graph shows as shape-preserving
        # (e.g. LocalResponseNormalization) are safe to pass through.
        declared_in = [tuple(t.shape) for t in node.input_tensors]
        declared_out = [tuple(t.shape) for t in node.outputs]
        if len(in_states) == 1 and declared_out == declared_in:
            return [in_states[0]]
        raise _SizeError(
            f"{_where(node, in_states, prefix)}: cannot infer its output "
            f"size ({type(e).__name__}: {e})."
        ) from e
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


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


def _parse_size_spec(spec, declared, where):
    """Concrete (H, W, C) from `spec` (int, (H, W) or (H, W, C))."""
    context = f"input_size={spec!r}"
    if _is_int(spec):
        dims = (spec, spec)
    elif isinstance(spec, (tuple, list)) and len(spec) in (2, 3):
        dims = tuple(spec)
    else:
        raise ValueError(
            f"Expected `input_size` to be an int n (for n x n), (H, W) or "
            f"(H, W, C) for {where}. Received: {context}"
        )
    for d in dims:
        _check_positive_int("input_size", d, context)
    h, w = int(dims[0]), int(dims[1])
    c = declared[2]
    if len(dims) == 3:
        if c is not None and dims[2] != c:
            raise ValueError(
                f"Expected {c} channels for {where}, which has shape "
                f"{declared}. Received: {context}"
            )
        c = int(dims[2])
    if c is None:
        raise ValueError(
            f"Expected `input_size` as (H, W, C) because {where} has an "
            f"unknown channel count {declared}. Received: {context}"
        )
    return (h, w, c)


def _input_name(tensor):
    # KerasTensor names are auto-generated; the InputLayer's name is the one
    # users gave (and the one `model.summary()` shows).
    history = getattr(tensor, "_keras_history", None)
    op = history.operation if history is not None else None
    return op.name if op is not None else tensor.name


def _resolve_inputs(model, inputs, input_size):
    """Concrete per-input shapes (without batch) for `trace`."""
    # A list is per-input only for multi-input models, so that a
    # single-input model can still be given `[H, W]`.
    per_input = isinstance(input_size, list) and len(inputs) > 1
    if per_input and len(input_size) != len(inputs):
        raise ValueError(
            f"Expected one `input_size` entry per model input "
            f"({len(inputs)}). Received: input_size={input_size!r}"
        )
    specs = input_size if per_input else [input_size] * len(inputs)
    shapes = []
    for tensor, spec in zip(inputs, specs):
        declared = tuple(tensor.shape[1:])
        where = f"input {_input_name(tensor)!r} of model {model.name!r}"
        if len(declared) == 3 and spec is not None:
            shapes.append(_parse_size_spec(spec, declared, where))
        elif len(declared) == 3 or spec is None:
            if any(d is None for d in declared):
                raise ValueError(
                    f"Expected `input_size` (an int n, (H, W) or (H, W, C)) "
                    f"because {where} has unknown dimensions {declared}. "
                    f"Received: input_size={input_size!r}"
                )
            shapes.append(tuple(int(d) for d in declared))
        else:
            if tuple(spec) != declared or None in declared:
                raise ValueError(
                    f"Expected `input_size` to address (H, W, C) image "
                    f"inputs only; {where} has shape {declared}. "
                    f"Received: input_size={input_size!r}"
                )
            shapes.append(declared)
    return shapes


def trace(model, input_size=None):
    """Traces sizes, parameters, MACs and receptive fields layer by layer.

    Sizes are propagated through the model's layer graph from each layer's
    configuration (kernel size, strides, padding, dilation, ...); nothing is
    rebuilt or executed. Nested functional/Sequential models are expanded
    and their layers reported as ``"outer/inner"``.

    Example:
        >>> t = trace(keras.applications.ResNet50(weights=None))
        >>> t.total_macs  # about 3.86e9
        >>> print(t)

    Args:
        model: A functional or Sequential `keras.Model` whose image inputs
            are channels-last ``(H, W, C)`` tensors; ``H``/``W`` may be
            `None`.
        input_size: The concrete input size: an int ``n`` (``n x n``),
            ``(H, W)`` or ``(H, W, C)``, applied to every image input; for a
            multi-input model also a list with one such entry (or `None`)
            per model input. Defaults to
            the model's own input shape, in which case it must be fully
            known.

    Returns:
        A `Trace`.

    Raises:
        ValueError: If the input size is missing or malformed, or if it is
            invalid for the model: some layer's output would be empty, the
            inputs of a merge disagree, or a `Dense`/conv layer's weights
            do not match the propagated size. The message names the layer.
    """
    graph = _Graph(model)
    shapes = _resolve_inputs(model, graph.inputs, input_size)
    rows = []
    for tensor, shape in zip(graph.inputs, shapes):
        op = tensor._keras_history.operation
        state = _input_state(shape)
        rows.append(
            LayerRow(
                name=_input_name(tensor),
                class_name=type(op).__name__ if op is not None else "Input",
                input_shape=shape,
                output_shape=shape,
                kernel_size=None,
                strides=None,
                padding=None,
                params=0,
                macs=0,
                receptive_field=state.rf,
                jump=state.jump,
                input_shapes=(),
            )
        )
    graph.run(
        [_input_state(s) for s in shapes], rows
    )
    # A shared layer appears once per call but owns its weights once.
    params, seen = 0, set()
    for op in _distinct_layers(graph):
        if id(op) not in seen:
            seen.add(id(op))
            params += op.count_params()
    return Trace(
        model_name=model.name,
        input_shapes=tuple(shapes),
        rows=tuple(rows),
        total_macs=sum(r.macs for r in rows),
        total_params=int(params),
    )


def _distinct_layers(graph):
    for node in graph.nodes:
        op = node.operation
        sub = graph.subgraphs.get(id(op))
        if sub is not None:
            yield from _distinct_layers(sub)
        elif isinstance(op, keras.Layer) and op.built:
            yield op


def count_macs(model, input_size=None):
    """Total multiply-accumulates of one forward pass (batch size 1).

    Shortcut for ``trace(model, input_size).total_macs``; see the module
    docstring for what counts.

    Args:
        model: See `trace`.
        input_size: See `trace`.

    Returns:
        The MAC count as an `int`.
    """
    return trace(model, input_size).total_macs


def min_input_size(model, *, max_size=4096):
    """Smallest square input size ``n`` that the model accepts.

    "Accepts" means: every layer's output is at least 1x1, all inputs of
    each merge (`Add`, `Concatenate`, ...) agree, and weight shapes match
    (a `Flatten` -> `Dense` head pins the size). Sizes are propagated
    arithmetically, so each candidate costs microseconds per layer.

    Every ``n = 1, 2, ...`` is tried in turn rather than bisecting, because
    validity is not monotone in general: e.g. a 2x2/2 'valid' main path
    added to a 1x1/2 shortcut agrees only for even sizes.

    Args:
        model: A functional or Sequential `keras.Model`, typically a fully
            convolutional trunk built on ``Input((None, None, C))``. All
            image inputs get ``(n, n, C)``; channel counts must be known.
        max_size: Largest size to try (positive int).

    Returns:
        The smallest valid ``n`` (an `int`).

    Raises:
        ValueError: If no size up to `max_size` works (the message gives
            the reason at `max_size`), or the model cannot be traced.
    """
    _check_positive_int("max_size", max_size, f"max_size={max_size!r}")
    graph = _Graph(model)
    declared = [tuple(t.shape[1:]) for t in graph.inputs]
    for tensor, shape in zip(graph.inputs, declared):
        # Image inputs get (n, n, C); any other input must be fully known.
        unknown = shape[2:] if len(shape) == 3 else shape
        if None in unknown:
            raise ValueError(
                f"Expected a known channel count (and fully known non-image "
                f"shapes) for input {_input_name(tensor)!r} of model "
                f"{model.name!r}. Received: shape={shape}"
            )
    last_error = None
    for n in range(1, max_size + 1):
        states = [
            _input_state((n, n, s[2]) if len(s) == 3 else s)
            for s in declared
        ]
        try:
            graph.run(states, rows=None)
        except _SizeError as e:
            last_error = e
            continue
        return n
    raise ValueError(
        f"Expected some square input size n <= {max_size} to be valid for "
        f"model {model.name!r}, but none is (at n={max_size}: {last_error}). "
        f"Received: max_size={max_size}"
    )
