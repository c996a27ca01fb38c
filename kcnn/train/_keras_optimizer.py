"""The one module that reads Keras' optimizer internals (Keras 3.15).

Keras' Adam (and AdamW, its subclass) keeps each variable's first and second moments
in private lists, `_momentums` and `_velocities`, made by `build` in the order of the
optimizer's variables and indexed by the private `_get_variable_index(variable)`
(keras/src/optimizers/adam.py, base_optimizer.py); Keras has no public way to find
the moment of a variable. kcnn's fused update (`kcnn.train.optimizers`) must write
exactly the slots Keras' own update reads, so that checkpoints, `optimizer.variables`
and a switch between the two optimizers see the same state. Everything it reads of
Keras' optimizer internals is read here, so an upstream change breaks this module and
its test (`tests/test_optimizers.py`), not training.
"""

from __future__ import annotations

__all__ = ["adam_moments"]


def adam_moments(optimizer, variable) -> tuple:
    """The first and second moment variables (`m`, `v`) a built Keras `Adam` or
    `AdamW` keeps for the model variable `variable`: those its `update_step` updates."""
    index = optimizer._get_variable_index(variable)
    return optimizer._momentums[index], optimizer._velocities[index]
