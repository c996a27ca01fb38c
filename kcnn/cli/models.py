"""`kcnn list` and `kcnn summary`: the model table and the per-layer trace."""

from kcnn import registry, shapes


def register(subparsers):
    listing = subparsers.add_parser(
        "list", help="the model table: name, year, paper, parameters, GMACs"
    )
    listing.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'resnet*'")
    listing.add_argument(
        "--names-only", action="store_true", help="print the names without building the models"
    )
    listing.set_defaults(handler=_list)

    summary = subparsers.add_parser(
        "summary", help="per-layer sizes, filters, strides, parameters, MACs, receptive field"
    )
    summary.add_argument("model", help="a registered model name (see `kcnn list`)")
    summary.add_argument("--input-size", type=int, default=None, help="square input size")
    summary.add_argument("--classes", type=int, default=None)
    summary.set_defaults(handler=_summary)


def model_table(names):
    """Rows of the model table, one dict per model (built to be counted)."""
    return [registry.model_info(name) for name in names]


def _list(args):
    names = registry.list_models(args.pattern)
    if not names:
        raise ValueError(
            f"No model matches the pattern. Known models: {', '.join(registry.list_models())}. "
            f"Received: pattern={args.pattern!r}"
        )
    if args.names_only:
        print("\n".join(names))
        return 0
    header = f"{'model':<11} {'year':>4}  {'input':<11} {'params':>13} {'GMACs':>7}  paper"
    print(header)
    print("-" * len(header))
    for name in names:
        info = registry.model_info(name)
        size = "x".join(str(d) for d in info["input_shape"])
        print(
            f"{name:<11} {info['year']:>4}  {size:<11} {info['params']:>13,} "
            f"{info['macs'] / 1e9:>7.2f}  {info['paper']}",
            flush=True,
        )
    return 0


def _summary(args):
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
