/* half.h: IEEE half -> float, exactly, in portable C (the quantized kernels' fp16 scales).
 * Not part of the C API. The x86 paths convert with F16C (_cvtsh_ss, vcvtph2ps) instead; this
 * is the fallback every CPU has, and the CUDA kernels' conversion (csrc/cuda/quant.cu includes
 * it as a host-and-device function). Normal, subnormal and zero are handled; the scales are
 * never inf or NaN (tinyllm/quant/formats.py refuses them). */
#ifndef TINYLLM_HALF_H
#define TINYLLM_HALF_H

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__) || defined(TINYLLM_CUDA_EMU)
#define HALF_FN __host__ __device__ static inline
#else
#define HALF_FN static inline
#endif

HALF_FN float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    float f;
    if (exp == 0) {               /* zero or subnormal: man * 2^-24 */
        f = (float)man * (1.0f / 16777216.0f);
        uint32_t bits;
        memcpy(&bits, &f, 4);
        bits |= sign;
        memcpy(&f, &bits, 4);
        return f;
    }
    uint32_t bits = sign | ((exp + 112) << 23) | (man << 13);
    memcpy(&f, &bits, 4);
    return f;
}

#endif
