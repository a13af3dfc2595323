/* cuda_emu.h: enough of CUDA, in plain C++17, to run tinyllm's kernels on the CPU.
 *
 * csrc/cuda/common.cuh includes this header instead of <cuda_runtime.h> when TINYLLM_CUDA_EMU is
 * defined; the .cu files are then compiled by g++ as C++ and linked with the emulator
 * (scheduler.cpp, warp.cpp, fiber.cpp, runtime.cpp). A kernel launch runs every block of the
 * grid, one block after another, and inside a block every thread on a fiber of its own (a small
 * stack plus saved registers), all on the calling OS thread. A thread runs until it returns or
 * reaches a barrier (__syncthreads, or a warp collective: shuffle, vote, __syncwarp,
 * __activemask, wmma); the scheduler then switches to another thread of the block, and releases
 * the waiting threads once every thread the barrier waits for has arrived. Because exactly one
 * emulated thread runs at any time and switches happen only at barriers, no locks or hardware
 * atomics are needed anywhere, and a run is deterministic. Threads and blocks run in a fixed
 * order, forward (thread 0 and block 0 first) or, with TINYLLM_EMU_ORDER=reverse, backwards:
 * tests run in both orders expose most missing __syncthreads, since a racy kernel's results
 * depend on the order.
 * README.md (next to this file) says what the emulation checks and what it cannot.
 *
 * This file is the device side (qualifiers, built-in variables, barriers, warp intrinsics,
 * atomics, math); it ends by including cuda_emu_wmma.h (tensor-core tiles) and
 * cuda_emu_runtime.h (the host's runtime API: errors, memory, copies), so that the .cu files
 * include this one header.
 *
 * Device code uses CUDA's own spellings (threadIdx.x, __syncthreads(), __shfl_xor_sync,
 * atomicAdd, nvcuda::wmma, ...): the same source builds with nvcc and with g++.
 */
#ifndef TINYLLM_CUDA_EMU_H
#define TINYLLM_CUDA_EMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmath>
#include <type_traits>

/* Everything declared here is internal to the library that uses the emulator: hidden symbols
 * cannot be interposed by a real libcudart loaded into the same process (PyTorch loads one),
 * and do not leak into the global symbol table. */
#pragma GCC visibility push(hidden)

/* ------------------------------------------------------------------------------------------
 * Qualifiers. Kernels and device functions are ordinary C++ functions. */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
/* One variable shared by all threads of a block: a function-local static is one object for
 * every call, and the blocks of a launch (and the launches) run one at a time, so each block
 * has it to itself. Like real shared memory it is not cleared between blocks (real hardware
 * gives garbage instead of the previous block's values); unlike it, a kernel's statics start
 * as zero. `extern __shared__` (dynamic shared memory) is not supported. */
#define __shared__ static

/* ------------------------------------------------------------------------------------------
 * Built-in types and variables. */
struct uint3 {
    unsigned x, y, z;
};

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return {x, y, z}; }
};

struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

constexpr int warpSize = 32;

namespace emu {

/* A place in the source: device functions that can fail or wait take one as a defaulted last
 * argument, which GCC and Clang evaluate at the caller, so messages can name the barrier. */
struct Site {
    const char *file;
    int line;
    constexpr Site(const char *f = __builtin_FILE(), int l = __builtin_LINE()) : file(f), line(l) {}
};

/* Where the emulated thread running now stands. The scheduler (scheduler.cpp) writes thread_idx
 * before it resumes a thread, and the rest before it starts a block; threadIdx and friends
 * read it. Calls into the scheduler are the only places where it changes, and the compiler
 * must assume that an opaque call changes a global, so it is never read stale. */
struct Position {
    uint3 thread_idx, block_idx;
    dim3 block_dim, grid_dim;
};
extern Position position;

}  // namespace emu

#define threadIdx (static_cast<const uint3 &>(::emu::position.thread_idx))
#define blockIdx (static_cast<const uint3 &>(::emu::position.block_idx))
#define blockDim (static_cast<const dim3 &>(::emu::position.block_dim))
#define gridDim (static_cast<const dim3 &>(::emu::position.grid_dim))

