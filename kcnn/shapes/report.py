"""The result of a trace: one row per layer call, and its text table."""

import dataclasses

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
