"""The one module that works around Keras 3's bugs under `tf.distribute` (Keras 3.15,
TensorFlow 2.21).

Each workaround is applied to one model instance by `fit_under_strategy` (no
process-wide patch), and each is pinned by a test in tests/test_distribute.py that
fails once upstream fixes the bug, so the workaround can go:

- **Symbolic build from the element spec.** `TensorFlowTrainer._maybe_symbolic_build`
  starts an iterator over the training data and pulls a batch to learn its shapes;
  under MultiWorkerMirroredStrategy it then all-reduces the whole batch nest, which
  fails before the first step ("Attempt to convert a value (PerReplica:{...})",
  keras-team/keras#20585, ray-project/ray#47464). Under any strategy the extra
  iterator also moves kcnn's per-iteration shuffle and augmentation on by one epoch
  (`kcnn.data`), so a two-GPU run would see other batches than a one-GPU run, and a
  resumed run other batches than an uninterrupted one. Shapes and dtypes are all the
  build needs: the replacement reads them from the dataset's element spec.
- **Rank-1 step logs in multi-worker mode.** Keras reduces each step's logs with
  `strategy.reduce("MEAN", value, axis=0)` when the strategy spans several workers,
  whatever `model.distribute_reduction_method` says, and the logs are scalars:
  "Invalid reduction dimension 0 for input with 0 dimensions" at the first step
  (keras-team/keras#20585, tensorflow/tensorflow#72388). The train and test steps
  return their scalar logs with shape [1]; the epoch's logs come from the metrics'
  all-reduced variables, exact global values.

- **The uneven last batch weighted by its size.** Each replica's loss is the mean
  over its own part of the batch, divided by the number of replicas: a last batch of
  43 images split 22 + 21 gets the gradient (mean_22 + mean_21) / 2 instead of
  mean_43, and a two-device run drifts from a one-device run (by 1e-2 in LeNet-5's
  weights after two digits epochs). The training loss is made exact for the
  gradient, sum_local / global count, with the value Keras tracks unchanged.

`steps_per_execution` above 1 with several replicas (keras-team/keras#19246) is not
worked around: `kcnn.train.steps_per_execution` resolves it to 1.
"""

from __future__ import annotations

import types

import keras
import tensorflow as tf

_APPLIED = "_kcnn_strategy_workarounds"


def is_multi_worker(strategy) -> bool:
    """Whether `strategy` spans several workers: the case Keras' `reduce_per_replica`
    treats apart (`_collective_all_reduce_multi_worker`, keras/src/backend/tensorflow/
    trainer.py), where its bugs are."""
    from keras.src.backend.tensorflow.trainer import _collective_all_reduce_multi_worker

    return strategy is not None and bool(_collective_all_reduce_multi_worker(strategy))


def fit_under_strategy(model: keras.Model, strategy) -> None:
    """Applies the workarounds (module docstring) to the compiled `model`, once."""
    if getattr(model, _APPLIED, None) is strategy:
        return
    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)
    if strategy.num_replicas_in_sync > 1:
        model._compute_loss = _weighted_by_replica_batch(type(model)._compute_loss.__get__(model))
    if is_multi_worker(strategy):
        model.train_step = _rank1_logs(type(model).train_step.__get__(model))
        model.test_step = _rank1_logs(type(model).test_step.__get__(model))
    object.__setattr__(model, _APPLIED, strategy)


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    """`TensorFlowTrainer._maybe_symbolic_build` (Keras 3.15) with the batch's
    shapes read from the dataset's element spec instead of a batch pulled from a new
    iterator and all-reduced."""
    if self._distribute_strategy is None:
        return
    if iterator is not None:
        spec = iterator.data_adapter.get_tf_dataset().element_spec
        data_batch = tf.nest.map_structure(lambda s: keras.KerasTensor(tuple(s.shape), s.dtype.name), spec)
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _rank1_logs(step):
    def step_with_rank1_logs(data):
        logs = step(data)
        return tf.nest.map_structure(lambda v: tf.reshape(v, [1]) if v.shape.rank == 0 else v, logs)

    return step_with_rank1_logs


def _weighted_by_replica_batch(compute_loss):
    """`Trainer._compute_loss` whose gradient weighs each replica's mean loss by its
    share of the global batch (its value, which Keras' loss tracker averages by
    replica batch size, stays Keras')."""

    def compute_loss_weighted(*args, **kwargs):
        loss = compute_loss(*args, **kwargs)
        context = tf.distribute.get_replica_context()
        if not kwargs.get("training") or context is None or context.num_replicas_in_sync < 2:
            return loss
        x = kwargs["x"] if "x" in kwargs else args[0]
        count = tf.cast(tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0], loss.dtype)
        total = context.all_reduce("SUM", count)
        exact = loss * tf.math.divide_no_nan(count * context.num_replicas_in_sync, total)
        return exact + tf.stop_gradient(loss - exact)

    return compute_loss_weighted