/* ------------------------------------------------------------------------------------------
 * The scheduler's entry points (scheduler.cpp; the warp collectives in warp.cpp). */
namespace emu {

/* Stop the launch: it fails with cudaErrorLaunchFailure and `fmt` (printf-style) in the
 * message; the block's threads are never resumed. */
[[noreturn]] void fail(Site site, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Wait until every thread of the block has arrived. */
void syncthreads(Site site);

/* A warp collective called `name`: wait until every lane of `mask` that has not returned has
 * arrived at it, then return the members (the lanes that took part) and the ballot of their
 * predicates (bit l set when lane l's predicate is nonzero). */
struct Vote {
    unsigned ballot, members;
};
Vote warp_collective(const char *name, unsigned mask, int predicate, Site site);

/* A warp collective exchanging values of `bytes` bytes: returns the value of the source lane,
 * chosen by the rules of PTX shfl.sync: the warp is cut into segments of `width` lanes; a lane
 * whose source falls outside its segment (above it, for down and xor; below it, for up)
 * reads its own value. */
enum class ShuffleMode { index, up, down, xor_ };
uint64_t shuffle_bits(const char *name, ShuffleMode mode, unsigned mask, uint64_t value,
                      unsigned bytes, int operand, int width, Site site);

template <class T>
T shuffle(const char *name, ShuffleMode mode, unsigned mask, T var, int operand, int width,
          Site site) {
    static_assert(std::is_arithmetic<T>::value && sizeof(T) >= 4 && sizeof(T) <= 8,
                  "CUDA shuffles int, unsigned, long long, unsigned long long, float, double");
    uint64_t bits = 0;
    memcpy(&bits, &var, sizeof var);
    bits = shuffle_bits(name, mode, mask, bits, sizeof var, operand, width, site);
    memcpy(&var, &bits, sizeof var);
    return var;
}

/* A non-owning reference to the callable a launch runs for every thread. */
class KernelRef {
  public:
    KernelRef() = default;
    template <class F>
    explicit KernelRef(F &f)
        : object_(const_cast<void *>(static_cast<const void *>(&f))),
          call_([](void *object) { (*static_cast<F *>(object))(); }) {}
    void operator()() const { call_(object_); }

  private:
    void *object_ = nullptr;
    void (*call_)(void *) = nullptr;
};

/* Run `body` once per thread of every block; see emu_launch below. */
void launch(dim3 grid, dim3 block, KernelRef body, Site site);

/* Keeps the compiler from keeping memory in registers across a barrier, which in CUDA is
 * also a memory fence. The calls into the scheduler are opaque, which should already be
 * enough; the fence states it, and holds even under link-time optimization. */
inline void compiler_fence() { __asm__ __volatile__("" ::: "memory"); }

}  // namespace emu

/* kernel<<<grid, block>>>(args) is written LAUNCH(kernel, grid, block, args) in the sources
 * (common.cuh), which becomes emu_launch(dim3(grid), dim3(block), [&] { kernel(args); }).
 * It returns when the kernel has finished. A bad configuration (cudaErrorInvalidConfiguration)
 * or a failure while running (cudaErrorLaunchFailure) is reported by cudaGetLastError. */
template <class F>
void emu_launch(dim3 grid, dim3 block, F &&body, emu::Site site = {}) {
    emu::launch(grid, block, emu::KernelRef(body), site);
}

/* ------------------------------------------------------------------------------------------
 * Synchronization and warp intrinsics. Warps are 32 consecutive threads in the order
 * x fastest, then y, then z. A collective waits for the lanes of its mask that have not
 * returned. Lanes meet in the same collective when they call the same intrinsic with the same
 * mask (from any source line); lanes that wait for each other in different collectives, or in
 * a collective and at __syncthreads, are reported as a divergence instead of hanging. Reading
 * (by shuffle) a lane that has returned or is not in the mask is an error: hardware returns an
 * undefined value. */
inline void __syncthreads(emu::Site site = {}) {
    emu::compiler_fence();
    emu::syncthreads(site);
    emu::compiler_fence();
}
inline void __syncwarp(unsigned mask = 0xffffffffu, emu::Site site = {}) {
    emu::compiler_fence();
    emu::warp_collective("__syncwarp", mask, 0, site);
    emu::compiler_fence();
}
/* No memory is cached or reordered between emulated threads: fences only stop the compiler. */
inline void __threadfence() { emu::compiler_fence(); }
inline void __threadfence_block() { emu::compiler_fence(); }

template <class T>
T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize, emu::Site site = {}) {
    return emu::shuffle("__shfl_sync", emu::ShuffleMode::index, mask, var, srcLane, width, site);
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 emu::Site site = {}) {
    return emu::shuffle("__shfl_up_sync", emu::ShuffleMode::up, mask, var, (int)delta, width,
                        site);
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   emu::Site site = {}) {
    return emu::shuffle("__shfl_down_sync", emu::ShuffleMode::down, mask, var, (int)delta, width,
                        site);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,
                  emu::Site site = {}) {
    return emu::shuffle("__shfl_xor_sync", emu::ShuffleMode::xor_, mask, var, laneMask, width,
                        site);
}

