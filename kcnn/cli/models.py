"""`kcnn list` and `kcnn summary`: the model table and the per-layer trace."""

from kcnn import catalog
from kcnn.cli import _preflight


def register(subparsers):
    listing = subparsers.add_parser(
        "list",
        help="the model table: name, year, input, parameters, MACs, paper",
        description="Prints the pinned model table (kcnn.catalog) without building any model.",
    )
    listing.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'resnet*'")
    listing.add_argument("--names", "--names-only", dest="names_only", action="store_true", help="print the registered names only")
    listing.add_argument("--markdown", action="store_true", help="print the table in Markdown (the README's)")
    listing.set_defaults(handler=_list, needs_tensorflow=False)

    summary = subparsers.add_parser(
        "summary", help="per-layer sizes, filters, strides, parameters, MACs, receptive field"
    )
    summary.add_argument("model", help="a registered model name (see `kcnn list`)")
    summary.add_argument("--input-size", type=int, default=None, help="square input size")
    summary.add_argument("--classes", type=int, default=None)
    summary.set_defaults(handler=_summary, preflight=lambda args: _preflight.model_name(args.model))


def _list(args):
    selected = catalog.rows(args.pattern)
    if not selected:
        raise ValueError(
            f"No model matches the pattern. Known models: {', '.join(catalog.NAMES)}. "
            f"Received: pattern={args.pattern!r}"
        )
    if args.names_only:
        print("\n".join(sorted({row.name for row in selected})))
    elif args.markdown:
        print(catalog.format_markdown(selected))
    else:
        print(catalog.format_table(selected))
    return 0


def _summary(args):
    from kcnn import registry, shapes

    spec = registry.get_spec(args.model)
    kwargs = {}
    if args.input_size is not None:
        channels = spec.default_input_shape[2]
        kwargs["input_shape"] = (args.input_size, args.input_size, channels)
    if args.classes is not None:
        kwargs["classes"] = args.classes
    model = spec.build(**kwargs)
    print(shapes.trace(model).format())
    return 0
