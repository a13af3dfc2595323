"""Which instructions a C kernel family runs on: chosen once from the CPU's features, or forced.

    choose("decode", {"avx512": 1, "avx2": 8, "portable": 0}, features=9)          -> "avx512"
    choose("decode", ..., features=9, wanted="avx2")                                 -> "avx2"
    choose("decode", ..., features=8, wanted="avx512")                               -> "avx2"
A family's paths are named fastest first, each with the cpu_features() bits it needs (csrc/cpu.c),
the last needing none. A path is asked for by name (an argument, or the family's environment
variable: TINYLLM_DECODE_PATH, TINYLLM_BF16_PATH), so the tests can run every path this CPU
has; one the CPU lacks runs as the fastest it has at or below it, as the C side does, so no
setting executes a missing instruction. Not here: the kernels (c_kernels.py binds them).
"""
import os


def choose(family, paths, features, wanted=None, env=None):
    """The name of the path `family` runs on (see the module docstring)."""
    wanted = wanted or (os.environ.get(env) if env else None) or None
    names = list(paths)
    if wanted is not None and wanted not in paths:
        source = f" (from ${env})" if env and wanted == os.environ.get(env) else ""
        raise ValueError(f"{family} path {wanted!r}{source}: choose one of {names}")
    start = names.index(wanted) if wanted else 0
    return next(n for n in names[start:] if (features & paths[n]) == paths[n])


def supported(paths, features):
    """The names of the paths this CPU has, fastest first."""
    return [n for n, bits in paths.items() if (features & bits) == bits]


def named(family, paths, wanted=None, env=None):
    """`wanted`, else $env, else the first (fastest) of paths, checked to be one of their names;
    for a family whose C side itself runs the best path this CPU has at or below the one named."""
    wanted = wanted or (os.environ.get(env) if env else None) or next(iter(paths))
    if wanted not in paths:
        raise ValueError(f"{family} path {wanted!r}: choose one of {list(paths)}")
    return wanted
