"""`kcnn export` and `kcnn explain`: thin wrappers of `kcnn.export.export` and
`kcnn.explain.explain`."""

import os

from kcnn.cli import _preflight
from kcnn.cli._flags import add_renamed

# The choices, written here so that `kcnn --help` needs no TensorFlow; the tests check
# them against kcnn.export.FORMATS / QUANTIZATIONS and kcnn.explain.METHODS.
FORMATS = ("saved_model", "onnx", "litert")
QUANTIZATIONS = ("int8", "float16")
METHODS = ("gradcam", "saliency")


def register(subparsers):
    export = subparsers.add_parser(
        "export",
        help="write a saved model as a SavedModel, ONNX or LiteRT file that takes raw images",
        description="Exports a run's model with Keras' exporters. The exported model takes uint8 images "
        "(NHWC, any height and width, 1, 3 or 4 channels), applies the run's preprocessing and returns class "
        "probabilities (a segmentation model's per pixel, at the images' height and width); class names and preprocessing are written to OUTPUT.json beside it.",
    )
    export.add_argument("path", metavar="RUN_OR_MODEL", help="a run folder or a .keras file")
    export.add_argument("--output", required=True, help="the file (.onnx, .tflite) or folder (SavedModel) to write")
    export.add_argument(
        "--format", choices=FORMATS, default=None, help="default: from --output (.onnx, .tflite, else a SavedModel folder)"
    )
    export.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        default=None,
        help="litert only: float16 weights, or int8 weights and activations calibrated on training images "
        "(the test accuracy change is printed)",
    )
    export.add_argument(
        "--calibration-images", type=int, default=None, help="training images int8 calibrates on (default: 300, kcnn.export.CALIBRATION_IMAGES)"
    )
    export.add_argument("--data", default=None, help="int8's calibration and test data (default: the run's dataset)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_renamed(export, {"--dataset": "--data"})
    export.set_defaults(handler=_export, preflight=_preflight.run_and_data)

    explain = subparsers.add_parser(
        "explain",
        help="the predicted classes of an image and a heat map of what the model looked at",
        description="Predicts an image's class with a saved model and writes a picture: the image, a Grad-CAM "
        "heat map (or a saliency map) over it, and the most likely classes.",
    )
    explain.add_argument("path", metavar="RUN", help="a run folder or a .keras file")
    explain.add_argument("image", help="an image file")
    explain.add_argument("--output", required=True, help="the picture to write (.png, .pdf, .svg, ...)")
    explain.add_argument("--method", choices=METHODS, default="gradcam", help="default: gradcam")
    explain.add_argument("--layer", default=None, help="Grad-CAM's layer (default: the last convolutional stage)")
    explain.add_argument("--class-name", default=None, help="the class to explain (default: the predicted one)")
    explain.add_argument("--top-k", type=int, default=3, help="classes shown (default: 3)")
    add_renamed(explain, {"--class": "--class-name"})
    explain.set_defaults(handler=_explain, preflight=_explain_preflight)


def _explain_preflight(args):
    _preflight.run_or_model(args.path)
    _preflight.existing(args.image, "an image file", "image")


def _export(args):
    from kcnn.export import export

    calibration = {} if args.calibration_images is None else {"calibration_images": args.calibration_images}
    result = export(
        args.path, args.output, args.format, quantize=args.quantize, data=args.data, overwrite=args.overwrite, **calibration
    )
    kind = f"{result.format} ({result.quantize})" if result.quantize else result.format
    print(f"{kind} model written to {result.path}")
    print(f"class names and preprocessing in {result.metadata_path}")
    if result.accuracy:
        accuracy = result.accuracy
        print(
            f"{accuracy['split']} accuracy: {accuracy['keras_accuracy']:.2%} (Keras) -> {accuracy['exported_accuracy']:.2%} "
            f"({result.quantize}), {100 * accuracy['change']:+.2f} points ({accuracy['examples']} images)"
        )
    return 0


def _explain(args):
    from kcnn.explain import explain

    result = explain(
        args.path, args.image, method=args.method, layer=args.layer, class_name=args.class_name, top_k=args.top_k
    )
    ranked = ", ".join(f"{name} ({probability:.1%})" for name, probability in result.predictions)
    print(f"{args.image}: {ranked}")
    result.save(args.output)
    where = f" at layer {result.layer}" if result.layer else ""
    print(f"{'Grad-CAM' if result.method == 'gradcam' else 'saliency'} for class {result.class_name!r}{where} written to {os.fspath(args.output)}")
    return 0
