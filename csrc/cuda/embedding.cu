/* embedding.cu: token (or position) embedding lookup and its scatter-add backward.
 *
 * The maths is numpy_kernels.embedding_forward / embedding_backward (and csrc/embedding.c):
 * out[n] = weight[ids[n]], and dweight[v] = the sum of dout[n] over every n with ids[n] == v
 * (ids repeat: a frequent token appears hundreds of times in a batch).
 *
 * The backward has two paths. The fast one zeroes dweight and atomicAdds every dout value into
 * place: the additions into a row come in whatever order the GPU runs them, so the float sums
 * change from run to run in their last bits. The deterministic one sorts the positions by id
 * first, entirely on the device (a counting sort):
 *   1. count each id (integer atomics: the counts are exact whatever the order);
 *   2. start[v] = the exclusive prefix sum of the counts: where v's bucket of positions begins;
 *   3. scatter every position into its id's bucket (an atomic cursor per bucket: each bucket
 *      gets the right set of positions, in an order that varies);
 *   4. put each bucket in ascending order: a position's rank is the number of positions of its
 *      bucket smaller than it (O(k) per position for a bucket of k: the sum of k^2, small for
 *      text, N^2 only when every id is the same);
 *   5. one thread per (v, c) sums dout[n, c] over v's bucket in position order, writing every
 *      entry of dweight once (unused ids get 0: no separate zeroing).
 * Its sums add the rows in the order n = 0, 1, ...: bit for bit those of csrc/embedding.c and
 * of np.add.at in float32, on every run.
 */
#include <limits.h>

#include "common.cuh"

/* the prefix sum over the V counts runs in one block: each thread scans a V / 1024 chunk */
#define SCAN_THREADS 1024

/* out (N, C): element i = (n, c) of out is weight[ids[n], c]; consecutive threads, consecutive c */
static __global__ void embedding_gather(const int64_t *__restrict__ ids,
                                        const float *__restrict__ weight, float *__restrict__ out,
                                        int64_t n, int64_t C) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = weight[ids[i / C] * C + i % C];
}

/* dweight (V, C) += dout (N, C) row by row at the rows' ids, in no fixed order. */
static __global__ void embedding_scatter_add(const float *__restrict__ dout,
                                             const int64_t *__restrict__ ids, float *dweight,
                                             int64_t n, int64_t C) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        atomicAdd(&dweight[ids[i / C] * C + i % C], dout[i]);
}

static __global__ void zero_ints(int *x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] = 0;
}

/* step 1: counts (V,) += 1 at every id */
static __global__ void count_ids(const int64_t *__restrict__ ids, int *counts, int64_t N) {
    for (int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; n < N;
         n += (int64_t)gridDim.x * blockDim.x)
        atomicAdd(&counts[ids[n]], 1);
}

/* step 2, one block: start (V,) = exclusive prefix sum of counts (V,), and cursor = start.
 * Thread t owns the contiguous chunk t of the counts: it sums its chunk, the block scans the
 * chunk sums (Hillis-Steele in shared memory), and the thread writes its chunk's offsets. */
static __global__ void exclusive_scan(const int *__restrict__ counts, int *__restrict__ start,
                                      int *__restrict__ cursor, int64_t V) {
    __shared__ int sums[SCAN_THREADS];
    int t = threadIdx.x;
    int64_t chunk = (V + SCAN_THREADS - 1) / SCAN_THREADS;
    int64_t lo = t * chunk < V ? t * chunk : V, hi = lo + chunk < V ? lo + chunk : V;
    int own = 0;
    for (int64_t v = lo; v < hi; v++) own += counts[v];
    sums[t] = own;
    __syncthreads();
    for (int offset = 1; offset < SCAN_THREADS; offset *= 2) {
        int add = t >= offset ? sums[t - offset] : 0;
        __syncthreads();                           // every read of this round before any write
        sums[t] += add;
        __syncthreads();
    }
    int base = sums[t] - own;                      // the counts of every earlier chunk
    for (int64_t v = lo; v < hi; v++) {
        start[v] = cursor[v] = base;
        base += counts[v];
    }
}

