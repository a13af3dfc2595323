/* emu_selftest.cu: the CUDA emulator (csrc/cuda/emu) against results computed on the host.
 *
 * Built by tests/test_emu.py with g++ as C++, with -DTINYLLM_CUDA_EMU, together with the .cpp
 * files of csrc/cuda/emu. Every emulated feature is used by a kernel whose output is checked
 * against a plain host loop; then the errors the emulator must report are provoked (partial
 * __syncthreads, warp divergence, bad launch configurations, bad copies) and their codes and
 * messages checked. Prints one line per test and a summary; exits with 1 if any check failed.
 * Every test passes in both run orders (TINYLLM_EMU_ORDER=forward or reverse); the "order"
 * test checks that threads and blocks really run in the order asked for.
 *
 *   emu_selftest            run every test
 *   emu_selftest race       print what three racy kernels and a correct one compute: the racy
 *                           results differ between the two orders, the correct one does not
 *   emu_selftest oob-device a kernel writes past the end of a cudaMalloc buffer
 *   emu_selftest oob-shared a kernel writes past the end of a __shared__ array
 * The oob modes are for the AddressSanitizer build, which must stop them with a report.
 */
#include "common.cuh"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

/* ------------------------------------------------------------------------------------------
 * A minimal check framework. */
static int n_checks = 0, n_failed = 0;

__attribute__((format(printf, 2, 3))) static void check(bool ok, const char *fmt, ...) {
    n_checks++;
    if (ok) return;
    n_failed++;
    va_list ap;
    va_start(ap, fmt);
    printf("    FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static bool contains(const char *text, const char *part) { return strstr(text, part) != nullptr; }

/* The emulator runs blocks and threads in reverse order (TINYLLM_EMU_ORDER=reverse). */
static bool reverse_order() {
    const char *order = getenv("TINYLLM_EMU_ORDER");
    return order && !strcmp(order, "reverse");
}

/* The last error must be `code`, with every one of `parts` in its message. */
static void check_error(const char *what, cudaError_t code, std::vector<const char *> parts) {
    cudaError_t got = cudaGetLastError();
    const char *message = cudaGetErrorString(got);
    check(got == code, "%s: error %s, expected %s (%s)", what, cudaGetErrorName(got),
          cudaGetErrorName(code), message);
    for (const char *part : parts)
        check(contains(message, part), "%s: message lacks \"%s\": %s", what, part, message);
    check(cudaGetLastError() == cudaSuccess, "%s: cudaGetLastError did not clear the error", what);
}

static void check_launch_ok(const char *what) {
    cudaError_t err = cudaGetLastError();
    check(err == cudaSuccess, "%s: launch failed: %s", what, cudaGetErrorString(err));
}

template <class T>
static T *to_device(const std::vector<T> &host) {
    T *device = nullptr;
    check(cudaMalloc(&device, host.size() * sizeof(T)) == cudaSuccess, "cudaMalloc");
    check(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice) ==
              cudaSuccess, "cudaMemcpy to device");
    return device;
}

template <class T>
static T *device_zeros(size_t n) {
    return to_device(std::vector<T>(n, T(0)));
}

template <class T>
static std::vector<T> to_host(const T *device, size_t n) {
    std::vector<T> host(n);
    check(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess,
          "cudaMemcpy to host");
    return host;
}

/* ------------------------------------------------------------------------------------------
 * Indices: 3-D grids and blocks. */
__global__ void indices_kernel(unsigned *out) {
    unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    unsigned tid = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
    unsigned block = blockIdx.x + blockIdx.y * gridDim.x + blockIdx.z * gridDim.x * gridDim.y;
    unsigned *o = out + (block * threads + tid) * 12;
    const unsigned values[12] = {threadIdx.x, threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y,
                                 blockIdx.z,  blockDim.x,  blockDim.y,  blockDim.z, gridDim.x,
                                 gridDim.y,   gridDim.z};
    for (int i = 0; i < 12; i++) o[i] = values[i];
}

static void test_indices() {
    dim3 grid(3, 2, 2), block(4, 3, 2);
    unsigned threads = 24, blocks = 12;
    unsigned *out = device_zeros<unsigned>(blocks * threads * 12);
    LAUNCH(indices_kernel, grid, block, out);
    check_launch_ok("indices");
    std::vector<unsigned> h = to_host(out, blocks * threads * 12);
    for (unsigned bz = 0; bz < 2; bz++)
        for (unsigned by = 0; by < 2; by++)
            for (unsigned bx = 0; bx < 3; bx++)
                for (unsigned tz = 0; tz < 2; tz++)
                    for (unsigned ty = 0; ty < 3; ty++)
                        for (unsigned tx = 0; tx < 4; tx++) {
                            unsigned b = bx + by * 3 + bz * 6, t = tx + ty * 4 + tz * 12;
                            const unsigned expected[12] = {tx, ty, tz, bx, by, bz,
                                                           4,  3,  2,  3,  2,  2};
                            for (int i = 0; i < 12; i++)
                                check(h[(b * threads + t) * 12 + i] == expected[i],
                                      "indices: block (%u,%u,%u) thread (%u,%u,%u) field %d: %u",
                                      bx, by, bz, tx, ty, tz, i, h[(b * threads + t) * 12 + i]);
                        }
    cudaFree(out);
}

/* ------------------------------------------------------------------------------------------
 * __syncthreads: in loops, shared-memory reductions, a 2-D tile transpose. */
constexpr int kRotateRounds = 10;

/* Each round, every thread publishes its value and takes its neighbour's: wrong if any thread
 * ran ahead of the barrier. Works for any block size up to 1024 (here also 100: partial warp). */
__global__ void rotate_kernel(int *out) {
    __shared__ int s[1024];
    int t = threadIdx.x, n = blockDim.x, v = t + 1000 * (int)blockIdx.x;
    for (int round = 0; round < kRotateRounds; round++) {
        s[t] = v;
        __syncthreads();
        v = s[(t + 1 + round) % n] + 1;
        __syncthreads();
    }
    out[blockIdx.x * n + t] = v;
}

/* Tree reduction over 256 floats; then the same through common.cuh's block_sum. */
__global__ void reduce_kernel(const float *x, float *tree_sum, float *block_sum_out) {
    __shared__ float s[256];
    __shared__ float scratch[32];
    int t = threadIdx.x;
    float v = x[blockIdx.x * 256 + t];
    s[t] = v;
    __syncthreads();
    for (int stride = 128; stride > 0; stride >>= 1) {
        if (t < stride) s[t] += s[t + stride];
        __syncthreads();
    }
    if (t == 0) tree_sum[blockIdx.x] = s[0];
    float total = block_sum(v, scratch);
    if (t == 0) block_sum_out[blockIdx.x] = total;
}

/* 32x32 tiles through a padded shared tile, with a (32, 8) block: the classic transpose. */
__global__ void transpose_kernel(const float *in, float *out, int n) {
    __shared__ float tile[32][33];
    int x = blockIdx.x * 32 + threadIdx.x, y = blockIdx.y * 32 + threadIdx.y;
    for (int j = 0; j < 32; j += 8) tile[threadIdx.y + j][threadIdx.x] = in[(y + j) * n + x];
    __syncthreads();
    x = blockIdx.y * 32 + threadIdx.x;
    y = blockIdx.x * 32 + threadIdx.y;
    for (int j = 0; j < 32; j += 8) out[(y + j) * n + x] = tile[threadIdx.x][threadIdx.y + j];
}

static void test_barriers() {
    for (int n : {32, 100, 256, 1024}) {
        int blocks = 3;
        int *out = device_zeros<int>(blocks * n);
        LAUNCH(rotate_kernel, blocks, n, out);
        check_launch_ok("rotate");
        std::vector<int> h = to_host(out, blocks * n);
        for (int b = 0; b < blocks; b++)
            for (int t = 0; t < n; t++) {
                int who = t;
                for (int round = 0; round < kRotateRounds; round++) who = (who + 1 + round) % n;
                int expected = who + 1000 * b + kRotateRounds;
                check(h[b * n + t] == expected, "rotate n=%d: block %d thread %d: %d, expected %d",
                      n, b, t, h[b * n + t], expected);
            }
        cudaFree(out);
    }

    int blocks = 5;
    std::vector<float> x(blocks * 256);
    for (size_t i = 0; i < x.size(); i++) x[i] = (float)((i * 37) % 101) - 50.0f;
    float *dx = to_device(x);
    float *tree = device_zeros<float>(blocks), *bsum = device_zeros<float>(blocks);
    LAUNCH(reduce_kernel, blocks, 256, dx, tree, bsum);
    check_launch_ok("reduce");
    std::vector<float> ht = to_host(tree, blocks), hb = to_host(bsum, blocks);
    for (int b = 0; b < blocks; b++) {
        float expected = 0;
        for (int i = 0; i < 256; i++) expected += x[b * 256 + i]; /* small integers: exact */
        check(ht[b] == expected, "tree reduction block %d: %g, expected %g", b, ht[b], expected);
        check(hb[b] == expected, "block_sum block %d: %g, expected %g", b, hb[b], expected);
    }
    cudaFree(dx), cudaFree(tree), cudaFree(bsum);

    int n = 96;
    std::vector<float> m(n * n);
    for (int i = 0; i < n * n; i++) m[i] = (float)i;
    float *in = to_device(m), *out = device_zeros<float>(n * n);
    LAUNCH(transpose_kernel, dim3(n / 32, n / 32), dim3(32, 8), in, out, n);
    check_launch_ok("transpose");
    std::vector<float> t = to_host(out, n * n);
    int wrong = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) wrong += t[i * n + j] != m[j * n + i];
    check(wrong == 0, "transpose: %d wrong elements", wrong);
    cudaFree(in), cudaFree(out);
}

