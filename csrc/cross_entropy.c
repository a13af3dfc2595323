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
        float max = -INFINITY;                             // subtracted: exp never overflows
#pragma omp simd reduction(max : max)
        for (int64_t i = 0; i < V; i++) max = row[i] > max ? row[i] : max;
        double sum = 0.0;                                  // V terms: double keeps lse exact
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < V; i++) sum += exp_nonpositive(row[i] - max);
        lse[n] = max + (float)log(sum);
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
        float lse_n = lse[n];
        // row[i] - lse_n <= 0 up to rounding; exp_nonpositive is exact enough just above 0 too
#pragma omp simd
        for (int64_t i = 0; i < V; i++) drow[i] = exp_nonpositive(row[i] - lse_n) * factor;
        drow[targets[n]] -= factor;
    }
}
