"""What is known of a tensor as sizes propagate (its shape, receptive field and
jump), and the checks and messages every layer rule shares."""

import dataclasses


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


def _where(node, in_states, prefix):
    op = node.layer
    shapes = ", ".join(str(s.shape) for s in in_states)
    return f"Layer {prefix + op.name!r} ({type(op).__name__}) at input {shapes}"


def _require_image(node, in_states, prefix):
    op = node.layer
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
