"""The rules of the layers that make a map larger or match it to another: transposed
convolutions, kcnn's crop and resize to a reference (`kcnn.dense.layers`), and the
windows of LeNet's custom layers."""

import fractions
import math

from kcnn.dense.layers import CropToReference
from kcnn.layers import ConnectionTableConv2D, Subsampling2D
from kcnn.shapes.arithmetic import _transposed_len
from kcnn.shapes.states import _Info, _require_image, _SizeError, _State, _where


def _kcnn_window(op):
    """(kernel, strides) of kcnn's custom windowed layers, else None."""
    if isinstance(op, Subsampling2D):
        return (op.pool_size,) * 2, (op.pool_size,) * 2
    if isinstance(op, ConnectionTableConv2D):
        return (op.kernel_size,) * 2, (1, 1)
    return None


def _transposed(node, in_states, prefix):
    """A transposed convolution: every input position scatters one kernel, so MACs
    are H_in * W_in * k_h * k_w * C_in * C_out; positions get 1/S apart, and an
    output sees ceil(k / S) input positions per axis."""
    op = node.layer
    h, w, c_in = _require_image(node, in_states, prefix)
    output_padding = op.output_padding or (None, None)
    out_hw = tuple(
        _transposed_len(n, k, s, op.padding.lower(), p, d)
        for n, k, s, p, d in zip((h, w), op.kernel_size, op.strides, output_padding, op.dilation_rate)
    )
    first = in_states[0]
    rf = jump = None
    if first.rf is not None and first.jump is not None:
        rf = tuple(
            r + (math.ceil(((k - 1) * d + 1) / s) - 1) * j
            for r, k, s, d, j in zip(first.rf, op.kernel_size, op.strides, op.dilation_rate, first.jump)
        )
        jump = tuple(_exact(fractions.Fraction(j) / s) for j, s in zip(first.jump, op.strides))
    k_h, k_w = op.kernel_size
    info = _Info(tuple(op.kernel_size), tuple(op.strides), op.padding.lower(), h * w * k_h * k_w * c_in * op.filters)
    return [_State((*out_hw, op.filters), rf, jump)], info


def _exact(value):
    """A Fraction as an int where it is one."""
    return int(value) if value.denominator == 1 else value


def _to_reference(node, in_states, prefix):
    """`[x, reference]` -> x at the reference's height and width: cropped (its
    positions and receptive field unchanged; the crop must fit) or resized (the
    reference's positions; bilinear reads two neighbours per axis)."""
    op = node.layer
    h, w, c = _require_image(node, in_states, prefix)
    first, reference = in_states
    ref_h, ref_w = reference.shape[:2]
    if isinstance(op, CropToReference):
        if op.offset + ref_h > h or op.offset + ref_w > w:
            raise _SizeError(
                f"{_where(node, in_states, prefix)} cannot crop {ref_h}x{ref_w} at offset {op.offset}: "
                f"expected at least {op.offset + ref_h}x{op.offset + ref_w}. Received: {h}x{w}"
            )
        return _State((ref_h, ref_w, c), first.rf, first.jump)
    rf = None if first.rf is None else tuple(r + j for r, j in zip(first.rf, first.jump))
    return _State((ref_h, ref_w, c), rf, reference.jump)
