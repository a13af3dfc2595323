/* quant_i8.h: what the int8-activation products share between quant_i8.c (the portable and
 * AVX-512 VNNI paths, the dispatch) and quant_avx2.c (the AVX2 path). Not part of the C API.
 *
 * x quantized (acts) is what every path reads; each path lays it out its own way from the
 * same numbers (quantize_rows_q8's). A path's rows function computes rows [n0, n1) of W
 * against rows [m0, m0 + mt) of x; DISPATCH builds one from an inlined NAME_t per row count
 * and format.
 */
#ifndef TINYLLM_QUANT_I8_H
#define TINYLLM_QUANT_I8_H
#include <stdint.h>

#define QBLOCK 32
#define MT 4   /* rows of x that share one pass over a row of W (DISPATCH lists 1..4) */
_Static_assert(MT == 4, "DISPATCH below lists the row counts 1..4");

typedef struct {                 /* x, quantized: what every path reads */
    const int8_t *qx;            /* (M, nbx, 32) in the path's layout */
    const float *dx;             /* (M, nbx): each block's scale */
    const int32_t *nc;           /* offsets times x's sums, in the path's layout */
    int64_t K, nb;               /* K = 32 nb */
    int64_t nbx;                 /* blocks a row of x holds: nb, or AVX2's nb padded to GROUP */
} acts;

typedef void (*rows_fn)(const acts *a, const uint8_t *q, const uint16_t *scale, float *out,
                        int64_t n0, int64_t n1, int64_t m0, int mt, int64_t N, int q4);

/* NAME(..., n0, n1, m0, mt, ..., q4): rows [n0, n1) of W against rows [m0, m0 + mt) of x, by
 * NAME_t (inlined) with a constant row count and format, so that its accumulators stay in
 * registers, no format test runs inside its loops and no call is made per row of W */
#define ROWS_LOOP(NAME, MT_, Q4_)                                                                  \
    for (int64_t n = n0; n < n1; n++) NAME##_t(a, q, scale, out, n, m0, MT_, N, Q4_)
#define DISPATCH(NAME, TARGET)                                                                     \
    __attribute__((target(TARGET))) void NAME(const acts *a, const uint8_t *q,                     \
        const uint16_t *scale, float *out, int64_t n0, int64_t n1, int64_t m0, int mt,             \
        int64_t N, int q4) {                                                                       \
        switch (q4 * MT + mt) {                                                                    \
        case 1: ROWS_LOOP(NAME, 1, 0); break;                                                      \
        case 2: ROWS_LOOP(NAME, 2, 0); break;                                                      \
        case 3: ROWS_LOOP(NAME, 3, 0); break;                                                      \
        case 4: ROWS_LOOP(NAME, 4, 0); break;                                                      \
        case MT + 1: ROWS_LOOP(NAME, 1, 1); break;                                                 \
        case MT + 2: ROWS_LOOP(NAME, 2, 1); break;                                                 \
        case MT + 3: ROWS_LOOP(NAME, 3, 1); break;                                                 \
        default: ROWS_LOOP(NAME, 4, 1);                                                            \
        }                                                                                          \
    }

#define GROUP 8   /* blocks whose sums quant_avx2.c's kernels gather into one vector */

#if defined(__x86_64__) && defined(__GNUC__)
/* quant_avx2.c: a row of its x holds quant_avx2_blocks(nb) blocks (nb padded to GROUP) of
 * quant_avx2_bytes(q4) bytes */
static inline int64_t quant_avx2_blocks(int64_t nb) { return (nb + GROUP - 1) / GROUP * GROUP; }
static inline int64_t quant_avx2_bytes(int q4) { return q4 ? QBLOCK : 2 * QBLOCK; }
/* quantize_rows_q8 in vectors, n blocks (the same bytes) */
void quantize_avx2(const float *x, int8_t *qx, float *dx, int32_t *nc, int64_t n);
/* x (M, K) quantized straight into AVX2's layout: qx (M, nbx, bytes), dx and nc (M, nbx) */
void quantize_layout_avx2(const float *x, int64_t M, int64_t nb, int q4, int8_t *qx, float *dx,
                          int32_t *nc);
void quant_rows_avx2(const acts *a, const uint8_t *q, const uint16_t *scale, float *out,
                     int64_t n0, int64_t n1, int64_t m0, int mt, int64_t N, int q4);
#endif

#endif
