"""`kcnn weights list`: the pretrained weights table (kcnn.weights.table), without
importing TensorFlow."""

from kcnn.weights import table


def register(subparsers):
    weights = subparsers.add_parser(
        "weights", help="pretrained weights: `kcnn weights list [PATTERN]`", description="The pretrained weights table."
    )
    commands = weights.add_subparsers(dest="weights_command", metavar="COMMAND")
    listing = commands.add_parser(
        "list",
        help="the weight sets: source, builder arguments, accuracy, preprocessing, format, hash, licence",
        description="Prints the weights table (kcnn.weights.list_weights) without building any model.",
    )
    listing.add_argument("pattern", nargs="?", default="*", help="shell pattern of model or weights names, e.g. 'resnet*'")
    listing.add_argument("--markdown", action="store_true", help="print the table in Markdown (docs/weights.md's)")
    listing.set_defaults(handler=_list, needs_tensorflow=False)
    weights.set_defaults(handler=lambda args: weights.print_help() or 2, needs_tensorflow=False)


def _list(args):
    selected = table.list_weights(args.pattern)
    if not selected:
        raise ValueError(
            f"No weight set matches the pattern. Models with weights: {', '.join(table.models_with_weights())}. "
            f"Received: pattern={args.pattern!r}"
        )
    print(table.format_markdown(selected) if args.markdown else table.format_table(selected))
    return 0