/* ------------------------------------------------------------------------------------------
 * Shuffles: every kind, with widths, for every type CUDA shuffles. */
enum { SHFL, SHFL_UP, SHFL_DOWN, SHFL_XOR };
struct ShuffleCase {
    int kind, operand, width;
};
constexpr ShuffleCase kShuffleCases[] = {
    {SHFL, 0, 32},      {SHFL, 5, 32},       {SHFL, 31, 32},     {SHFL, 40, 32},
    {SHFL, 3, 8},       {SHFL, -1, 16},      {SHFL, 0, 1},       {SHFL_UP, 0, 32},
    {SHFL_UP, 1, 32},   {SHFL_UP, 5, 32},    {SHFL_UP, 2, 8},    {SHFL_UP, 3, 4},
    {SHFL_DOWN, 1, 32}, {SHFL_DOWN, 16, 32}, {SHFL_DOWN, 31, 32}, {SHFL_DOWN, 3, 8},
    {SHFL_XOR, 1, 32},  {SHFL_XOR, 16, 32},  {SHFL_XOR, 31, 32}, {SHFL_XOR, 4, 8},
    {SHFL_XOR, 8, 8},   {SHFL_XOR, 12, 16},  {SHFL_XOR, 1, 1},   {SHFL_XOR, 2, 2},
};
constexpr int kShuffleCaseCount = sizeof kShuffleCases / sizeof kShuffleCases[0];

template <class T>
__global__ void shuffle_kernel(const T *in, T *out, int total) {
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    T v = in[g];
    for (int c = 0; c < kShuffleCaseCount; c++) {
        ShuffleCase k = kShuffleCases[c];
        T r;
        switch (k.kind) {
            case SHFL: r = __shfl_sync(FULL_MASK, v, k.operand, k.width); break;
            case SHFL_UP: r = __shfl_up_sync(FULL_MASK, v, k.operand, k.width); break;
            case SHFL_DOWN: r = __shfl_down_sync(FULL_MASK, v, k.operand, k.width); break;
            default: r = __shfl_xor_sync(FULL_MASK, v, k.operand, k.width); break;
        }
        out[c * total + g] = r;
    }
}

/* The lane a shuffle reads, from the CUDA Programming Guide's description. */
static int shuffle_source(ShuffleCase k, int lane) {
    int w = k.width, group = lane / w * w;
    switch (k.kind) {
        case SHFL: return group + ((k.operand % w) + w) % w;
        case SHFL_UP: return lane % w >= k.operand ? lane - k.operand : lane;
        case SHFL_DOWN: return lane % w + k.operand < w ? lane + k.operand : lane;
        default: /* xor may reach into earlier groups, not later ones */
            return (lane ^ k.operand) < group + w ? lane ^ k.operand : lane;
    }
}

template <class T>
static void test_shuffle_type(const char *type, T (*value)(int)) {
    int blocks = 2, threads = 64, total = blocks * threads;
    std::vector<T> x(total);
    for (int g = 0; g < total; g++) x[g] = value(g);
    T *in = to_device(x), *out = device_zeros<T>(total * kShuffleCaseCount);
    LAUNCH(shuffle_kernel<T>, blocks, threads, in, out, total);
    check_launch_ok("shuffle");
    std::vector<T> h = to_host(out, total * kShuffleCaseCount);
    for (int c = 0; c < kShuffleCaseCount; c++)
        for (int g = 0; g < total; g++) {
            int lane = g % 32, src = g - lane + shuffle_source(kShuffleCases[c], lane);
            check(h[c * total + g] == x[src], "shuffle<%s> case %d (kind %d, operand %d, width %d) "
                  "thread %d: got the value of another lane than %d", type, c,
                  kShuffleCases[c].kind, kShuffleCases[c].operand, kShuffleCases[c].width, g, src);
        }
    cudaFree(in), cudaFree(out);
}

static void test_shuffles() {
    test_shuffle_type<float>("float", [](int g) { return g * 1.5f + 0.25f; });
    test_shuffle_type<double>("double", [](int g) { return 1e12 + g * 0.5; });
    test_shuffle_type<int>("int", [](int g) { return g * 7 - 100; });
    test_shuffle_type<unsigned>("unsigned", [](int g) { return 0xf0000000u + (unsigned)g; });
    test_shuffle_type<long long>("long long", [](int g) { return (1LL << 40) * (g + 1) - 3; });
    test_shuffle_type<unsigned long long>(
        "unsigned long long", [](int g) { return 0xffff000000000000ull + (unsigned long long)g; });
}

/* ------------------------------------------------------------------------------------------
 * Votes, __activemask, __syncwarp, partial masks and lanes that returned early. */
__global__ void vote_kernel(unsigned *out) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    unsigned *o = out + threadIdx.x * 8;
    int pred = warp == 0 ? lane % 3 == 0 : 1;
    o[0] = __ballot_sync(FULL_MASK, pred);
    o[1] = __any_sync(FULL_MASK, pred);
    o[2] = __all_sync(FULL_MASK, pred);
    o[3] = __any_sync(FULL_MASK, 0);
    o[4] = __activemask();
    /* a partial mask: only lanes 0-15 take part */
    if (lane < 16) {
        o[5] = __ballot_sync(0x0000ffffu, lane & 1);
        o[6] = __shfl_down_sync(0x0000ffffu, lane, 1, 16);
    }
    /* __syncwarp orders the warp's shared-memory accesses */
    __shared__ int s[64];
    s[threadIdx.x] = lane * 10;
    __syncwarp();
    o[7] = s[warp * 32 + 31 - lane];
}

