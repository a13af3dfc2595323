/* attention.cu: fused causal flash attention on the GPU, float32 (the maths of
 * numpy_kernels.attention_forward / attention_backward and csrc/attention.c).
 *
 * q, out, dout, dq: (B, nh, Tq, hs); k, v, dk, dv: (B, nh, Tk, hs); lse, D: (B, nh, Tq).
 * Query i sits at position Tk - Tq + i and sees keys 0 .. Tk - Tq + i; scale = 1/sqrt(hs).
 *
 * Work layout, the same in the three main kernels: a block owns R rows (queries or keys) of one
 * (batch, head), and each row belongs to 4 consecutive lanes. Lane p of a row holds float4s
 * p, p + 4, p + 8, ... of the row's head dims in registers (hs padded with zeros to HS = 16, 32,
 * 64 or 128, a template parameter, so the register arrays have a fixed size). A dot product of
 * two rows is 4 partial sums joined by two shuffles, after which all 4 lanes hold it, so each
 * lane runs its row's softmax bookkeeping itself. The other side streams through shared memory
 * in tiles of R rows; every row of the block reads each of them, as float4 broadcasts (4 FMAs
 * per shared load, no bank conflicts). R = 64 (32 at HS = 128) fits two (R, HS) tiles in 32 KiB.
 *
 * Forward: a block per (query tile, head, batch) walks the key tiles up to its last query's
 * position with the online softmax: per tile the running row max m, the sum l of exp(s - m) and
 * the output accumulator, both rescaled by exp(m_old - m_new). Scores are kept in log2 units
 * (q is prescaled by scale * log2(e)), so every exp is an exp2; lse = (m + log2 l) * ln 2.
 *
 * Backward (FlashAttention-2), rebuilding P = exp(S - lse) tile by tile: first D = rowsum(dout *
 * out) into scratch; then dk and dv by a block per key tile, walking the query tiles from the
 * diagonal on; then dq by a block per query tile, walking the key tiles up to the diagonal.
 * That separate dq pass recomputes S and dP once more (7 tile matmuls instead of 5) instead of
 * adding dq with atomics: every gradient is summed in a fixed order, so results repeat bit for
 * bit from run to run. Extra memory: D only; nothing is ever (Tq, Tk).
 */
#include <stdio.h>

#include "common.cuh"

#define HS_MAX 128
#define MAX_GRID_YZ 65535
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

/* Rows per tile (and per block): two (R, HS) tiles take at most 32 KiB of shared memory. */
template <int HS>
__host__ __device__ constexpr int tile_rows() { return HS == 128 ? 32 : 64; }

/* Sum over the 4 lanes of a row (lanes 4r .. 4r + 3 of a warp); all 4 get it. */
__device__ __forceinline__ float row_sum(float x) {
    x += __shfl_xor_sync(FULL_MASK, x, 1);
    x += __shfl_xor_sync(FULL_MASK, x, 2);
    return x;
}

namespace {   // internal linkage: no symbol to export for the helper type

/* The part of a row's HS head dims that lane `part` of the row holds: float4s part, part + 4,
 * ..., that is dims 16 n + 4 part + e (n < HS / 16, e < 4). */
template <int HS>
struct Slice {
    static constexpr int N = HS / 16;
    float4 v[N];

    __device__ static int dim(int n, int part, int e) { return 16 * n + 4 * part + e; }

