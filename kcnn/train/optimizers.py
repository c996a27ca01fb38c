"""Adam and AdamW whose update is TensorFlow's fused kernel.

Keras 3's Adam updates each variable with about a dozen element-wise operations (the
two moments, the square root, the division, each a pass over the variable's memory),
which TensorFlow runs one by one on a CPU: for ResNet-50's 23.6 M parameters an AdamW
step takes 0.069-0.072 s on 2 Sapphire Rapids cores, a fifth of a bfloat16 training
step at 64x64, batch 32. TensorFlow's `ResourceApplyAdam` computes the same update
(Kingma and Ba 2015, Algorithm 1 with the epsilon-hat of section 2, as Keras writes
it) in one kernel: 0.030-0.033 s (`benchmarks/optimizer_step.py`), and ResNet-50
trains about 1.1x faster. The results differ from Keras' by float32 rounding. Weight decay stays
Keras' own (decoupled, Loshchilov and Hutter 2019), as do AMSGrad, sparse gradients
and any other backend, which take Keras' update. The moments it updates are Keras'
own, found through `kcnn.train._keras_optimizer` (Keras keeps them private).
"""

from __future__ import annotations

import keras

from kcnn.train._keras_optimizer import adam_moments


class _FusedAdamUpdate:
    """Keras' Adam `update_step`, through `tf.raw_ops.ResourceApplyAdam` where it
    applies (TensorFlow backend, dense gradient, no AMSGrad); the learning rate read
    once per step."""

    _learning_rate_of_step = None  # While `apply` runs: [] until read, then [the rate].

    def apply(self, grads, trainable_variables=None):
        # Keras reads `learning_rate` once for the update and again for each variable's
        # weight decay: with a schedule (kcnn's WarmupSchedule is a dozen operations), a
        # traced step held one copy of it per variable (132 in a small GoogLeNet: a fifth
        # of its tracing time), each run at every step. One per step: the variables'
        # updates all come before the step counter's increment, so they read one value.
        self._learning_rate_of_step = []
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._learning_rate_of_step = None

    @property
    def learning_rate(self):
        if self._learning_rate_of_step is None:
            return super().learning_rate
        if not self._learning_rate_of_step:
            self._learning_rate_of_step.append(super().learning_rate)
        return self._learning_rate_of_step[0]

    @learning_rate.setter
    def learning_rate(self, value):
        super(_FusedAdamUpdate, type(self)).learning_rate.fset(self, value)

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        if self.amsgrad or keras.backend.backend() != "tensorflow" or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        m, v = adam_moments(self, variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(m),
            v=_handle(v),
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (under a distribution
    strategy's update, the handle of the component being updated)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="kcnn")
class FusedAdam(_FusedAdamUpdate, keras.optimizers.Adam):
    """`keras.optimizers.Adam`, updated by TensorFlow's fused Adam kernel."""


@keras.saving.register_keras_serializable(package="kcnn")
class FusedAdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW`, updated by TensorFlow's fused Adam kernel (the decay
    is Keras', applied before the update as AdamW does)."""
