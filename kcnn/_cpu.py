"""What the CPU can do, read from the operating system: the bfloat16 units that make
"auto" precision pick mixed bfloat16 on a CPU (`kcnn.train.distribute`).

TensorFlow has no public query of CPU features (its `port::TestCPUFeature` is not
exported to Python), so the flags come from Linux's /proc/cpuinfo, the same names
`lscpu` shows. Elsewhere (macOS, Windows) no unit is reported, and "auto" stays float32.
"""

from __future__ import annotations

import os

#: Where Linux lists the CPU's feature flags.
CPUINFO = "/proc/cpuinfo"

#: CPU flags of native bfloat16 arithmetic that oneDNN (TensorFlow's CPU kernels) uses:
#: AMX tiles (Intel Sapphire Rapids and later) and AVX-512 BF16 (Intel Cooper Lake,
#: AMD Zen 4 and later). AVX-512 alone converts bfloat16 in software, slower than float32.
BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: str | os.PathLike | None = None) -> frozenset[str]:
    """The feature flags of the first processor listed in `cpuinfo`.

    Args:
        cpuinfo: a file in /proc/cpuinfo's format; default `CPUINFO`.

    Returns:
        The flags, e.g. {"avx2", "avx512_bf16", ...}; empty when the file is missing
        or unreadable, or lists no flags (not Linux, or not x86: ARM lists "Features").
    """
    try:
        with open(CPUINFO if cpuinfo is None else cpuinfo, encoding="utf-8", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def bfloat16_units(cpuinfo: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The native bfloat16 units of this CPU, as `BFLOAT16_FLAGS` names them, in that
    order: ("amx_bf16", "avx512_bf16") on a Sapphire Rapids Xeon, () on most laptops.

    Args:
        cpuinfo: a file in /proc/cpuinfo's format; default `CPUINFO`.
    """
    flags = cpu_flags(cpuinfo)
    return tuple(flag for flag in BFLOAT16_FLAGS if flag in flags)


def cpu_model(cpuinfo: str | os.PathLike | None = None) -> str:
    """The model name of the first processor listed in `cpuinfo` ("AMD EPYC 7B13"), or
    "" when the file is missing or names none (not Linux; ARM lists no "model name")."""
    try:
        with open(CPUINFO if cpuinfo is None else cpuinfo, encoding="utf-8", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return ""