/* Lanes 20 and up return at once: the collectives then involve lanes 0-19 only. */
__global__ void early_return_kernel(unsigned *out) {
    int lane = threadIdx.x % 32;
    if (lane >= 20) return;
    unsigned *o = out + threadIdx.x * 4;
    o[0] = __ballot_sync(FULL_MASK, 1);
    o[1] = __all_sync(FULL_MASK, lane < 20);
    o[2] = __activemask();
    o[3] = __shfl_xor_sync(FULL_MASK, lane, 1);
}

/* A block of 40 threads: warp 1 has lanes 0-7 only. */
__global__ void partial_warp_kernel(unsigned *out) {
    out[threadIdx.x * 2] = __ballot_sync(FULL_MASK, 1);
    out[threadIdx.x * 2 + 1] = __activemask();
}

static void test_votes() {
    unsigned *out = device_zeros<unsigned>(64 * 8);
    LAUNCH(vote_kernel, 1, 64, out);
    check_launch_ok("votes");
    std::vector<unsigned> h = to_host(out, 64 * 8);
    unsigned every_third = 0;
    for (int l = 0; l < 32; l += 3) every_third |= 1u << l;
    for (int t = 0; t < 64; t++) {
        int lane = t % 32, warp = t / 32;
        const unsigned *o = &h[t * 8];
        check(o[0] == (warp == 0 ? every_third : FULL_MASK), "ballot thread %d: 0x%08x", t, o[0]);
        check(o[1] == 1, "any thread %d: %u", t, o[1]);
        check(o[2] == (warp == 0 ? 0u : 1u), "all thread %d: %u", t, o[2]);
        check(o[3] == 0, "any(0) thread %d: %u", t, o[3]);
        check(o[4] == FULL_MASK, "activemask thread %d: 0x%08x", t, o[4]);
        if (lane < 16) {
            check(o[5] == 0xaaaau, "partial-mask ballot thread %d: 0x%08x", t, o[5]);
            unsigned expected = lane == 15 ? 15u : (unsigned)lane + 1;
            check(o[6] == expected, "partial-mask shuffle thread %d: %u", t, o[6]);
        }
        check(o[7] == (unsigned)(31 - lane) * 10, "syncwarp thread %d: %u", t, o[7]);
    }
    cudaFree(out);

    out = device_zeros<unsigned>(64 * 4);
    LAUNCH(early_return_kernel, 1, 64, out);
    check_launch_ok("early return");
    h = to_host(out, 64 * 4);
    for (int t = 0; t < 64; t++) {
        int lane = t % 32;
        if (lane >= 20) continue;
        check(h[t * 4] == 0xfffffu, "early return: ballot thread %d: 0x%08x", t, h[t * 4]);
        check(h[t * 4 + 1] == 1, "early return: all thread %d: %u", t, h[t * 4 + 1]);
        check(h[t * 4 + 2] == 0xfffffu, "early return: activemask thread %d: 0x%08x", t,
              h[t * 4 + 2]);
        check(h[t * 4 + 3] == (unsigned)(lane ^ 1), "early return: shuffle thread %d: %u", t,
              h[t * 4 + 3]);
    }
    cudaFree(out);

    out = device_zeros<unsigned>(40 * 2);
    LAUNCH(partial_warp_kernel, 1, 40, out);
    check_launch_ok("partial warp");
    h = to_host(out, 40 * 2);
    for (int t = 0; t < 40; t++) {
        unsigned expected = t < 32 ? FULL_MASK : 0xffu;
        check(h[t * 2] == expected && h[t * 2 + 1] == expected,
              "partial warp thread %d: ballot 0x%08x, activemask 0x%08x", t, h[t * 2],
              h[t * 2 + 1]);
    }
    cudaFree(out);
}

/* ------------------------------------------------------------------------------------------
 * Atomics. 4 blocks of 256 threads; g is the global thread id. */
struct AtomicResults {
    float f_sum;
    double d_sum;
    int i_sum, i_sub, i_max, i_min, i_exch;
    unsigned u_sum, u_sub, u_max, u_min, u_cas_count;
    unsigned long long ull_sum, ull_max, ull_min, ull_cas_count;
    long long ll_max, ll_min;
    float f_exch, f_max;
    int counter;
};

__global__ void atomic_kernel(AtomicResults *r, int *tickets, int *exch_old, float *fexch_old) {
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    __threadfence();
    __threadfence_block();
    atomicAdd(&r->f_sum, 1.0f);
    atomicAdd(&r->d_sum, 0.5);
    atomicAdd(&r->i_sum, -3);
    atomicAdd(&r->u_sum, 2u);
    atomicAdd(&r->ull_sum, 1ull << 33);
    atomicSub(&r->i_sub, 1);
    atomicSub(&r->u_sub, 1u);
    atomicMax(&r->i_max, g - 500);
    atomicMin(&r->i_min, g - 500);
    atomicMax(&r->u_max, (unsigned)g * 3);
    atomicMin(&r->u_min, (unsigned)g + 7);
    atomicMax(&r->ll_max, (long long)g << 35);
    atomicMin(&r->ll_min, -((long long)g << 35));
    atomicMax(&r->ull_max, (unsigned long long)g << 40);
    atomicMin(&r->ull_min, ((unsigned long long)g << 40) + 5);
    tickets[g] = atomicAdd(&r->counter, 1);
    exch_old[g] = atomicExch(&r->i_exch, g);
    fexch_old[g] = atomicExch(&r->f_exch, (float)g);
    /* compare-and-swap loops: a float maximum through its bits, and counters */
    float value = (float)((g * 7919) % 1021) - 300.0f;
    int old = __float_as_int(r->f_max), assumed;
    do {
        assumed = old;
        old = atomicCAS((int *)&r->f_max, assumed,
                        __float_as_int(fmaxf(value, __int_as_float(assumed))));
    } while (old != assumed);
    unsigned uold = r->u_cas_count, uassumed;
    do {
        uassumed = uold;
        uold = atomicCAS(&r->u_cas_count, uassumed, uassumed + 1);
    } while (uold != uassumed);
    unsigned long long lold = r->ull_cas_count, lassumed;
    do {
        lassumed = lold;
        lold = atomicCAS(&r->ull_cas_count, lassumed, lassumed + 2);
    } while (lold != lassumed);
}

