"""kcnn._keras_graph relies on Keras' private registry of variables created in a
stateless scope (`uninitialized_variables`) and on their deferred initialization:
these tests fail when Keras moves either."""

import keras
import numpy as np
import pytest

from kcnn._keras_graph import deferred_variables, unallocated_variables


def _dense():
    return keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(seed=1))


def _allocated(layer):
    # Keras keeps a variable's backend value in `_value`, None until it is allocated.
    return [variable._value is not None for variable in layer.weights]


def test_deferred_variables_are_allocated_when_the_block_ends_with_the_values_of_an_eager_build():
    eager = _dense()
    eager.build((None, 4))
    layer = _dense()
    with deferred_variables():
        layer.build((None, 4))
        assert _allocated(layer) == [False, False]
        assert layer.count_params() == 15  # counted from the shapes alone
    assert _allocated(layer) == [True, True]
    np.testing.assert_array_equal(layer.kernel.numpy(), eager.kernel.numpy())


@pytest.mark.parametrize("scope", [deferred_variables, unallocated_variables])
def test_variables_of_a_refused_block_are_never_allocated(scope):
    layer = _dense()
    with pytest.raises(RuntimeError), scope():
        layer.build((None, 4))
        raise RuntimeError("refused")
    # A later scope that initializes what Keras registered leaves them alone: they are
    # no longer registered.
    with keras.StatelessScope():
        pass
    assert _allocated(layer) == [False, False]
    kept = _dense()
    with unallocated_variables():
        kept.build((None, 4))
    with keras.StatelessScope():
        pass
    assert _allocated(kept) == [False, False]


def test_a_callers_stateless_scope_keeps_its_own_rules():
    layer = _dense()
    with keras.StatelessScope(), deferred_variables():
        layer.build((None, 4))
    assert _allocated(layer) == [True, True]  # the caller's scope initialized them on exit
