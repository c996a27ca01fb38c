"""Lazy package exports (PEP 562): a package's public names load on first use, so the
`kcnn` command builds its parser from the config dataclasses without importing
TensorFlow."""

import importlib


def lazy_exports(package: str, exports: dict[str, str], submodules: tuple[str, ...] = ()):
    """`__getattr__` and `__dir__` for a package whose public names live in modules.

    Args:
        package: the package's `__name__`.
        exports: public name -> the module (absolute name) that defines it.
        submodules: sub-modules reachable as attributes without importing them first
            (`import kcnn; kcnn.data.load(...)`).
    """

    def __getattr__(name):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted({*importlib.import_module(package).__dict__, *exports, *submodules})

    return __getattr__, __dir__
