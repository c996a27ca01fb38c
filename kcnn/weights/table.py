"""The weights table: one row per published weight set, as data.

Each row says where the file is (URL, pinned to a commit for the Hugging Face Hub),
how to check it (its hash), how to read it (`format`), under which licence it is
published, what it scored (top-1/top-5 as its publisher measured them) and how the
images must be prepared for it (`Preprocessing`). `kcnn weights list` prints it and
docs/weights.md is generated from it (`format_markdown`); nothing here imports
TensorFlow or NumPy.

Sources of every figure: /work/shared/notes/weights_sources.md (keras 3.15's
`keras/src/applications/{resnet,vgg16,vgg19}.py` for the keras.applications files and
md5s; timm's `results/results-imagenet.csv`, its pretrained configs and the Hub's
Git-LFS sha256 for the timm files); for the BVLC rows, BVLC/caffe's
`models/bvlc_{alexnet,googlenet}/` (readme: accuracy, licence; prototxts: crops and
means) and the Git-LFS pointers of onnx/models' `validated/vision/classification/`
files (sha256, size). A Hub file whose sha256 is not recorded there has
`hash=None`: its row is listed, but `kcnn` refuses to download it (a file that cannot
be checked is not loaded), and it is never a model's default; it still loads from a
local path the user checked (`kcnn.weights.store.identify` tells by the file's name
which row it is).
"""

from __future__ import annotations

import dataclasses
import fnmatch

