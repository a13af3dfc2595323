/* cpu.c: what this CPU's cores can do, asked at run time, and how fast they really are.
 *
 * What it is: cpu_features() reads cpuid (and XCR0, whether the OS saves the registers) for
 * AVX2+FMA, AVX-512, AVX512-BF16 and AMX-BF16, and on Linux asks the kernel for permission to use AMX
 * tiles (arch_prctl ARCH_REQ_XCOMP_PERM): without it the first tile instruction kills the
 * process. So one build (with -march=native or without) runs on any x86-64 and executes only
 * instructions the machine it runs on has. peak_flops() times a multiply-add loop with enough
 * independent accumulators to keep every FMA (or dot-product, or tile) unit busy: the ceiling a
 * matmul is measured against (examples/bench_matmul.py), measured, not assumed.
 *
 * What it is not: a general CPU-feature library; it knows the features the matmuls and the
 * decode kernels (decode.c) dispatch on.
 * The functions that use an instruction set carry it as a target attribute, so this file needs
 * no -m flag; they run only after cpu_features() said yes.
 *
 * Read next: matmul_bf16.c (the kernels these choose between), tinyllm.h for the contract.
 */
#define _GNU_SOURCE   /* syscall() */
#include <stdint.h>
#include <time.h>
#include "tinyllm.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#include "amx.h"
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#endif

static uint64_t xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static int detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return 0;
    /* XCR0: SSE, AVX, opmask and both halves of the zmm file saved by the OS (0xE6); for AMX
     * the tile config and tile data (bits 17, 18) */
    uint64_t x = xcr0();
    int ymm_ok = (x & 0x6) == 0x6, zmm_ok = (x & 0xE6) == 0xE6, tiles_ok = (x & 0x60000) == 0x60000;
    /* CPU_AVX2: AVX2 with FMA (the decode kernels) and F16C (the quantized ones' fp16 scales) */
    int fma_f16c = (c & bit_FMA) && (c & bit_F16C);
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int features = ymm_ok && fma_f16c && (b & bit_AVX2) ? CPU_AVX2 : 0;
    if (zmm_ok && (b & bit_AVX512F) && (b & bit_AVX512BW) && (b & bit_AVX512VL))
        features |= CPU_AVX512;
    if ((features & CPU_AVX512) && (features & CPU_AVX2) && (c & bit_AVX512VNNI))
        features |= CPU_AVX512_VNNI;
    int amx = tiles_ok && (d & (1u << 22)) && (d & (1u << 24));   /* AMX-BF16, AMX-TILE */
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (features & CPU_AVX512) && (a & (1u << 5)))
        features |= CPU_AVX512_BF16;
#ifdef __linux__
    /* permission for the whole process (every thread); asking again is harmless */
    if (amx && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0)
        features |= CPU_AMX_BF16;
#else
    (void)amx;
#endif
#ifdef TINYLLM_AMX_EMU   /* the tile instructions are amx.h's C: every CPU "has" them */
    features |= CPU_AMX_BF16;
#endif
    return features;
}

/* Detected once: under a hypervisor each cpuid is a trap into it (microseconds), and the
 * kernels ask on every call. Threads that race here compute the same value. */
int cpu_features(void) {
    static int known = -1;
    int f = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (f < 0) {
        f = detect();
        __atomic_store_n(&known, f, __ATOMIC_RELAXED);
    }
    return f;
}

/* The loops: ACC independent accumulators, so each unit starts a new multiply-add every
 * cycle although one takes 4-6 cycles (latency x units <= ACC). The result is stored to a
 * volatile so the loop cannot be dropped. */
#define ACC 16
__attribute__((target("avx512f"))) static double loop_fp32(int64_t iters) {
    __m512 acc[ACC], m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < ACC; i++) acc[i] = _mm512_set1_ps((float)i);
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < ACC; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
    volatile float sink = 0;
    for (int i = 0; i < ACC; i++) sink += _mm512_reduce_add_ps(acc[i]);
    return (double)iters * ACC * 16 * 2;
}

