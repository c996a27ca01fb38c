"""Dense prediction: one output per pixel instead of one per image.

    pyramid = kcnn.backbone("resnet50", levels=("P3", "P4", "P5"))   # {"P3": ..., "P5": ...}
    model = kcnn.fcn8s(classes=21, input_shape=(None, None, 3))      # Long et al. 2015
    model = kcnn.unet(backbone="resnet18", classes=5)                  # a U-Net decoder on its pyramid

"Dense" as in dense prediction (Long et al. 2015, section 3.1, "Adapting classifiers
for dense prediction"), not Keras' `Dense` layer. The package holds more than heads: the
backbone pyramid every head reads (`pyramid`), FCN-32s/16s/8s, which rebuild VGG-16's
classifier as convolutions (`fcn_vgg`), the U-Net decoder (`unet_decoder`) and the
layers they need (`layers`). The segmentation builders are registered models
(`kcnn.list_models()`), with `task="segmentation"` in their spec.
"""

from kcnn._lazy import lazy_exports

_EXPORTS = {
    "Level": "kcnn.dense.pyramid",
    "backbone": "kcnn.dense.pyramid",
    "pyramid_levels": "kcnn.dense.pyramid",
    "fcn": "kcnn.dense.fcn_vgg",
    "fcn8s": "kcnn.dense.fcn_vgg",
    "fcn16s": "kcnn.dense.fcn_vgg",
    "fcn32s": "kcnn.dense.fcn_vgg",
    "unet": "kcnn.dense.unet_decoder",
    "bilinear_kernel": "kcnn.dense.layers",
}
__all__ = sorted(_EXPORTS)
# The modules are not named after their builders (fcn, unet): importing a module sets the
# package attribute of its name, which would hide the builder.
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, ("fcn_vgg", "layers", "pyramid", "unet_decoder"))