static void test_atomics() {
    const int n = 1024;
    AtomicResults init{};
    init.i_sub = 10, init.u_sub = 5000, init.i_max = -1000000, init.i_min = 1000000;
    init.u_min = 0xffffffffu, init.ll_min = 0, init.ull_min = ~0ull, init.i_exch = -7;
    init.f_exch = -1.0f, init.f_max = -INFINITY;
    AtomicResults *dr = to_device(std::vector<AtomicResults>{init});
    int *tickets = device_zeros<int>(n), *exch_old = device_zeros<int>(n);
    float *fexch_old = device_zeros<float>(n);
    LAUNCH(atomic_kernel, 4, 256, dr, tickets, exch_old, fexch_old);
    check_launch_ok("atomics");
    AtomicResults r = to_host(dr, 1)[0];
    check(r.f_sum == 1024.0f, "atomicAdd float: %g", r.f_sum);
    check(r.d_sum == 512.0, "atomicAdd double: %g", r.d_sum);
    check(r.i_sum == -3 * n, "atomicAdd int: %d", r.i_sum);
    check(r.u_sum == 2u * n, "atomicAdd unsigned: %u", r.u_sum);
    check(r.ull_sum == (1ull << 33) * n, "atomicAdd unsigned long long: %llu", r.ull_sum);
    check(r.i_sub == 10 - n, "atomicSub int: %d", r.i_sub);
    check(r.u_sub == 5000u - n, "atomicSub unsigned: %u", r.u_sub);
    check(r.i_max == n - 1 - 500 && r.i_min == -500, "atomicMax/Min int: %d %d", r.i_max, r.i_min);
    check(r.u_max == (n - 1) * 3u && r.u_min == 7u, "atomicMax/Min unsigned: %u %u", r.u_max,
          r.u_min);
    check(r.ll_max == (long long)(n - 1) << 35 && r.ll_min == -((long long)(n - 1) << 35),
          "atomicMax/Min long long: %lld %lld", r.ll_max, r.ll_min);
    check(r.ull_max == (unsigned long long)(n - 1) << 40 && r.ull_min == 5,
          "atomicMax/Min unsigned long long: %llu %llu", r.ull_max, r.ull_min);
    check(r.u_cas_count == (unsigned)n && r.ull_cas_count == 2ull * n,
          "atomicCAS counters: %u %llu", r.u_cas_count, r.ull_cas_count);
    float expected_max = -INFINITY;
    for (int g = 0; g < n; g++)
        expected_max = fmaxf(expected_max, (float)((g * 7919) % 1021) - 300.0f);
    check(r.f_max == expected_max, "atomicCAS float max: %g, expected %g", r.f_max, expected_max);
    /* tickets: each value once; exchanges: every value went in once and came out once */
    std::vector<int> t = to_host(tickets, n), e = to_host(exch_old, n);
    std::vector<float> fe = to_host(fexch_old, n);
    std::vector<int> seen(n, 0);
    for (int v : t)
        if (v >= 0 && v < n) seen[v]++;
    int once = 0;
    for (int s : seen) once += s == 1;
    check(once == n && r.counter == n, "atomicAdd tickets: %d distinct of %d", once, n);
    long long in = -7, out = r.i_exch;
    double fin = -1.0, fout = r.f_exch;
    for (int g = 0; g < n; g++) in += g, out += e[g], fin += g, fout += fe[g];
    check(in == out, "atomicExch int: the old values do not add up");
    check(fin == fout, "atomicExch float: the old values do not add up");
    cudaFree(dr), cudaFree(tickets), cudaFree(exch_old), cudaFree(fexch_old);
}

/* ------------------------------------------------------------------------------------------
 * Math intrinsics, min/max, bit casts and bit counts. */
__global__ void math_kernel(const float *one, float *f, int *i, unsigned *u, long long *ll) {
    float nan = nanf("");
    f[0] = rsqrtf(4.0f);
    f[1] = __expf(1.0f);
    f[2] = __logf(expf(2.0f));
    f[3] = __fdividef(1.0f, 4.0f);
    f[4] = __frcp_rn(8.0f);
    f[5] = __fsqrt_rn(9.0f);
    f[6] = __saturatef(-1.0f);
    f[7] = __saturatef(0.25f);
    f[8] = __saturatef(2.0f);
    f[9] = __saturatef(nan);
    f[10] = __ldg(one);
    f[11] = max(2.5f, nan);
    f[12] = min(-1.5f, 3.0f);
    f[13] = (float)min(1.0, 2.0f);
    f[14] = INFINITY;
    f[15] = __int_as_float(0x40000000);
    f[16] = __uint_as_float(0x3f800000u);
    float4 q = reinterpret_cast<const float4 *>(one)[0]; /* a vector load of one[0..3] */
    float2 p = make_float2(q.w, 6.0f);
    f[17] = make_float4(q.x, q.y, q.z, p.x).w + p.y;
    i[0] = __float2int_rn(2.5f);
    i[1] = __float2int_rn(3.5f);
    i[2] = __float2int_rn(-2.5f);
    i[3] = __float2int_rn(1.4f);
    i[4] = min(3, -4);
    i[5] = max(3, -4);
    i[6] = __float_as_int(1.0f);
    i[7] = __popc(0xf0f0u);
    i[8] = __ffs(0);
    i[9] = __ffs(8);
    i[10] = __clz(1);
    i[11] = __clz(0);
    i[12] = warpSize;
    u[0] = max(3u, 5u);
    u[1] = min(-1, 2u); /* CUDA compares mixed signed/unsigned as unsigned */
    u[2] = __float_as_uint(-0.0f);
    ll[0] = min((int64_t)1 << 40, (int64_t)5);
    ll[1] = max(-((int64_t)1 << 40), (int64_t)-5);
    ll[2] = (long long)max(1ull << 63, 2ull);
}

static void test_math() {
    static_assert(sizeof(float4) == 16 && alignof(float4) == 16 && alignof(float2) == 8, "");
    float *one = to_device(std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f});
    float *f = device_zeros<float>(18);
    int *i = device_zeros<int>(13);
    unsigned *u = device_zeros<unsigned>(3);
    long long *ll = device_zeros<long long>(3);
    LAUNCH(math_kernel, 1, 1, one, f, i, u, ll);
    check_launch_ok("math");
    std::vector<float> hf = to_host(f, 18);
    const float ef[18] = {0.5f, expf(1.0f), 2.0f, 0.25f, 0.125f, 3.0f, 0.0f, 0.25f, 1.0f, 0.0f,
                          1.0f, 2.5f, -1.5f, 1.0f, INFINITY, 2.0f, 1.0f, 10.0f};
    for (int k = 0; k < 18; k++)
        check(std::fabs(hf[k] - ef[k]) <= 1e-6f * std::fabs(ef[k]) || hf[k] == ef[k],
              "math float %d: %g, expected %g", k, hf[k], ef[k]);
    std::vector<int> hi = to_host(i, 13);
    const int ei[13] = {2, 4, -2, 1, -4, 3, 0x3f800000, 8, 0, 4, 31, 32, 32};
    for (int k = 0; k < 13; k++)
        check(hi[k] == ei[k], "math int %d: %d, expected %d", k, hi[k], ei[k]);
    std::vector<unsigned> hu = to_host(u, 3);
    check(hu[0] == 5 && hu[1] == 2 && hu[2] == 0x80000000u, "math unsigned: %u %u 0x%08x", hu[0],
          hu[1], hu[2]);
    std::vector<long long> hl = to_host(ll, 3);
    check(hl[0] == 5 && hl[1] == -5 && hl[2] == (long long)(1ull << 63),
          "math 64-bit: %lld %lld %lld", hl[0], hl[1], hl[2]);
    cudaFree(one), cudaFree(f), cudaFree(i), cudaFree(u), cudaFree(ll);
}

/* ------------------------------------------------------------------------------------------
 * wmma: TF32 m16n16k8 against a plain loop. */
using namespace nvcuda;

/* TF32 rounding written independently of the emulator's bit trick: 11 significant bits,
 * ties away from zero (std::round). */
static float tf32_round(float x) {
    if (!std::isfinite(x) || x == 0.0f) return x;
    int e;
    double m = std::frexp((double)x, &e); /* |m| in [0.5, 1) */
    return (float)std::ldexp(std::round(std::ldexp(m, 11)), e - 11);
}
static float tf32_truncate(float x) {
    if (!std::isfinite(x) || x == 0.0f) return x;
    int e;
    double m = std::frexp((double)x, &e);
    return (float)std::ldexp(std::trunc(std::ldexp(m, 11)), e - 11);
}

/* C (16x16) = A (16x16) B (16x16) + C0, K = 16 in two m16n16k8 steps. Warp 0 reads A, B and
 * C0 row-major and stores row-major; warp 1 reads the transposed copies through col_major
 * fragments and stores column-major. With convert = 0, the fragments keep all float bits. */
