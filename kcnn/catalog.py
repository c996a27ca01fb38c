"""The model table: every registered model and its notable variants, with the figures
of their default input, pinned.

`kcnn list` prints it without building a model (and without importing TensorFlow), the
README's model table is generated from it (`kcnn list --markdown`), and
`tests/test_catalog.py` builds every row and checks every figure against the model
(`kcnn.model_info`), so none of them can drift from the code.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Mapping, Sequence
from types import MappingProxyType


@dataclasses.dataclass(frozen=True)
class ModelRow:
    """One model of the table.

    Attributes:
        name: the registry name.
        arguments: builder arguments of a variant ({} for the registered model).
        family: the family (its module under `kcnn.models`, or `fcn` and `unet`,
            the segmentation models of `kcnn.dense`).
        year: of the paper.
        paper: authors and title.
        input_shape: the default input (H, W, C).
        params: Keras `count_params()` (trainable + BatchNorm moving statistics).
        trainable_params: trainable parameters only (what PyTorch libraries count).
        macs: multiply-accumulates of one forward pass at the default input
            (`kcnn.shapes.count_macs`).
    """

    name: str
    arguments: Mapping
    family: str
    year: int
    paper: str
    input_shape: tuple[int, int, int]
    params: int
    trainable_params: int
    macs: int

    @property
    def label(self) -> str:
        """`resnet50`, or `resnet50(variant="v1.5")` for a variant."""
        if not self.arguments:
            return self.name
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.arguments.items())
        return f"{self.name}({arguments})"


_PAPERS = {
    "mlp": (1958, "Rosenblatt, The Perceptron; the linear classifier of CS231n"),
    "convnet": (2012, "The plain conv-ReLU-pool ConvNet (CS231n)"),
    "lenet": (1998, "LeCun et al., Gradient-Based Learning Applied to Document Recognition"),
    "alexnet": (2012, "Krizhevsky et al., ImageNet Classification with Deep Convolutional Neural Networks"),
    "vgg": (2014, "Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition"),
    "googlenet": (2014, "Szegedy et al., Going Deeper with Convolutions"),
    "resnet": (2015, "He et al., Deep Residual Learning for Image Recognition"),
    "fcn": (2015, "Long et al., Fully Convolutional Networks for Semantic Segmentation"),
    "unet": (2015, "Ronneberger et al., U-Net: Convolutional Networks for Biomedical Image Segmentation"),
}
_IMAGENET = (224, 224, 3)
# The classifier a segmentation family's `weights=` load into by default (`kcnn.fcn8s`'s
# VGG-16, `kcnn.unet`'s `backbone` default).
_SEGMENTATION_BACKBONES = {"fcn": "vgg16", "unet": "resnet18"}


def _row(name, family, input_shape, params, trainable_params, macs, **arguments):
    year, paper = _PAPERS[family]
    return ModelRow(
        name, MappingProxyType(arguments), family, year, paper, input_shape, params, trainable_params, macs
    )


#: In the order of the lectures, then the segmentation models; variants follow their model.
ROWS = (
    _row("mlp", "mlp", (32, 32, 3), 30_730, 30_730, 30_720),
    _row("convnet", "convnet", (32, 32, 3), 550_570, 550_570, 38_896_896),
    _row("lenet5", "lenet", (32, 32, 1), 61_706, 61_706, 416_520),
    _row("lenet5", "lenet", (32, 32, 1), 60_840, 60_000, 328_096, variant="paper"),
    _row("alexnet", "alexnet", (227, 227, 3), 60_965_224, 60_965_224, 724_406_816),
    _row("alexnet", "alexnet", (227, 227, 3), 60_965_224, 60_965_224, 724_406_816, variant="caffe"),
    _row("vgg11", "vgg", _IMAGENET, 132_863_336, 132_863_336, 7_609_090_048),
    _row("vgg11_bn", "vgg", _IMAGENET, 132_874_344, 132_868_840, 7_609_090_048),
    _row("vgg13", "vgg", _IMAGENET, 133_047_848, 133_047_848, 11_308_466_176),
    _row("vgg13_bn", "vgg", _IMAGENET, 133_059_624, 133_053_736, 11_308_466_176),
    _row("vgg16", "vgg", _IMAGENET, 138_357_544, 138_357_544, 15_470_264_320),
    _row("vgg16_bn", "vgg", _IMAGENET, 138_374_440, 138_365_992, 15_470_264_320),
    _row("vgg19", "vgg", _IMAGENET, 143_667_240, 143_667_240, 19_632_062_464),
    _row("vgg19_bn", "vgg", _IMAGENET, 143_689_256, 143_678_248, 19_632_062_464),
    _row("googlenet", "googlenet", _IMAGENET, 6_998_552, 6_998_552, 1_582_671_872),
    _row("googlenet", "googlenet", _IMAGENET, 13_378_280, 13_378_280, 1_591_044_096, aux_logits=True),
    _row("googlenet", "googlenet", _IMAGENET, 6_998_552, 6_998_552, 1_582_671_872, variant="caffe"),
    _row("resnet18", "resnet", _IMAGENET, 11_703_912, 11_694_312, 1_814_073_344),
    _row("resnet18", "resnet", _IMAGENET, 11_699_112, 11_689_512, 1_814_073_344, variant="v1.5"),
    _row("resnet34", "resnet", _IMAGENET, 21_823_208, 21_806_184, 3_663_761_408),
    _row("resnet34", "resnet", _IMAGENET, 21_814_696, 21_797_672, 3_663_761_408, variant="v1.5"),
    _row("resnet50", "resnet", _IMAGENET, 25_636_712, 25_583_592, 3_857_973_248),
    _row("resnet50", "resnet", _IMAGENET, 25_610_152, 25_557_032, 4_089_184_256, variant="v1.5"),
    _row("resnet101", "resnet", _IMAGENET, 44_707_176, 44_601_832, 7_570_194_432),
    _row("resnet101", "resnet", _IMAGENET, 44_654_504, 44_549_160, 7_801_405_440, variant="v1.5"),
    _row("resnet152", "resnet", _IMAGENET, 60_419_944, 60_268_520, 11_282_415_616),
    _row("resnet152", "resnet", _IMAGENET, 60_344_232, 60_192_808, 11_513_626_624, variant="v1.5"),
    # Segmentation (kcnn.dense), 21 classes; FCN's bilinear upsamplings are fixed, so not trainable.
    _row("fcn32s", "fcn", _IMAGENET, 136_152_917, 134_346_581, 62_787_564_288),
    _row("fcn16s", "fcn", _IMAGENET, 134_815_994, 134_357_354, 62_826_561_792),
    _row("fcn8s", "fcn", _IMAGENET, 134_489_759, 134_362_751, 62_860_657_728),
    _row("unet", "unet", _IMAGENET, 14_344_805, 14_333_221, 4_142_530_560),
    _row("unet", "unet", _IMAGENET, 24_464_101, 24_445_093, 5_992_218_624, backbone="resnet34"),
)

#: The registered model names, sorted (what `kcnn.list_models()` returns).
NAMES = tuple(sorted({row.name for row in ROWS}))


def unknown_model(name: object, known: Sequence[str] = NAMES) -> ValueError:
    """The error for a name that is not a registered model: the lowercase name when only
    the case differs (names are lowercase, as the models' `.name` and run folders are,
    and another case is no second spelling), else the close matches."""
    if isinstance(name, str) and name.lower() in known:
        return ValueError(f"Unknown model. Model names are lowercase: use {name.lower()!r}. Received: name={name!r}")
    close = difflib.get_close_matches(str(name).lower(), list(known), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"Unknown model.{hint} Known models: {', '.join(sorted(known))}. Received: name={name!r}")


def rows(pattern: str = "*", *, variants: bool = True) -> list[ModelRow]:
    """The rows whose registry name matches a shell-style `pattern`, in lecture order."""
    return [row for row in ROWS if fnmatch.fnmatchcase(row.name, pattern) and (variants or not row.arguments)]


def format_macs(macs: int) -> str:
    """Multiply-accumulates in K, M or G, to three significant figures (at least)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if macs >= scale:
            value = macs / scale
            decimals = 2 if value < 10 else 1 if value < 100 else 0
            return f"{value:.{decimals}f} {unit}"
    return str(macs)


