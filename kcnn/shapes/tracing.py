"""The public entry points: trace, count_macs, min_input_size."""

import keras

from kcnn._keras_graph import input_layer_name, producer
from kcnn.shapes.arithmetic import _check_positive_int, _is_int
from kcnn.shapes.graph import _Graph
from kcnn.shapes.report import LayerRow, Trace
from kcnn.shapes.states import _input_state, _SizeError

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
        where = f"input {input_layer_name(tensor)!r} of model {model.name!r}"
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
        op = producer(tensor)
        state = _input_state(shape)
        rows.append(
            LayerRow(
                name=input_layer_name(tensor),
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
        op = node.layer
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
                f"shapes) for input {input_layer_name(tensor)!r} of model "
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