__global__ void wmma_kernel(const float *a, const float *b, const float *at, const float *bt,
                            const float *c0, const float *c0t, float *out, float *outt,
                            int convert, int *sizes) {
    int warp = threadIdx.x / 32;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
    if (warp == 0)
        wmma::load_matrix_sync(acc, c0, 16, wmma::mem_row_major);
    else
        wmma::load_matrix_sync(acc, c0t, 16, wmma::mem_col_major);
    for (int k = 0; k < 16; k += 8) {
        if (warp == 0) {
            wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
            wmma::load_matrix_sync(fa, a + k, 16);
            wmma::load_matrix_sync(fb, b + k * 16, 16);
            if (convert) {
                for (int i = 0; i < fa.num_elements; i++) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
                for (int i = 0; i < fb.num_elements; i++) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
            }
            wmma::mma_sync(acc, fa, fb, acc);
        } else {
            wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fa;
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fb;
            wmma::load_matrix_sync(fa, at + k * 16, 16);
            wmma::load_matrix_sync(fb, bt + k, 16);
            if (convert) {
                for (int i = 0; i < fa.num_elements; i++) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
                for (int i = 0; i < fb.num_elements; i++) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
            }
            wmma::mma_sync(acc, fa, fb, acc);
            if (threadIdx.x == 32) {
                sizes[0] = fa.num_elements;
                sizes[1] = fb.num_elements;
                sizes[2] = acc.num_elements;
            }
        }
    }
    if (warp == 0)
        wmma::store_matrix_sync(out, acc, 16, wmma::mem_row_major);
    else
        wmma::store_matrix_sync(outt, acc, 16, wmma::mem_col_major);
}

__global__ void wmma_fill_kernel(float *out) {
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
    wmma::fill_fragment(acc, 0.5f);
    wmma::store_matrix_sync(out, acc, 16, wmma::mem_row_major);
}

static void test_wmma() {
    const int n = 16;
    std::vector<float> a(n * n), b(n * n), at(n * n), bt(n * n), c0(n * n), c0t(n * n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            a[i * n + j] = std::sin(1.0f + i * 0.37f + j * 1.31f) * 3.0f; /* many mantissa bits */
            b[i * n + j] = std::cos(0.5f + i * 0.73f - j * 0.29f);
            c0[i * n + j] = 0.125f * (i - j);
        }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) at[j * n + i] = a[i * n + j], bt[j * n + i] = b[i * n + j],
                                    c0t[j * n + i] = c0[i * n + j];
    float *da = to_device(a), *db = to_device(b), *dat = to_device(at), *dbt = to_device(bt);
    float *dc0 = to_device(c0), *dc0t = to_device(c0t);
    float *out = device_zeros<float>(n * n), *outt = device_zeros<float>(n * n);
    int *sizes = device_zeros<int>(3);
    for (int convert = 1; convert >= 0; convert--) {
        LAUNCH(wmma_kernel, 1, 64, da, db, dat, dbt, dc0, dc0t, out, outt, convert, sizes);
        check_launch_ok("wmma");
        std::vector<float> h = to_host(out, n * n), ht = to_host(outt, n * n);
        double worst = 0, scale = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double ref = c0[i * n + j];
                for (int k = 0; k < n; k++) {
                    float x = a[i * n + k], y = b[k * n + j];
                    ref += convert ? (double)tf32_round(x) * tf32_round(y)
                                   : (double)tf32_truncate(x) * tf32_truncate(y);
                }
                worst = std::max(worst, std::fabs(h[i * n + j] - ref));
                worst = std::max(worst, std::fabs(ht[j * n + i] - ref));
                scale = std::max(scale, std::fabs(ref));
            }
        /* the float sums of 16 exact products: a few float roundings */
        check(worst <= 1e-5 * scale, "wmma (convert=%d): error %g relative to the plain loop",
              convert, worst / scale);
    }
    std::vector<int> hs = to_host(sizes, 3);
    check(hs[0] == 128 && hs[1] == 128 && hs[2] == 256, "wmma num_elements: %d %d %d", hs[0],
          hs[1], hs[2]);
    LAUNCH(wmma_fill_kernel, 1, 32, out);
    check_launch_ok("wmma fill");
    std::vector<float> hf = to_host(out, n * n);
    int wrong = 0;
    for (float v : hf) wrong += v != 0.5f;
    check(wrong == 0, "fill_fragment: %d wrong elements", wrong);
    cudaFree(da), cudaFree(db), cudaFree(dat), cudaFree(dbt), cudaFree(dc0), cudaFree(dc0t);
    cudaFree(out), cudaFree(outt), cudaFree(sizes);

    /* __float_to_tf32: round to nearest, ties away from zero; against the independent rounding */
    const float one = 1.0f, ulp = std::ldexp(1.0f, -10);
    const float cases[][2] = {
        {one + ulp / 2, one + ulp},                  /* tie, even: away from zero (not to even) */
        {-(one + ulp / 2), -(one + ulp)},
        {one + ulp + ulp / 2, one + 2 * ulp},        /* tie, odd */
        {one + ulp / 2 - std::ldexp(1.0f, -23), one}, /* just below the tie */
        {one + ulp / 4, one},
        {3.0f, 3.0f},
        {0.0f, 0.0f},
        {INFINITY, INFINITY},
    };
    for (const auto &c : cases) {
        float got = wmma::__float_to_tf32(c[0]);
        check(got == c[1] && got == tf32_round(c[0]), "__float_to_tf32(%.9g): %.9g, expected %.9g",
              c[0], got, c[1]);
    }
    check(std::isnan(wmma::__float_to_tf32(nanf(""))), "__float_to_tf32(NaN) is not NaN");
    int mismatches = 0;
    for (int k = 0; k < 100000; k++) {
        float x = std::ldexp((float)((k * 2654435761u) % 1000003) / 1000003.0f + 0.5f, k % 60 - 30);
        mismatches += wmma::__float_to_tf32(x) != tf32_round(x);
    }
    check(mismatches == 0, "__float_to_tf32: %d of 100000 values rounded differently", mismatches);
}

/* ------------------------------------------------------------------------------------------
 * Errors the emulator must report, and recovery after them. */
