/* attention.c: fused causal self-attention on the CPU, FlashAttention-2 style.
 *
 * The maths is numpy_kernels.attention_forward / attention_backward; this file
 * does the same tile by tile with OpenMP. A query tile walks the key tiles up
 * to the diagonal keeping a running max m, a running sum l and the output
 * accumulator (the output rows themselves), so no (Tq, Tk) matrix ever exists:
 * the extra memory is a few TILE x TILE blocks on each thread's stack.
 * The backward rebuilds P = exp(S - lse) from the saved log-sum-exp.
 *
 * attention_forward_bf16 / attention_backward_bf16 are the same kernels with every tile
 * product in mixed precision (numpy_kernels.attention_forward_bf16 defines them): operands
 * rounded to bfloat16, float32 sums, by bf16.h's GEMMs (AMX tiles, else vdpbf16ps). The
 * softmax (scores scaled, running max and sum, lse, D) stays float32. On a CPU without either
 * they are the float32
 * kernels, unrounded: rounding there buys no speed and cost 1.2x the time (bf16_precision).
 *
 * Not here: the KV cache (generate.py keeps it), attention of a decoding step's few queries
 * against it (decode.c), and the matmul of the projections (matmul.c). Read softmax.c for the plain
 * row-wise softmax, and tests/test_c_kernels.py for how this is checked.
 */
#include <math.h>
#include <string.h>

#include "attention_tiles.h"
#include "bf16.h"
#include "fastmath.h"
#include "parallel.h"
#include "tinyllm.h"

/* How the tile products multiply: float32, or bf16 on vdpbf16ps (bf16_gemm_acc) or on AMX
 * tiles (amx_gemm_acc). */
enum { FP32, BF16_AVX512, BF16_AMX };

/* Where an array's heads sit, in floats: row t of head (b, h) starts at
 * b * batch + h * head + t * row. (B, nh, T, hs) arrays: {nh * T * hs, T * hs, hs}; q, k and v
 * read in place from the fused projection's qkv (B, T, 3C): {T * 3C, hs, 3C}. */
typedef struct { int64_t batch, head, row; } Layout;

static Layout heads_layout(int64_t nh, int64_t T, int64_t hs) {
    return (Layout){nh * T * hs, T * hs, hs};
}

static Layout rows_layout(int64_t T, int64_t width, int64_t hs) {
    return (Layout){T * width, hs, width};
}

/* One (batch, head): its slices of every array, and the sizes they share. */
typedef struct {
    const float *q, *dout, *out, *lse;            // (Tq, hs), (Tq, hs), (Tq, hs), (Tq,)
    const float *k, *v;                           // (Tk, hs) each
    float *dq, *dk, *dv;                          // (Tq, hs), (Tk, hs), (Tk, hs)
    Layout lq, lk, lo;                            // q, dq; k, v, dk, dv; out, dout
    int64_t nh, Tq, Tk, hs;
    float scale;
    int precision;
} Head;

/* Every head at once (the arrays' starts): what head_at slices, in the (B, nh, T, hs) layout
 * (qkv_heads changes it). The forward has no gradients: dout, dq, dk, dv NULL. */
static Head all_heads(const float *q, const float *k, const float *v, const float *dout,
                      const float *out, const float *lse, float *dq, float *dk, float *dv,
                      int64_t nh, int64_t Tq, int64_t Tk, int64_t hs) {
    Head h = {.q = q, .dout = dout, .out = out, .lse = lse, .k = k, .v = v,
              .dq = dq, .dk = dk, .dv = dv, .lq = heads_layout(nh, Tq, hs),
              .lk = heads_layout(nh, Tk, hs), .lo = heads_layout(nh, Tq, hs),
              .nh = nh, .Tq = Tq, .Tk = Tk, .hs = hs,
              .scale = 1.0f / sqrtf((float)hs), .precision = FP32};
    return h;
}

/* The offset of head bh = b * nh + h in an array of layout l. */
static int64_t head_offset(Layout l, int64_t nh, int64_t bh) {
    return bh / nh * l.batch + bh % nh * l.head;
}

