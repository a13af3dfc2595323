/* decode_kernels.h: the body of decode.c's kernels, written once and compiled once per
 * instruction set. Not part of the C API; included only by decode.c, three times.
 *
 * Before each inclusion decode.c defines the vector vocabulary of one path: SUFFIX (pasted onto
 * every name here: rows_of_w_avx512), TARGET (the function attribute, empty for the portable
 * path), vec, VLEN, vloadu, vloadn (the first n < VLEN lanes, zeros beyond), vstoreu, vfma,
 * vzero, vset1, vadd, vsum, vsums (the sums of nb vectors, stored to nb floats), MB (rows of x
 * per block), NB_WIDE (rows of w per block when x has one or two rows), NB (when it has more)
 * and ROW_AT_A_TIME (1: one row of x takes rows_one_x instead of the blocks); this file
 * undefines them. A block keeps MB x NB vector accumulators, NB w vectors and one x vector in
 * registers:
 *   AVX-512 (32 zmm): MB 4 x NB 4 (4 x 4 + 4 + 1 = 21), or 1-2 x 8 when x has one or two rows
 *     (2 x 8 + 8 + 1 = 25): a pass then loads x once per eight FMAs (1.3x faster on cached
 *     weights, measured, one thread);
 *   AVX2+FMA (16 ymm): 2 x 4 (2 x 4 + 4 + 1 = 13); portable: one float per "vector", 2 x 4.
 * One row of x goes row by row on AVX2 and portable (measured faster on Zen 3, rows_one_x);
 * AVX-512 keeps its 1 x 8 block, measured on Zen 4/5, until rows_one_x is measured there.
 * Read decode.c first.
 */
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)

/* out[i][j] = x[i] . w[j] for i < mb, j < nb, rows of length K; x and out have row strides K
 * and N. mb and nb are constants at every call (always inlined), so the loops unroll and the
 * sums stay in registers. No software prefetch: the hardware's stream prefetcher follows the
 * rows (a prefetch of the next block's rows into L2 was measured 0.7x as fast on cached 864 x 288
 * weights and no faster from DRAM, one thread, A/B interleaved in one process). */
