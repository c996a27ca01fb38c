"""The one module that reads Keras' private variable registry.

Inside `keras.StatelessScope(initialize_variables=False)` a layer's weights are created
without memory: Keras records each as uninitialized in a process-wide list
(`keras.src.backend.common.global_state`, "uninitialized_variables") and allocates
them when a scope that initializes variables ends. kcnn builds a model that way to
count its parameters before any is allocated (`kcnn.models._base`), and a refused
model's variables must then leave that list unallocated, which Keras has no public
way to do. Everything read here is pinned by `tests/test_keras_variables.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import in_stateless_scope

__all__ = ["deferred_variables", "unallocated_variables"]

_PENDING = "uninitialized_variables"


def _pending() -> list:
    return global_state.get_global_attribute(_PENDING, [], set_to_default=True)


@contextlib.contextmanager
def deferred_variables() -> Iterator[None]:
    """Variables created in the block take no memory until it ends: then they are
    allocated and initialized, in the order they were created (the same values as
    without the block); if it raises, they are dropped, never allocated.

    Within a stateless scope already (a caller's), the block is that scope's.
    """
    if in_stateless_scope():
        yield
        return
    start = len(_pending())
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    except BaseException:
        del _pending()[start:]
        raise
    created = _pending()[start:]
    del _pending()[start:]
    for variable in created:
        variable._deferred_initialize()


@contextlib.contextmanager
def unallocated_variables() -> Iterator[None]:
    """Variables created in the block are never allocated: they are dropped when it
    ends, however it ends (to lay out a model and count its parameters only)."""
    start = len(_pending())
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        del _pending()[start:]
