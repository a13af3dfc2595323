/* cross_entropy.c: the loss, fused with its log-softmax, forward and backward.
 *
 * The maths is numpy_kernels.cross_entropy_forward / cross_entropy_backward:
 * loss = mean over kept rows of lse - logit[target], with target -1 meaning
 * "ignore this row". The forward saves each row's log-sum-exp, so the backward
 * rebuilds softmax = exp(logit - lse) straight into dlogits: apart from that
 * output no (N, V) buffer exists, which matters when V is 50k.
 * Not a softmax kernel (softmax.c). Read adamw.c next.
 */
#include <math.h>
#include <string.h>

#include "fastmath.h"
#include "tinyllm.h"

/* A row's largest logit (NaNs passed over) and sum(exp(row - max)), in double: V terms (50k
 * for GPT-2's vocabulary), and double keeps the log-sum-exp exact. On 16 lanes with AVX-512
 * (exp_nonpositive16): GCC's own vectors are 8 wide on Intel, and this exp is the time. */
#ifdef __AVX512F__
static float row_max(const float *row, int64_t V) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < V; i += 16)                            // a NaN lane keeps m
        m = _mm512_max_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), lanes16(V - i), row + i), m);
    return _mm512_reduce_max_ps(m);
}

static double sum_exp(const float *row, int64_t V, float max) {
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    for (int64_t i = 0; i < V; i += 16) {
        __mmask16 m = lanes16(V - i);
        __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + i), _mm512_set1_ps(max));
        __m512 e = _mm512_maskz_mov_ps(m, exp_nonpositive16(x));
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}
#else
static float row_max(const float *row, int64_t V) {
    float max = -INFINITY;
#pragma omp simd reduction(max : max)
    for (int64_t i = 0; i < V; i++) max = row[i] > max ? row[i] : max;
    return max;
}

static double sum_exp(const float *row, int64_t V, float max) {
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < V; i++) sum += exp_nonpositive(row[i] - max);
    return sum;
}
#endif

/* drow = exp(row - lse) * factor: the softmax, scaled. */
static void scaled_softmax(const float *restrict row, float lse, float factor, float *restrict drow,
                           int64_t V) {
#ifdef __AVX512F__
    for (int64_t i = 0; i < V; i += 16) {
        __mmask16 m = lanes16(V - i);
        __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + i), _mm512_set1_ps(lse));
        _mm512_mask_storeu_ps(drow + i, m, _mm512_mul_ps(exp_nonpositive16(x), _mm512_set1_ps(factor)));
    }
#else
#pragma omp simd
    for (int64_t i = 0; i < V; i++) drow[i] = exp_nonpositive(row[i] - lse) * factor;
#endif
}

static int64_t count_kept(const int64_t *targets, int64_t N) {
    int64_t n_kept = 0;
    for (int64_t n = 0; n < N; n++) n_kept += targets[n] != -1;
    return n_kept;
}

float cross_entropy_forward(const float *logits, const int64_t *targets, float *lse,
                            int64_t N, int64_t V) {
    double loss = 0.0;   // in double: a sum of N (= B*T, thousands of) per-row losses
#pragma omp parallel for schedule(static) reduction(+ : loss)
    for (int64_t n = 0; n < N; n++) {
        const float *row = logits + n * V;                         // (V,)
        float max = row_max(row, V);                       // subtracted: exp never overflows
        lse[n] = max + (float)log(sum_exp(row, V, max));
        if (targets[n] != -1) loss += (double)lse[n] - (double)row[targets[n]];
    }
    int64_t n_kept = count_kept(targets, N);
    return n_kept ? (float)(loss / (double)n_kept) : 0.0f;
}

/* forward: loss = sum(lse - logit[target]) / n_kept, lse = log sum exp(logit)
 *   -> dlogit = (exp(logit - lse) - onehot(target)) * dloss / n_kept */
void cross_entropy_backward(float dloss, const float *logits, const int64_t *targets,
                            const float *lse, float *dlogits, int64_t N, int64_t V) {
    int64_t n_kept = count_kept(targets, N);
    float factor = (float)((double)dloss / (double)(n_kept ? n_kept : 1));
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *restrict row = logits + n * V;                // (V,)
        float *restrict drow = dlogits + n * V;                    // (V,)
        if (targets[n] == -1) {
            memset(drow, 0, (size_t)V * sizeof(float));
            continue;
        }
        // row[i] - lse <= 0 up to rounding; exp_nonpositive is exact enough just above 0 too
        scaled_softmax(row, lse[n], factor, drow, V);
        drow[targets[n]] -= factor;
    }
}
