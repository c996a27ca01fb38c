"""Image classification (and segmentation) datasets as fast, reproducible `tf.data` pipelines.

`load()` turns any of these sources into a `Dataset` holding batched
train/validation/test `tf.data.Dataset`s of `(images, labels)`:

* `"digits"`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no
  network needed), resized to 32x32x1 by default. The offline default.
* any TFDS name (`"mnist"`, `"cifar10"`, `"tf_flowers"`, ...).
* a directory with one sub-directory of images per class, or with `train/` and
  `test/` (and/or `val/`, `validation/`, `valid/`) folders that each hold the same
  class sub-directories: the source's own splits. Unreadable files (corrupt,
  truncated, over Pillow's decompression-bomb limit) are skipped with a warning
  that names them, and listed in `Dataset.skipped_files`.
* NumPy arrays: `(x, y)`, `((x, y), (x_test, y_test))`, a dict with `x`/`y`
  (or `x_train`/`y_train`/`x_test`/`y_test`) keys, or a path to such an `.npz`.
  Labels are class indices 0..k-1 (gaps need `class_names`), at least two
  classes, and every test class is a training class.

Every source goes through the same preprocessing, described by a small
JSON-serializable dict (`Dataset.preprocessing`) that `preprocess_images()` and
`read_images()` apply to new images, so a predictor sees exactly what the
model was trained on, and by `Dataset.input_statistics`, a few figures about the
training images (mean pixel, border brightness, source image size) that
`image_statistics()` computes for new images too:

1. raw pixels on a 0..255 scale (uint8 as is; floats whose maximum is <= 1 are
   taken to be in [0, 1] and multiplied by 255; 16-bit grey image files are
   divided by 257; an alpha channel is dropped). NaN or infinite pixels and
   values outside 0..255 are refused, with how many and where, never clipped;
2. bilinear resize (antialiased) to `image_size`, when the size differs;
3. channel adaptation to `channels` (1 -> 3 repeats the grey level, 3 -> 1
   uses the ITU-R 601 luma weights of `tf.image.rgb_to_grayscale`);
4. rounding to uint8 (this is what the training pipeline stores in memory);
5. normalization (see `NORMALIZATIONS`).

Split policy: sources with their own test split (TFDS, `x_test`, a `test/` folder) keep it; otherwise a test split
of `test_split` (default 20%) is carved out. Sources with their own validation
split keep it; otherwise `validation_split` (default 10%) is carved out of the
training pool. Each fraction is of the pool it is carved from, so `"digits"`
is split 70/10/20. In-memory sources (digits, folders, arrays) are split
stratified by class with a NumPy generator seeded by `seed`; the test set is
drawn first from each class, so it depends only on `seed` and `test_split`,
never on `validation_split`, and accuracy figures stay comparable. TFDS
splits are carved with split slicing (contiguous, e.g. `train[:90%]` and
`train[90%:]`; TFDS shuffles examples when it prepares a dataset).

Segmentation datasets (`SegmentationDataset`: `(images, masks)` splits, a class
index per pixel, `IGNORE_LABEL` for unlabelled pixels) come from the same `load()`:
the synthetic scenes `"shapes"` (`synthetic_scenes`), folders of `images/` and
`masks/`, mask arrays, and `oxford_iiit_pet`'s trimaps with `task="segmentation"`;
see `kcnn.data.segmentation`. Their augmentation moves images and masks alike
(`SEGMENTATION_AUGMENT_POLICIES`).

`few_shot()` keeps some classes of a source, with a fixed number of training
and validation images per class. `kcnn.train.fit`, `kcnn.train.fine_tune` and
`kcnn.tune.search` pass a `data_options` mapping (`DATA_OPTIONS`, checked by
`check_data_options()`) to `load()` when they load a source themselves.
"""


from kcnn.data.augment import AUGMENT_POLICIES
from kcnn.data.dataset import Dataset
from kcnn.data.files import IMAGE_EXTENSIONS, image_files, load_image, read_images
from kcnn.data.joint_augment import SEGMENTATION_AUGMENT_POLICIES
from kcnn.data.loading import load
from kcnn.data.masks import IGNORE_LABEL, load_mask
from kcnn.data.options import DATA_OPTIONS, check_data_options
from kcnn.data.pipeline import IN_MEMORY_LIMIT, as_numpy
from kcnn.data.preprocessing import NORMALIZATIONS, preprocess_images
from kcnn.data.scenes import SHAPES_CLASSES, synthetic_scenes
from kcnn.data.segmentation import SegmentationDataset, load_segmentation
from kcnn.data.selection import few_shot
from kcnn.data.statistics import image_statistics

__all__ = [
    "AUGMENT_POLICIES",
    "DATA_OPTIONS",
    "IGNORE_LABEL",
    "IMAGE_EXTENSIONS",
    "IN_MEMORY_LIMIT",
    "NORMALIZATIONS",
    "SEGMENTATION_AUGMENT_POLICIES",
    "SHAPES_CLASSES",
    "Dataset",
    "SegmentationDataset",
    "as_numpy",
    "check_data_options",
    "few_shot",
    "image_files",
    "image_statistics",
    "load",
    "load_image",
    "load_mask",
    "load_segmentation",
    "preprocess_images",
    "read_images",
    "synthetic_scenes",
]
