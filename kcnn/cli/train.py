"""`kcnn train`, `kcnn evaluate`, `kcnn predict` and `kcnn fine-tune`: thin wrappers of
`kcnn.train`. The training flags are generated from `TrainConfig`'s fields."""

import logging
import sys

from kcnn.cli import _preflight
from kcnn.cli._flags import add_data_flags, add_dataclass_flags, add_renamed, collect, data_options, literal
from kcnn.train.config import MIXED_PRECISION, TrainConfig

_CONFIG_DEST = "config_"


def register(subparsers):
    train = subparsers.add_parser(
        "train",
        help="train a model (default: LeNet-5 on the bundled digits)",
        description="Trains a model and writes saved_models/<model>-<dataset>-<time>/. "
        "Run it again with the same --output to resume an interrupted run.",
    )
    train.add_argument("model", nargs="?", default="lenet5", help="a registered model name (default: lenet5)")
    train.add_argument(
        "--data",
        default="digits",
        help="digits, a TFDS name, an image folder or an .npz file; for a segmentation model: shapes (synthetic scenes), "
        "a folder of images/ and masks/, or oxford_iiit_pet",
    )
    train.add_argument(
        "--model-kwargs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder argument (a Python literal or a word), e.g. --model-kwargs stem=small; repeatable",
    )
    add_renamed(train, {"--dataset": "--data", "--model-arg": "--model-kwargs"})
    _add_run_flags(
        train,
        size_default="the model's own input size when its top flattens (mlp, convnet, lenet5, alexnet, vgg*); "
        "else the source's size, or the model's default size for an image folder",
    )
    train.set_defaults(handler=_train, preflight=_train_preflight)

    evaluate = subparsers.add_parser("evaluate", help="loss and accuracy of a saved model (and per-class IoU of a segmentation model)")
    evaluate.add_argument("path", help="a run folder or a .keras file")
    evaluate.add_argument("--data", default=None, help="default: the run's dataset, with its split")
    add_renamed(evaluate, {"--dataset": "--data"})
    evaluate.add_argument("--split", default="test", choices=("train", "validation", "test"))
    _add_inference_precision(evaluate)
    evaluate.set_defaults(handler=_evaluate, preflight=_preflight.run_and_data)

    predict = subparsers.add_parser(
        "predict",
        help="classify image files with a saved model (a segmentation model writes mask and overlay PNGs)",
        description="Classifies image files with a saved model (a segmentation model writes a mask and an overlay "
        "PNG of each). A file that cannot be read is named with why, the others are classified, and the exit "
        "status is 1.",
    )
    predict.add_argument("path", help="a run folder or a .keras file")
    predict.add_argument(
        "images", nargs="+", help="image files, or folders: every image file directly in one, sorted by name"
    )
    predict.add_argument("--top-k", type=int, default=3, help="classes shown per image")
    predict.add_argument(
        "--output-dir",
        default="predictions",
        help="segmentation models: the folder for each image's <name>.mask.png and <name>.overlay.png (default: predictions)",
    )
    _add_inference_precision(predict)
    predict.set_defaults(handler=_predict, preflight=_predict_preflight)

    finetune = subparsers.add_parser(
        "fine-tune",
        aliases=["finetune"],
        help="fine-tune a saved model on another dataset",
        description="Replaces the classifier, trains it on the frozen backbone, then unfreezes the top "
        "stages at a lower learning rate. --epochs counts both phases.",
    )
    finetune.add_argument("path", help="a run folder or a .keras file; with --weights, a registered model name")
    finetune.add_argument(
        "--weights",
        default=None,
        metavar="TAG",
        help="start from pretrained weights of the model named by PATH: imagenet, imagenet-tv2, ... (`kcnn weights list`)",
    )
    finetune.add_argument(
        "--model-kwargs", action="append", default=[], metavar="KEY=VALUE", help="with --weights: builder argument, e.g. variant=v1.5"
    )
    finetune.add_argument("--data", required=True, help="digits, a TFDS name, an image folder or an .npz file")
    finetune.add_argument("--head-epochs", type=int, default=None, help="epochs of the first phase (default: half)")
    finetune.add_argument(
        "--unfreeze", action="append", default=None, metavar="PREFIX", help="layer-name prefix to unfreeze from, e.g. conv5 (default: the last stage); repeatable"
    )
    finetune.add_argument(
        "--learning-rate-factor", type=float, default=0.1, help="second phase's learning rate relative to the first"
    )
    add_renamed(finetune, {"--dataset": "--data", "--model-arg": "--model-kwargs", "--lr-factor": "--learning-rate-factor"})
    _add_run_flags(
        finetune,
        size_default="the saved model's input size; give it for a model that takes any size",
        channels_default="the saved model's",
    )
    finetune.set_defaults(handler=_finetune, preflight=_finetune_preflight)