__global__ void partial_syncthreads_kernel(int *out) {
    if (blockIdx.x == 3 && threadIdx.x >= 96) return;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

__global__ void shuffle_vs_barrier_kernel(float *out) {
    float v = (float)threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_xor_sync(FULL_MASK, v, 1);
    __syncthreads();
    out[threadIdx.x] = v;
}

__global__ void different_votes_kernel(int *out) {
    int lane = threadIdx.x % 32;
    if (lane < 16)
        out[threadIdx.x] = __ballot_sync(FULL_MASK, 1);
    else
        out[threadIdx.x] = __any_sync(FULL_MASK, 1);
}

__global__ void different_barriers_kernel(int *out) {
    if (threadIdx.x < 32) {
        out[threadIdx.x] = 1;
        __syncthreads();
    } else {
        out[threadIdx.x] = 2;
        __syncthreads();
    }
}

__global__ void read_returned_lane_kernel(int *out) {
    int lane = threadIdx.x % 32;
    if (lane >= 16) return;
    out[lane] = __shfl_down_sync(FULL_MASK, lane, 8);
}

__global__ void lane_outside_mask_kernel(int *out) {
    out[threadIdx.x] = __shfl_sync(0x1u, (int)threadIdx.x, 0);
}

__global__ void bad_width_kernel(int *out) {
    out[threadIdx.x] = __shfl_xor_sync(FULL_MASK, (int)threadIdx.x, 1, 12);
}

__global__ void misaligned_wmma_kernel(const float *a) {
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
    wmma::load_matrix_sync(fa, a + 1, 16);
}

__global__ void flag_kernel(int *flag) { atomicAdd(flag, 1); }

static void test_launch_failures() {
    int *out = device_zeros<int>(4 * 128);
    LAUNCH(partial_syncthreads_kernel, 4, 128, out);
    check(cudaPeekAtLastError() == cudaErrorLaunchFailure, "peek after a failed launch");
    check(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "synchronize after a failed launch");
    check_error("partial __syncthreads", cudaErrorLaunchFailure,
                {"unspecified launch failure", "block (3,0,0)", "__syncthreads (",
                 "emu_selftest.cu:", "reached by 96 of 128 threads", "the other 32 had returned"});
    check(cudaDeviceSynchronize() == cudaSuccess, "synchronize after the error was taken");
    /* block 3 is the last block to run, or in reverse order the first */
    std::vector<int> h = to_host(out, 4 * 128);
    int done = 0;
    for (int i = 0; i < 3 * 128; i++) done += h[i] == 1;
    int expected_done = reverse_order() ? 0 : 3 * 128;
    check(done == expected_done, "the blocks before the failing one ran: %d threads, expected %d",
          done, expected_done);

    LAUNCH(shuffle_vs_barrier_kernel, 1, 64, (float *)out);
    check_error("shuffle vs __syncthreads", cudaErrorLaunchFailure,
                {"reached by 48 of 64 threads", "lanes 0-15 of warp 0 wait at __shfl_xor_sync",
                 "for lanes 16-31", "warp divergence"});
    LAUNCH(different_votes_kernel, 1, 32, out);
    check_error("different collectives", cudaErrorLaunchFailure,
                {"lanes 0-15 of warp 0 wait at __ballot_sync", "for lanes 16-31 (warp divergence)",
                 "lanes 16-31 of warp 0 wait at __any_sync", "for lanes 0-15 (warp divergence)"});
    /* the first thread to reach the second barrier: 32, or in reverse order 31 */
    LAUNCH(different_barriers_kernel, 1, 64, out);
    check_error("different __syncthreads", cudaErrorLaunchFailure,
                {reverse_order() ? "thread (31,0,0)" : "thread (32,0,0)",
                 "must reach the same barrier"});
    LAUNCH(read_returned_lane_kernel, 1, 32, out);
    check_error("shuffle from a returned lane", cudaErrorLaunchFailure,
                {"__shfl_down_sync", "lane 8 reads lane 16, which has returned"});
    /* the first lane to run that is not lane 0: 1, or in reverse order 31 */
    LAUNCH(lane_outside_mask_kernel, 1, 32, out);
    check_error("lane outside the mask", cudaErrorLaunchFailure,
                {reverse_order() ? "mask 0x00000001, which does not contain the calling lane 31"
                                 : "mask 0x00000001, which does not contain the calling lane 1"});
    LAUNCH(bad_width_kernel, 1, 32, out);
    check_error("bad shuffle width", cudaErrorLaunchFailure, {"width 12 is not a power of 2"});
    float *tile = device_zeros<float>(256);
    LAUNCH(misaligned_wmma_kernel, 1, 32, tile);
    check_error("misaligned wmma pointer", cudaErrorLaunchFailure, {"not 32-byte aligned"});
    cudaFree(tile);

    /* after all that, launches work again */
    cudaMemset(out, 0, sizeof(int));
    LAUNCH(flag_kernel, 2, 64, out);
    check_launch_ok("launch after failures");
    check(to_host(out, 1)[0] == 128, "launch after failures: %d threads ran", to_host(out, 1)[0]);

    /* invalid configurations: nothing runs */
    cudaMemset(out, 0, sizeof(int));
    LAUNCH(flag_kernel, 1, 2048, out);
    check_error("block of 2048", cudaErrorInvalidConfiguration,
                {"invalid configuration argument", "block (2048,1,1) has 2048 threads"});
    LAUNCH(flag_kernel, 0, 32, out);
    check_error("empty grid", cudaErrorInvalidConfiguration, {"grid (0,1,1) is empty"});
    LAUNCH(flag_kernel, 1, dim3(1, 1, 65), out);
    check_error("block z of 65", cudaErrorInvalidConfiguration, {"exceeds the limits"});
    LAUNCH(flag_kernel, dim3(1, 65536), 32, out);
    check_error("grid y of 65536", cudaErrorInvalidConfiguration, {"exceeds the limits"});
    LAUNCH(flag_kernel, dim3(1, 1, 1), dim3(0, 1, 1), out);
    check_error("empty block", cudaErrorInvalidConfiguration, {"is empty"});
    check(to_host(out, 1)[0] == 0, "a refused launch ran");
    LAUNCH(flag_kernel, 1, dim3(32, 32), out);
    check_launch_ok("block of 1024");
    check(to_host(out, 1)[0] == 1024, "block of 1024: %d threads ran", to_host(out, 1)[0]);
    cudaFree(out);
}

/* ------------------------------------------------------------------------------------------
 * The runtime API: devices, memory, copies and their checks. */
static void test_runtime() {
    int count = 0, device = -1;
    check(cudaGetDeviceCount(&count) == cudaSuccess && count == 1, "device count %d", count);
    check(cudaSetDevice(0) == cudaSuccess, "cudaSetDevice(0)");
    check(cudaSetDevice(1) == cudaErrorInvalidDevice, "cudaSetDevice(1)");
    check_error("cudaSetDevice(1)", cudaErrorInvalidDevice, {"invalid device ordinal"});
    check(cudaGetDevice(&device) == cudaSuccess && device == 0, "cudaGetDevice: %d", device);
    cudaDeviceProp prop;
    check(cudaGetDeviceProperties(&prop, 0) == cudaSuccess, "cudaGetDeviceProperties");
    check(!strcmp(prop.name, "CPU emulation (csrc/cuda/emu)") && prop.major == 9 &&
              prop.minor == 0 && prop.warpSize == 32 && prop.maxThreadsPerBlock == 1024 &&
              prop.sharedMemPerBlock == 48 * 1024 && prop.multiProcessorCount > 0 &&
              prop.totalGlobalMem > 0,
          "device properties: %s %d.%d", prop.name, prop.major, prop.minor);
    check(!strcmp(cudaGetErrorName(cudaErrorInvalidValue), "cudaErrorInvalidValue") &&
              !strcmp(cudaGetErrorName(cudaErrorLaunchFailure), "cudaErrorLaunchFailure") &&
              !strcmp(cudaGetErrorString(cudaSuccess), "no error"),
          "error names");

    size_t free0, total, free1;
    check(cudaMemGetInfo(&free0, &total) == cudaSuccess && free0 <= total, "cudaMemGetInfo");
    unsigned char *d = nullptr;
    check(cudaMalloc(&d, 1000) == cudaSuccess && (uintptr_t)d % 256 == 0, "cudaMalloc alignment");
    cudaMemGetInfo(&free1, &total);
    check(free0 - free1 == 1000, "cudaMemGetInfo: free went from %zu to %zu", free0, free1);
    std::vector<unsigned char> h(1000);
    cudaMemcpy(h.data(), d, 1000, cudaMemcpyDeviceToHost);
    int poisoned = 0;
    for (unsigned char c : h) poisoned += c == 0xff;
    check(poisoned == 1000, "new memory is not filled with 0xff: %d of 1000 bytes", poisoned);

    /* copies inside the allocation, and overlapping device-to-device */
    for (int i = 0; i < 1000; i++) h[i] = (unsigned char)i;
    check(cudaMemcpy(d, h.data(), 1000, cudaMemcpyHostToDevice) == cudaSuccess, "copy in");
    check(cudaMemcpy(d + 10, d, 100, cudaMemcpyDeviceToDevice) == cudaSuccess, "overlapping copy");
    check(cudaMemcpyAsync(h.data(), d, 1000, cudaMemcpyDefault) == cudaSuccess, "default copy");
    check(cudaStreamSynchronize(0) == cudaSuccess, "cudaStreamSynchronize");
    check(h[10] == 0 && h[109] == 99 && h[110] == 110, "overlapping copy: %d %d %d", h[10], h[109],
          h[110]);
    check(cudaMemsetAsync(d + 900, 7, 100) == cudaSuccess, "cudaMemsetAsync");
    cudaMemcpy(h.data(), d, 1000, cudaMemcpyDeviceToHost);
    check(h[899] == (unsigned char)899 && h[900] == 7 && h[999] == 7, "cudaMemset");

    /* 2-D: 5 rows of 30 bytes from a pitch of 40 to a pitch of 200 */
    std::vector<unsigned char> rows(200), back(5 * 200, 0);
    for (int i = 0; i < 200; i++) rows[i] = (unsigned char)(i + 1);
    check(cudaMemcpy2D(d, 200, rows.data(), 40, 30, 5, cudaMemcpyHostToDevice) == cudaSuccess,
          "cudaMemcpy2D in");
    check(cudaMemcpy2D(back.data(), 200, d, 200, 30, 5, cudaMemcpyDeviceToHost) == cudaSuccess,
          "cudaMemcpy2D out");
    check(back[0] == 1 && back[29] == 30 && back[200] == 41 && back[4 * 200 + 29] == 190,
          "cudaMemcpy2D values");

    /* the checks */
    unsigned char host[64];
    cudaMemcpy(host, d, 1000, cudaMemcpyHostToDevice);
    check_error("cudaMemcpy to a host pointer as device", cudaErrorInvalidValue,
                {"invalid argument", "cudaMemcpy: dst", "is not device memory"});
    cudaMemcpy(h.data(), d + 1, 1000, cudaMemcpyDeviceToHost);
    check_error("cudaMemcpy past the end", cudaErrorInvalidValue,
                {"cudaMemcpy: src", "runs 1 bytes past the end of the 1000-byte allocation"});
    cudaMemcpy(d, d + 500, 600, cudaMemcpyDeviceToDevice);
    check_error("device-to-device past the end", cudaErrorInvalidValue, {"past the end"});
    check(cudaMemcpy(h.data(), d, 10, (cudaMemcpyKind)7) == cudaErrorInvalidMemcpyDirection,
          "bad copy kind");
    check_error("bad copy kind", cudaErrorInvalidMemcpyDirection, {"kind 7"});
    cudaMemset(d + 999, 0, 2);
    check_error("cudaMemset past the end", cudaErrorInvalidValue, {"cudaMemset"});
    cudaMemcpy2D(d, 200, rows.data(), 40, 30, 6, cudaMemcpyHostToDevice);
    check_error("cudaMemcpy2D past the end", cudaErrorInvalidValue, {"cudaMemcpy2D: dst"});
    cudaMemcpy2D(d, 20, rows.data(), 40, 30, 2, cudaMemcpyHostToDevice);
    check_error("cudaMemcpy2D width > pitch", cudaErrorInvalidPitchValue, {"invalid pitch"});
    check(cudaMemcpy(host, d, 0, cudaMemcpyHostToDevice) == cudaSuccess, "a copy of 0 bytes");
    cudaFree(d + 8);
    check_error("cudaFree inside an allocation", cudaErrorInvalidValue, {"cudaFree"});
    void *huge = nullptr;
    check(cudaMalloc(&huge, (size_t)1 << 62) == cudaErrorMemoryAllocation, "absurd cudaMalloc");
    check_error("absurd cudaMalloc", cudaErrorMemoryAllocation, {"out of memory", "cudaMalloc("});
    check(cudaMalloc(&huge, 0) == cudaSuccess && huge == nullptr, "cudaMalloc of 0 bytes");
    check(cudaFree(d) == cudaSuccess, "cudaFree");
    check(cudaFree(d) == cudaErrorInvalidValue, "double cudaFree");
    cudaMemcpy(h.data(), d, 10, cudaMemcpyDeviceToHost);
    check_error("copy from freed memory", cudaErrorInvalidValue, {"is not device memory"});
    check(cudaFree(nullptr) == cudaSuccess, "cudaFree(NULL)");
    check(cudaPeekAtLastError() == cudaSuccess, "the last error was taken");
}

/* ------------------------------------------------------------------------------------------
 * Determinism, and launches from several host threads at once. */
__global__ void float_atomic_sum_kernel(const float *x, float *sum) {
    atomicAdd(sum, x[blockIdx.x * blockDim.x + threadIdx.x]);
}

__global__ void row_sum_kernel(const float *x, float *sums, int cols) {
    __shared__ float scratch[32];
    float v = 0;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) v += x[blockIdx.x * cols + c];
    v = block_sum(v, scratch);
    if (threadIdx.x == 0) sums[blockIdx.x] = v;
}

