/* amx.h: Intel AMX tiles, as matmul_amx.c and cpu.c's peak loop use them, or their emulation.
 * Not part of the C API (tinyllm.h).
 *
 * AMX adds eight tile registers tmm0-7 of up to 16 rows x 64 bytes, shaped by a 64-byte
 * configuration (palette 1: bytes 16-47 hold each tile's bytes per row, bytes 48-63 its rows),
 * and TDPBF16PS c, a, b: for every row m of c and float32 column n,
 *   c[m][n] += sum over k of a[m][2k] * b[k][2n] + a[m][2k + 1] * b[k][2n + 1]   (k < a's words)
 * with a and b holding bfloat16 pairs: a row of a is 32 bf16 values along K, a row of b is one
 * pair of K steps for 16 columns (the "VNNI" layout). Both products are exact in float32; the sums
 * round to nearest even, bf16 subnormal inputs count as zero and float32 subnormal results are
 * flushed to zero (Intel SDM, TDPBF16PS: "DAZ, FTZ, RNE").
 *
 * Built with -DTINYLLM_AMX_EMU, the same names run that definition in plain C on thread-local
 * tiles, on any CPU: tests/test_c_matmul_amx.py builds the library so and checks matmul_amx.c
 * against NumPy on a machine without AMX; on one with AMX the same tests run the hardware.
 * (The emulation follows the SDM's pseudo-code; it was not checked against a real tile unit.)
 */
#ifndef TINYLLM_AMX_H
#define TINYLLM_AMX_H
#include <stdint.h>
#include <string.h>

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];   /* bytes per row of tile t */
    uint8_t rows[16];     /* rows of tile t */
} tile_config;

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>           /* first, so the emulation's names below replace its own */
#endif
#if defined(TINYLLM_AMX_EMU) || (defined(__x86_64__) && defined(__GNUC__))
#define AMX_BUILT 1              /* the tile code is compiled: real, or emulated below */
#endif
#ifndef TINYLLM_AMX_EMU
#define TARGET_AMX __attribute__((target("amx-tile,amx-bf16")))
#else
#define TARGET_AMX
typedef struct {
    int rows, colsb;
    uint8_t data[16][64];
} emu_tile;
static _Thread_local emu_tile emu_tmm[8];

static inline void emu_loadconfig(const tile_config *cfg) {
    for (int t = 0; t < 8; t++) {
        emu_tmm[t].rows = cfg->rows[t];
        emu_tmm[t].colsb = cfg->colsb[t];
        memset(emu_tmm[t].data, 0, sizeof emu_tmm[t].data);
    }
}

static inline void emu_loadd(int t, const void *base, int64_t stride) {
    emu_tile *x = &emu_tmm[t];
    memset(x->data, 0, sizeof x->data);
    for (int r = 0; r < x->rows; r++) memcpy(x->data[r], (const char *)base + r * stride, x->colsb);
}

static inline void emu_stored(int t, void *base, int64_t stride) {
    const emu_tile *x = &emu_tmm[t];
    for (int r = 0; r < x->rows; r++) memcpy((char *)base + r * stride, x->data[r], x->colsb);
}

static inline float emu_bf16(const uint8_t *p) {   /* DAZ: a subnormal bf16 counts as zero */
    uint32_t u = (uint32_t)(p[0] | p[1] << 8) << 16;
    if ((u & 0x7F800000u) == 0) u &= 0x80000000u;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float emu_ftz(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7F800000u) == 0) u &= 0x80000000u;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The SDM's order: per row, the even and the odd products of the pairs summed apart (fused
 * multiply-adds over k, exact products), then their sum added to c. */
static inline void emu_dpbf16ps(int tc, int ta, int tb) {
    emu_tile *c = &emu_tmm[tc];
    const emu_tile *a = &emu_tmm[ta], *b = &emu_tmm[tb];
    for (int m = 0; m < c->rows; m++)
        for (int n = 0; n < c->colsb / 4; n++) {
            float even = 0.0f, odd = 0.0f, acc;
            for (int k = 0; k < a->colsb / 4; k++) {
                even = emu_ftz(even + emu_bf16(a->data[m] + 4 * k) * emu_bf16(b->data[k] + 4 * n));
                odd = emu_ftz(odd + emu_bf16(a->data[m] + 4 * k + 2) * emu_bf16(b->data[k] + 4 * n + 2));
            }
            memcpy(&acc, c->data[m] + 4 * n, sizeof acc);
            acc = emu_ftz(acc + emu_ftz(even + odd));
            memcpy(c->data[m] + 4 * n, &acc, sizeof acc);
        }
}

#undef _tile_zero
#undef _tile_loadd
#undef _tile_stored
#undef _tile_dpbf16ps
#define _tile_loadconfig(cfg) emu_loadconfig((const tile_config *)(cfg))
#define _tile_release() ((void)0)
#define _tile_zero(t) memset(emu_tmm[t].data, 0, sizeof emu_tmm[t].data)
#define _tile_loadd(t, base, stride) emu_loadd(t, base, stride)
#define _tile_stored(t, base, stride) emu_stored(t, base, stride)
#define _tile_dpbf16ps(c, a, b) emu_dpbf16ps(c, a, b)
#endif

/* matmul_amx.c: matmul_bf16's AMX path (the same arguments; matmul_bf16 calls it only where
 * cpu_features() has CPU_AMX_BF16, which the emulated build always reports) */
void matmul_amx(const float *a, const float *b, float *out, int64_t batch, int64_t M, int64_t N,
                int64_t K, int transpose_a, int transpose_b);
#endif