__all__ = ["WEIGHTS", "Preprocessing", "WeightSet", "default_weight_set", "get_weight_set", "list_weights", "resolve"]


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What the weights expect of an image (RGB, 0..255 pixels).

    Attributes:
        mode: "caffe" (RGB -> BGR, minus `mean` on the 0..255 scale, no scaling; the
            keras.applications files) or "torch" (x / 255, minus `mean`, divided by
            `std`, per RGB channel; torchvision and timm).
        mean, std: per channel, in the order `mode` says (BGR for caffe); `std` is
            None for caffe.
        input_size: the evaluation crop (square).
        crop_fraction: the crop's share of the resized image's short side: the
            short side is resized to `round(input_size / crop_fraction)` first
            (timm's `crop_pct`).
        interpolation: of the resize ("bilinear" or "bicubic").
    """

    mode: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float] | None
    input_size: int = 224
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"

    @property
    def resize_size(self) -> int:
        """The short side before the center crop (timm: floor(size / crop_pct))."""
        return int(self.input_size / self.crop_fraction)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


CAFFE = Preprocessing("caffe", (103.939, 116.779, 123.68), None)
TORCH = Preprocessing("torch", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TORCH_TV2 = dataclasses.replace(TORCH, crop_fraction=0.965)
TORCH_RSB = dataclasses.replace(TORCH, crop_fraction=0.95, interpolation="bicubic")
# BVLC Caffe: 256x256 images, center crops of 227 (AlexNet) or 224 (GoogLeNet), BGR. AlexNet
# subtracted a mean image (python/caffe/imagenet/ilsvrc_2012_mean.npy of BVLC/caffe, whose
# channel means these are); GoogLeNet's train_val.prototxt subtracts mean_value 104, 117, 123.
CAFFE_BVLC_ALEXNET = Preprocessing("caffe", (104.007, 116.669, 122.679), None, input_size=227, crop_fraction=0.8867)
CAFFE_BVLC_GOOGLENET = Preprocessing("caffe", (104.0, 117.0, 123.0), None)


@dataclasses.dataclass(frozen=True)
class WeightSet:
    """One weight set.

    Attributes:
        model: the registry name it loads into.
        tag: `<source>_in1k`; `weights="imagenet-<source>"` picks it (e.g.
            "imagenet-tv2" -> "tv2_in1k"), `weights="imagenet"` the model's default.
        variant: the builder arguments the weights need (e.g. {"variant": "v1.5"}):
            a builder given these weights takes them as its defaults.
        format: "keras_h5" (keras.applications' legacy `.h5`, by layer name),
            "safetensors" (torchvision/timm tensor names) or "onnx" (the ONNX Model
            Zoo's BVLC exports, by graph structure).
        url: the file; for the Hub, `https://huggingface.co/<repo>/resolve/<commit>/model.safetensors`.
        hash: "md5:<hex>" or "sha256:<hex>"; None when no published hash is known.
        notop_url, notop_hash: a smaller file without the classifier, where the
            source publishes one (keras.applications).
        license: the licence the source publishes the weights under.
        top1, top5: ImageNet-1k validation accuracy (%) as published (None: not
            published); `accuracy_source` says by whom.
        preprocessing: what the images must go through (`Preprocessing`).
        origin: where the weights come from (the training run, paper or repository).
        pinned: the URL names a commit (Hub files; keras' bucket has no commits).
    """

    model: str
    tag: str
    variant: dict
    format: str
    url: str
    hash: str | None
    license: str
    top1: float | None
    top5: float | None
    accuracy_source: str
    preprocessing: Preprocessing
    origin: str
    notop_url: str | None = None
    notop_hash: str | None = None
    size_mb: float | None = None

    @property
    def name(self) -> str:
        """`resnet50.tv2_in1k`: model and tag, as timm names its weights."""
        return f"{self.model}.{self.tag}"

    @property
    def alias(self) -> str:
        """The `weights=` value that picks this set: "imagenet-tv2"."""
        return "imagenet-" + self.tag.removesuffix("_in1k")

    @property
    def pinned(self) -> bool:
        return "/resolve/main/" not in self.url

    def file_name(self, include_top: bool = True) -> str:
        """The name it is cached under: unique per set and per top/no-top file."""
        if self.format == "keras_h5":  # keras.applications' own names
            notop = "" if include_top or not self.notop_url else "_notop"
            return f"{self.model}_weights_tf_dim_ordering_tf_kernels{notop}.h5"
        return f"{self.name}.{self.format}"

    def source(self, include_top: bool = True) -> tuple[str, str | None]:
        """(url, hash) of the file to fetch: the no-top file where there is one."""
        if not include_top and self.notop_url:
            return self.notop_url, self.notop_hash
        return self.url, self.hash


_KERAS = "https://storage.googleapis.com/tensorflow/keras-applications"
_KERAS_LICENSE = {
    "resnet": "MIT (ported by keras-applications from Kaiming He's deep-residual-networks release)",
    "vgg": "CC BY 4.0 (ported by keras-applications from the Oxford VGG release)",
}
_TIMM_ACCURACY = "timm results-imagenet.csv"
_KERAS_ACCURACY = "keras.io/api/applications"


def _keras(model, family, directory, top_md5, notop_md5, top1, top5, size_mb, variant=None):
    stem = f"{_KERAS}/{directory}/{model}_weights_tf_dim_ordering_tf_kernels"
    return WeightSet(
        model=model,
        tag="keras_in1k",
        variant=variant or {},
        format="keras_h5",
        url=f"{stem}.h5",
        hash=f"md5:{top_md5}",
        notop_url=f"{stem}_notop.h5",
        notop_hash=f"md5:{notop_md5}",
        license=_KERAS_LICENSE[family],
        top1=top1,
        top5=top5,
        accuracy_source=_KERAS_ACCURACY,
        preprocessing=CAFFE,
        origin="keras.applications (Keras 3: keras/src/applications)",
        size_mb=size_mb,
    )


def _timm(model, tag, commit, sha256, top1, top5, size_mb, *, variant=None, preprocessing=TORCH, license="bsd-3-clause"):
    """A timm file on the Hub. `commit` None: not known in full, so the URL follows
    `main` (the sha256, where known, still pins the content)."""
    repo = f"timm/{model}.{tag}"
    origin = "torchvision, republished by timm" if tag.startswith("tv") else "timm (ResNet strikes back, arXiv:2110.00476)"
    return WeightSet(
        model=model,
        tag=tag,
        variant=variant or {},
        format="safetensors",
        url=f"https://huggingface.co/{repo}/resolve/{commit or 'main'}/model.safetensors",
        hash=f"sha256:{sha256}" if sha256 else None,
        license=license,
        top1=top1,
        top5=top5,
        accuracy_source=_TIMM_ACCURACY,
        preprocessing=preprocessing,
        origin=origin,
        size_mb=size_mb,
    )


_V15 = {"variant": "v1.5"}
# The ONNX Model Zoo ("Caffe BVLC ==> Caffe2 ==> ONNX"), pinned to the commit whose Git-LFS
# pointers give these sha256s (onnx/models b1eeaa1a; the files are unchanged since 4c46cd00).
_ZOO = "https://github.com/onnx/models/raw/b1eeaa1ac722dcc1cd1a8284bde34393dab61c3d/validated/vision/classification"
_BVLC_LICENSE = "unrestricted use (BVLC model readme); the ONNX export: BSD-3-Clause (ONNX Model Zoo)"
_BVLC_ACCURACY = "BVLC/caffe models/bvlc_*/readme.md (Caffe, center crop)"


def _bvlc(model, path, sha256, top1, top5, size_mb, preprocessing, trainer):
    return WeightSet(
        model=model,
        tag="bvlc_in1k",
        variant={"variant": "caffe"},
        format="onnx",
        url=f"{_ZOO}/{path}",
        hash=f"sha256:{sha256}",
        license=_BVLC_LICENSE,
        top1=top1,
        top5=top5,
        accuracy_source=_BVLC_ACCURACY,
        preprocessing=preprocessing,
        origin=f"BVLC Caffe model zoo (trained by {trainer}), exported to ONNX by the ONNX Model Zoo",
        size_mb=size_mb,
    )


#: Every weight set, model by model; a model's first row with a hash is its default.
WEIGHTS = (
    _bvlc("alexnet", "alexnet/model/bvlcalexnet-12.onnx", "6b0da9510f27f234ee96a85dc3809dd210150fdefad87f6850f9788513216945",
          57.1, 80.2, 233, CAFFE_BVLC_ALEXNET, "Evan Shelhamer"),
    _bvlc("googlenet", "inception_and_googlenet/googlenet/model/googlenet-12.onnx",
          "c99c507058eaf41de8723408fdda7db8325cb57f0a89f2ee07a716d6e963e14e", 68.7, 88.9, 27, CAFFE_BVLC_GOOGLENET,
          "Sergio Guadarrama"),
    _timm("resnet18", "tv_in1k", "a987fd6b60f845221bfff84b6f0191273ba56ead",
          "694f673df6520a3158624e8a89af086f59923ee4cd7436fe5bc3bc71d295ad81", 69.752, 89.082, 46.8, variant=_V15),
    _timm("resnet18", "a1_in1k", "ebd61f9c7420e5b5b53262b8ce6bbe311e1e872a",
          "80c49dee3da4822c009c5a7fe591e9223c5a2cfcf95a4067ca4dfb5a7b89c612", 71.504, None, 46.8, variant=_V15,
          preprocessing=TORCH_RSB, license="apache-2.0"),
    _timm("resnet34", "tv_in1k", "c983eba7f5e69bc3548a626d1b0b0b914e5de3a6", None, 73.298, 91.422, 87.3, variant=_V15),
    _keras("resnet50", "resnet", "resnet", "2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626",
           74.9, 92.1, 98),
    _timm("resnet50", "tv_in1k", "aa6c2d36d56bc0209040c02b5a7b7d7bf11d57b8",
          "5d061a3c593d795bfe682d9b152bafbcf550579873492def3515b46db1189888", 76.156, 92.866, 102, variant=_V15),
    _timm("resnet50", "tv2_in1k", "f2a8587ea6b4a3a1d84450bcc2561b07952daae2", None, 80.846, 95.430, 103,
          variant=_V15, preprocessing=TORCH_TV2),
    _timm("resnet50", "a1_in1k", "5d9e13b8fdab4d9718bcf2c8f5c3af01878367e8",
          "773525d5821de224f8f30c33377b7a795d7863e08522698200d3217d3f2a41bb", 80.382, 94.598, 102, variant=_V15,
          preprocessing=TORCH_RSB, license="apache-2.0"),
    _keras("resnet101", "resnet", "resnet", "f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21",
           76.4, 92.8, 171),
    _timm("resnet101", "tv_in1k", None, None, 77.404, 93.552, 179, variant=_V15),
    _timm("resnet101", "tv2_in1k", None, None, 81.906, 95.768, 179, variant=_V15, preprocessing=TORCH_TV2),
    _timm("resnet101", "a1h_in1k", "21721ac354aff8c4fbc371f3c4e46fa8832d4d68",
          "1a076c0384295e7d3704f201c5711ff245507db934230bab72ff3014a95f90fe", 81.950, None, 179, variant=_V15,
          preprocessing=TORCH_RSB, license="apache-2.0"),
    _keras("resnet152", "resnet", "resnet", "100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c",
           76.6, 93.1, 232),
    _timm("resnet152", "tv_in1k", "2a9b5c2460893a2ab13d8625db2383f3094d704f",
          "15897077afdf4d6334dc0c3f8e6fb483afb3faa9298c139f3c6eb29bca6ae5b2", 78.330, 94.046, 241, variant=_V15),
    _timm("resnet152", "tv2_in1k", "6c03aba8c980980031f286eec039dc10543e01a4", None, 82.294, 96.000, 241,
          variant=_V15, preprocessing=TORCH_TV2),
    _timm("vgg11", "tv_in1k", None, "682c023808812148d4e60c76d80ad83dbeaf5d50eb1a952a0b836895003151e5",
          69.050, 88.630, 531),
    _timm("vgg13", "tv_in1k", "398c5a92d29787ceca04d7b45c8a07efd8f934f7", None, 69.950, 89.262, 532),
    _keras("vgg16", "vgg", "vgg16", "64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc",
           71.3, 90.1, 528),
    _timm("vgg16", "tv_in1k", "3394518cba29aee1ea82a49d971be90d2dd1dab7",
          "57b026918159a6bf9faf8405c3a551903768e7138989d9c6224a14227203fad8", 71.594, 90.398, 553),
    _keras("vgg19", "vgg", "vgg19", "cbe5617147190e668d6c5d5026f83318", "253f8cb515780f3b799900260a226db6",
           71.3, 90.0, 549),
    _timm("vgg19", "tv_in1k", None, "11aea017b543ff59233749d8f1cf544cda749378f5790d2fedab841fb86b7669",
          72.400, 90.878, 575),
    _timm("vgg11_bn", "tv_in1k", None, None, 70.374, 89.802, None),
    _timm("vgg13_bn", "tv_in1k", "ed6e64d6167edbe08697cb4d7ceaef5077972131",
          "7dae235e35772693cd527e7ac9ef8f6594707a14a8d26aabdb83c0baa6847861", 71.560, 90.372, 532),
    _timm("vgg16_bn", "tv_in1k", "e00c01e7cee168262dcba6428dc4a8f41e27e965",
          "88bbedbc8e780413736db38ac4efd41b06fc0e93fd5b8879b584bba63a950129", 73.354, 91.490, 554),
    _timm("vgg19_bn", "tv_in1k", "857683a806d7bac35f54d8fc1ed0331536e7e68f",
          "f8249087e63bae61c6166bb23d7c26efe1b2a43fd9fb5cd60ac6ce00535ba312", 74.230, 91.848, 575),
)


def default_weight_set(model: str) -> WeightSet | None:
    """The set `weights="imagenet"` picks for `model`: its first row with a recorded
    hash (a file kcnn can download and check), None if it has none."""
    return next((row for row in WEIGHTS if row.model == model and row.hash), None)


def models_with_weights() -> list[str]:
    """The registry names that have a row of the table, sorted."""
    return sorted({row.model for row in WEIGHTS})


def list_weights(pattern: str = "*") -> list[WeightSet]:
    """The weight sets whose model or full name (`resnet50.tv2_in1k`) matches a
    shell-style pattern, in table order: `list_weights("resnet*")`."""
    return [row for row in WEIGHTS if fnmatch.fnmatchcase(row.model, pattern) or fnmatch.fnmatchcase(row.name, pattern)]


def get_weight_set(name: str) -> WeightSet:
    """The row named `resnet50.tv2_in1k`."""
    for row in WEIGHTS:
        if row.name == name:
            return row
    raise ValueError(f"Unknown weight set. Known: {', '.join(row.name for row in WEIGHTS)}. Received: {name!r}")


def is_tag(weights) -> bool:
    """Whether `weights=` names a table entry rather than a file: "imagenet",
    "imagenet-tv2", or a full name such as "resnet50.tv2_in1k"."""
    if not isinstance(weights, str):
        return False
    return weights == "imagenet" or weights.startswith("imagenet-") or any(weights == row.name for row in WEIGHTS)


def resolve(model: str, weights: str) -> WeightSet:
    """The row `weights=` picks for the registry model `model`.

    Raises:
        ValueError: the model has no weights, or the tag is unknown for it (the
            message lists the known ones).
    """
    rows = [row for row in WEIGHTS if row.model == model]
    if not rows:
        raise ValueError(
            f"No pretrained weights are known for `{model}`; models with ImageNet weights: "
            f"{', '.join(models_with_weights())} (`kcnn weights list`). Received: weights={weights!r}"
        )
    default = default_weight_set(model)
    if weights == "imagenet":
        if default is None:
            raise WeightsUnavailableError(
                f"`{model}` has no weight set kcnn can download and check: no hash is recorded for "
                f"{', '.join(row.name for row in rows)}, so weights='imagenet' names none. {local_file_advice(rows[0])}"
            )
        return default
    for row in rows:
        if weights in (row.alias, row.name):
            return row
    known = ", ".join(f"{row.alias!r}" for row in rows)
    meaning = f"= {default.alias!r}" if default else "none: no hash is recorded"
    raise ValueError(f"Unknown weights for `{model}`. Known: 'imagenet' ({meaning}), {known}. Received: weights={weights!r}")


def format_table(rows: list[WeightSet]) -> str:
    """The table `kcnn weights list` prints."""
    header = f"{'weights':<22} {'alias':<17} {'builder args':<20} {'top-1':>6} {'top-5':>6}  {'prep':<6} {'format':<12} {'hash':<8} licence"
    lines = [header, "-" * len(header)]
    for row in rows:
        arguments = ", ".join(f"{k}={v!r}" for k, v in row.variant.items()) or "-"
        default = "*" if default_weight_set(row.model) is row else " "
        hash_kind = row.hash.split(":")[0] if row.hash else "unknown"
        lines.append(
            f"{row.name:<22}{default}{row.alias:<17} {arguments:<20} {_percent(row.top1):>6} {_percent(row.top5):>6}  "
            f"{row.preprocessing.mode:<6} {row.format:<12} {hash_kind:<8} {row.license.split(' ')[0]}"
        )
    lines.append(
        "* the model's default (weights=\"imagenet\"); hash unknown: listed, not downloaded, never a default "
        "(load a local file named <weights>.<format>)"
    )
    return "\n".join(lines)


def format_markdown(rows: list[WeightSet]) -> str:
    """The table of docs/weights.md."""
    lines = [
        "| weights | `weights=` | builder arguments | top-1 | top-5 | preprocessing | format | hash | licence | source |",
        "|---|---|---|---:|---:|---|---|---|---|---|",
    ]
    for row in rows:
        arguments = ", ".join(f"`{k}={v!r}`" for k, v in row.variant.items()) or ""
        alias = f"`{row.alias}`" + (" (default: `imagenet`)" if default_weight_set(row.model) is row else "")
        prep = row.preprocessing
        prep_text = f"{prep.mode}, {prep.resize_size}->{prep.input_size} {prep.interpolation}"
        hash_text = f"`{row.hash[:14]}…`" if row.hash else "unknown (not downloaded)"
        url = row.url + (f" (no top: {row.notop_url.rsplit('/', 1)[1]})" if row.notop_url else "")
        lines.append(
            f"| `{row.name}` | {alias} | {arguments} | {_percent(row.top1)} | {_percent(row.top5)} | {prep_text} | "
            f"{row.format} | {hash_text} | {row.license} | {url} |"
        )
    return "\n".join(lines)


def _percent(value):
    return "-" if value is None else f"{value:g}"


class WeightsUnavailableError(OSError, ValueError):
    """The file is neither cached nor downloadable (offline, no published hash). An
    OSError, and a ValueError as kcnn's other refusals (the command line prints it as one)."""


def local_file_advice(weight_set) -> str:
    """How to load a set kcnn cannot download: the file, its name, the call."""
    name = weight_set.file_name()
    return (
        f"Download {weight_set.url} yourself, check it, save it as `{name}` and pass its path: "
        f"kcnn.{weight_set.model}(weights='/path/to/{name}'). That name declares the file {weight_set.name}, so the "
        f"model is built as the weights need ({_arguments(weight_set) or 'the default arguments'}) and keeps their "
        f"{weight_set.preprocessing.mode!r} preprocessing for fine-tuning"
    )


def _arguments(weight_set):
    return ", ".join(f"{key}={value!r}" for key, value in weight_set.variant.items())