def format_table(selected: list[ModelRow]) -> str:
    """The table `kcnn list` prints."""
    header = f"{'model':<28} {'year':>4}  {'input':<11} {'params':>13} {'trainable':>13} {'MACs':>9}  paper"
    lines = [header, "-" * len(header)]
    for row in selected:
        size = "x".join(map(str, row.input_shape))
        lines.append(
            f"{row.label:<28} {row.year:>4}  {size:<11} {row.params:>13,} {row.trainable_params:>13,} "
            f"{format_macs(row.macs):>9}  {row.paper}"
        )
    return "\n".join(lines)


def pretrained(row: ModelRow) -> str:
    """The ImageNet weight sets (`kcnn.weights.table`) built as this row is, by source
    (`keras`, `tv`, `bvlc`, ...): "(default)" marks `weights="imagenet"`'s, "(local
    file)" a set without a recorded hash, which loads from a local file only."""
    from kcnn.weights import table

    if row.family in _SEGMENTATION_BACKBONES:  # `weights=` are the backbone's.
        backbone = dict(row.arguments).get("backbone", _SEGMENTATION_BACKBONES[row.family])
        default = table.default_weight_set(backbone)
        return f"{backbone}'s {default.tag.removesuffix('_in1k')} (default)" if default else "-"
    default = table.default_weight_set(row.name)
    names = []
    for weight_set in table.WEIGHTS:
        if weight_set.model == row.name and weight_set.variant == dict(row.arguments):
            note = " (default)" if weight_set is default else "" if weight_set.hash else " (local file)"
            names.append(weight_set.tag.removesuffix("_in1k") + note)
    return ", ".join(names) or "-"


def format_markdown(selected: list[ModelRow]) -> str:
    """The same table in Markdown (the README's model table), with the ImageNet weights
    each row has (`pretrained`)."""
    lines = ["| model | year | input | params | trainable | MACs | ImageNet weights |", "|---|---|---|---:|---:|---:|---|"]
    for row in selected:
        size = "x".join(map(str, row.input_shape))
        label = f"`{row.label}`"
        lines.append(
            f"| {label} | {row.year} | {size} | {row.params:,} | {row.trainable_params:,} | {format_macs(row.macs)} | "
            f"{pretrained(row)} |"
        )
    return "\n".join(lines)