def _train_preflight(args):
    _preflight.model_name(args.model)
    _preflight.data(args.data)


def _predict_preflight(args):
    _preflight.run_or_model(args.path)
    for image in args.images:
        _preflight.existing(image, "an image file or a folder of images", "images")


def _finetune_preflight(args):
    if args.weights:
        _preflight.model_name(args.path)
    else:
        _preflight.run_or_model(args.path)
    _preflight.data(args.data)


def _add_inference_precision(parser):
    parser.add_argument(
        "--mixed-precision",
        default="auto",
        choices=MIXED_PRECISION,
        help="compute dtype policy: auto (picked as training picks it), off (float32: the saved "
        "model itself), mixed_float16 or mixed_bfloat16",
    )


def _add_run_flags(parser, *, size_default, channels_default="the source's own"):
    parser.add_argument("--output", default=None, help="the run folder; an unfinished run there is resumed")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2), help="Keras progress output")
    add_data_flags(parser, size_default=size_default, channels_default=channels_default)
    add_dataclass_flags(
        parser.add_argument_group("training settings (kcnn.train.TrainConfig)"), TrainConfig, dest=_CONFIG_DEST
    )


def _config(args):
    return TrainConfig(**collect(args, _CONFIG_DEST))


def _model_kwargs(pairs):
    kwargs = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"`--model-kwargs` takes KEY=VALUE, e.g. stem=small. Received: {pair!r}")
        kwargs[key] = literal(text)
    return kwargs


def _seed(config) -> bool:
    """Sets up the cluster's strategy (if any) and the global seed; returns whether this
    process writes the run folder (in a cluster, the chief only)."""
    import keras

    from kcnn.train.distribute import multi_worker_strategy, resolve_device, wants_multi_worker

    # A cluster in TF_CONFIG (distribution "auto" or "multi_worker"): TensorFlow sets
    # up its collective ops before any other op, so the strategy comes first.
    chief = True
    if wants_multi_worker(config):
        # tf.distribute logs each collective it builds at INFO (30-odd lines a run).
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
        multi_worker_strategy()
        chief = resolve_device(config).is_chief

    # Process-wide state belongs here, in the entry point: the library never seeds
    # the global generators (the data pipeline takes the seed explicitly).
    keras.utils.set_random_seed(config.seed)
    return chief


