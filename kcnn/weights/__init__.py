"""Pretrained weights: the weights table, download + cache + hash check, converters
(keras.applications `.h5` and `.weights.h5`, torchvision/timm `.safetensors`, the BVLC
Caffe models' ONNX exports), transfer by layer name, and the preprocessing and ImageNet
labels that travel with the weights.

    model = kcnn.resnet50(weights="imagenet")                  # keras.applications' set
    model = kcnn.resnet50(weights="imagenet-a1")               # builds variant="v1.5"
    model = kcnn.alexnet(weights="imagenet")                   # BVLC's, variant="caffe"
    kcnn.weights.list_weights("resnet*")

The table and its listing import no TensorFlow (`kcnn weights list` starts fast).
"""

from kcnn._lazy import lazy_exports

_EXPORTS = {
    "load_weights": "kcnn.weights.transfer",
    "transfer_weights": "kcnn.weights.transfer",
    "WeightSet": "kcnn.weights.table",
    "Preprocessing": "kcnn.weights.table",
    "WEIGHTS": "kcnn.weights.table",
    "list_weights": "kcnn.weights.table",
    "get_weight_set": "kcnn.weights.table",
    "cache_dir": "kcnn.weights.store",
    "fetch": "kcnn.weights.store",
    "HashMismatchError": "kcnn.weights.store",
    "WeightsUnavailableError": "kcnn.weights.table",
    "WeightFileError": "kcnn.weights.formats",
    "WeightMapError": "kcnn.weights.convert",
    "weight_set_of": "kcnn.weights.transfer",
    "preprocess": "kcnn.weights.imagenet",
    "preprocessing_layer": "kcnn.weights.imagenet",
    "imagenet_classes": "kcnn.weights.imagenet",
    "decode_predictions": "kcnn.weights.imagenet",
    "imagenet_wnids": "kcnn.weights.imagenet",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, ("table", "store", "formats", "convert", "convert_onnx", "transfer", "imagenet"))