static Head head_at(const Head *all, int64_t bh) {
    Head h = *all;
    int64_t at_q = head_offset(h.lq, h.nh, bh), at_k = head_offset(h.lk, h.nh, bh);
    int64_t at_o = head_offset(h.lo, h.nh, bh);
    h.q += at_q, h.out += at_o, h.lse += bh * h.Tq, h.k += at_k, h.v += at_k;
    if (h.dout)   // NULL stays NULL (offsetting it would be undefined)
        h.dout += at_o, h.dq += at_q, h.dk += at_k, h.dv += at_k;
    return h;
}

/* n rows of hs floats, ld apart, set to 0. */
static void zero_rows(float *x, int64_t n, int64_t ld, int64_t hs) {
    for (int64_t i = 0; i < n; i++) memset(x + i * ld, 0, (size_t)hs * sizeof(float));
}

/* How many keys of the tile starting at k0 (nk keys) query row `pos` sees:
 * key k0 + j is visible when k0 + j <= pos. Between 0 and nk. */
static int64_t visible_keys(int64_t pos, int64_t k0, int64_t nk) {
    int64_t n = pos - k0 + 1;
    return n < 0 ? 0 : min64(n, nk);
}

/* The tile products in the head's precision: s (na, TILE) = a (na, hs) @ b (nb, hs)^T, rows
 * lda and ldb apart, as tile_scores; c (M, N) += a (M, K) @ b (K, N), as gemm_acc. */
static void scores(const Head *h, const float *a, int64_t lda, int64_t na, const float *b,
                   int64_t ldb, int64_t nb, Block s) {
    if (h->precision == FP32) {
        tile_scores(a, lda, na, b, ldb, nb, h->hs, s);
        return;
    }
    for (int64_t i = 0; i < na; i++) memset(s[i], 0, sizeof(s[i]));
    if (h->precision == BF16_AMX)
        amx_gemm_acc(a, lda, 1, b, 1, ldb, &s[0][0], TILE, na, nb, h->hs);
    else
        bf16_gemm_acc(a, lda, 1, b, 1, ldb, &s[0][0], TILE, na, nb, h->hs);
}

static void product(const Head *h, const float *a, int64_t a_rs, int64_t a_cs, const float *b,
                    int64_t ldb, float *c, int64_t ldc, int64_t M, int64_t N, int64_t K) {
    if (h->precision == BF16_AMX)
        amx_gemm_acc(a, a_rs, a_cs, b, ldb, 1, c, ldc, M, N, K);
    else if (h->precision == BF16_AVX512)
        bf16_gemm_acc(a, a_rs, a_cs, b, ldb, 1, c, ldc, M, N, K);
    else
        gemm_acc(a, a_rs, a_cs, b, ldb, c, ldc, M, N, K);
}

/* s[j] = exp(s[j] * scale - shift) for the n visible keys, 0 for the masked ones up to nk
 * (exp(-inf)); returns the sum of the first n. A softmax row of a tile pair: on 16 lanes with
 * AVX-512, where GCC's own vectors are 8 wide on Intel. */
static float exp_row(float *s, int64_t n, int64_t nk, float scale, float shift) {
#ifdef __AVX512F__
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < nk; j += 16) {
        __mmask16 all = lanes16(nk - j), visible = j < n ? lanes16(n - j) : 0;
        __m512 x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(visible, s + j), _mm512_set1_ps(scale),
                                   _mm512_set1_ps(-shift));
        __m512 e = _mm512_maskz_mov_ps(visible, exp_nonpositive16(x));
        _mm512_mask_storeu_ps(s + j, all, e);
        sum = _mm512_add_ps(sum, e);
    }
    return _mm512_reduce_add_ps(sum);
#else
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) {
        s[j] = exp_nonpositive(fmaf(s[j], scale, -shift));
        sum += s[j];
    }
    for (int64_t j = n; j < nk; j++) s[j] = 0.0f;
    return sum;
#endif
}

/* ---------------------------------------------------------------------------
 * forward: one query tile [q0, q0 + nq) of one head */

