"""The lecture's formula: output sizes of convolutions and pools, and padding."""

import numbers

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


def _transposed_len(n, k, s, padding, output_padding=None, d=1):
    """Keras' `Conv2DTranspose` output length (Keras 3 source: backend/common/backend_utils.py,
    `_get_output_shape_given_tf_padding`): 'valid' (N - 1) * S + F (at least N * S),
    'same' N * S, each plus `output_padding` where given."""
    f_eff = _effective_kernel(k, d)
    if padding == "valid":
        extra = max(f_eff, s) - f_eff if output_padding is None else output_padding
        return (n - 1) * s + f_eff + extra
    if padding == "same":
        return n * s if output_padding is None else (n - 1) * s + f_eff % 2 + output_padding
    raise ValueError(f"Expected padding 'valid' or 'same'. Received: padding={padding!r}")
