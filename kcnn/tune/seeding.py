"""`seeded`: the Python `random` state Keras draws its default seeds from, set for a
block and restored after it. The one place the search seeds a model's build (its
trials, the finish's runs, the references, the checks of a configuration), and derives
the other seeds of its runs (`derived_seed`: the data order of the finish's repeats)."""

from __future__ import annotations

import contextlib
import random
import zlib
from typing import Any

__all__ = ["derived_seed", "seeded"]


def derived_seed(seed: int, *keys: Any) -> int:
    """An int seed in [0, 2**32) from `seed` and `keys`: the same for the same ones in
    any process (CRC-32 of their repr, not Python's salted `hash`)."""
    return zlib.crc32(repr((seed, *keys)).encode())


@contextlib.contextmanager
def seeded(seed: int, *keys: Any):
    """Python's `random`, from which Keras draws the seeds of initializers and dropout
    layers made without one, seeded from `seed` and `keys` for the block, then restored:
    the same configuration builds with the same weights, and the caller's state is as it was."""
    state = random.getstate()
    random.seed(derived_seed(seed, *keys))
    try:
        yield
    finally:
        random.setstate(state)