/* out and lse are the head's (Tq, hs) and (Tq,) outputs, out's rows h->lo.row apart. */
static void forward_query_tile(const Head *h, float *out, float *lse, int64_t q0, int64_t nq) {
    const int64_t hs = h->hs, offset = h->Tk - h->Tq, ldq = h->lq.row, ldk = h->lk.row;
    const int64_t ldo = h->lo.row;
    out += q0 * ldo;                                               // (nq, hs) the accumulator
    Block s;                                                       // (nq, nk) scores, then p
    float m[TILE], l[TILE];                                        // running max, running sum
    for (int64_t i = 0; i < nq; i++) m[i] = -INFINITY, l[i] = 0.0f;
    zero_rows(out, nq, ldo, hs);
    int64_t k_end = offset + q0 + nq;                              // the last query sees k < k_end
    for (int64_t k0 = 0; k0 < k_end; k0 += TILE) {
        int64_t nk = min64(TILE, k_end - k0);
        scores(h, h->q + q0 * ldq, ldq, nq, h->k + k0 * ldk, ldk, nk, s);
        for (int64_t i = 0; i < nq; i++) {
            int64_t n = visible_keys(offset + q0 + i, k0, nk);
            float *si = s[i], row_max = -INFINITY;
#pragma omp simd reduction(max : row_max)
            for (int64_t j = 0; j < n; j++) row_max = si[j] > row_max ? si[j] : row_max;
            // finite from the first key tile on: key 0 is visible to every query
            float m_new = fmaxf(m[i], row_max * h->scale);
            float correction = expf(m[i] - m_new);                // rescales what was summed
            l[i] = l[i] * correction + exp_row(si, n, nk, h->scale, m_new);   // l sums p unrounded
            m[i] = m_new;
            if (correction != 1.0f)
                for (int64_t d = 0; d < hs; d++) out[i * ldo + d] *= correction;
        }
        product(h, &s[0][0], TILE, 1, h->v + k0 * ldk, ldk, out, ldo, nq, hs, nk);   // acc += p v
    }
    for (int64_t i = 0; i < nq; i++) {
        float inv = 1.0f / l[i];
        for (int64_t d = 0; d < hs; d++) out[i * ldo + d] *= inv;
        lse[q0 + i] = m[i] + logf(l[i]);
    }
}

static void forward(const Head *all, float *out, float *lse, int64_t BH) {
    int64_t Tq = all->Tq, n_qt = (Tq + TILE - 1) / TILE;
    // query tiles near the end see more keys: handed out longest first, on demand
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int64_t bh = 0; bh < BH; bh++) {
        for (int64_t qt = 0; qt < n_qt; qt++) {
            Head h = head_at(all, bh);
            int64_t q0 = (n_qt - 1 - qt) * TILE;                   // the longest rows first
            forward_query_tile(&h, out + head_offset(all->lo, all->nh, bh), lse + bh * Tq, q0,
                               min64(TILE, Tq - q0));
        }
    }
}

void attention_forward(const float *q, const float *k, const float *v, float *out, float *lse,
                       int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t hs) {
    Head all = all_heads(q, k, v, NULL, out, lse, NULL, NULL, NULL, nh, Tq, Tk, hs);
    forward(&all, out, lse, B * nh);
}

/* ---------------------------------------------------------------------------
 * backward: FlashAttention-2's, per tile pair, in one of two race-free orders */

/* D[i] = rowsum(dout * out) = p . dp of the query tile's rows [q0, q0 + nq): the softmax
 * backward's shift, one per query row, computed once a query tile rather than once a pair. */
static void row_dots(const Head *h, int64_t q0, int64_t nq, float *D) {
    for (int64_t i = 0; i < nq; i++) {
        const float *o = h->out + (q0 + i) * h->lo.row, *g = h->dout + (q0 + i) * h->lo.row;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t d = 0; d < h->hs; d++) sum += g[d] * o[d];
        D[i] = sum;
    }
}

/* The gradient contributions of query tile [q0, q0 + nq) x key tile [k0, k0 + nk), D its
 * row_dots: into dq when with_dq, into dk and dv when with_dkdv. */