static void test_determinism_and_threads() {
    std::vector<float> x(64 * 256);
    for (size_t i = 0; i < x.size(); i++) x[i] = std::sin((float)i) * 1e3f;
    float *dx = to_device(x);
    float results[2];
    for (float &r : results) {
        float *sum = device_zeros<float>(1);
        LAUNCH(float_atomic_sum_kernel, 64, 256, dx, sum);
        r = to_host(sum, 1)[0];
        cudaFree(sum);
    }
    check(!memcmp(&results[0], &results[1], sizeof(float)), "two runs differ: %.9g %.9g",
          results[0], results[1]);
    cudaFree(dx);

    /* 4 host threads, each launching kernels with barriers; one also provokes an error,
     * which must stay its own (the last error is per host thread) */
    const int rows = 8, cols = 300;
    std::vector<float> m(rows * cols);
    for (int i = 0; i < rows * cols; i++) m[i] = (float)(i % 7);
    std::vector<float> expected(rows, 0.0f);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) expected[r] += m[r * cols + c];
    float *dm = to_device(m);
    int wrong[4] = {0, 0, 0, 0}, errors[4] = {0, 0, 0, 0};
    std::vector<std::thread> workers;
    for (int w = 0; w < 4; w++)
        workers.emplace_back([&, w] {
            float *sums = nullptr;
            cudaMalloc(&sums, rows * sizeof(float));
            std::vector<float> h(rows);
            for (int it = 0; it < 5; it++) {
                LAUNCH(row_sum_kernel, rows, 128, dm, sums, cols);
                if (w == 0 && it == 2) LAUNCH(row_sum_kernel, rows, 4096, dm, sums, cols);
                errors[w] += cudaGetLastError() != cudaSuccess;
                cudaMemcpy(h.data(), sums, rows * sizeof(float), cudaMemcpyDeviceToHost);
                for (int r = 0; r < rows; r++) wrong[w] += h[r] != expected[r];
            }
            cudaFree(sums);
        });
    for (std::thread &t : workers) t.join();
    for (int w = 0; w < 4; w++) {
        check(wrong[w] == 0, "host thread %d: %d wrong sums", w, wrong[w]);
        check(errors[w] == (w == 0), "host thread %d: %d errors", w, errors[w]);
    }
    cudaFree(dm);
}

/* ------------------------------------------------------------------------------------------
 * The run order (TINYLLM_EMU_ORDER): each thread logs the three stretches it runs (before a
 * __syncthreads, between it and a shuffle, after the shuffle) as block * 3000 + stretch * 1000
 * + thread. Forward: block 0 first; in it, every thread's stretch 0, thread 0 first; then warp
 * 0 runs stretches 1 and 2 (a warp goes on to the next __syncthreads before the next warp
 * starts), then warp 1. Reverse: the mirror image (the last block, warp, lane first). */
