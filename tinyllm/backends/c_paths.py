"""Which of the C library's code paths run on this CPU: chosen once, at import, from what
cpuid reports (csrc/cpu.c, cpu_paths.py), or forced by an environment variable.

  BF16_PATHS    matmul_bf16 and bf16 attention: amx_bf16, avx512_bf16, or fp32 (emulated)
  DECODE_PATHS  gemv, attention_decode and the fused decode calls: avx512, avx2, portable
  QUANT_PATHS   the int8 products of quantized weights: avx512_vnni, avx2, portable
  GEMV_MAX_ROWS up to this many rows, x @ W^T streams W (gemv) instead of the GEMM
c_kernels.py re-exports all of it; c_decode.py and c_quant.py pass the chosen bits to C.
"""
from tinyllm.backends import BackendUnavailable, cpu_paths
from tinyllm.backends.c_library import LIB_PATH, lib

# M <= this many rows and matmul(x, w, transpose_b=True) runs gemv: the weight streamed once,
# no packing (a decoding step); past it the GEMM's tiling reuses w from cache and wins
GEMV_MAX_ROWS = 16

try:   # a library (and its header) built from older sources lacks it: say so, once
    FEATURES = lib.cpu_features()
except AttributeError as e:
    raise BackendUnavailable(f"{LIB_PATH} is from older sources (no {e}): run `make`") from None
# name -> matmul_bf16's path argument, fastest first; "amx_bf16": tiles (csrc/matmul_amx.c);
# "fp32": the rounded operands through the float32 matmul, the fallback every CPU has
BF16_PATHS = {"amx_bf16": lib.CPU_AMX_BF16, "avx512_bf16": lib.CPU_AVX512_BF16, "fp32": 0}
# name -> gemv's and attention_decode's path argument (csrc/decode.c)
DECODE_PATHS = {"avx512": lib.CPU_AVX512, "avx2": lib.CPU_AVX2, "portable": 0}
# name -> matmul_q_i8's path argument (csrc/quant_i8.c), fastest first, as c_quant.py names them.
# avx2 before avx512_vnni, measured: since quant_avx2.c's rewrite (fewer instructions a block,
# eight blocks a group) it decodes gpt2 1.2-1.5x faster than the VNNI kernel on the one CPU
# with both that has run them side by side (an Intel Xeon, BENCHMARKS.md); VNNI stays, by name
QUANT_PATHS = {"avx2": lib.QPATH_AVX2, "avx512_vnni": lib.QPATH_AVX512_VNNI,
               "portable": lib.QPATH_PORTABLE}
_QUANT_DEFAULT = cpu_paths.named("quantized matmul", QUANT_PATHS, env="TINYLLM_QUANT_PATH")


def bf16_path(wanted=None):
    """The path matmul_bf16 runs on: `wanted` (or $TINYLLM_BF16_PATH), else the fastest."""
    return cpu_paths.choose("bf16", BF16_PATHS, FEATURES, wanted, "TINYLLM_BF16_PATH")


def decode_path(wanted=None):
    """The path gemv and attention_decode run on: `wanted` (or $TINYLLM_DECODE_PATH), else the fastest."""
    return cpu_paths.choose("decode", DECODE_PATHS, FEATURES, wanted, "TINYLLM_DECODE_PATH")


BF16_PATH, DECODE_PATH = bf16_path(), decode_path()


def _bf16_bits(path):
    return BF16_PATHS[bf16_path(path) if path else BF16_PATH]


def _decode_bits(path):
    return DECODE_PATHS[decode_path(path) if path else DECODE_PATH]


def _quant_bits(qpath):
    return QUANT_PATHS[cpu_paths.named("quantized matmul", QUANT_PATHS, qpath) if qpath else _QUANT_DEFAULT]


def describe_cpu():
    """The features found and the paths chosen, in words (for `make` and the benchmarks)."""
    have = ", ".join(f"{name} {'✓' if FEATURES & bit else '✗'}" for name, bit in
                     (("AVX2+FMA", lib.CPU_AVX2), ("AVX-512", lib.CPU_AVX512),
                      ("AVX512-BF16", lib.CPU_AVX512_BF16), ("AMX-BF16", lib.CPU_AMX_BF16)))
    emulated = (" (emulated: fp32 arithmetic, the matmuls' operands bf16-rounded, attention's not)"
                if BF16_PATH == "fp32" else "")
    return f"{have}; bf16 matmul path: {BF16_PATH}{emulated}; decode path: {DECODE_PATH}"