static void backward_tile_pair(const Head *h, int64_t q0, int64_t nq, int64_t k0, int64_t nk,
                               const float *D, int with_dq, int with_dkdv) {
    const int64_t hs = h->hs, offset = h->Tk - h->Tq, ldq = h->lq.row, ldk = h->lk.row;
    const int64_t ldo = h->lo.row;
    const float *q = h->q + q0 * ldq, *dout = h->dout + q0 * ldo; // (nq, hs)
    const float *k = h->k + k0 * ldk, *v = h->v + k0 * ldk;        // (nk, hs)
    Block p, ds;                                                   // (nq, nk) each
    scores(h, q, ldq, nq, k, ldk, nk, p);
    for (int64_t i = 0; i < nq; i++) {                             // forward: p = exp(s - m) / l
        int64_t n = visible_keys(offset + q0 + i, k0, nk);
        exp_row(p[i], n, nk, h->scale, h->lse[q0 + i]);
    }
    scores(h, dout, ldo, nq, v, ldk, nk, ds);                      // dp = dout v^T
    for (int64_t i = 0; i < nq; i++)                               // forward: p = softmax(s)
#pragma omp simd
        for (int64_t j = 0; j < nk; j++) ds[i][j] = p[i][j] * (ds[i][j] - D[i]) * h->scale;
    if (with_dkdv)                                                 // forward: out = p v
        product(h, &p[0][0], 1, TILE, dout, ldo, h->dv + k0 * ldk, ldk, nk, hs, nq);  // dv += p^T dout
    if (with_dq)                                                   // s = q k^T: dq += ds k
        product(h, &ds[0][0], TILE, 1, k, ldk, h->dq + q0 * ldq, ldq, nq, hs, nk);
    if (with_dkdv)                                                 //            dk += ds^T q
        product(h, &ds[0][0], 1, TILE, q, ldq, h->dk + k0 * ldk, ldk, nk, hs, nq);
}

/* Query tiles that see key tile [k0, ...) start at the tile of query k0 - offset. */
static int64_t first_query_tile(const Head *h, int64_t k0) {
    int64_t i = k0 - (h->Tk - h->Tq);
    return i > 0 ? i / TILE : 0;
}

/* dk and dv of key tile kt alone. */
static void backward_key_tile(const Head *h, int64_t kt) {
    int64_t k0 = kt * TILE, nk = min64(TILE, h->Tk - k0);
    float D[TILE];
    zero_rows(h->dk + k0 * h->lk.row, nk, h->lk.row, h->hs);
    zero_rows(h->dv + k0 * h->lk.row, nk, h->lk.row, h->hs);
    for (int64_t q0 = first_query_tile(h, k0) * TILE; q0 < h->Tq; q0 += TILE) {
        int64_t nq = min64(TILE, h->Tq - q0);
        row_dots(h, q0, nq, D);
        backward_tile_pair(h, q0, nq, k0, nk, D, 0, 1);
    }
}

/* dq of query tile qt, and its share of dk and dv as well when with_dkdv (the caller owns the
 * whole head and has zeroed them). */
static void backward_query_tile(const Head *h, int64_t qt, int with_dkdv) {
    int64_t q0 = qt * TILE, nq = min64(TILE, h->Tq - q0);
    int64_t k_end = h->Tk - h->Tq + q0 + nq;                      // as in forward_query_tile
    float D[TILE];
    zero_rows(h->dq + q0 * h->lq.row, nq, h->lq.row, h->hs);
    row_dots(h, q0, nq, D);
    for (int64_t k0 = 0; k0 < k_end; k0 += TILE)
        backward_tile_pair(h, q0, nq, k0, min64(TILE, k_end - k0), D, 1, with_dkdv);
}

/* Race-free parallelism. dq sums over key tiles and dk, dv over query tiles, so
 * no single split of the tile pairs lets threads write disjoint rows of all three.
 *  - B*nh >= threads: a thread owns whole heads and does every tile pair once, query tile
 *    by query tile (5 tile matmuls per pair).
 *  - fewer heads than threads (small batch, decoding): two passes, one parallel
 *    over (head, key tile) for dk and dv, one over (head, query tile) for dq;
 *    the second recomputes the scores and dp (7 tile matmuls per pair), which
 *    beats leaving threads idle. */
static void backward(const Head *all, int64_t BH) {
    int64_t Tq = all->Tq, n_qt = (Tq + TILE - 1) / TILE, n_kt = (all->Tk + TILE - 1) / TILE;
    if (BH >= num_threads()) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < BH; bh++) {
            Head h = head_at(all, bh);
            zero_rows(h.dk, h.Tk, h.lk.row, h.hs);
            zero_rows(h.dv, h.Tk, h.lk.row, h.hs);
            for (int64_t qt = 0; qt < n_qt; qt++) backward_query_tile(&h, qt, 1);
        }
        return;
    }
