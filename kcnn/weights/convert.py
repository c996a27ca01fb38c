"""torchvision / timm tensor names and layouts -> kcnn layers' weights (NumPy only).

The conversions (checked against PyTorch by tests/test_weights_torch.py with the
fixtures of tests/fixtures/make_torch_fixtures.py):

- convolution kernels: OIHW -> HWIO (`w.transpose(2, 3, 1, 0)`);
- dense kernels: (out, in) -> (in, out);
- VGG's first dense layer reads a flattened 7x7x512 map: PyTorch flattens it C, H, W,
  Keras' `Flatten` H, W, C, so its rows are permuted (torchvision keeps it 2-D,
  timm as a 7x7 convolution `pre_logits.fc1` (O, C, H, W); timm's fc2 is a 1x1 one);
- BatchNorm `weight, bias, running_mean, running_var` -> `gamma, beta, moving_mean,
  moving_variance` (the kcnn layers use PyTorch's epsilon 1e-5 in ResNet v1.5 and
  VGG-BN); `num_batches_tracked` is dropped.

Every source tensor must be used and every kcnn weight given (`WeightMapError`
otherwise), so a file of another architecture never half-loads.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["WeightMapError", "from_torch"]

_BN = ("weight", "bias", "running_mean", "running_var")
_RESNET_PATTERNS = (
    (re.compile(r"^conv1$"), lambda m: "conv1_conv"),
    (re.compile(r"^bn1$"), lambda m: "conv1_bn"),
    (re.compile(r"^layer(\d)\.(\d+)\.conv(\d)$"), lambda m: f"conv{int(m[1]) + 1}_block{int(m[2]) + 1}_{m[3]}_conv"),
    (re.compile(r"^layer(\d)\.(\d+)\.bn(\d)$"), lambda m: f"conv{int(m[1]) + 1}_block{int(m[2]) + 1}_{m[3]}_bn"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.0$"), lambda m: f"conv{int(m[1]) + 1}_block{int(m[2]) + 1}_0_conv"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.1$"), lambda m: f"conv{int(m[1]) + 1}_block{int(m[2]) + 1}_0_bn"),
    (re.compile(r"^fc$"), lambda m: "predictions"),
)
# torchvision's and timm's names of VGG's classifier.
_VGG_HEAD = {
    "classifier.0": "fc1", "pre_logits.fc1": "fc1",
    "classifier.3": "fc2", "pre_logits.fc2": "fc2",
    "classifier.6": "predictions", "head.fc": "predictions",
}


class WeightMapError(ValueError):
    """A file's tensors do not map onto the model: a tensor without a place, or a
    kcnn weight without a tensor."""


class _Parameters(dict):
    """One module's {parameter: array}, which remembers its module and every parameter
    it held (for the error about a missing one)."""

    def __init__(self, module):
        super().__init__()
        self.module = module
        self.names = []

    def __setitem__(self, key, value):
        self.names.append(key)
        super().__setitem__(key, value)


def _take(params, key):
    """Removes and returns a parameter; a missing one is named with what the module has."""
    if key not in params:
        module = getattr(params, "module", "?")
        present = ", ".join(f"{module}.{name}" for name in sorted(getattr(params, "names", params))) or "none"
        raise WeightMapError(f"tensor {module}.{key} is missing (the file has {present})")
    return params.pop(key)


def _modules(tensors):
    """{module: {parameter: array}}: `layer1.0.bn1.running_mean` -> `layer1.0.bn1`."""
    modules = {}
    for key, value in tensors.items():
        module, _, parameter = key.rpartition(".")
        if parameter == "num_batches_tracked":
            continue
        modules.setdefault(module, _Parameters(module))[parameter] = value
    return modules


def _conv(params):
    kernel = np.transpose(_take(params, "weight"), (2, 3, 1, 0))
    return [kernel] + ([_take(params, "bias")] if "bias" in params else [])


def _batch_norm(params):
    return [_take(params, key) for key in _BN]


def _dense(params):
    weight = _take(params, "weight")
    if weight.ndim == 4:  # timm's 1x1-convolution form of a dense layer
        weight = weight[:, :, 0, 0]
    return [weight.T, _take(params, "bias")]


def _flatten_dense(params, feature_shape):
    """The first dense layer after a Flatten: rows from C, H, W order to H, W, C."""
    weight = _take(params, "weight")
    height, width, channels = feature_shape
    out = weight.shape[0]
    if weight.ndim == 2:
        if weight.shape[1] != channels * height * width:
            raise WeightMapError(
                f"The first dense layer takes {weight.shape[1]:,} features, the model's flattened map "
                f"{height}x{width}x{channels} = {height * width * channels:,}: build the model at the input size the "
                "weights were trained at (224x224 for VGG), or include_top=False"
            )
        weight = weight.reshape(out, channels, height, width)
    elif weight.shape[2:] != (height, width):
        raise WeightMapError(
            f"The first dense layer reads a {weight.shape[2]}x{weight.shape[3]} map, the model a {height}x{width} one: "
            "build the model at the input size the weights were trained at (224x224 for VGG), or include_top=False"
        )
    kernel = np.transpose(weight, (2, 3, 1, 0)).reshape(height * width * channels, out)
    return [kernel, _take(params, "bias")]


def _resnet(modules):
    values = {}
    for module, params in modules.items():
        for pattern, name in _RESNET_PATTERNS:
            match = pattern.match(module)
            if match:
                target = name(match)
                if target.endswith("_bn"):
                    values[target] = _batch_norm(params)
                elif target == "predictions":
                    values[target] = _dense(params)
                else:
                    values[target] = _conv(params)
                break
    return values


def _vgg(modules, conv_layers, feature_shape):
    """`features.{i}` convolutions in index order onto kcnn's `block{s}_conv{j}`; a
    BatchNorm at `features.{i + 1}` onto `block{s}_conv{j}_bn`."""
    values = {}
    indices = sorted(int(m.split(".")[1]) for m, p in modules.items() if m.startswith("features.") and p.get("weight") is not None and p["weight"].ndim == 4)
    if len(indices) != len(conv_layers):
        raise WeightMapError(
            f"The file has {len(indices)} convolutions, the model {len(conv_layers)}: it is for another VGG depth"
        )
    for index, layer in zip(indices, conv_layers):
        values[layer] = _conv(modules[f"features.{index}"])
        batch_norm = modules.get(f"features.{index + 1}")
        if batch_norm is not None and "running_mean" in batch_norm:
            values[f"{layer}_bn"] = _batch_norm(batch_norm)
    for module, target in _VGG_HEAD.items():
        if module in modules:
            params = modules[module]
            values[target] = _flatten_dense(params, feature_shape) if target == "fc1" else _dense(params)
    return values


def from_torch(tensors, *, family, conv_layers=(), feature_shape=None):
    """{kcnn layer name: weights in Keras order} from a torchvision/timm state dict.

    Args:
        tensors: {tensor name: array}, e.g. `formats.read_safetensors(path)`.
        family: "resnet" or "vgg".
        conv_layers: VGG: the model's convolution names in order (`block1_conv1`, ...).
        feature_shape: VGG: the (H, W, C) map its `flatten` layer reads (None
            without a top).

    Raises:
        WeightMapError: a tensor the mapping leaves unused (the file is of another
            architecture).
    """
    modules = _modules(tensors)
    if family == "resnet":
        values = _resnet(modules)
    elif family == "vgg":
        values = _vgg(modules, conv_layers, feature_shape or (7, 7, 512))
    else:
        raise WeightMapError(f"No torchvision/timm mapping for the `{family}` family (ResNet and VGG have one)")
    unused = sorted(f"{module}.{key}" for module, params in modules.items() for key in params)
    if unused:
        raise WeightMapError(
            f"{len(unused)} tensors of the file have no place in a kcnn {family}, e.g. {unused[:5]}: the file is of "
            "another architecture (or variant)"
        )
    return values