/* Votes: over the lanes of the mask that have not returned. */
inline unsigned __ballot_sync(unsigned mask, int predicate, emu::Site site = {}) {
    return emu::warp_collective("__ballot_sync", mask, predicate, site).ballot;
}
inline int __any_sync(unsigned mask, int predicate, emu::Site site = {}) {
    return emu::warp_collective("__any_sync", mask, predicate, site).ballot != 0;
}
inline int __all_sync(unsigned mask, int predicate, emu::Site site = {}) {
    emu::Vote vote = emu::warp_collective("__all_sync", mask, predicate, site);
    return vote.ballot == vote.members;
}
/* The lanes of the warp that have not returned, which is what hardware answers when the warp
 * is converged. The emulator runs the lanes one after another, so "the lanes here now" has no
 * meaning; __activemask is therefore a collective over all lanes that have not returned, whose
 * members are the answer. In a branch that only some lanes take, it answers right when the
 * others return without reaching another collective first, and is reported as a divergence
 * otherwise. */
inline unsigned __activemask(emu::Site site = {}) {
    return emu::warp_collective("__activemask", 0xffffffffu, 0, site).members;
}

/* ------------------------------------------------------------------------------------------
 * Atomics. Emulated threads never switch inside an atomic (only at barriers), so a plain
 * read-modify-write is atomic. They return the old value, as in CUDA. The order in which the
 * threads' updates land is deterministic here and arbitrary on a GPU. */
namespace emu {
template <class T, class Update>
inline T atomic_update(T *address, Update update) {
    T old = *address;
    *address = update(old);
    return old;
}
}  // namespace emu

/* integer additions wrap, as on hardware (in unsigned arithmetic: signed overflow is UB) */
inline int atomicAdd(int *a, int v) {
    return emu::atomic_update(a, [v](int old) { return (int)((unsigned)old + (unsigned)v); });
}
inline unsigned atomicAdd(unsigned *a, unsigned v) {
    return emu::atomic_update(a, [v](unsigned old) { return old + v; });
}
inline unsigned long long atomicAdd(unsigned long long *a, unsigned long long v) {
    return emu::atomic_update(a, [v](unsigned long long old) { return old + v; });
}
inline float atomicAdd(float *a, float v) {
    return emu::atomic_update(a, [v](float old) { return old + v; });
}
inline double atomicAdd(double *a, double v) {
    return emu::atomic_update(a, [v](double old) { return old + v; });
}
inline int atomicSub(int *a, int v) {
    return emu::atomic_update(a, [v](int old) { return (int)((unsigned)old - (unsigned)v); });
}
inline unsigned atomicSub(unsigned *a, unsigned v) {
    return emu::atomic_update(a, [v](unsigned old) { return old - v; });
}
#define EMU_ATOMIC_MIN_MAX(T)                                                               \
    inline T atomicMax(T *a, T v) {                                                         \
        return emu::atomic_update(a, [v](T old) { return old > v ? old : v; });             \
    }                                                                                       \
    inline T atomicMin(T *a, T v) {                                                         \
        return emu::atomic_update(a, [v](T old) { return old < v ? old : v; });             \
    }
