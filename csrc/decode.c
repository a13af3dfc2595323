/* decode.c: the two kernels a decoding step spends its time in, each in three instruction sets
 * chosen at run time.
 *
 * What it is:
 *   gemv: out (M, N) = x (M, K) @ w (N, K)^T for the few rows M = 1..16 of a decoding step.
 *     Decoding one token reads every weight once and does two FLOPs with it, so it is bound by
 *     memory bandwidth, not by FMAs: the GEMM of matmul.c, which packs and tiles its operands to
 *     reuse them from cache, only adds traffic and copies when M is 1. Here the rows of w (the
 *     output columns) are cut into chunks of ~CHUNK_FLOATS weights that the pool's threads
 *     claim; a thread streams its chunk's rows exactly once, computing a block of dot products
 *     per pass over K (decode_kernels.h): no packing, no scratch memory, no barrier.
 *   attention_decode: the newest Tq queries (1..16) against a KV cache read in place, one
 *     (batch, head, query) row per task, with an online softmax over chunks of DECODE_CHUNK keys.
 * The `path` argument picks the instructions: CPU_AVX512, CPU_AVX2 (with FMA) or 0 (portable C,
 * compiled with the build's own flags). Each path's functions carry their instruction set as a
 * target attribute, so a library built anywhere, with -march=native or without, runs on any
 * x86-64: a path this CPU lacks (cpu_features(), cpu.c) runs as the best one below it that it
 * has. c_kernels.py passes the best path, or the one TINYLLM_DECODE_PATH names (the tests run
 * every path this CPU has).
 *
 * What it is not: a GEMM (past 16 rows the GEMM's reuse wins; c_kernels.py sends only
 * M <= GEMV_MAX_ROWS here), or bit-identical to NumPy (sums run in vector lanes, then a tree).
 * Prefill attention is attention.c's flash kernel.
 *
 * Read next: decode_kernels.h (the loops), pool.c (the threads), tinyllm.h (the contract),
 * numpy_kernels.gemv / attention_decode (the meaning), tests/test_generate_kernels.py.
 */
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "fastmath.h"
#include "parallel.h"
#include "tinyllm.h"

#define CHUNK_FLOATS 32768   /* weights per pool chunk (128 KiB): ~4 us at 30 GB/s */
#define DECODE_CHUNK 256     /* keys per chunk of the online softmax (their scores on the stack) */

typedef struct {
    const float *x, *w;
    float *out;
    int64_t M, N, K, rows;    /* rows of w per chunk */
} GemvWork;

typedef struct {
    const float *q, *k, *v;
    float *out;
    int64_t B, nh, Tq, Tk, Tmax, hs, rows;   /* (batch, head, query) rows per chunk */
    float scale;
} DecodeWork;

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* AVX-512 */
#define SUFFIX _avx512
#define TARGET __attribute__((target("avx512f")))
#define vec __m512
#define VLEN 16
#define MB 4
#define NB 4
#define NB_WIDE 8
#define vloadu(p) _mm512_loadu_ps(p)
#define vstoreu(p, v) _mm512_storeu_ps(p, v)
#define vfma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vzero() _mm512_setzero_ps()
#define vset1(a) _mm512_set1_ps(a)
#define vsum(v) _mm512_reduce_add_ps(v)
#define vloadn(p, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1), p)
#define vsums(a, nb, out) sums16(a, nb, out)
/* out[j] = the sum of a[j]'s lanes, j < nb; eight at once by a tree of shuffles (18 instructions
 * where eight reductions take ~70: a tenth of a block's work when K is 288) */
TARGET static inline void sums16(const __m512 *a, int nb, float *out) {
    if (nb != 8) {
        for (int j = 0; j < nb; j++) out[j] = _mm512_reduce_add_ps(a[j]);
        return;
    }
    __m512 b[4], c[2];
    for (int j = 0; j < 4; j++)           /* quarters 0-1: a[2j]'s halves summed; 2-3: a[2j+1]'s */
        b[j] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], 0x44),
                             _mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], 0xEE));
    for (int j = 0; j < 2; j++)           /* quarter L: four partial sums of a[4j + L] */
        c[j] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * j], b[2 * j + 1], 0x88),
                             _mm512_shuffle_f32x4(b[2 * j], b[2 * j + 1], 0xDD));
    __m512 t = _mm512_add_ps(_mm512_unpacklo_ps(c[0], c[1]), _mm512_unpackhi_ps(c[0], c[1]));
    t = _mm512_add_ps(t, _mm512_shuffle_ps(t, t, _MM_SHUFFLE(1, 0, 3, 2)));
    /* lane 4L holds the sum of a[L], lane 4L + 1 that of a[L + 4] */
    __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512 s = _mm512_permutexvar_ps(order, t);
    _mm256_storeu_ps(out, _mm512_castps512_ps256(s));
}
#include "decode_kernels.h"