/* step 3: unsorted (N,) holds every id's positions in its bucket, in no fixed order */
static __global__ void bucket_positions(const int64_t *__restrict__ ids, int *cursor,
                                        int *__restrict__ unsorted, int64_t N) {
    for (int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; n < N;
         n += (int64_t)gridDim.x * blockDim.x)
        unsorted[atomicAdd(&cursor[ids[n]], 1)] = (int)n;
}

/* step 4: sorted (N,) = each bucket of unsorted in ascending order (positions are distinct) */
static __global__ void sort_buckets(const int64_t *__restrict__ ids, const int *__restrict__ start,
                                    const int *__restrict__ counts,
                                    const int *__restrict__ unsorted, int *__restrict__ sorted,
                                    int64_t N) {
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < N;
         j += (int64_t)gridDim.x * blockDim.x) {
        int n = unsorted[j];
        int64_t id = ids[n];
        int first = start[id], end = first + counts[id], rank = 0;
        for (int k = first; k < end; k++) rank += unsorted[k] < n;
        sorted[first + rank] = n;
    }
}

/* step 5: dweight (V, C): element i = (v, c) is the sum of dout[n, c] over v's bucket, in order */
static __global__ void sum_buckets(const float *__restrict__ dout, const int *__restrict__ start,
                                   const int *__restrict__ counts, const int *__restrict__ sorted,
                                   float *__restrict__ dweight, int64_t n, int64_t C) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t v = i / C, c = i % C;
        int first = start[v], end = first + counts[v];
        float acc = 0.0f;
        for (int k = first; k < end; k++) acc += dout[sorted[k] * C + c];
        dweight[i] = acc;
    }
}

int embedding_forward(const int64_t *ids, const float *weight, float *out, int64_t N, int64_t V,
                      int64_t C) {
    if (N * C == 0) return 0;
    LAUNCH(embedding_gather, blocks_for(N * C), THREADS, ids, weight, out, N * C, C);
    return launch_status("embedding_forward");
}

static int embedding_backward_sorted(const float *dout, const int64_t *ids, float *dweight,
                                     int64_t N, int64_t V, int64_t C) {
    if (N > INT_MAX)                               // positions are ints
        return record_error((int)cudaErrorInvalidValue, "embedding_backward (N >= 2^31)");
    int *scratch;                                  // counts, start, cursor (V,); two (N,)
    CHECK(device_alloc((void **)&scratch, (3 * V + 2 * N) * (int64_t)sizeof(int)));
    int *counts = scratch, *start = counts + V, *cursor = start + V;
    int *unsorted = cursor + V, *sorted = unsorted + N;
    LAUNCH(zero_ints, blocks_for(V), THREADS, counts, V);
    LAUNCH(count_ids, blocks_for(N), THREADS, ids, counts, N);
    LAUNCH(exclusive_scan, 1, SCAN_THREADS, counts, start, cursor, V);
    LAUNCH(bucket_positions, blocks_for(N), THREADS, ids, cursor, unsorted, N);
    LAUNCH(sort_buckets, blocks_for(N), THREADS, ids, start, counts, unsorted, sorted, N);
    LAUNCH(sum_buckets, blocks_for(V * C), THREADS, dout, start, counts, sorted, dweight, V * C,
           C);
    CHECK(device_free(scratch));                   // stream-ordered: after the kernels
    return launch_status("embedding_backward");
}

int embedding_backward(const float *dout, const int64_t *ids, float *dweight, int64_t N,
                       int64_t V, int64_t C, int deterministic) {
    if (V * C == 0) return 0;
    if (N == 0) return fill(dweight, 0.0f, V * C);
    if (deterministic) return embedding_backward_sorted(dout, ids, dweight, N, V, C);
    int status = fill(dweight, 0.0f, V * C);
    if (status != 0) return status;
    LAUNCH(embedding_scatter_add, blocks_for(N * C), THREADS, dout, ids, dweight, N * C, C);
    return launch_status("embedding_backward");
}