def _run(start, output, describe, *, chief=True):
    """Runs `start(callbacks)`, announcing the run folder once training has begun:
    only then does the folder exist, with a checkpoint to resume from. A worker that
    is not the chief (`chief=False`) saves nothing of its own, and says so."""
    import keras

    from kcnn.train import NonFiniteLossError

    started = []

    class Announce(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if not started:  # fine-tune begins training twice, once per phase
                started.append(True)
                print(f"run folder: {output} (interrupted? run the same command with --output {output} to resume)", flush=True)

    try:
        result = start([Announce()])
    except NonFiniteLossError as error:
        print(f"kcnn: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = f"resume with --output {output}" if started else "before training began, nothing to resume"
        print(f"\ninterrupted: {hint}", file=sys.stderr)
        return 130
    test = result.metrics.get("test")
    if test:
        print(f"test {_scores(test, top5=False)} ({test['examples']} images, {_losses(test)})")
    if chief:
        print(f"{describe} saved to {result.path}")
    else:
        print(f"this worker's part is done; the chief saves the {describe} to {result.path}")
    return 0


def _train(args):
    from kcnn import train
    from kcnn.train.runs import RunFolder

    config = _config(args)
    model_kwargs = _model_kwargs(args.model_kwargs)
    chief = _seed(config)
    output = args.output or RunFolder.new(args.model, args.data).path
    return _run(
        lambda callbacks: train.fit(
            args.model,
            args.data,
            config,
            output=output,
            model_kwargs=model_kwargs,
            data_options=data_options(args),
            callbacks=callbacks,
            verbose=args.verbose,
        ),
        output,
        "model",
        chief=chief,
    )


def _finetune(args):
    from kcnn import train
    from kcnn._lock import check_free
    from kcnn.train.runs import RunFolder

    config = _config(args)
    chief = _seed(config)
    if args.output:  # Refused before the base model loads when another trainer is in the folder.
        check_free(args.output, "kcnn training run")
    if args.weights:
        model, base = _pretrained(args), args.path
    else:
        model = args.path
        _, metadata = train.load(args.path)
        base = metadata.get("model", {}).get("name", "model")
    output = args.output or RunFolder.new(f"{base}_finetuned", args.data).path
    return _run(
        lambda callbacks: train.fine_tune(
            model,
            args.data,
            config,
            head_epochs=args.head_epochs,
            unfreeze=args.unfreeze or "auto",
            learning_rate_factor=args.learning_rate_factor,
            output=output,
            data_options=data_options(args),
            callbacks=callbacks,
            verbose=args.verbose,
        ),
        output,
        "fine-tuned model",
        chief=chief,
    )


def _pretrained(args):
    """The backbone `kcnn fine-tune MODEL --weights TAG` starts from, at --image-size."""
    from kcnn import registry

    kwargs = _model_kwargs(args.model_kwargs)
    size = data_options(args).get("image_size")
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else size
        kwargs["input_shape"] = (height, width, 3)
    return registry.create_model(args.path, include_top=False, weights=args.weights, **kwargs)


def _losses(metrics):
    """`loss` is the training loss (label-smoothed when the run was), as history.csv's
    val_loss; `crossentropy` the plain one: both, named apart."""
    if abs(metrics["loss"] - metrics["crossentropy"]) < 5e-5:
        return f"loss {metrics['loss']:.4f}"
    return f"loss {metrics['loss']:.4f} (label-smoothed, as in training), cross-entropy {metrics['crossentropy']:.4f}"


def _scores(metrics, *, top5=True):
    """Accuracy (and top-5 accuracy), or a segmentation model's pixel accuracy and mean IoU."""
    if "mean_iou" in metrics:
        return f"pixel accuracy: {metrics['accuracy']:.2%}, mean IoU {metrics['mean_iou']:.4f}"
    extra = f", top-5 accuracy {metrics['top5_accuracy']:.2%}" if top5 and "top5_accuracy" in metrics else ""
    return f"accuracy: {metrics['accuracy']:.2%}{extra}"


def _evaluate(args):
    from kcnn import train
    from kcnn.train.runs import run_metadata

    metrics = train.evaluate(args.path, args.data, split=args.split, mixed_precision=args.mixed_precision)
    print(f"{args.split} {_scores(metrics)}, {_losses(metrics)} ({metrics['examples']} images)")
    if "class_iou" in metrics:
        names = run_metadata(args.path).get("class_names") or [str(i) for i in range(len(metrics["class_iou"]))]
        width = max(len(name) for name in names)
        print("IoU per class:")
        for name, iou in zip(names, metrics["class_iou"]):
            print(f"  {name:<{width}}  {'-' if iou is None else f'{iou:.4f}'}")
    return 0


def _predict(args):
    from kcnn import data, train
    from kcnn.train.overlays import save_segmentations
    from kcnn.train.runs import run_metadata
    from kcnn.train.segmentation import SEGMENTATION

    images = [path for given in args.images for path in data.image_files(given)]
    if run_metadata(args.path).get("task") == SEGMENTATION:
        for picture in save_segmentations(args.path, images, args.output_dir, mixed_precision=args.mixed_precision):
            shares = ", ".join(f"{name} {share:.0%}" for name, share in picture["shares"].items() if share >= 0.005)
            print(f"{picture['image']}: {shares}; mask {picture['mask']}, overlay {picture['overlay']}")
        return 0
    predictions = train.predict(args.path, images, top_k=args.top_k, mixed_precision=args.mixed_precision, skip_unreadable=True)
    for image, top in zip(images, predictions):
        if top is not None:  # An unreadable file is named in a warning.
            ranked = ", ".join(f"{name} ({probability:.1%})" for name, probability in top)
            print(f"{image}: {ranked}")
    unread = predictions.count(None)
    if unread:
        print(f"kcnn: {unread} of {len(images)} image(s) could not be read", file=sys.stderr)
    return 1 if unread else 0
