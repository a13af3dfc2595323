/* cross_entropy.cu: the loss, fused with its log-softmax, forward and backward.
 *
 * The maths is numpy_kernels.cross_entropy_forward / cross_entropy_backward (and
 * csrc/cross_entropy.c): loss = the mean over kept rows of lse - logit[target], target -1
 * meaning "ignore this row". One block per row of logits (N, V). The forward reads each row
 * once, keeping an online (max, sum of exp) per thread, and saves the row's log-sum-exp; its
 * per-row losses go to a scratch (N,) that one warp then sums in a fixed order (no float
 * atomics: the loss is the same on every run). The backward rebuilds softmax = exp(logit - lse)
 * straight into dlogits: apart from that output no (N, V) buffer exists, which matters when V
 * is 50k.
 */
#include "common.cuh"

/* Threads per row: V is a vocabulary (thousands to ~100k), ~100 logits per thread. */
#define ROW_THREADS 512

/* lse (N,) and row_loss (N,) = lse - logit[target], 0 on ignored rows. A thread's running max
 * m and sum s of exp(x - m) are rescaled when a larger x arrives, so the row is read once. */
static __global__ void cross_entropy_forward_rows(const float *__restrict__ logits,
                                                  const int64_t *__restrict__ targets,
                                                  float *__restrict__ lse,
                                                  double *__restrict__ row_loss, int64_t V) {
    __shared__ float scratch[WARP];
    const float *row = logits + blockIdx.x * V;    // (V,)
    float m = -INFINITY, s = 0.0f;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
        float x = row[i];
        if (x > m) {
            s = s * expf(m - x) + 1.0f;
            m = x;
        } else {
            s += expf(x - m);
        }
    }
    float max = block_max(m, scratch);
    // threads that saw no logit have m = -inf, s = 0: exp(-inf) = 0 drops them
    float sum = block_sum(s * expf(m - max), scratch);
    if (threadIdx.x == 0) {
        float l = max + logf(sum);
        int64_t target = targets[blockIdx.x];
        lse[blockIdx.x] = l;
        row_loss[blockIdx.x] = target == -1 ? 0.0 : (double)l - (double)row[target];
    }
}

/* loss (1,) = sum(row_loss) / n_kept (0 when none is kept), summed by one warp, lane l adding
 * rows l, l + WARP, ... in double (N = B*T runs to many thousands of terms). */
static __global__ void mean_loss(const double *__restrict__ row_loss, float *__restrict__ loss,
                                 int64_t N, int64_t n_kept) {
    double acc = 0.0;
    for (int64_t n = threadIdx.x; n < N; n += WARP) acc += row_loss[n];
    acc = warp_sum_double(acc);
    if (threadIdx.x == 0) loss[0] = n_kept ? (float)(acc / (double)n_kept) : 0.0f;
}

/* forward: loss = sum(lse - logit[target]) / n_kept, lse = log sum exp(logit)
 *   -> dlogit = (exp(logit - lse) - onehot(target)) * dloss / n_kept, with factor = the last
 * two. The whole block takes one branch: no thread skips a barrier (there is none anyway). */
static __global__ void cross_entropy_backward_rows(const float *__restrict__ logits,
                                                   const int64_t *__restrict__ targets,
                                                   const float *__restrict__ lse,
                                                   float *__restrict__ dlogits, int64_t V,
                                                   float factor) {
    const float *row = logits + blockIdx.x * V;    // (V,)
    float *drow = dlogits + blockIdx.x * V;        // (V,)
    int64_t target = targets[blockIdx.x];
    if (target == -1) {
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x) drow[i] = 0.0f;
        return;
    }
    float l = lse[blockIdx.x];
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
        drow[i] = expf(row[i] - l) * factor - (i == target ? factor : 0.0f);
}

int cross_entropy_forward(const float *logits, const int64_t *targets, float *lse, float *loss,
                          int64_t N, int64_t V, int64_t n_kept) {
    double *row_loss = NULL;                       // (N,)
    CHECK(device_alloc((void **)&row_loss, N * (int64_t)sizeof(double)));
    if (N > 0)
        LAUNCH(cross_entropy_forward_rows, (unsigned)N, row_threads(V, ROW_THREADS), logits,
               targets, lse, row_loss, V);
    LAUNCH(mean_loss, 1, WARP, row_loss, loss, N, n_kept);   // N = 0 too: loss = 0
    CHECK(device_free(row_loss));                  // stream-ordered: after the kernels
    return launch_status("cross_entropy_forward");
}

int cross_entropy_backward(float dloss, const float *logits, const int64_t *targets,
                           const float *lse, float *dlogits, int64_t N, int64_t V,
                           int64_t n_kept) {
    if (N * V == 0) return 0;
    float factor = (float)((double)dloss / (double)(n_kept ? n_kept : 1));
    LAUNCH(cross_entropy_backward_rows, (unsigned)N, row_threads(V, ROW_THREADS), logits,
           targets, lse, dlogits, V, factor);
    return launch_status("cross_entropy_backward");
}