TARGET static inline __attribute__((always_inline)) void FN(block)(
    const float *restrict x, const float *restrict w, float *restrict out,
    int64_t N, int64_t K, const int mb, const int nb) {
    vec acc[MB][NB_WIDE];
    for (int i = 0; i < mb; i++)
        for (int j = 0; j < nb; j++) acc[i][j] = vzero();
    int64_t k = 0;
    for (; k + VLEN <= K; k += VLEN) {
        vec wv[NB_WIDE];
        for (int j = 0; j < nb; j++) wv[j] = vloadu(w + j * K + k);
        for (int i = 0; i < mb; i++) {
            vec xv = vloadu(x + i * K + k);
            for (int j = 0; j < nb; j++) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
        }
    }
    if (k < K) {                             /* the last K % VLEN: lanes past K load as zeros */
        int r = (int)(K - k);
        vec wv[NB_WIDE];
        for (int j = 0; j < nb; j++) wv[j] = vloadn(w + j * K + k, r);
        for (int i = 0; i < mb; i++) {
            vec xv = vloadn(x + i * K + k, r);
            for (int j = 0; j < nb; j++) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < mb; i++) vsums(acc[i], nb, out + i * N);
}

/* mb (<= MB) rows of x against nb rows of w: the (mb, nb) instantiation with constant sizes. */
TARGET static inline __attribute__((always_inline)) void FN(blocks)(
    const float *x, const float *w, float *out, int64_t N, int64_t K, int mb,
    int nb) {
    if (nb == NB_WIDE && mb <= 2) {
        if (mb == 1) FN(block)(x, w, out, N, K, 1, NB_WIDE);
        else FN(block)(x, w, out, N, K, 2, NB_WIDE);
    } else if (nb == NB_WIDE) {               /* mb 3 or 4 (AVX-512 only): NB rows at a time */
        for (int j = 0; j < NB_WIDE; j += NB) {
#if MB > 2
            if (mb == 3) FN(block)(x, w + j * K, out + j, N, K, 3, NB);
            else FN(block)(x, w + j * K, out + j, N, K, MB, NB);
#endif
        }
    } else {                                   /* the last rows of w, one at a time */
        for (int j = 0; j < nb; j++) {
            const float *wj = w + j * K;
            switch (mb) {
                case 1: FN(block)(x, wj, out + j, N, K, 1, 1); break;
#if MB > 2
                case 3: FN(block)(x, wj, out + j, N, K, 3, 1); break;
                case 4: FN(block)(x, wj, out + j, N, K, 4, 1); break;
#endif
                default: FN(block)(x, wj, out + j, N, K, 2, 1); break;
            }
        }
    }
}

#if ROW_AT_A_TIME
/* x (K,) . w (K,) as a vector of partial sums: four accumulators, so that an FMA's latency is
 * never what a pass waits for. */
TARGET static inline __attribute__((always_inline)) vec FN(row_dot)(
    const float *restrict x, const float *restrict w, int64_t K) {
    vec a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
    int64_t k = 0;
    for (; k + 4 * VLEN <= K; k += 4 * VLEN) {
        a0 = vfma(vloadu(x + k), vloadu(w + k), a0);
        a1 = vfma(vloadu(x + k + VLEN), vloadu(w + k + VLEN), a1);
        a2 = vfma(vloadu(x + k + 2 * VLEN), vloadu(w + k + 2 * VLEN), a2);
        a3 = vfma(vloadu(x + k + 3 * VLEN), vloadu(w + k + 3 * VLEN), a3);
    }
    for (; k + VLEN <= K; k += VLEN) a0 = vfma(vloadu(x + k), vloadu(w + k), a0);
    if (k < K) a1 = vfma(vloadn(x + k, (int)(K - k)), vloadn(w + k, (int)(K - k)), a1);
    return vadd(vadd(a0, a1), vadd(a2, a3));
}

/* Rows [n0, n1) of w against the one row of x, each row of w whole before the next: the weights
 * are read in address order, one stream that the hardware prefetchers follow across rows. The
 * blocks below read NB_WIDE rows side by side, NB_WIDE streams of K floats each, which ran at
 * 0.7x this on 32000 x 288 weights from DRAM and at 0.45x on cached 864 x 288 ones (AVX2, one
 * thread, Zen 3). Eight rows' sums are reduced together. */
TARGET static void FN(rows_one_x)(const float *x, const float *w, float *out, int64_t K,
                                  int64_t n0, int64_t n1) {
    int64_t n = n0;
    for (; n + 8 <= n1; n += 8) {
        vec acc[8];
        for (int j = 0; j < 8; j++) acc[j] = FN(row_dot)(x, w + (n + j) * K, K);
        vsums(acc, 8, out + n);
    }
    for (; n < n1; n++) out[n] = vsum(FN(row_dot)(x, w + n * K, K));
}
#endif

/* Rows [n0, n1) of w against every row of x, NB_WIDE rows of w at a time: each row of w is read
 * from memory once for all M rows of x (which stay in L1/L2). One row of x goes row by row
 * where the path says so (ROW_AT_A_TIME). */
TARGET static void FN(rows_of_w)(const float *x, const float *w, float *out, int64_t M,
                                 int64_t N, int64_t K, int64_t n0, int64_t n1) {
#if ROW_AT_A_TIME
    if (M == 1) {
        FN(rows_one_x)(x, w, out, K, n0, n1);
        return;
    }
#endif
    for (int64_t n = n0; n < n1; n += NB_WIDE) {
        int nb = n1 - n < NB_WIDE ? (int)(n1 - n) : NB_WIDE;
        const float *wn = w + n * K;
        for (int64_t m = 0; m < M; m += MB) {
            int mb = M - m < MB ? (int)(M - m) : MB;
            FN(blocks)(x + m * K, wn, out + m * N + n, N, K, mb, nb);
        }
    }
}

/* One query row q (hs,) over keys and values k, v (n, hs): out (hs,) = softmax(q k^T scale) v.
 * The cache is streamed once: a chunk's scores, then its values weighted by exp(s - m), with the
 * running max m and sum l of the online softmax carried across chunks. */
TARGET static void FN(decode_row)(const float *restrict q, const float *restrict k,
                                  const float *restrict v, float *restrict out, int64_t n,
                                  int64_t hs, float scale) {
    float s[DECODE_CHUNK], m = -INFINITY, l = 0.0f;
    for (int64_t d = 0; d < hs; d++) out[d] = 0.0f;
    for (int64_t j0 = 0; j0 < n; j0 += DECODE_CHUNK) {
        int64_t nj = n - j0 < DECODE_CHUNK ? n - j0 : DECODE_CHUNK;
        float chunk_max = -INFINITY;
        for (int64_t j = 0; j < nj; j++) {                         // s_j = q . k_j * scale
            const float *kj = k + (j0 + j) * hs;
            vec acc = vzero();
            int64_t d = 0;
            for (; d + VLEN <= hs; d += VLEN) acc = vfma(vloadu(q + d), vloadu(kj + d), acc);
            float dot = vsum(acc);
            for (; d < hs; d++) dot += q[d] * kj[d];
            s[j] = dot * scale;
            chunk_max = s[j] > chunk_max ? s[j] : chunk_max;
        }
        float m_new = fmaxf(m, chunk_max), correction = expf(m - m_new), sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < nj; j++) {
            s[j] = exp_nonpositive(s[j] - m_new);
            sum += s[j];
        }
        l = l * correction + sum;
        m = m_new;
        for (int64_t d = 0; d < hs; d++) out[d] *= correction;
        for (int64_t j = 0; j < nj; j++) {                         // out += p_j v_j
            const float *vj = v + (j0 + j) * hs;
            vec p = vset1(s[j]);
            int64_t d = 0;
            for (; d + VLEN <= hs; d += VLEN)
                vstoreu(out + d, vfma(p, vloadu(vj + d), vloadu(out + d)));
            for (; d < hs; d++) out[d] = fmaf(s[j], vj[d], out[d]);
        }
    }
    float inv = 1.0f / l;
    for (int64_t d = 0; d < hs; d++) out[d] *= inv;
}

