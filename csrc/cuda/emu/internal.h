/* internal.h: what the emulator's three .cpp files share; not for the kernels, which see only
 * cuda_emu.h. scheduler.cpp runs a launch (fibers, the run queue, __syncthreads, blocks),
 * warp.cpp the warp collectives (shuffles, votes, __syncwarp, wmma's waits), runtime.cpp the
 * runtime API (errors, device memory, device properties). This header holds the device's
 * limits, the scheduler's state (one Scheduler S, used by one launch at a time), and the
 * functions one file calls in another. Read scheduler.cpp's opening comment first.
 */
#ifndef TINYLLM_CUDA_EMU_INTERNAL_H
#define TINYLLM_CUDA_EMU_INTERNAL_H

#include "cuda_emu.h"

#include <ucontext.h>

#include <cstdarg>
#include <mutex>
#include <string>
#include <vector>

#pragma GCC visibility push(hidden)

namespace emu {
namespace internal {

/* ------------------------------------------------------------------------------------------
 * The device's limits (what cudaGetDeviceProperties reports and launches are checked against) */
constexpr unsigned kWarpSize = 32;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDim[3] = {1024, 1024, 64};
constexpr unsigned kMaxGridDim[3] = {2147483647u, 65535, 65535};
constexpr size_t kSharedMemPerBlock = 48 * 1024;
constexpr int kMultiProcessors = 132;
constexpr size_t kStackSize = 256 * 1024; /* per fiber; only the pages a thread touches are
                                             backed by memory, and sanitizers need room */

/* printf into a std::string (runtime.cpp) */
std::string vformat(const char *fmt, va_list ap);
__attribute__((format(printf, 1, 2))) std::string format(const char *fmt, ...);

/* Record a failed call: it becomes the calling host thread's last error, explained by `why`.
 * Returns `error` (runtime.cpp). */
cudaError_t record(cudaError_t error, const std::string &why);

/* ------------------------------------------------------------------------------------------
 * The scheduler's state. It belongs to the launch in progress: launches are serialized by
 * Scheduler::mutex, and a launch (with all its fibers) runs on the launching OS thread. */

/* A saved execution context: the host's (on the launching thread's own stack), or a fiber's:
 * a context on a stack of our own, on which emulated threads run one after another. */
struct Context {
    ucontext_t uc;
    /* The stack's lowest address and size, which ASan must be told at each switch to this
     * context; the host's are learned at the first switch away from it. */
    const void *stack_bottom = nullptr;
    size_t stack_size = 0;
    void *fake_stack = nullptr; /* ASan's bookkeeping of a suspended context */
};

enum class State : uint8_t { unstarted, ready, running, at_barrier, at_warp, exited };

/* A warp collective as a lane called it. Lanes meet in one collective when they call the same
 * intrinsic (whatever the source line) with the same mask and operand size. */
struct WarpOp {
    const char *name;
    unsigned mask, bytes;
    emu::Site site;
};

inline bool same_collective(const WarpOp &a, const WarpOp &b) {
    return a.mask == b.mask && a.bytes == b.bytes && !strcmp(a.name, b.name);
}

struct Thread {
    uint3 idx;
    unsigned tid; /* linear id: x + y * blockDim.x + z * blockDim.x * blockDim.y */
    State state;
    Context *fiber; /* while started and not exited */
    /* its part in the warp collective it waits in: which one, what it contributes, the lane
     * whose contribution it receives, and (once the collective is complete) what it got */
    WarpOp op;
    uint64_t value;
    unsigned src;
    uint64_t received;
    emu::Vote vote;
};

/* Lanes of a warp can wait in several collectives at once (lanes 0-15 in a shuffle with mask
 * 0x0000ffff while lanes 16-31 wait at a __syncwarp for them, say); each lane's Thread says in
 * which. */
struct Warp {
    unsigned live;    /* lanes that exist in the block and have not returned */
    unsigned waiting; /* lanes waiting in a collective */
};

/* The order in which blocks and threads run (scheduler.cpp's opening comment). */
enum class Order { forward, reverse };

struct Scheduler {
    std::mutex mutex; /* one launch at a time */

    bool order_known = false; /* TINYLLM_EMU_ORDER is read at the first launch */
    Order order = Order::forward;
    std::string order_error; /* why TINYLLM_EMU_ORDER is not an order; fails every launch */

    /* Fiber stacks, mapped at the first launch and reused by every later one. */
    char *stacks = nullptr;
    Context fibers[kMaxThreadsPerBlock];

    /* the launch */
    emu::KernelRef body;
    unsigned n_threads; /* per block */

    /* the block */
    Thread threads[kMaxThreadsPerBlock];
    Warp warps[kMaxThreadsPerBlock / kWarpSize];
    unsigned queue[kMaxThreadsPerBlock]; /* ring buffer of the threads that can run */
    unsigned queue_head, queue_length;
    Context *free_fibers[kMaxThreadsPerBlock]; /* a stack of fibers no thread is using */
    unsigned n_free_fibers;
    Thread *running; /* null while the host runs */
    Context host;
    unsigned live;       /* threads that have not returned */
    unsigned at_barrier; /* threads waiting at __syncthreads */
    emu::Site barrier_site;
    bool failed;
    std::string failure;
};
extern Scheduler S; /* scheduler.cpp */

/* fiber.cpp, for scheduler.cpp */
bool map_stacks(); /* the stacks of S.fibers, mapped at the first call; false if mmap fails */
/* Sets f up to run entry() from the top of its stack when it is switched to. */
void start_fiber(Context &f, void (*entry)());
/* Suspend the running context into `from` and resume `to`; returns when something switches
 * back to `from` (never, when from_finished). */
void switch_context(Context &from, Context &to, bool from_finished);
void after_switch(Context *self); /* the first call of a fiber's entry function */
/* After a failed block: clears what its abandoned threads left on the first n_fibers stacks. */
void forget_abandoned_frames(unsigned n_fibers);

/* scheduler.cpp, for warp.cpp */
unsigned nth(unsigned i, unsigned n); /* which of n things runs i-th in S.order */
void release_first(Thread &t);        /* t can run, before every thread in the queue */
void yield(Thread &t);                /* t arrived at a barrier; returns when it runs again */
Thread &running_thread(const char *name, emu::Site site);

/* warp.cpp, for scheduler.cpp */
/* The running thread t has returned: its warp's collectives no longer wait for it. */
void warp_lane_returned(Thread &t);
/* One description per group of lanes that wait in a warp collective, for a deadlock report. */
std::vector<std::string> describe_warp_waits();

}  // namespace internal
}  // namespace emu

#pragma GCC visibility pop
#endif
