"""The state of a model's random generators, which a resumed run must carry on from.

A layer that draws random numbers in training (`Dropout`, random augmentation layers)
draws them from a `keras.random.SeedGenerator`: a seed and a counter that moves on at
every draw. Keras' weight files leave that state out (`layer.variables` holds it,
`layer.weights` does not), so a run resumed from weights alone would draw epoch 1's
dropout masks again at its next epoch, and train differently from the uninterrupted
run. The checkpoint records it (`kcnn.train.checkpoint`) and the resumed run takes it
back.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from kcnn._keras_graph import leaf_layers


def _generator_states(model):
    """`{key: variable}` of every random generator state of `model`'s layers, keyed
    by layer name and position."""
    states = {}
    for layer in leaf_layers(model):
        weights = {id(weight) for weight in layer.weights}
        extra = [variable for variable in layer.variables if id(variable) not in weights]
        states.update((f"{layer.name}/{index}", variable) for index, variable in enumerate(extra))
    return states


def random_state(model) -> dict[str, list[int]]:
    """The state of `model`'s random generators, as JSON-ready lists of ints ({} for
    a model that draws nothing)."""
    return {key: np.asarray(variable.numpy()).ravel().tolist() for key, variable in _generator_states(model).items()}


def set_random_state(model, state: Mapping[str, list[int]]) -> None:
    """Gives `model`'s random generators the state `random_state` returned (of a model
    of the same architecture); generators `state` does not name are left as they are.

    Raises:
        ValueError: a generator named in `state` has another shape in `model`.
    """
    for key, variable in _generator_states(model).items():
        if key not in state:
            continue
        value = np.asarray(state[key], dtype=variable.dtype).reshape(-1)
        if value.size != int(np.prod(variable.shape)):
            raise ValueError(
                f"The random state of `{key}` has {value.size} values where `{model.name}` holds "
                f"{int(np.prod(variable.shape))}. Received: {list(state[key])}"
            )
        variable.assign(value.reshape(variable.shape))
