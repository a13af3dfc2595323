/* decode_kernels.h: the body of decode.c's kernels, written once and compiled once per
 * instruction set. Not part of the C API; included only by decode.c, three times.
 *
 * Before each inclusion decode.c defines the vector vocabulary of one path: SUFFIX (pasted onto
 * every name here: rows_of_w_avx512), TARGET (the function attribute, empty for the portable
 * path), vec, VLEN, vloadu, vloadn (the first n < VLEN lanes, zeros beyond), vstoreu, vfma,
 * vzero, vset1, vsum, vsums (the sums of nb vectors, stored to nb floats), MB (rows of x per
 * block), NB_WIDE (rows of w per block when x has one or two rows) and NB (when it has more);
 * this file undefines them. A block keeps MB x NB vector accumulators, NB w vectors and one x
 * vector in registers:
 *   AVX-512 (32 zmm): MB 4 x NB 4 (4 x 4 + 4 + 1 = 21), or 1-2 x 8 when x has one or two rows
 *     (2 x 8 + 8 + 1 = 25): a pass then loads x once per eight FMAs (1.3x faster on cached
 *     weights, measured, one thread);
 *   AVX2+FMA (16 ymm): 2 x 4 (2 x 4 + 4 + 1 = 13); portable: one float per "vector", 2 x 4.
 * A block's rows of w are one from each of NB_WIDE parts of a chunk (rows_of_w says why).
 * Read decode.c first.
 */
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)

/* out[i][j * ws] = x[i] . w[j * ws] for i < mb, j < nb, rows of length K: a block's rows of w
 * (and its outputs) lie ws rows apart; x and out have row strides K and N. mb and nb are
 * constants at every call (always inlined), so the loops unroll and the sums stay in registers.
 * No software prefetch: the hardware's stream prefetcher follows the rows (a prefetch of the next
 * block's rows into L2 was measured 0.7x as fast on cached 864 x 288 weights and no faster from
 * DRAM, one thread, A/B interleaved in one process; on an Intel Xeon, two threads, a prefetch
 * 256 to 2048 floats ahead in every stream, into L2 or L3, was no faster from DRAM either). */
TARGET static inline __attribute__((always_inline)) void FN(block)(
    const float *restrict x, const float *restrict w, float *restrict out,
    int64_t N, int64_t K, int64_t ws, const int mb, const int nb) {
    vec acc[MB][NB_WIDE];
    for (int i = 0; i < mb; i++)
        for (int j = 0; j < nb; j++) acc[i][j] = vzero();
    int64_t k = 0, wstep = ws * K;
    for (; k + VLEN <= K; k += VLEN) {
        vec wv[NB_WIDE];
        for (int j = 0; j < nb; j++) wv[j] = vloadu(w + j * wstep + k);
        for (int i = 0; i < mb; i++) {
            vec xv = vloadu(x + i * K + k);
            for (int j = 0; j < nb; j++) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
        }
    }
    if (k < K) {                             /* the last K % VLEN: lanes past K load as zeros */
        int r = (int)(K - k);
        vec wv[NB_WIDE];
        for (int j = 0; j < nb; j++) wv[j] = vloadn(w + j * wstep + k, r);
        for (int i = 0; i < mb; i++) {
            vec xv = vloadn(x + i * K + k, r);
            for (int j = 0; j < nb; j++) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < mb; i++) {
        float sums[NB_WIDE];
        vsums(acc[i], nb, sums);
        for (int j = 0; j < nb; j++) out[i * N + j * ws] = sums[j];
    }
}

/* mb (<= MB) rows of x against nb rows of w ws rows apart: the (mb, nb) instantiation with
 * constant sizes. */
TARGET static inline __attribute__((always_inline)) void FN(blocks)(
    const float *x, const float *w, float *out, int64_t N, int64_t K, int64_t ws, int mb,
    int nb) {
    if (nb == NB_WIDE && mb <= 2) {
        if (mb == 1) FN(block)(x, w, out, N, K, ws, 1, NB_WIDE);
        else FN(block)(x, w, out, N, K, ws, 2, NB_WIDE);
    } else if (nb == NB_WIDE) {               /* mb 3 or 4 (AVX-512 only): NB rows at a time */
        for (int j = 0; j < NB_WIDE; j += NB) {
#if MB > 2
            const float *wj = w + j * ws * K;
            if (mb == 3) FN(block)(x, wj, out + j * ws, N, K, ws, 3, NB);
            else FN(block)(x, wj, out + j * ws, N, K, ws, MB, NB);
#endif
        }
    } else {                                   /* the last rows of w, one at a time */
        for (int j = 0; j < nb; j++) {
            const float *wj = w + j * K;
            switch (mb) {
                case 1: FN(block)(x, wj, out + j, N, K, 1, 1, 1); break;
#if MB > 2
                case 3: FN(block)(x, wj, out + j, N, K, 1, 3, 1); break;
                case 4: FN(block)(x, wj, out + j, N, K, 1, 4, 1); break;
#endif
                default: FN(block)(x, wj, out + j, N, K, 1, 2, 1); break;
            }
        }
    }
}

/* Rows [n0, n1) of w against every row of x; each row of w is read from memory once for all M
 * rows of x (which stay in L1/L2). The rows are cut into NB_WIDE equal parts, and a block takes
 * the next row of each part: NB_WIDE streams that run through whole parts, which the hardware
 * prefetchers keep ahead of. NB_WIDE adjacent rows a block, as before, are NB_WIDE streams
 * that end after K floats, too short for the prefetchers when K is small: this ran 1.3-1.8x
 * as fast at K 288-384 and 1.0-1.4x at K 768-3072 from DRAM (AVX2, one thread, Zen 3; at K 288
 * 1.3x faster than one row after the other too). The rows past NB_WIDE whole parts go one at
 * a time. */
TARGET static void FN(rows_of_w)(const float *x, const float *w, float *out, int64_t M,
                                 int64_t N, int64_t K, int64_t n0, int64_t n1) {
    int64_t part = (n1 - n0) / NB_WIDE;
    for (int64_t n = n0; n < n0 + part; n++)
        for (int64_t m = 0; m < M; m += MB) {
            int mb = M - m < MB ? (int)(M - m) : MB;
            FN(blocks)(x + m * K, w + n * K, out + m * N + n, N, K, part, mb, NB_WIDE);
        }
    int64_t rest = n0 + NB_WIDE * part;
    for (int64_t m = 0; m < M && rest < n1; m += MB) {
        int mb = M - m < MB ? (int)(M - m) : MB;
        FN(blocks)(x + m * K, w + rest * K, out + m * N + rest, N, K, 1, mb, (int)(n1 - rest));
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
#undef vloadu
#undef vstoreu
#undef vfma
#undef vzero
#undef vset1
#undef vsum
#undef vsums
#undef vloadn