/* AVX2 + FMA */
#define SUFFIX _avx2
#define TARGET __attribute__((target("avx2,fma")))
#define vec __m256
#define VLEN 8
#define MB 2
#define NB 4
#define NB_WIDE 4
#define vloadu(p) _mm256_loadu_ps(p)
#define vstoreu(p, v) _mm256_storeu_ps(p, v)
#define vfma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vzero() _mm256_setzero_ps()
#define vset1(a) _mm256_set1_ps(a)
#define vsum(v) sum8(v)
#define vloadn(p, n) \
    _mm256_maskload_ps(p, _mm256_loadu_si256((const __m256i *)(first_lanes + 8 - (n))))
#define vsums(a, nb, out) for (int j_ = 0; j_ < (nb); j_++) (out)[j_] = sum8((a)[j_])
static const int32_t first_lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1};   /* then eight zeros */
TARGET static inline float sum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
#include "decode_kernels.h"
#define HAVE_X86_PATHS 1
#endif

/* portable: one float per "vector", in the build's own instruction set */
#define SUFFIX _portable
#define TARGET
#define vec float
#define VLEN 1
#define MB 2
#define NB 4
#define NB_WIDE 4
#define vloadu(p) (*(p))
#define vstoreu(p, v) (*(p) = (v))
#define vfma(a, b, c) fmaf(a, b, c)
#define vzero() 0.0f
#define vset1(a) (a)
#define vsum(v) (v)
#define vloadn(p, n) ((void)(n), *(p))   /* never called: VLEN is 1 */
#define vsums(a, nb, out) for (int j_ = 0; j_ < (nb); j_++) (out)[j_] = (a)[j_]
#include "decode_kernels.h"

/* The path that runs: the one asked for, or the best one below it that this CPU has. The
 * features are asked once (cpuid is a trap to the hypervisor in a virtual machine). */
static int usable_path(int path) {
#ifdef HAVE_X86_PATHS
    static _Atomic int features = -1;
    int f = atomic_load(&features);
    if (f < 0) atomic_store(&features, f = cpu_features());
    if ((path & CPU_AVX512) && (f & CPU_AVX512)) return CPU_AVX512;
    if ((path & (CPU_AVX512 | CPU_AVX2)) && (f & CPU_AVX2)) return CPU_AVX2;
#endif
    return 0;
}

/* The pool task of kernel `name` for a path: name_avx512, name_avx2 or name_portable (the x86
 * ones exist only on x86, where usable_path can answer them). */
#ifdef HAVE_X86_PATHS
#define X86_ONLY(f) f
#else
#define X86_ONLY(f) NULL
#endif
#define TASK_FOR(name, path) \
    task_for(path, X86_ONLY(name##_avx512), X86_ONLY(name##_avx2), name##_portable)
static pool_task task_for(int path, pool_task avx512, pool_task avx2, pool_task portable) {
    path = usable_path(path);
    return path == CPU_AVX512 ? avx512 : path == CPU_AVX2 ? avx2 : portable;
}

void gemv(const float *x, const float *w, float *out, int64_t M, int64_t N, int64_t K, int path) {
    // a chunk: ~CHUNK_FLOATS weights, whole blocks of 8 rows of w (every path's NB_WIDE divides
    // 8), and one block at least (K past CHUNK_FLOATS). A chunk count rounded up to a multiple
    // of the threads' was measured no faster on the 15M shape (2 threads, A/B in one process).
    int64_t rows = (CHUNK_FLOATS / (K > 0 ? K : 1) + 7) / 8 * 8;
    rows = rows > 0 ? rows : 8;
    GemvWork g = {x, w, out, M, N, K, rows};
    pool_run(TASK_FOR(gemv_chunk, path), &g, (N + rows - 1) / rows);
}

void attention_decode(const float *q, const float *k_cache, const float *v_cache, float *out,
                      int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t Tmax, int64_t hs,
                      int path) {
    // a chunk is a run of (batch, head, query) rows reading about CHUNK_FLOATS cached values
    int64_t per_row = 2 * Tk * hs, n_rows = B * nh * Tq;
    int64_t rows = per_row >= CHUNK_FLOATS ? 1 : CHUNK_FLOATS / (per_row > 0 ? per_row : 1);
    DecodeWork a = {q, k_cache, v_cache, out, B, nh, Tq, Tk, Tmax, hs, rows,
                    1.0f / sqrtf((float)hs)};
    pool_run(TASK_FOR(decode_chunk, path), &a, (n_rows + rows - 1) / rows);
}