__global__ void order_kernel(int *log, int *length) {
    int t = threadIdx.x, b = blockIdx.x;
    log[atomicAdd(length, 1)] = b * 3000 + t;
    __syncthreads();
    log[atomicAdd(length, 1)] = b * 3000 + 1000 + t;
    int partner = __shfl_xor_sync(FULL_MASK, t, 1);
    log[atomicAdd(length, 1)] = b * 3000 + 2000 + (partner ^ 1);
}

static void test_order() {
    printf("  order: %s\n", reverse_order() ? "reverse" : "forward");
    for (int threads : {64, 40}) { /* 40: warp 1 has 8 lanes */
        const int blocks = 3, n = blocks * threads * 3;
        int *log = device_zeros<int>(n), *length = device_zeros<int>(1);
        LAUNCH(order_kernel, blocks, threads, log, length);
        check_launch_ok("order");
        std::vector<int> h = to_host(log, n);
        std::vector<int> expected, forward_threads;
        for (int t = 0; t < threads; t++) forward_threads.push_back(t);
        for (int k = 0; k < blocks; k++) {
            int b = reverse_order() ? blocks - 1 - k : k;
            std::vector<int> order = forward_threads; /* the threads in the run order */
            if (reverse_order()) std::reverse(order.begin(), order.end());
            for (int t : order) expected.push_back(b * 3000 + t);
            for (size_t w = 0, end; w < order.size(); w = end) { /* the warps, each to the end */
                for (end = w; end < order.size() && order[end] / 32 == order[w] / 32;) end++;
                for (int stretch = 1; stretch < 3; stretch++)
                    for (size_t i = w; i < end; i++)
                        expected.push_back(b * 3000 + stretch * 1000 + order[i]);
            }
        }
        int first_wrong = -1;
        for (int i = 0; i < n && first_wrong < 0; i++)
            if (h[i] != expected[i]) first_wrong = i;
        check(first_wrong < 0, "order, %d threads: event %d is %d, expected %d", threads,
              first_wrong, first_wrong < 0 ? 0 : h[first_wrong],
              first_wrong < 0 ? 0 : expected[first_wrong]);
        cudaFree(log), cudaFree(length);
    }
}

/* ------------------------------------------------------------------------------------------
 * Races, which the two orders tell apart (emu_selftest race prints the results). */
constexpr int kRaceThreads = 16, kRaceBlocks = 8;

/* Each thread publishes its index and reads its neighbour's. Without the second __syncthreads
 * (synced = 0) that is a race: a thread reads its neighbour's slot before or after the
 * neighbour wrote it, depending on which of the two runs first. */
__global__ void shift_kernel(int *out, int synced) {
    __shared__ int s[kRaceThreads];
    int t = threadIdx.x;
    s[t] = -1;
    __syncthreads();
    s[t] = t;
    if (synced) __syncthreads();
    out[t] = s[(t + 1) % kRaceThreads];
}

/* The same between warps, with a __syncwarp where a __syncthreads belongs: it orders the
 * lanes of one warp, not the other warp's writes. */
__global__ void warps_kernel(int *out) {
    __shared__ int s[64];
    int t = threadIdx.x;
    s[t] = -1;
    __syncthreads();
    s[t] = t;
    __syncwarp();
    out[t] = s[(t + 32) % 64];
}

/* Each block adds 1 to the previous block's result: a dependency between blocks, which CUDA
 * does not order (blocks run in any order, or at the same time). */
__global__ void chain_kernel(int *x) {
    if (threadIdx.x == 0) x[blockIdx.x + 1] = x[blockIdx.x] + 1;
}

static void print_ints(const char *name, const std::vector<int> &values) {
    printf("%s:", name);
    for (int v : values) printf(" %d", v);
    printf("\n");
}

static int print_races() {
    int *out = device_zeros<int>(kRaceThreads);
    for (int synced = 0; synced <= 1; synced++) {
        LAUNCH(shift_kernel, 1, kRaceThreads, out, synced);
        check_launch_ok("shift");
        print_ints(synced ? "synced shift" : "racy shift", to_host(out, kRaceThreads));
    }
    int *warps = device_zeros<int>(64);
    LAUNCH(warps_kernel, 1, 64, warps);
    check_launch_ok("warps");
    print_ints("racy warps", to_host(warps, 64));
    int *chain = device_zeros<int>(kRaceBlocks + 1);
    LAUNCH(chain_kernel, kRaceBlocks, 32, chain);
    check_launch_ok("chain");
    print_ints("racy chain", to_host(chain, kRaceBlocks + 1));
    cudaFree(out), cudaFree(warps), cudaFree(chain);
    return n_failed == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------------------------------
 * Speed, reported (not checked: it depends on the machine). */
__global__ void axpy_kernel(const float *x, float *y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += 2.0f * x[i];
}

static void report_speed() {
    const int n = 1 << 18, rows = 64, cols = 1024;
    float *x = device_zeros<float>(n), *y = device_zeros<float>(n);
    float *sums = device_zeros<float>(rows);
    auto t0 = std::chrono::steady_clock::now();
    LAUNCH(axpy_kernel, n / 256, 256, x, y, n);
    auto t1 = std::chrono::steady_clock::now();
    LAUNCH(row_sum_kernel, rows, 256, x, sums, cols);
    auto t2 = std::chrono::steady_clock::now();
    check_launch_ok("speed");
    double no_barrier = std::chrono::duration<double>(t1 - t0).count();
    double reductions = std::chrono::duration<double>(t2 - t1).count();
    printf("  speed: %.0f ns per thread without barriers (%d threads); %.0f ns per thread with "
           "block_sum (12 waits per thread, %d threads)\n", no_barrier / n * 1e9, n,
           reductions / (rows * 256) * 1e9, rows * 256);
    cudaFree(x), cudaFree(y), cudaFree(sums);
}

/* ------------------------------------------------------------------------------------------
 * Out-of-bounds accesses, for the AddressSanitizer build. */
__global__ void oob_device_kernel(float *x, int n) { x[threadIdx.x + n - 16] = 1.0f; }

__global__ void oob_shared_kernel(float *out) {
    __shared__ float s[64];
    s[threadIdx.x] = 1.0f; /* 96 threads */
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x];
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "race")) return print_races();
    if (argc > 1) {
        float *x = device_zeros<float>(1024);
        if (!strcmp(argv[1], "oob-device")) LAUNCH(oob_device_kernel, 1, 32, x, 1024);
        if (!strcmp(argv[1], "oob-shared")) LAUNCH(oob_shared_kernel, 1, 96, x);
        printf("%s: not stopped\n", argv[1]);
        return 2;
    }
    struct {
        const char *name;
        void (*run)();
    } tests[] = {
        {"order", test_order},
        {"indices", test_indices},
        {"barriers", test_barriers},
        {"shuffles", test_shuffles},
        {"votes", test_votes},
        {"atomics", test_atomics},
        {"math", test_math},
        {"wmma", test_wmma},
        {"launch failures", test_launch_failures},
        {"runtime", test_runtime},
        {"determinism and threads", test_determinism_and_threads},
        {"speed", report_speed},
    };
    for (const auto &t : tests) {
        int before = n_failed;
        auto start = std::chrono::steady_clock::now();
        t.run();
        std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
        printf("%s %s (%.2f s)\n", n_failed == before ? "ok  " : "FAIL", t.name,
               seconds.count());
        fflush(stdout);
    }
    printf("emu_selftest: %d checks, %d failed\n", n_checks, n_failed);
    return n_failed == 0 ? 0 : 1;
}
