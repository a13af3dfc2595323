/* pool.c: a thread pool for the decoding kernels that never waits for a thread that is not running.
 *
 * What it is: pool_run(task, ctx, n) calls task(ctx, i) once for every chunk i < n, on the calling
 * thread and on up to num_threads() - 1 helper threads, and returns when every chunk is done.
 * Chunks are claimed one at a time from a shared ticket, (generation << 32) | next chunk, by
 * compare-and-swap: the caller starts claiming at once, and a helper claims only while it runs.
 * So a helper the OS has descheduled (a shared machine) never holds the caller up unless it
 * was descheduled in the middle of a chunk; a late helper finds the ticket of a later
 * generation, or no chunk left, and claims nothing. OpenMP cannot do that: its join barrier waits
 * for every thread of the team to arrive, scheduled or not, which cost a decoding step 10-50 ms
 * per matrix product on a loaded 2-core machine (BENCHMARKS.md, "Decoding").
 * Helpers spin for SPIN_US after their last chunk (a decoding step calls ~50 products a few
 * microseconds apart), then sleep on a condition variable until the next run.
 *
 * What it is not: a general scheduler. One run at a time: a second thread calling pool_run
 * while a run is in progress (Python releases the GIL in C calls) runs its chunks alone.
 * It is the one piece of mutable global state in the C kernels, as libgomp's team is:
 * the kernels that use it still take every size as an argument. Without OpenMP (NO_OMP=1)
 * there is one thread and pool_run is a loop.
 *
 * Read next: decode.c and quant_i8.c (the kernels that use it), parallel.h.
 */
#define _POSIX_C_SOURCE 200809L   /* clock_gettime under -std=c11 */
#include <stdatomic.h>
#include <stdint.h>
#include "parallel.h"
#include "tinyllm.h"

#ifdef _OPENMP
#include <pthread.h>
#include <sched.h>
#include <time.h>

#define SPIN_US 200     /* a helper's spin before it sleeps: longer than a decoding step's gaps */
#define MAX_HELPERS 255

static struct {
    _Atomic uint64_t ticket;      /* generation << 32 | next unclaimed chunk */
    _Atomic int64_t done;         /* chunks finished in this generation */
    _Atomic int64_t n;            /* chunks in this generation */
    _Atomic(pool_task) task;
    _Atomic(void *) ctx;
    _Atomic int want;             /* helpers asked to take part (num_threads() - 1) */
    _Atomic int sleepers;         /* helpers waiting on wake */
    atomic_flag busy;             /* a run is in progress */
    int started;                  /* helpers created (under lock) */
    pthread_mutex_t lock;
    pthread_cond_t wake;
} P = {.busy = ATOMIC_FLAG_INIT, .lock = PTHREAD_MUTEX_INITIALIZER,
       .wake = PTHREAD_COND_INITIALIZER};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e6 * t.tv_sec + 1e-3 * t.tv_nsec;
}

/* Claim and run chunks of generation gen until none is left. */
static void claim(uint32_t gen) {
    pool_task task = atomic_load(&P.task);
    void *ctx = atomic_load(&P.ctx);
    int64_t n = atomic_load(&P.n);
    uint64_t t = atomic_load(&P.ticket);
    /* a successful swap from (gen, i) with i < n proves this generation is still running, so
     * task, ctx and n (stored before its ticket) are its own */
    while ((uint32_t)(t >> 32) == gen && (int64_t)(t & 0xFFFFFFFFu) < n) {
        if (atomic_compare_exchange_weak(&P.ticket, &t, t + 1)) {
            task(ctx, (int64_t)(t & 0xFFFFFFFFu));
            atomic_fetch_add(&P.done, 1);
            t = atomic_load(&P.ticket);
        }
    }
}

static void *helper(void *arg) {
    int index = (int)(intptr_t)arg;
    uint32_t seen = (uint32_t)(atomic_load(&P.ticket) >> 32);
    for (;;) {
        double t0 = now_us();
        uint32_t gen;
        for (int spins = 0; (gen = (uint32_t)(atomic_load(&P.ticket) >> 32)) == seen; spins++) {
            cpu_relax();
            if ((spins & 255) == 255 && now_us() - t0 > SPIN_US) {
                pthread_mutex_lock(&P.lock);
                atomic_fetch_add(&P.sleepers, 1);
                while ((uint32_t)(atomic_load(&P.ticket) >> 32) == seen)
                    pthread_cond_wait(&P.wake, &P.lock);
                atomic_fetch_sub(&P.sleepers, 1);
                pthread_mutex_unlock(&P.lock);
                t0 = now_us();
            }
        }
        seen = gen;
        if (index < atomic_load(&P.want)) claim(gen);
    }
    return NULL;
}

/* A forked child has only the thread that forked: it starts its own helpers when it needs them. */
static void after_fork_in_child(void) {
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
    P.lock = lock;
    P.wake = wake;
    P.started = 0;
    atomic_store(&P.sleepers, 0);
    atomic_flag_clear(&P.busy);
}

/* Helpers up to `count` (created once, kept for the life of the process). */
static void start_helpers(int count) {
    pthread_mutex_lock(&P.lock);
    if (P.started == 0) pthread_atfork(NULL, NULL, after_fork_in_child);
    while (P.started < count) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attr, helper, (void *)(intptr_t)P.started);
        pthread_attr_destroy(&attr);
        if (failed) break;            /* fewer helpers: the caller does their chunks */
        P.started++;
    }
    pthread_mutex_unlock(&P.lock);
}

void pool_run(pool_task task, void *ctx, int64_t n) {
    int helpers = num_threads() - 1;
    helpers = helpers < MAX_HELPERS ? helpers : MAX_HELPERS;
    if (n <= 1 || helpers <= 0 || n > 0xFFFFFFFFll || atomic_flag_test_and_set(&P.busy)) {
        for (int64_t i = 0; i < n; i++) task(ctx, i);
        return;
    }
    if (P.started < helpers) start_helpers(helpers);
    atomic_store(&P.want, helpers);
    atomic_store(&P.task, task);
    atomic_store(&P.ctx, ctx);
    atomic_store(&P.n, n);
    atomic_store(&P.done, 0);
    uint32_t gen = (uint32_t)(atomic_load(&P.ticket) >> 32) + 1;
    atomic_store(&P.ticket, (uint64_t)gen << 32);
    if (atomic_load(&P.sleepers) > 0) {
        pthread_mutex_lock(&P.lock);
        pthread_cond_broadcast(&P.wake);
        pthread_mutex_unlock(&P.lock);
    }
    claim(gen);
    /* only chunks a helper is running are left: wait for them, yielding the core now and then
     * (the helper may be waiting for one) */
    for (int spins = 1; atomic_load(&P.done) < n; spins++) {
        cpu_relax();
        if ((spins & 1023) == 0) sched_yield();
    }
    atomic_flag_clear(&P.busy);
}

#else
void pool_run(pool_task task, void *ctx, int64_t n) {
    for (int64_t i = 0; i < n; i++) task(ctx, i);
}
#endif