#pragma omp parallel
    {
        // Work is handed out on demand, the longest tiles first (early key tiles
        // see the most queries, late query tiles the most keys). The passes
        // write different arrays (dk, dv / dq), so no barrier between them.
#pragma omp for collapse(2) schedule(dynamic, 1) nowait
        for (int64_t bh = 0; bh < BH; bh++)
            for (int64_t kt = 0; kt < n_kt; kt++) {
                Head h = head_at(all, bh);
                backward_key_tile(&h, kt);
            }
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int64_t bh = 0; bh < BH; bh++)
            for (int64_t qt = 0; qt < n_qt; qt++) {
                Head h = head_at(all, bh);
                backward_query_tile(&h, n_qt - 1 - qt, 0);
            }
    }
}

void attention_backward(const float *dout, const float *q, const float *k, const float *v,
                        const float *out, const float *lse, float *dq, float *dk, float *dv,
                        int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t hs) {
    Head all = all_heads(q, k, v, dout, out, lse, dq, dk, dv, nh, Tq, Tk, hs);
    backward(&all, B * nh);
}

/* ---------------------------------------------------------------------------
 * mixed precision: the same kernels, their tile products in bf16 */

/* The precision `path` (matmul_bf16's argument) runs at on this CPU. Without vdpbf16ps the
 * float32 kernels run, unrounded: rounding q, k, v, dout (copies), p and ds there bought no
 * speed and made the kernels 1.2x slower than float32 (Zen 3, BENCHMARKS.md); matmul_bf16's
 * fp32 path still rounds, as it packs, where that costs nothing. On the AMX path the tiles
 * multiply (amx_gemm_acc), not vdpbf16ps: the Intel cores that have AMX issue vdpbf16ps at half
 * their float32 FMA rate (cpu.c's peak loops: 240 against 481 GFLOP/s on 2 threads), and its
 * tiles took 1.1-1.2x float32's time there, where the AMX tiles take 0.48-0.70x (BENCHMARKS.md,
 * the bench preset's heads and T = 2048). */
static int bf16_precision(int path) {
    int features = cpu_features();
    if (path == CPU_AMX_BF16 && (features & CPU_AMX_BF16)) return BF16_AMX;
    return path && (features & CPU_AVX512_BF16) ? BF16_AVX512 : FP32;
}

void attention_forward_bf16(const float *q, const float *k, const float *v, float *out,
                            float *lse, int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t hs,
                            int path) {
    Head all = all_heads(q, k, v, NULL, out, lse, NULL, NULL, NULL, nh, Tq, Tk, hs);
    all.precision = bf16_precision(path);
    forward(&all, out, lse, B * nh);
}

void attention_backward_bf16(const float *dout, const float *q, const float *k, const float *v,
                             const float *out, const float *lse, float *dq, float *dk, float *dv,
                             int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t hs, int path) {
    Head all = all_heads(q, k, v, dout, out, lse, dq, dk, dv, nh, Tq, Tk, hs);
    all.precision = bf16_precision(path);
    backward(&all, B * nh);
}

/* ---------------------------------------------------------------------------
 * the fused projection's layout: q, k and v read in place from qkv, no head copies */

/* qkv (B, T, 3C) holds q, k, v side by side in each row, head h at columns h * hs of each;
 * out and dout are (B, T, C) and dqkv (B, T, 3C) the same way: split_heads' layouts, unsplit. */
static Head qkv_heads(const float *qkv, const float *dout, const float *out, const float *lse,
                      float *dqkv, int64_t nh, int64_t T, int64_t hs, int path) {
    int64_t C = nh * hs;
    float *dk = dqkv ? dqkv + C : NULL, *dv = dqkv ? dqkv + 2 * C : NULL;
    Head all = all_heads(qkv, qkv + C, qkv + 2 * C, dout, out, lse, dqkv, dk, dv, nh, T, T, hs);
    all.lq = all.lk = rows_layout(T, 3 * C, hs);
    all.lo = rows_layout(T, C, hs);
    all.precision = bf16_precision(path);
    return all;
}

void attention_qkv_forward(const float *qkv, float *out, float *lse, int64_t B, int64_t T,
                           int64_t nh, int64_t hs, int path) {
    Head all = qkv_heads(qkv, NULL, out, lse, NULL, nh, T, hs, path);
    forward(&all, out, lse, B * nh);
}

void attention_qkv_backward(const float *dout, const float *qkv, const float *out,
                            const float *lse, float *dqkv, int64_t B, int64_t T, int64_t nh,
                            int64_t hs, int path) {
    Head all = qkv_heads(qkv, dout, out, lse, dqkv, nh, T, hs, path);
    backward(&all, B * nh);
}
