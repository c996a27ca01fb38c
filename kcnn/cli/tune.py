"""`kcnn tune`: a thin wrapper of `kcnn.tune.search`. The search flags are generated
from `SearchConfig`'s fields, the training flags from `TrainConfig`'s."""

import dataclasses

from kcnn.cli import _preflight
from kcnn.cli._flags import add_data_flags, add_dataclass_flags, add_renamed, collect, data_options, literal

_SEARCH_DEST = "search_"
_TRAIN_DEST = "train_"
# Set by the search for each trial, so not flags of their own here; `--seed` seeds
# both the tuner and the data pipeline.
_SEARCH_OWNS = ("epochs", "early_stopping", "monitor", "seed")


def register(subparsers):
    # The config module, not the search: building the parser imports no keras-tuner.
    from kcnn.tune.config import SPACE_NAMES, SearchConfig, search_train_config

    parser = subparsers.add_parser(
        "tune",
        help="search a space of models with keras-tuner (default: convnet on digits)",
        description="Searches SPACE with keras-tuner and writes saved_models/tuning/<project>/: trials.csv, "
        "pareto.png and best/ (model.keras + metadata.json). Run the same command again to resume an "
        "interrupted search. Distributed: start `--chief HOST:PORT` once, then `--chief HOST:PORT --worker ID` "
        "for each worker (same project folder).",
    )
    parser.add_argument(
        "space", nargs="?", default="convnet", choices=SPACE_NAMES, help="search space (default: convnet)"
    )
    parser.add_argument("--data", default="digits", help="digits, a TFDS name, an image folder or an .npz file")
    parser.add_argument(
        "--ranges",
        action="append",
        default=[],
        metavar="NAME=CHOICES",
        help="choices of one of the space's ranges, comma-separated, e.g. --ranges depth=2,3 "
        "--ranges kernel_size=3; repeatable",
    )
    add_renamed(parser, {"--dataset": "--data", "--range": "--ranges"})
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Keras progress output of each trial")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run the search distributed on this machine: a chief and N workers on a free local port, each "
        "worker pinned to one GPU (CUDA_VISIBLE_DEVICES, round robin); all stop on Ctrl-C or when one fails",
    )
    add_data_flags(parser, size_default="the source's own size; for an image folder the median size of its images")
    add_dataclass_flags(
        parser.add_argument_group("search settings (kcnn.tune.SearchConfig)"),
        SearchConfig,
        dest=_SEARCH_DEST,
        skip=("train",),
    )
    train = search_train_config()
    add_dataclass_flags(
        parser.add_argument_group("training settings of each trial (kcnn.train.TrainConfig)"),
        type(train),
        dest=_TRAIN_DEST,
        defaults=dataclasses.asdict(train),
        skip=_SEARCH_OWNS,
    )
    # `--workers` only starts the cluster's processes, which load TensorFlow themselves:
    # the launcher does not (seconds before the first worker starts, and its memory).
    parser.set_defaults(
        handler=_tune, preflight=lambda args: _preflight.data(args.data), needs_tensorflow=lambda args: args.workers is None
    )


def _ranges(pairs):
    ranges = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name or not text:
            raise ValueError(f"`--ranges` takes NAME=CHOICES, e.g. depth=2,3. Received: {pair!r}")
        ranges[name] = tuple(literal(item.strip()) for item in text.split(","))
    return ranges


def _tune(args):
    if args.workers is not None:
        from kcnn.tune import workers

        argv = _without_workers(args.command_line)
        commands = workers.cluster_commands(argv, args.workers, port=workers.free_port(), devices=workers.visible_accelerators())
        return workers.run_cluster(commands)
    import keras

    from kcnn import tune
    from kcnn.tune import cost

    search_values = collect(args, _SEARCH_DEST)
    train_values = collect(args, _TRAIN_DEST)
    if search_values.get("seed") is not None:
        train_values["seed"] = search_values["seed"]
    train = dataclasses.replace(tune.search_train_config(), **train_values)
    config = tune.SearchConfig(**search_values, train=train)
    # Process-wide state belongs here, in the entry point: the library never seeds the
    # global generators (the tuner and the data pipeline take their seeds explicitly).
    keras.utils.set_random_seed(train.seed)
    if config.chief and not config.worker:
        print(
            f"chief: serving the search at {config.chief}; start the workers with --chief {config.chief} --worker ID",
            flush=True,
        )

    # Each trial's line comes through the `kcnn` logger, as in Python (stderr).
    result = tune.search(
        args.space,
        args.data,
        config,
        ranges=_ranges(args.ranges),
        data_options=data_options(args),
        verbose=args.verbose,
    )
    if result.role == "worker":
        print(f"worker {config.worker}: ran trials {', '.join(r.trial_id for r in result.trials) or 'none'}")
        return 0
    print()
    print(result.table())
    print()
    retrained = next((r for r in result.retrained if r.name == result.best_trial and r.test is not None), None)
    test = "" if retrained is None else f", test accuracy {retrained.test:.4f} after the full recipe"
    best = next(r for r in result.trials if r.trial_id == result.best_trial)
    print(f"best trial {result.best_trial}: {config.objective} {best.value:.4f}{best.score_note}{test}")
    if result.target_macs is not None:
        print(f"  cost term: scores weighed by (MACs / {result.target_macs:,}) ** -0.07 above that target (--target-macs)")
    if result.target_latency_ms is not None:
        print(
            f"  cost term: scores weighed by (latency / {result.target_latency_ms:.3g} ms) ** -0.07 above that target, "
            "latency measured on this machine (--cost latency, --target-latency-ms)"
        )
    if result.bar is not None:
        print(
            f"  bar: the cheapest reference scored {result.bar:.4f} as a trial; no proposal above "
            f"{cost.ceiling(result.bar, result.target_macs):,} MACs could beat it"
        )
    print("  " + " ".join(f"{key}={value}" for key, value in result.best_hyperparameters.items()))
    if result.search_seconds is not None:
        from kcnn.tune.budget import format_duration

        of = "" if result.time_budget is None else f" of the {format_duration(result.time_budget)} budget"
        print(
            f"time: search {format_duration(result.search_seconds)}{of}, finish "
            f"{format_duration(result.finish_seconds)} (the budget does not count the finish)"
        )
    print(result.verdict())  # What best/ holds, and every reference it is below.
    print(f"best model saved to {result.path}")
    print(f"trials: {result.trials_csv}  plot: {result.plot}")
    return 0


def _without_workers(argv):
    """The command line without its `--workers N` (each process of the cluster gets
    the rest)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            kept.append(arg)
    return kept