    __device__ void zero() {
        for (int n = 0; n < N; n++) v[n] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    /* row `row` of x (rows of hs floats) times `scale`; zeros past hs, or all zeros if !valid */
    __device__ void load(const float *x, int64_t row, bool valid, int hs, int part, float scale) {
        for (int n = 0; n < N; n++) {
            float y[4];
            for (int e = 0; e < 4; e++) {
                int d = dim(n, part, e);
                y[e] = valid && d < hs ? x[row * hs + d] * scale : 0.0f;
            }
            v[n] = make_float4(y[0], y[1], y[2], y[3]);
        }
    }
    __device__ void store(float *x, int64_t row, int hs, int part, float scale) const {
        for (int n = 0; n < N; n++) {
            const float y[4] = {v[n].x, v[n].y, v[n].z, v[n].w};
            for (int e = 0; e < 4; e++) {
                int d = dim(n, part, e);
                if (d < hs) x[row * hs + d] = y[e] * scale;
            }
        }
    }
    /* this lane's share of the dot product with a shared row y (HS,) */
    __device__ float dot(const float *y, int part) const {
        float s = 0.0f;
        for (int n = 0; n < N; n++) {
            float4 w = *reinterpret_cast<const float4 *>(y + dim(n, part, 0));
            s = fmaf(v[n].x, w.x, fmaf(v[n].y, w.y, fmaf(v[n].z, w.z, fmaf(v[n].w, w.w, s))));
        }
        return s;
    }
    /* this += a * y for a shared row y (HS,) */
    __device__ void axpy(float a, const float *y, int part) {
        for (int n = 0; n < N; n++) {
            float4 w = *reinterpret_cast<const float4 *>(y + dim(n, part, 0));
            v[n].x = fmaf(a, w.x, v[n].x);
            v[n].y = fmaf(a, w.y, v[n].y);
            v[n].z = fmaf(a, w.z, v[n].z);
            v[n].w = fmaf(a, w.w, v[n].w);
        }
    }
    __device__ void scale(float a) {
        for (int n = 0; n < N; n++) v[n].x *= a, v[n].y *= a, v[n].z *= a, v[n].w *= a;
    }
};

}  // namespace

/* Rows r0 .. r0 + R of x (n, hs) into s (R, HS), zeros past n and past hs. Consecutive threads
 * read consecutive floats. */
template <int HS, int R>
__device__ void load_tile(float (*s)[HS], const float *x, int64_t r0, int64_t n, int hs) {
    for (int e = threadIdx.x; e < R * HS; e += blockDim.x) {
        int r = e / HS, d = e % HS;
        s[r][d] = r0 + r < n && d < hs ? x[(r0 + r) * hs + d] : 0.0f;
    }
}

/* The (batch, head) of a block: gridDim.y is nh and gridDim.z is B. */
__device__ __forceinline__ int64_t block_head() {
    return (int64_t)blockIdx.z * gridDim.y + blockIdx.y;
}

/* A block per (query tile, head, batch), 4 lanes per query row. */
template <int HS>
__global__ void __launch_bounds__(4 * tile_rows<HS>())
    attention_forward_kernel(const float *__restrict__ q, const float *__restrict__ k,
                             const float *__restrict__ v, float *__restrict__ out,
                             float *__restrict__ lse, int64_t Tq, int64_t Tk, int hs,
                             float scale) {
    constexpr int R = tile_rows<HS>();
    alignas(16) __shared__ float Ks[R][HS];   // a key tile, (R, HS)
    alignas(16) __shared__ float Vs[R][HS];   // its values, (R, HS)
    const int64_t bh = block_head(), offset = Tk - Tq;
    q += bh * Tq * hs, out += bh * Tq * hs, lse += bh * Tq;   // (Tq, hs), (Tq, hs), (Tq,)
    k += bh * Tk * hs, v += bh * Tk * hs;                     // (Tk, hs) each
    // the last query tiles see the most keys: they start first, the short ones fill in the end
    const int64_t q0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * R;
    const int64_t last = offset + min(q0 + R, Tq) - 1;     // the block's last query position
    const int row = threadIdx.x / 4, part = threadIdx.x % 4;
    const int64_t i = q0 + row;
    const bool valid = i < Tq;                             // rows past Tq: zeros, not written
    const int64_t pos = offset + (valid ? i : Tq - 1);

    Slice<HS> qi, acc;
    qi.load(q, i, valid, hs, part, scale * LOG2E);        // so scores come in log2 units
    acc.zero();                                            // sum of exp2(s - m) v
    float m = -INFINITY, l = 0.0f;                         // running max, sum of exp2(s - m)
    for (int64_t k0 = 0; k0 <= last; k0 += R) {
        const int n = (int)min((int64_t)R, last + 1 - k0);     // keys of the tile anyone sees
        __syncthreads();                                       // the last tile is read
        load_tile<HS, R>(Ks, k, k0, Tk, hs);
        load_tile<HS, R>(Vs, v, k0, Tk, hs);
        __syncthreads();
        float s[R], m_new = m;                                 // this row's scores
#pragma unroll
        for (int c = 0; c < R; c++) {
            s[c] = -INFINITY;
            if (c < n) {                                       // the same for the whole block
                float x = row_sum(qi.dot(Ks[c], part));
                if (k0 + c <= pos) s[c] = x;
                m_new = fmaxf(m_new, s[c]);
            }
        }
        // m_new is finite: key 0 is in the first tile, and every query sees it
        const float correction = exp2f(m - m_new);             // 0 on the first tile
        l *= correction;
        acc.scale(correction);
#pragma unroll
        for (int c = 0; c < R; c++)
            if (c < n) {
                float p = exp2f(s[c] - m_new);                 // 0 for keys in the future
                l += p;
                acc.axpy(p, Vs[c], part);
            }
        m = m_new;
    }
    if (valid) {
        acc.store(out, i, hs, part, 1.0f / l);
        if (part == 0) lse[i] = (m + log2f(l)) * LN2;
    }
}

/* D (rows,) = rowsum(dout * out), rows of hs: a warp per row. */
__global__ void attention_backward_rowdot(const float *__restrict__ dout,
                                          const float *__restrict__ out, float *__restrict__ D,
                                          int64_t rows, int hs) {
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    float x = 0.0f;
    if (r < rows)
        for (int d = threadIdx.x % WARP; d < hs; d += WARP) x += dout[r * hs + d] * out[r * hs + d];
    x = warp_sum(x);   // outside the branch: every lane of the warp takes part
    if (r < rows && threadIdx.x % WARP == 0) D[r] = x;
}

/* dk, dv: a block per (key tile, head, batch), 4 lanes per key row j, summing over queries i:
 * dv_j = sum p_ij dout_i, dk_j = scale * sum p_ij (dp_ij - D_i) q_i, dp_ij = dout_i . v_j. */
template <int HS>
__global__ void __launch_bounds__(4 * tile_rows<HS>())
    attention_backward_dkdv_kernel(const float *__restrict__ dout, const float *__restrict__ q,
                                   const float *__restrict__ k, const float *__restrict__ v,
                                   const float *__restrict__ lse, const float *__restrict__ D,
                                   float *__restrict__ dk, float *__restrict__ dv, int64_t Tq,
                                   int64_t Tk, int hs, float scale) {
    constexpr int R = tile_rows<HS>();
    alignas(16) __shared__ float Qs[R][HS];    // a query tile, (R, HS)
    alignas(16) __shared__ float dOs[R][HS];   // its dout, (R, HS)
    __shared__ float lse_s[R], D_s[R];           // its lse (log2 units) and D, (R,)
    const int64_t bh = block_head(), offset = Tk - Tq;
    q += bh * Tq * hs, dout += bh * Tq * hs, lse += bh * Tq, D += bh * Tq;
    k += bh * Tk * hs, v += bh * Tk * hs, dk += bh * Tk * hs, dv += bh * Tk * hs;
    const int64_t k0 = (int64_t)blockIdx.x * R;  // the first key tiles, with most queries, first
    const int row = threadIdx.x / 4, part = threadIdx.x % 4;
    const int64_t j = k0 + row;
    const bool valid = j < Tk;                   // rows past Tk: zeros, never visible

    Slice<HS> kj, vj, dkj, dvj;
    kj.load(k, j, valid, hs, part, scale * LOG2E);   // only dotted with q: scores in log2 units
    vj.load(v, j, valid, hs, part, 1.0f);
    dkj.zero();
    dvj.zero();
    // key k0 is first seen by the query at position k0, index k0 - offset
    for (int64_t i0 = max((int64_t)0, k0 - offset); i0 < Tq; i0 += R) {
        const int n = (int)min((int64_t)R, Tq - i0);
        __syncthreads();                             // the last tile is read
        load_tile<HS, R>(Qs, q, i0, Tq, hs);
        load_tile<HS, R>(dOs, dout, i0, Tq, hs);
        if ((int)threadIdx.x < n) {
            lse_s[threadIdx.x] = lse[i0 + threadIdx.x] * LOG2E;
            D_s[threadIdx.x] = D[i0 + threadIdx.x];
        }
        __syncthreads();
        for (int r = 0; r < n; r++) {
            const float s = row_sum(kj.dot(Qs[r], part));
            const float dp = row_sum(vj.dot(dOs[r], part));
            const float p = j <= offset + i0 + r ? exp2f(s - lse_s[r]) : 0.0f;
            dvj.axpy(p, dOs[r], part);
            dkj.axpy(p * (dp - D_s[r]), Qs[r], part);
        }
    }
    if (valid) {
        dkj.store(dk, j, hs, part, scale);
        dvj.store(dv, j, hs, part, 1.0f);
    }
}

/* dq: a block per (query tile, head, batch), 4 lanes per query row i:
 * dq_i = scale * sum_j p_ij (dp_ij - D_i) k_j. */
template <int HS>
__global__ void __launch_bounds__(4 * tile_rows<HS>())
    attention_backward_dq_kernel(const float *__restrict__ dout, const float *__restrict__ q,
                                 const float *__restrict__ k, const float *__restrict__ v,
                                 const float *__restrict__ lse, const float *__restrict__ D,
                                 float *__restrict__ dq, int64_t Tq, int64_t Tk, int hs,
                                 float scale) {
    constexpr int R = tile_rows<HS>();
    alignas(16) __shared__ float Ks[R][HS];   // a key tile, (R, HS)
    alignas(16) __shared__ float Vs[R][HS];   // its values, (R, HS)
    const int64_t bh = block_head(), offset = Tk - Tq;
    q += bh * Tq * hs, dout += bh * Tq * hs, dq += bh * Tq * hs, lse += bh * Tq, D += bh * Tq;
    k += bh * Tk * hs, v += bh * Tk * hs;
    const int64_t q0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * R;   // longest first
    const int64_t last = offset + min(q0 + R, Tq) - 1;
    const int row = threadIdx.x / 4, part = threadIdx.x % 4;
    const int64_t i = q0 + row;
    const bool valid = i < Tq;                  // rows past Tq: zeros, so ds = 0; not written
    const int64_t pos = offset + (valid ? i : Tq - 1);

    Slice<HS> qi, doi, dqi;
    qi.load(q, i, valid, hs, part, scale * LOG2E);
    doi.load(dout, i, valid, hs, part, 1.0f);
    dqi.zero();
    const float lse_i = valid ? lse[i] * LOG2E : 0.0f, D_i = valid ? D[i] : 0.0f;
    for (int64_t k0 = 0; k0 <= last; k0 += R) {
        const int n = (int)min((int64_t)R, last + 1 - k0);
        __syncthreads();
        load_tile<HS, R>(Ks, k, k0, Tk, hs);
        load_tile<HS, R>(Vs, v, k0, Tk, hs);
        __syncthreads();
        for (int c = 0; c < n; c++) {
            const float s = row_sum(qi.dot(Ks[c], part));
            const float dp = row_sum(doi.dot(Vs[c], part));
            const float p = k0 + c <= pos ? exp2f(s - lse_i) : 0.0f;
            dqi.axpy(p * (dp - D_i), Ks[c], part);
        }
    }
    if (valid) dqi.store(dq, i, hs, part, scale);
}

/* 0, or cudaErrorInvalidValue recorded with the reason, for shapes the kernels do not take. */
static int unsupported(const char *name, int64_t B, int64_t nh, int64_t hs) {
    char why[200];
    if (hs < 1 || hs > HS_MAX)
        snprintf(why, sizeof why, "%s: head size hs = %lld is not supported (1 to %d)", name,
                 (long long)hs, HS_MAX);
    else if (B > MAX_GRID_YZ || nh > MAX_GRID_YZ)
        snprintf(why, sizeof why, "%s: B = %lld and nh = %lld must be at most %d", name,
                 (long long)B, (long long)nh, MAX_GRID_YZ);
    else
        return 0;
    return record_error(cudaErrorInvalidValue, why);
}

template <int HS>
static void launch_forward(const float *q, const float *k, const float *v, float *out,
                           float *lse, int64_t B, int64_t nh, int64_t Tq, int64_t Tk,
                           int64_t hs) {
    constexpr int R = tile_rows<HS>();
    dim3 grid((unsigned)ceil_div(Tq, R), (unsigned)nh, (unsigned)B);
    LAUNCH(attention_forward_kernel<HS>, grid, 4 * R, q, k, v, out, lse, Tq, Tk, (int)hs,
           1.0f / sqrtf((float)hs));
}

template <int HS>
static void launch_backward(const float *dout, const float *q, const float *k, const float *v,
                            const float *lse, const float *D, float *dq, float *dk, float *dv,
                            int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t hs) {
    constexpr int R = tile_rows<HS>();
    const float scale = 1.0f / sqrtf((float)hs);
    dim3 key_tiles((unsigned)ceil_div(Tk, R), (unsigned)nh, (unsigned)B);
    LAUNCH(attention_backward_dkdv_kernel<HS>, key_tiles, 4 * R, dout, q, k, v, lse, D, dk, dv,
           Tq, Tk, (int)hs, scale);
    if (Tq == 0) return;   // dk, dv are zeros, and there is no dq
    dim3 query_tiles((unsigned)ceil_div(Tq, R), (unsigned)nh, (unsigned)B);
    LAUNCH(attention_backward_dq_kernel<HS>, query_tiles, 4 * R, dout, q, k, v, lse, D, dq, Tq,
           Tk, (int)hs, scale);
}

int attention_forward(const float *q, const float *k, const float *v, float *out, float *lse,
                      int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t hs) {
    if (B == 0 || nh == 0 || Tq == 0) return 0;
    if (int status = unsupported("attention_forward", B, nh, hs)) return status;
    if (hs <= 16) launch_forward<16>(q, k, v, out, lse, B, nh, Tq, Tk, hs);
    else if (hs <= 32) launch_forward<32>(q, k, v, out, lse, B, nh, Tq, Tk, hs);
    else if (hs <= 64) launch_forward<64>(q, k, v, out, lse, B, nh, Tq, Tk, hs);
    else launch_forward<128>(q, k, v, out, lse, B, nh, Tq, Tk, hs);
    return launch_status("attention_forward");
}

/* Rows of D per block of attention_backward_rowdot: a warp each. */
#define ROWDOT_WARPS 8

int attention_backward(const float *dout, const float *q, const float *k, const float *v,
                       const float *out, const float *lse, float *dq, float *dk, float *dv,
                       int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t hs) {
    if (B == 0 || nh == 0 || Tk == 0) return 0;
    if (int status = unsupported("attention_backward", B, nh, hs)) return status;
    const int64_t rows = B * nh * Tq;
    float *D = NULL;   // (B, nh, Tq)
    CHECK(device_alloc((void **)&D, rows * (int64_t)sizeof(float)));
    if (rows > 0)
        LAUNCH(attention_backward_rowdot, (unsigned)ceil_div(rows, ROWDOT_WARPS),
               ROWDOT_WARPS * WARP, dout, out, D, rows, (int)hs);
    if (hs <= 16) launch_backward<16>(dout, q, k, v, lse, D, dq, dk, dv, B, nh, Tq, Tk, hs);
    else if (hs <= 32) launch_backward<32>(dout, q, k, v, lse, D, dq, dk, dv, B, nh, Tq, Tk, hs);
    else if (hs <= 64) launch_backward<64>(dout, q, k, v, lse, D, dq, dk, dv, B, nh, Tq, Tk, hs);
    else launch_backward<128>(dout, q, k, v, lse, D, dq, dk, dv, B, nh, Tq, Tk, hs);
    CHECK(device_free(D));   // stream-ordered: after the kernels
    return launch_status("attention_backward");
}
