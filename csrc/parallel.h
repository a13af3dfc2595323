/* parallel.h: when a kernel's work is worth forking threads for, and the decode kernels' pool.
 * Not part of the C API.
 *
 * An OpenMP parallel region costs a fork and a join barrier: microseconds on an idle machine,
 * and far more on a shared one, where the barrier waits for a thread the OS has descheduled
 * (measured on the 2-core test machine under load: SiLU, RMSNorm and the residual add on one
 * decoding row of 384-1536 values took 16-44 us on one thread, 91-957 us on two). A decoding
 * step calls ~100 kernels on one row each, so the elementwise and row-wise kernels run on one
 * thread below PARALLEL_MIN values: 32768 floats (128 KiB) stream in ~10 us on one core.
 * The decode kernels (decode.c) split their work with pool_run (pool.c) instead, which never
 * waits for a thread that has not started.
 */
#ifndef TINYLLM_PARALLEL_H
#define TINYLLM_PARALLEL_H
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define PARALLEL_MIN 32768

/* The GEMMs' OpenMP bookkeeping: the threads a product of `fmas` multiply-adds gets (one below
 * `min`, where waking the others costs more than they save), and which of them is running. */
static inline int gemm_threads(int64_t fmas, int64_t min) {
#ifdef _OPENMP
    if (fmas >= min) return omp_get_max_threads();
#endif
    (void)fmas, (void)min;
    return 1;
}

static inline int thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* pool.c: task(ctx, i) for every chunk i < n, on this thread and the helpers that are running. */
typedef void (*pool_task)(void *ctx, int64_t chunk);
void pool_run(pool_task task, void *ctx, int64_t n);

#endif
