"""Custom Keras layers: only what Keras itself does not provide."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="kcnn")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalization across channels (AlexNet, GoogLeNet).

    b[c] = a[c] / (k + alpha * sum(a[j] ** 2 for j in the `depth` channels
    centred on c, clipped at the channel edges)) ** beta

    Note the paper scales the sum by `alpha` itself, not `alpha / depth` as Caffe
    (and ONNX's `LRN`) does, so the defaults here are the paper's; `caffe()` builds
    the layer from Caffe's parameters.

    Reference:
        Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep
        Convolutional Neural Networks", NIPS 2012, section 3.3
        (k=2, n=5, alpha=1e-4, beta=0.75).

    Args:
        depth: n, the number of adjacent channels summed over (odd).
        k: additive bias.
        alpha: scale of the sum of squares.
        beta: exponent.
        axis: the channel axis.
    """

    def __init__(self, depth=5, k=2.0, alpha=1e-4, beta=0.75, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1 or depth % 2 == 0:
            raise ValueError(
                f"`depth` must be a positive odd integer (the window is centred on "
                f"each channel). Received: depth={depth!r}"
            )
        self.depth = depth
        self.k = float(k)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.axis = axis

    @classmethod
    def caffe(cls, local_size=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        """The layer of a Caffe `LRN` layer (or an ONNX `LRN` node, `bias` = k):
        Caffe divides `alpha` by `local_size` (`alpha_over_size` in its
        lrn_layer.cpp) and its `k` defaults to 1, so BVLC's AlexNet and GoogLeNet
        (local_size 5, alpha 1e-4, beta 0.75) compute x / (1 + 2e-5 * sum(x^2))^0.75."""
        return cls(depth=local_size, k=k, alpha=alpha / local_size, beta=beta, **kwargs)

    def call(self, inputs):
        axis = self.axis % len(inputs.shape)
        squared = ops.square(inputs)
        half = self.depth // 2
        pad = [[0, 0]] * len(inputs.shape)
        pad[axis] = [half, half]
        padded = ops.pad(squared, pad)
        channels = inputs.shape[axis]
        # A sum of `depth` shifted slices: for n=5 this is cheaper than a
        # convolution, and zero padding keeps the clipping at the edges exact.
        window_sum = None
        for offset in range(self.depth):
            index = [slice(None)] * len(inputs.shape)
            index[axis] = slice(offset, offset + channels)
            squared_slice = padded[tuple(index)]
            window_sum = squared_slice if window_sum is None else window_sum + squared_slice
        return inputs / ops.power(self.k + self.alpha * window_sum, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            depth=self.depth, k=self.k, alpha=self.alpha, beta=self.beta, axis=self.axis
        )
        return config


@keras.saving.register_keras_serializable(package="kcnn")
def lecun_tanh(x):
    """LeNet-5's squashing function f(a) = 1.7159 tanh(2a / 3) (LeCun et al. 1998,
    appendix A): f(1) = 1 and f(-1) = -1, with maximal gain there."""
    return 1.7159 * ops.tanh(x * (2.0 / 3.0))


@keras.saving.register_keras_serializable(package="kcnn")
class Subsampling2D(keras.layers.Layer):
    """LeNet-5's trainable subsampling (layers S2 and S4).

    Each output is the sum of a non-overlapping `pool_size` window, times a trainable
    coefficient, plus a trainable bias, per channel: 2 parameters per feature map.

    Reference: LeCun, Bottou, Bengio, Haffner, "Gradient-Based Learning Applied to
    Document Recognition", Proc. IEEE 1998, section II.B.
    """

    def __init__(self, pool_size=2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size

    def build(self, input_shape):
        channels = input_shape[-1]
        self.coefficient = self.add_weight(name="coefficient", shape=(channels,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        window_sum = ops.average_pool(inputs, self.pool_size, self.pool_size, "valid") * (
            self.pool_size**2
        )
        return window_sum * self.coefficient + self.bias

    def count_macs(self, input_shape, output_shape):
        """One multiply per output (the coefficient); the window sum is additions."""
        return output_shape[0] * output_shape[1] * output_shape[2]

    def compute_output_shape(self, input_shape):
        height, width = (None if d is None else d // self.pool_size for d in input_shape[1:3])
        return (input_shape[0], height, width, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="kcnn")
class ConnectionTableConv2D(keras.layers.Layer):
    """A 'valid' convolution in which output map j sees only the input maps
    `table[j]` (LeNet-5's C3, which breaks symmetry and saves parameters).

    Only the connected kernels are weights: for C3, 25 x 60 + 16 = 1,516 parameters
    against 2,416 for a full connection. They are scattered into a full kernel by a
    constant 0/1 matrix at call time.

    Reference: LeCun et al. 1998, table I.

    Args:
        table: for each output map, the indices of the input maps it connects to.
        kernel_size: square kernel size.
        activation: applied to the output.
    """

    def __init__(self, table, kernel_size=5, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.table = tuple(tuple(int(i) for i in inputs) for inputs in table)
        self.kernel_size = kernel_size
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        pairs = [(i, j) for j, inputs in enumerate(self.table) for i in inputs]
        if any(i >= in_channels for i, _ in pairs):
            raise ValueError(
                f"The connection table names input maps up to {max(i for i, _ in pairs)}, "
                f"but the input has {in_channels}. Received: input_shape={input_shape}"
            )
        scatter = np.zeros((len(pairs), in_channels * len(self.table)), "float32")
        for row, (i, j) in enumerate(pairs):
            scatter[row, i * len(self.table) + j] = 1.0
        self._scatter = scatter
        k = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel", shape=(k * k, len(pairs)), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(len(self.table),), initializer="zeros")
        self._in_channels = in_channels

    def call(self, inputs):
        k = self.kernel_size
        kernel = ops.reshape(
            ops.matmul(self.kernel, ops.convert_to_tensor(self._scatter, self.kernel.dtype)),
            (k, k, self._in_channels, len(self.table)),
        )
        outputs = ops.conv(inputs, ops.cast(kernel, inputs.dtype), padding="valid")
        return self.activation(outputs + ops.cast(self.bias, inputs.dtype))

    def count_macs(self, input_shape, output_shape):
        """Only the connected kernels multiply: H_out * W_out * k * k * connections."""
        return output_shape[0] * output_shape[1] * self.kernel.shape[0] * self.kernel.shape[1]

    def compute_output_shape(self, input_shape):
        height, width = (None if d is None else d - self.kernel_size + 1 for d in input_shape[1:3])
        return (input_shape[0], height, width, len(self.table))

    def get_config(self):
        return {
            **super().get_config(),
            "table": [list(inputs) for inputs in self.table],
            "kernel_size": self.kernel_size,
            "activation": keras.activations.serialize(self.activation),
        }


@keras.saving.register_keras_serializable(package="kcnn")
class EuclideanRBF(keras.layers.Layer):
    """LeNet-5's output layer: one Euclidean radial basis function unit per class,
    y_i = sum_j (x_j - w_ij)^2, with fixed (non-trainable) centres of +-1.

    The paper's centres are stylised 7x12 bitmaps of the characters; here they are
    random +-1 codes drawn from `seed`. The layer returns -y so that larger is better
    and the output can be used as logits.

    Reference: LeCun et al. 1998, section II.B (layer F6 and the output layer).
    """

    def __init__(self, units, seed=1998, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.seed = seed

    def build(self, input_shape):
        self.centres = self.add_weight(
            name="centres",
            shape=(input_shape[-1], self.units),
            initializer=self._codes,
            trainable=False,
        )

    def _codes(self, shape, dtype=None):
        # Drawn when the weight is allocated, not when the layer is laid out: kcnn
        # counts a model's parameters before allocating any (`kcnn.models._base`).
        codes = np.random.default_rng(self.seed).choice([-1.0, 1.0], size=shape)
        return ops.convert_to_tensor(codes.astype("float32"), dtype=dtype or "float32")

    def call(self, inputs):
        centres = ops.cast(self.centres, inputs.dtype)
        # |x - w|^2 = |x|^2 - 2 x.w + |w|^2
        distance = (
            ops.sum(ops.square(inputs), axis=-1, keepdims=True)
            - 2.0 * ops.matmul(inputs, centres)
            + ops.sum(ops.square(centres), axis=0)
        )
        return -distance

    def count_macs(self, input_shape, output_shape):
        """One squared difference per centre weight, as a dense layer's multiply-adds."""
        return input_shape[-1] * self.units

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kcnn")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's fused kernel.

    Keras 3 computes batch normalization from separate ops (moments, then an
    element-wise normalization, and their gradients op by op); tf.keras used
    TensorFlow's `FusedBatchNormV3`, one kernel forward and one backward (oneDNN on
    CPU, cuDNN on GPU). This layer brings the fused kernel back where it applies
    (TensorFlow backend, 4D channels-last inputs, float inputs, no mask, no renorm or
    synchronization, epsilon of at least 1e-5 as cuDNN requires) and is
    `keras.layers.BatchNormalization` everywhere else. It has the same weights, in the
    same order, with the same names, and computes the same function: outputs with the
    biased batch variance, moving statistics updated with `momentum` from the biased
    variance too (the fused kernel returns the unbiased one; it is rescaled here).
    Weights load to and from `keras.layers.BatchNormalization` layers by name.
    """

    # cuDNN's CUDNN_BN_MIN_EPSILON: the fused kernel refuses smaller values on a GPU.
    MIN_EPSILON = 1e-5

    def add_weight(self, *args, **kwargs):
        # The moving statistics are averaged over the replicas of a tf.distribute
        # strategy at each update. Keras 3 creates non-trainable weights with
        # aggregation "none" (keras-team/keras#20703, 3.8): each replica, and each
        # worker, would keep its own statistics, and the saved ones would be the
        # first replica's. (The batch statistics that normalize a training batch
        # stay each replica's, as in Goyal et al. 2017.)
        if kwargs.get("trainable") is False and kwargs.get("name") in ("moving_mean", "moving_variance"):
            kwargs.setdefault("aggregation", "mean")
        return super().add_weight(*args, **kwargs)

    def _fused_applies(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and not self.renorm
            and not self.synchronized
            and self.epsilon >= self.MIN_EPSILON
            and self.scale
            and self.center
            and keras.backend.standardize_dtype(inputs.dtype) in ("float16", "bfloat16", "float32")
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        # As Keras does: compute in float32 (half-precision statistics overflow).
        x = tf.cast(inputs, "float32")
        gamma = tf.cast(self.gamma, "float32")
        beta = tf.cast(self.beta, "float32")
        empty = tf.constant([], dtype="float32")
        if training and self.trainable:
            y, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=empty, variance=empty,
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True,
            )  # fmt: skip
            count = tf.cast(tf.size(x) // tf.shape(x)[-1], "float32")
            variance = unbiased_variance * tf.math.maximum(count - 1.0, 0.0) / count
            self.moving_mean.assign(self.moving_mean * self.momentum + tf.cast(mean, self.moving_mean.dtype) * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + tf.cast(variance, self.moving_variance.dtype) * (1.0 - self.momentum)
            )
        else:
            y, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta,
                mean=tf.cast(self.moving_mean, "float32"), variance=tf.cast(self.moving_variance, "float32"),
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=False,
            )  # fmt: skip
        return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="kcnn")
class ImageNormalization(keras.layers.Layer):
    """The normalization pretrained weights expect, on RGB images of 0..255 pixels.

    mode "torch" (torchvision, timm): `(x / 255 - mean) / std` per RGB channel; mode
    "caffe" (keras.applications' ResNet and VGG): RGB -> BGR, then `x - mean` per BGR
    channel. `keras.layers.Rescaling` covers the first but not the channel flip.
    A fine-tuned model carries it as its first layer (`kcnn.train.fine_tune`), so a
    saved model takes the same 0..255 images as every other kcnn run.
    """

    def __init__(self, mode, mean, std=None, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("torch", "caffe"):
            raise ValueError(f"`mode` must be 'torch' or 'caffe'. Received: mode={mode!r}")
        if mode == "torch" and std is None:
            raise ValueError("mode 'torch' needs `std`. Received: std=None")
        self.mode = mode
        self.mean = tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        mean = ops.convert_to_tensor(np.asarray(self.mean, np.float32), dtype=self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - mean
        std = ops.convert_to_tensor(np.asarray(self.std, np.float32), dtype=self.compute_dtype)
        return (x / 255.0 - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "mean": list(self.mean), "std": None if self.std is None else list(self.std)}



# The dense-prediction heads' layers (crop and resize to a reference, the bilinear
# initialiser) live with the heads; importing them here registers them with Keras
# whenever kcnn's layers are, so a saved FCN or U-Net loads after `import kcnn`.
from kcnn.dense import layers as _dense_layers  # noqa: E402, F401