/* AVX2: 16 ymm registers, so at most 14 accumulators beside m and c. Zen 3 runs two 256-bit FMA
 * pipes of latency 4: 8 chains are the bare minimum, and any stall shows (one Zen 3 core:
 * 8 chains 82-97 GFLOP/s, 12 chains 99-103, i.e. 32 FLOP per cycle at ~3.2 GHz). 12 leave room. */
#define ACC_AVX2 12
__attribute__((target("avx2,fma"))) static double loop_fp32_avx2(int64_t iters) {
    __m256 acc[ACC_AVX2], m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < ACC_AVX2; i++) acc[i] = _mm256_set1_ps((float)i);
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < ACC_AVX2; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, c);
    volatile float sink = 0;
    for (int i = 0; i < ACC_AVX2; i++) sink += acc[i][0];
    return (double)iters * ACC_AVX2 * 8 * 2;
}

/* vdpbf16ps: 16 lanes x 2 bf16 products each */
__attribute__((target("avx512f,avx512bf16"))) static double loop_bf16(int64_t iters) {
    __m512 acc[ACC];
    __m512bh m = (__m512bh)_mm512_set1_epi32(0x3F803F80);      /* (1.0, 1.0) */
    for (int i = 0; i < ACC; i++) acc[i] = _mm512_set1_ps((float)i);
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < ACC; i++) acc[i] = _mm512_dpbf16_ps(acc[i], m, m);
    volatile float sink = 0;
    for (int i = 0; i < ACC; i++) sink += _mm512_reduce_add_ps(acc[i]);
    return (double)iters * ACC * 32 * 2;
}

/* AMX: tiles 0-3 accumulate (16 x 16 floats each) from tiles 4-7 (16 rows x 64 bytes):
 * one tdpbf16ps is 16 x 16 x 32 multiply-adds. The palette layout is the ISA's. */
TARGET_AMX static double loop_amx(int64_t iters) {
    static const uint16_t ones[16 * 32] = {0};   /* zeros: the speed does not depend on values */
    tile_config cfg = {.palette = 1};
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, ones, 64); _tile_loadd(5, ones, 64);
    _tile_loadd(6, ones, 64); _tile_loadd(7, ones, 64);
    for (int64_t it = 0; it < iters; it++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_release();
    return (double)iters * 4 * 16 * 16 * 32 * 2;
}

static double one_thread(int kind, int64_t iters, int features) {
    if (kind == PEAK_AMX_BF16) return features & CPU_AMX_BF16 ? loop_amx(iters / 64) : 0;
    if (kind == PEAK_BF16) return features & CPU_AVX512_BF16 ? loop_bf16(iters) : 0;
    if (features & CPU_AVX512) return loop_fp32(iters);
    return features & CPU_AVX2 ? loop_fp32_avx2(iters) : 0;   /* the OS saves ymm too */
}
#else
int cpu_features(void) { return 0; }
static double one_thread(int kind, int64_t iters, int features) { return 0; }
#endif

/* CPU time of the calling thread: what it ran, not the time it waited for a core. */
static double thread_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* The sum of what each thread reaches, each timing its own loop by its own CPU time: the loop
 * timed as one parallel region by the wall clock let one thread that was woken late or
 * descheduled (a shared machine) cut the figure in half: 103 GFLOP/s on two Zen 3 cores that
 * reach 99-103 each. This is the ceiling of the cores; a matmul timed by the wall clock on a
 * busy machine gets less of it. */
double peak_flops(int kind, int64_t iters) {
    int features = cpu_features();
    double rate = 0;
#pragma omp parallel reduction(+ : rate)
    {
        double t = thread_seconds(), flops = one_thread(kind, iters, features);
        if (flops > 0) rate += flops / (thread_seconds() - t);   /* 0: not on this CPU */
    }
    return rate;
}
