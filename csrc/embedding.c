/* embedding.c: token (or position) embedding lookup and its scatter-add backward.
 *
 * The maths is numpy_kernels.embedding_forward / embedding_backward: out[n] =
 * weight[ids[n]], and dweight[v] = the sum of dout[n] over every n with
 * ids[n] == v (ids repeat: the same token appears many times in a batch).
 * The wrapper (c_kernels.py) checks every id is in [0, V) before we run.
 * Read cross_entropy.c next.
 */
#include <string.h>

#include "parallel.h"
#include "tinyllm.h"

/* Columns per backward work item: 64 floats, four cache lines of each row. */
#define COL_BLOCK 64

void embedding_forward(const int64_t *ids, const float *weight, float *out, int64_t N,
                       int64_t V, int64_t C) {
#pragma omp parallel for schedule(static) if (N * C >= PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++)
        memcpy(out + n * C, weight + ids[n] * C, (size_t)C * sizeof(float));   // (C,) row
}

/* Rows with the same id must be added into one dweight row, so splitting the N
 * rows across threads would race. Each thread owns a block of columns of every
 * dweight row instead and walks all N rows in order: race-free, no atomics, and
 * bitwise the same sums for any thread count. */
void embedding_backward(const float *dout, const int64_t *ids, float *dweight, int64_t N,
                        int64_t V, int64_t C) {
    int64_t n_blocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t v = 0; v < V; v++) memset(dweight + v * C, 0, (size_t)C * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < n_blocks; blk++) {
            int64_t c0 = blk * COL_BLOCK, nc = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
            for (int64_t n = 0; n < N; n++) {
                const float *restrict g = dout + n * C + c0;       // (nc,)
                float *restrict dw = dweight + ids[n] * C + c0;    // (nc,)
#pragma omp simd
                for (int64_t c = 0; c < nc; c++) dw[c] += g[c];
            }
        }
    }
}