/* The pool's tasks (pool.c): chunk i of a gemv (a run of whole blocks of w's rows) and of an
 * attention_decode (a run of (batch, head, query) rows). */
TARGET static void FN(gemv_chunk)(void *ctx, int64_t i) {
    const GemvWork *g = ctx;
    int64_t n0 = i * g->rows, n1 = n0 + g->rows < g->N ? n0 + g->rows : g->N;
    FN(rows_of_w)(g->x, g->w, g->out, g->M, g->N, g->K, n0, n1);
}

TARGET static void FN(decode_chunk)(void *ctx, int64_t i) {
    const DecodeWork *a = ctx;
    for (int64_t r = i * a->rows; r < (i + 1) * a->rows && r < a->B * a->nh * a->Tq; r++) {
        int64_t bh = r / a->Tq, qi = r % a->Tq;
        int64_t visible = a->Tk - a->Tq + qi + 1;                 // query qi sits at Tk - Tq + qi
        FN(decode_row)(a->q + r * a->hs, a->k + bh * a->Tmax * a->hs,
                       a->v + bh * a->Tmax * a->hs, a->out + r * a->hs, visible, a->hs, a->scale);
    }
}

/* the vocabulary ends with this path: the next inclusion defines its own */
#undef FN
#undef SUFFIX
#undef TARGET
#undef vec
#undef VLEN
#undef MB
#undef NB
#undef NB_WIDE
#undef ROW_AT_A_TIME
#undef vadd
#undef vloadu
#undef vstoreu
#undef vfma
#undef vzero
#undef vset1
#undef vsum
#undef vsums
#undef vloadn