EMU_ATOMIC_MIN_MAX(int)
EMU_ATOMIC_MIN_MAX(unsigned)
EMU_ATOMIC_MIN_MAX(long long)
EMU_ATOMIC_MIN_MAX(unsigned long long)
#undef EMU_ATOMIC_MIN_MAX
#define EMU_ATOMIC_EXCH_CAS(T)                                                              \
    inline T atomicExch(T *a, T v) {                                                        \
        return emu::atomic_update(a, [v](T) { return v; });                                \
    }                                                                                       \
    inline T atomicCAS(T *a, T compare, T v) {                                              \
        return emu::atomic_update(a, [compare, v](T old) { return old == compare ? v : old; }); \
    }
EMU_ATOMIC_EXCH_CAS(int)
EMU_ATOMIC_EXCH_CAS(unsigned)
EMU_ATOMIC_EXCH_CAS(unsigned long long)
#undef EMU_ATOMIC_EXCH_CAS
inline float atomicExch(float *a, float v) {
    return emu::atomic_update(a, [v](float) { return v; });
}

/* ------------------------------------------------------------------------------------------
 * Math. expf, logf, sqrtf, fmaxf, INFINITY, ... come from <math.h>. The fast intrinsics
 * (__expf, __fdividef, ...) are computed exactly here: results can differ from a GPU's in the
 * last bits, which is why the tests compare against NumPy with a tolerance. */
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) noexcept { return expf(x); }  /* glibc declares these two */
inline float __logf(float x) noexcept { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; } /* NaN: 0 */
inline int __float2int_rn(float x) { return (int)rintf(x); } /* ties to even (default mode) */
inline int __float_as_int(float x) { int i; memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned u; memcpy(&u, &x, 4); return u; }
inline float __int_as_float(int i) { float x; memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned u) { float x; memcpy(&x, &u, 4); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
template <class T>
inline T __ldg(const T *p) { return *p; }

/* min and max: CUDA's overload set (so a call that is ambiguous under nvcc, such as
 * min(int, int64_t), is ambiguous here too); mixed signed/unsigned compare as unsigned. */
#define EMU_MIN_MAX(R, A, B)                                                                \
    inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; }                            \
    inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
EMU_MIN_MAX(int, int, int)
EMU_MIN_MAX(unsigned, unsigned, unsigned)
EMU_MIN_MAX(unsigned, int, unsigned)
EMU_MIN_MAX(unsigned, unsigned, int)
EMU_MIN_MAX(long, long, long)
EMU_MIN_MAX(unsigned long, unsigned long, unsigned long)
EMU_MIN_MAX(unsigned long, long, unsigned long)
EMU_MIN_MAX(unsigned long, unsigned long, long)
EMU_MIN_MAX(long long, long long, long long)
EMU_MIN_MAX(unsigned long long, unsigned long long, unsigned long long)
EMU_MIN_MAX(unsigned long long, long long, unsigned long long)
EMU_MIN_MAX(unsigned long long, unsigned long long, long long)
#undef EMU_MIN_MAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin(a, b); }
inline double max(float a, double b) { return fmax(a, b); }
inline double min(double a, float b) { return fmin(a, b); }
inline double max(double a, float b) { return fmax(a, b); }

/* ------------------------------------------------------------------------------------------
 * The rest, in two files of their own: nvcuda::wmma, and the host's runtime API. */
#include "cuda_emu_wmma.h"
#include "cuda_emu_runtime.h"

#pragma GCC visibility pop
#endif
