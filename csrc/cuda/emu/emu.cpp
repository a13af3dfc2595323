/* emu.cpp: the CUDA emulator's scheduler and runtime API (declared in cuda_emu.h; README.md
 * says what the emulation checks and what it cannot).
 *
 * How a launch runs. The blocks of the grid run one after another (x fastest, then y, z).
 * In a block, each emulated thread runs on a fiber: a stack of its own and a saved register
 * set (a ucontext), on which the thread can be suspended in the middle of the kernel and
 * resumed later, all on the OS thread that launched the kernel. The scheduler keeps a queue
 * of the threads that can run. The running thread keeps the CPU until it returns or arrives
 * at a barrier; then the next thread of the queue runs. A barrier counts arrivals: the thread
 * that completes it puts all the threads it waited for, itself included, back on the queue in
 * the run order (below), and takes its turn with them. Why this is correct: each thread
 * executes its own code in program order, and a barrier releases no one before every thread
 * it waits for has executed everything that precedes the barrier, which is exactly the
 * guarantee CUDA gives (and the only one a correct kernel relies on).
 *
 * The run order (TINYLLM_EMU_ORDER, read at the first launch; any other value than these two
 * fails every launch). "forward", the default: the blocks in grid order; in a block, between
 * two __syncthreads, one warp after another (warp 0 first), each running all the way to the
 * next __syncthreads before the next warp starts (the lanes of a completed warp collective go
 * to the front of the queue); in a warp, between two collectives, lane 0 first. "reverse" is
 * the mirror image: the last block first, the highest warp first, the highest lane first.
 * Why a second order: switches happen only at barriers, so between two barriers each
 * thread's code runs as one piece, and whether a missing __syncthreads matters depends on
 * which of two threads runs its piece first. A kernel that is correct under the CUDA model
 * gives the same results in both orders (float atomics aside: they add in a different, though
 * also fixed, order). A kernel that reads what another thread of its block writes in the same
 * stretch, or what another block writes, sees the write in one order and misses it in the
 * other, so running the tests in both orders exposes most such races: two pieces of code
 * that CUDA leaves unordered (of two blocks; of two warps between two __syncthreads; of two
 * lanes between two collectives of their warp) run one way round in one order and the other
 * way round in the other. Two details serve this. The thread that completes a barrier does
 * not carry on first (as it once did) but takes its place in the order. And warps run ahead
 * to the next __syncthreads rather than taking turns at every collective: a collective orders
 * only its own warp's lanes, but warps taking turns at it would have every warp finish its
 * stores before any warp's loads after it, in both orders, hiding a missing __syncthreads
 * before a shuffle or a wmma load.
 * If the queue empties while threads still wait, no thread can ever arrive at what they wait
 * for (a __syncthreads that some threads skipped, a warp divergence): the launch fails with
 * a description of who waits where, instead of hanging.
 *
 * Fibers are only needed by threads that are suspended: when a thread returns, the next
 * thread of the queue, if it has not started yet, starts on the same stack without any
 * context switch. A kernel without barriers therefore runs a whole block on one stack, as a
 * plain loop of function calls; a switch happens only when a thread waits. A switch is
 * glibc's swapcontext, a few hundred nanoseconds because it also saves the signal mask with a
 * system call. Faster user-space switches (setjmp/longjmp between stacks, hand-written
 * assembly) are not used: they would break where x86 shadow stacks (CET) are enabled, which
 * swapcontext and makecontext support.
 */
#include "cuda_emu.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

/* Under AddressSanitizer every switch between stacks is announced to it, so that it knows
 * which stack is live (otherwise it reports false errors or misses real ones). */
#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace emu {
Position position;
}

namespace {

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

std::string vformat(const char *fmt, va_list ap) {
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(nullptr, 0, fmt, again);
    va_end(again);
    std::string s(n > 0 ? (size_t)n : 0, '\0');
    if (n > 0) vsnprintf(&s[0], s.size() + 1, fmt, ap);
    return s;
}

__attribute__((format(printf, 1, 2))) std::string format(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

/* ------------------------------------------------------------------------------------------
 * Errors: like CUDA's, per host thread. */
const char *plain_error_string(cudaError_t error) {
    switch (error) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInitializationError: return "initialization error";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorInvalidPitchValue: return "invalid pitch argument";
        case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
        case cudaErrorNoDevice: return "no CUDA-capable device is detected";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        case cudaErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unrecognized error code";
}

thread_local cudaError_t last_error = cudaSuccess;
/* The explanation of this thread's latest error, and that error's code. */
thread_local cudaError_t explained_error = cudaSuccess;
thread_local std::string explanation;

/* Record a failed call: it becomes the last error, explained by `why`. Returns `error`. */
cudaError_t record(cudaError_t error, const std::string &why) {
    last_error = error;
    explained_error = error;
    explanation = std::string(plain_error_string(error)) + " (emulator: " + why + ")";
    return error;
}

/* ------------------------------------------------------------------------------------------
 * Device memory: host memory, with every live allocation remembered so that the runtime calls
 * can reject pointers outside them. */
std::mutex memory_mutex;
std::map<uintptr_t, size_t> allocations; /* base address -> size, of each live allocation */
size_t allocated_bytes = 0;

size_t total_memory() {
    static const size_t total = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    return total;
}

/* The live allocation containing address p, or allocations.end(). Call with memory_mutex. */
std::map<uintptr_t, size_t>::const_iterator allocation_containing(const void *p) {
    auto it = allocations.upper_bound((uintptr_t)p);
    if (it == allocations.begin()) return allocations.end();
    --it;
    return (uintptr_t)p - it->first < it->second ? it : allocations.end();
}

bool is_device_pointer(const void *p) {
    std::lock_guard<std::mutex> lock(memory_mutex);
    return allocation_containing(p) != allocations.end();
}

/* cudaSuccess if [p, p + bytes) lies inside one live allocation; otherwise records and returns
 * cudaErrorInvalidValue, with `call` and `what` ("dst", "src") in the explanation. */
cudaError_t check_device_range(const char *call, const char *what, const void *p, size_t bytes) {
    std::lock_guard<std::mutex> lock(memory_mutex);
    auto it = allocation_containing(p);
    if (it == allocations.end())
        return record(cudaErrorInvalidValue,
                      format("%s: %s %p is not device memory (it lies in no live cudaMalloc "
                             "allocation)", call, what, p));
    size_t offset = (uintptr_t)p - it->first, room = it->second - offset;
    if (bytes > room)
        return record(cudaErrorInvalidValue,
                      format("%s: %s %p + %zu bytes runs %zu bytes past the end of the %zu-byte "
                             "allocation at %p", call, what, p, bytes, bytes - room, it->second,
                             (void *)it->first));
    return cudaSuccess;
}

/* Checks the device side(s) of a copy that writes dst_bytes from dst and reads src_bytes from
 * src; cudaMemcpyDefault treats a pointer as device memory when it lies in an allocation. */
cudaError_t check_copy(const char *call, void *dst, size_t dst_bytes, const void *src,
                       size_t src_bytes, cudaMemcpyKind kind) {
    bool dst_device, src_device;
    switch (kind) {
        case cudaMemcpyHostToHost: dst_device = false, src_device = false; break;
        case cudaMemcpyHostToDevice: dst_device = true, src_device = false; break;
        case cudaMemcpyDeviceToHost: dst_device = false, src_device = true; break;
        case cudaMemcpyDeviceToDevice: dst_device = true, src_device = true; break;
        case cudaMemcpyDefault:
            dst_device = is_device_pointer(dst), src_device = is_device_pointer(src);
            break;
        default:
            return record(cudaErrorInvalidMemcpyDirection,
                          format("%s: kind %d is not a cudaMemcpyKind", call, (int)kind));
    }
    cudaError_t status = cudaSuccess;
    if (dst_device && dst_bytes > 0) status = check_device_range(call, "dst", dst, dst_bytes);
    if (status == cudaSuccess && src_device && src_bytes > 0)
        status = check_device_range(call, "src", src, src_bytes);
    return status;
}

/* ------------------------------------------------------------------------------------------
 * The scheduler. Its state belongs to the launch in progress: launches are serialized by
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

bool same_collective(const WarpOp &a, const WarpOp &b) {
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

/* The order in which blocks and threads run (above). */
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
Scheduler S;

bool same_site(emu::Site a, emu::Site b) { return a.line == b.line && !strcmp(a.file, b.file); }

std::string block_name() {
    const uint3 &b = emu::position.block_idx;
    return format("block (%u,%u,%u)", b.x, b.y, b.z);
}

/* "0-15,17,20-31" */
std::string lane_list(unsigned lanes) {
    std::string s;
    for (unsigned l = 0; l < kWarpSize; l++) {
        if (!(lanes >> l & 1)) continue;
        unsigned end = l;
        while (end + 1 < kWarpSize && (lanes >> (end + 1) & 1)) end++;
        s += (s.empty() ? "" : ",") + (end == l ? format("%u", l) : format("%u-%u", l, end));
        l = end;
    }
    return s;
}

/* The queue of the threads that can run: pop takes the first; push adds at the end,
 * push_front before the first. */
void push(Thread &t) {
    S.queue[(S.queue_head + S.queue_length++) % kMaxThreadsPerBlock] = t.tid;
}

void push_front(Thread &t) {
    S.queue_head = (S.queue_head + kMaxThreadsPerBlock - 1) % kMaxThreadsPerBlock;
    S.queue[S.queue_head] = t.tid;
    S.queue_length++;
}

Thread &pop() {
    Thread &t = S.threads[S.queue[S.queue_head]];
    S.queue_head = (S.queue_head + 1) % kMaxThreadsPerBlock;
    S.queue_length--;
    return t;
}

/* Which of n things (threads of a block, lanes of a warp, blocks of a grid) runs i-th. */
unsigned nth(unsigned i, unsigned n) { return S.order == Order::forward ? i : n - 1 - i; }

/* A thread that waited, or the running thread that ended the wait, can run. A __syncthreads
 * releases the whole block into the (then empty) queue, nth(0) first; a warp collective puts
 * its members at the front of the queue, so that the warp carries on at once. */
void release(Thread &t) {
    t.state = State::ready;
    push(t);
}

void release_first(Thread &t) {
    t.state = State::ready;
    push_front(t);
}

void set_running(Thread &t) {
    t.state = State::running;
    S.running = &t;
    emu::position.thread_idx = t.idx;
}

/* --- Context switches, and what ASan must be told about them. --- */
#ifdef EMU_ASAN
Context *switching_from;

void before_switch(Context &from, const Context &to, bool from_finished) {
    switching_from = &from;
    /* A context that will never be resumed leaves frames on its stack that never return, and
     * so are never unpoisoned; the next thread started on that stack would trip over their
     * redzones. handle_no_return unpoisons the stack's frames; passing no fake stack lets
     * ASan free this context's. */
    if (from_finished) __asan_handle_no_return();
    __sanitizer_start_switch_fiber(from_finished ? nullptr : &from.fake_stack, to.stack_bottom,
                                   to.stack_size);
}
/* First thing on the stack switched to; learns the bounds of the stack switched from. */
void after_switch(Context *self) {
    const void *bottom;
    size_t size;
    __sanitizer_finish_switch_fiber(self ? self->fake_stack : nullptr, &bottom, &size);
    switching_from->stack_bottom = bottom;
    switching_from->stack_size = size;
}
#else
void before_switch(Context &, const Context &, bool) {}
void after_switch(Context *) {}
#endif

/* Suspend the running context into `from` and resume `to`. Returns when something switches
 * back to `from` (never, when from_finished). */
void switch_context(Context &from, Context &to, bool from_finished) {
    before_switch(from, to, from_finished);
    swapcontext(&from.uc, &to.uc);
    after_switch(&from);
}

void fiber_main();

/* A fiber from the free stack, set up to start fiber_main from its stack's top. */
Context &take_fiber() {
    Context &f = *S.free_fibers[--S.n_free_fibers];
    ucontext_t &uc = f.uc;
    uc.uc_stack.ss_sp = const_cast<void *>(f.stack_bottom);
    uc.uc_stack.ss_size = f.stack_size;
    uc.uc_link = nullptr;
    makecontext(&uc, fiber_main, 0);
#ifdef EMU_ASAN
    /* ASan's swapcontext interceptor clears the shadow of the whole target stack when
     * uc_stack names one (slow, and it forgets the redzones of the suspended frames); the
     * switch annotations already tell ASan everything, and uc_stack is only read by
     * makecontext, so hide it. */
    uc.uc_stack.ss_size = 0;
#endif
    f.fake_stack = nullptr;
    return f;
}

std::string describe_deadlock();

/* The running context (a thread that waits or has finished, or the host starting a block)
 * gives the CPU to the next thread of the queue; with the queue empty, back to the host: the
 * block is finished, or deadlocked if threads still wait. */
void run_next(Context &from, bool from_finished) {
    Context *to = &S.host;
    if (S.queue_length > 0) {
        Thread &next = pop();
        if (next.state == State::unstarted) next.fiber = &take_fiber();
        set_running(next);
        to = next.fiber;
    } else {
        S.running = nullptr;
        if (S.live > 0 && !S.failed) {
            S.failed = true;
            S.failure = describe_deadlock();
        }
    }
    switch_context(from, *to, from_finished);
}

/* The running thread t has arrived at a barrier or a warp collective. If the wait is not over
 * (t waits there, state at_barrier or at_warp), the CPU goes to the next thread of the queue
 * until a thread releases t. If t completed it (state ready), it released the threads that
 * waited and itself together, and runs again in its turn: at once if it is first in line. */
void yield(Thread &t) {
    if (t.state == State::ready && S.queue[S.queue_head] == t.tid) {
        pop();
        set_running(t);
        return;
    }
    run_next(*t.fiber, false);
}

Thread &running_thread(const char *name, emu::Site site) {
    if (!S.running) emu::fail(site, "%s called outside a kernel", name);
    return *S.running;
}

unsigned lane_of(const Thread &t) { return t.tid % kWarpSize; }
Warp &warp_of(const Thread &t) { return S.warps[t.tid / kWarpSize]; }

Thread *lanes_of(const Warp &w) { return &S.threads[(&w - S.warps) * kWarpSize]; }

/* The lanes of `w` waiting in the collective `op`. */
unsigned lanes_in(const Warp &w, const WarpOp &op) {
    const Thread *lane = lanes_of(w);
    unsigned lanes = 0;
    for (unsigned l = 0; l < kWarpSize; l++)
        if ((w.waiting >> l & 1) && same_collective(lane[l].op, op)) lanes |= 1u << l;
    return lanes;
}

/* If every lane that the collective `op` waits for (the lanes of its mask that have not
 * returned) has arrived, hand each member its result and release them. */
void complete_if_gathered(Warp &w, const WarpOp &op) {
    unsigned members = lanes_in(w, op);
    if ((op.mask & w.live & ~members) != 0) return;
    Thread *lane = lanes_of(w);
    unsigned ballot = 0;
    for (unsigned l = 0; l < kWarpSize; l++)
        if ((members >> l & 1) && lane[l].value != 0) ballot |= 1u << l;
    for (unsigned l = 0; l < kWarpSize; l++) {
        if (!(members >> l & 1)) continue;
        unsigned src = lane[l].src;
        if (!(members >> src & 1)) {
            unsigned warp = (unsigned)(&w - S.warps);
            const char *why = warp * kWarpSize + src >= S.n_threads ? "does not exist"
                              : !(w.live >> src & 1)                ? "has returned"
                                                                    : "is not in the mask";
            emu::fail(op.site, "%s (mask 0x%08x) in warp %u: lane %u reads lane %u, which %s",
                      op.name, op.mask, warp, l, src, why);
        }
        lane[l].received = lane[src].value;
        lane[l].vote = {ballot, members};
    }
    w.waiting &= ~members;
    for (unsigned i = kWarpSize; i-- > 0;) { /* each before the previous: nth(0) ends up first */
        unsigned l = nth(i, kWarpSize);
        if (members >> l & 1) release_first(lane[l]);
    }
}

/* The running thread has returned from the kernel: the collectives of its warp no longer wait
 * for it, and one of them may now be complete. */
void thread_returned() {
    Thread &t = *S.running;
    t.state = State::exited;
    S.live--;
    Warp &w = warp_of(t);
    w.live &= ~(1u << lane_of(t));
    const Thread *lane = lanes_of(w);
    for (unsigned l = 0; l < kWarpSize; l++)
        if (w.waiting >> l & 1) complete_if_gathered(w, lane[l].op);
}

/* The running thread `t` arrives at the warp collective `op`, contributing `value` and asking
 * for lane `src`'s; returns when the collective is complete, with t.received and t.vote set. */
void gather(Thread &t, const WarpOp &op, uint64_t value, unsigned src) {
    unsigned lane = lane_of(t);
    Warp &w = warp_of(t);
    if (!(op.mask >> lane & 1))
        emu::fail(op.site, "%s with mask 0x%08x, which does not contain the calling lane %u",
                  op.name, op.mask, lane);
    t.op = op;
    t.value = value;
    t.src = src;
    t.state = State::at_warp;
    w.waiting |= 1u << lane;
    complete_if_gathered(w, op);
    yield(t);
}

/* Every fiber starts here. It runs the thread it was taken for, then, as long as the next
 * thread of the queue has not started, that one too, on the same stack; otherwise it goes
 * back on the free stack and gives the CPU away for good (it is set up afresh when taken). */
void fiber_main() {
    after_switch(nullptr);
    Context &self = *S.running->fiber;
    for (;;) {
        S.body();
        thread_returned();
        if (S.queue_length > 0 && S.threads[S.queue[S.queue_head]].state == State::unstarted) {
            Thread &next = pop();
            next.fiber = &self;
            set_running(next);
            continue;
        }
        /* safe to free before leaving: the next thread, if any, is suspended on a fiber of
         * its own, so run_next does not take a fiber */
        S.free_fibers[S.n_free_fibers++] = &self;
        run_next(self, true);
    }
}

std::string describe_deadlock() {
    std::string s = block_name() + ": ";
    const char *separator = "";
    unsigned returned = S.n_threads - S.live;
    if (S.at_barrier > 0) {
        s += format("__syncthreads (%s:%d) reached by %u of %u threads", S.barrier_site.file,
                    S.barrier_site.line, S.at_barrier, S.n_threads);
        separator = "; ";
    }
    if (returned > 0) {
        s += separator + (S.at_barrier + returned == S.n_threads
                              ? format("the other %u had returned", returned)
                              : format("%u had returned", returned));
        separator = "; ";
    }
    for (unsigned i = 0; i * kWarpSize < S.n_threads; i++) {
        const Warp &w = S.warps[i];
        unsigned described = 0;
        for (unsigned l = 0; l < kWarpSize; l++) {
            if (!(w.waiting >> l & 1) || (described >> l & 1)) continue;
            const WarpOp &op = lanes_of(w)[l].op;
            unsigned members = lanes_in(w, op);
            described |= members;
            s += separator + format("lanes %s of warp %u wait at %s (%s:%d, mask 0x%08x) for "
                                    "lanes %s (warp divergence)", lane_list(members).c_str(), i,
                                    op.name, op.site.file, op.site.line, op.mask,
                                    lane_list(op.mask & w.live & ~members).c_str());
            separator = "; ";
        }
    }
    return s;
}

/* Maps the fiber stacks, once: one region, with an inaccessible guard page below each stack
 * so that a stack overflow faults instead of corrupting the next stack. */
bool map_stacks() {
    if (S.stacks) return true;
    size_t page = (size_t)sysconf(_SC_PAGESIZE), slot = page + kStackSize;
    void *region = mmap(nullptr, slot * kMaxThreadsPerBlock, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED) return false;
    S.stacks = static_cast<char *>(region);
    for (unsigned i = 0; i < kMaxThreadsPerBlock; i++) {
        char *guard = S.stacks + i * slot;
        mprotect(guard, page, PROT_NONE); /* best effort: a failure only loses the guard */
        Context &f = S.fibers[i];
        getcontext(&f.uc); /* makecontext needs a context initialized once */
        f.stack_bottom = guard + page;
        f.stack_size = kStackSize;
    }
    return true;
}

/* Runs one block (emu::position.block_idx) to completion; false if it failed. */
bool run_block() {
    const dim3 &b = emu::position.block_dim;
    S.queue_head = 0;
    S.queue_length = 0;
    for (unsigned tid = 0; tid < S.n_threads; tid++) {
        Thread &t = S.threads[tid];
        t.idx = {tid % b.x, tid / b.x % b.y, tid / (b.x * b.y)};
        t.tid = tid;
        t.state = State::unstarted;
        t.fiber = nullptr;
    }
    for (unsigned i = 0; i < S.n_threads; i++) push(S.threads[nth(i, S.n_threads)]);
    for (unsigned w = 0; w * kWarpSize < S.n_threads; w++) {
        unsigned lanes = S.n_threads - w * kWarpSize;
        S.warps[w].live = lanes >= kWarpSize ? ~0u : (1u << lanes) - 1;
        S.warps[w].waiting = 0;
    }
    for (unsigned i = 0; i < S.n_threads; i++) /* fiber 0 is taken first */
        S.free_fibers[i] = &S.fibers[S.n_threads - 1 - i];
    S.n_free_fibers = S.n_threads;
    S.live = S.n_threads;
    S.at_barrier = 0;
    S.failed = false;
    run_next(S.host, false); /* returns when no thread can run */
#ifdef EMU_ASAN
    /* the abandoned threads of a failed block leave poisoned frames on their stacks */
    if (S.failed)
        for (unsigned i = 0; i < S.n_threads; i++)
            __asan_unpoison_memory_region(S.fibers[i].stack_bottom, kStackSize);
#endif
    return !S.failed;
}

/* Reads TINYLLM_EMU_ORDER, once: unset, empty or "forward" is the forward order, "reverse" the
 * reverse one. Anything else is printed once on stderr and then fails every launch
 * (cudaErrorInitializationError, explained): an order misspelled and quietly run forward
 * would pass for a check that was never made, and the message of an abort would be lost
 * where a test runner captures stderr, while a failed launch reaches the test's report. */
void read_order() {
    const char *value = getenv("TINYLLM_EMU_ORDER");
    if (!value || !*value || !strcmp(value, "forward")) {
        S.order = Order::forward;
    } else if (!strcmp(value, "reverse")) {
        S.order = Order::reverse;
    } else {
        S.order_error = format("TINYLLM_EMU_ORDER=\"%s\" is not an order: use \"forward\" (the "
                               "default) or \"reverse\"", value);
        fprintf(stderr, "cuda emulator: %s\n", S.order_error.c_str());
    }
    S.order_known = true;
}

/* Why CUDA would refuse this configuration, or "" if it would not. */
std::string configuration_error(dim3 grid, dim3 block) {
    uint64_t threads = (uint64_t)block.x * block.y * block.z;
    if (threads == 0) return format("block (%u,%u,%u) is empty", block.x, block.y, block.z);
    if (threads > kMaxThreadsPerBlock)
        return format("block (%u,%u,%u) has %llu threads; the limit is %u", block.x, block.y,
                      block.z, (unsigned long long)threads, kMaxThreadsPerBlock);
    if (block.x > kMaxBlockDim[0] || block.y > kMaxBlockDim[1] || block.z > kMaxBlockDim[2])
        return format("block (%u,%u,%u) exceeds the limits (%u,%u,%u)", block.x, block.y, block.z,
                      kMaxBlockDim[0], kMaxBlockDim[1], kMaxBlockDim[2]);
    if ((uint64_t)grid.x * grid.y * grid.z == 0)
        return format("grid (%u,%u,%u) is empty", grid.x, grid.y, grid.z);
    if (grid.x > kMaxGridDim[0] || grid.y > kMaxGridDim[1] || grid.z > kMaxGridDim[2])
        return format("grid (%u,%u,%u) exceeds the limits (%u,%u,%u)", grid.x, grid.y, grid.z,
                      kMaxGridDim[0], kMaxGridDim[1], kMaxGridDim[2]);
    return "";
}

}  // namespace

/* ------------------------------------------------------------------------------------------
 * Device-side entry points (cuda_emu.h). */
namespace emu {

void fail(Site site, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string what = vformat(fmt, ap);
    va_end(ap);
    Thread *t = S.running;
    if (!t) {
        fprintf(stderr, "cuda emulator: %s:%d: %s\n", site.file, site.line, what.c_str());
        abort();
    }
    S.failed = true;
    S.failure = block_name() + format(", thread (%u,%u,%u), %s:%d: ", t->idx.x, t->idx.y,
                                      t->idx.z, site.file, site.line) + what;
    S.running = nullptr;
    /* the failed block's threads are abandoned: nothing resumes them */
    switch_context(*t->fiber, S.host, true);
    __builtin_unreachable();
}

void syncthreads(Site site) {
    Thread &t = running_thread("__syncthreads", site);
    if (S.at_barrier == 0)
        S.barrier_site = site;
    else if (!same_site(site, S.barrier_site))
        fail(site, "__syncthreads reached while %u threads wait at the __syncthreads at %s:%d "
             "(all threads of a block must reach the same barrier)", S.at_barrier,
             S.barrier_site.file, S.barrier_site.line);
    t.state = State::at_barrier;
    if (++S.at_barrier == S.n_threads) { /* the last one: release everyone, itself included */
        S.at_barrier = 0;
        for (unsigned i = 0; i < S.n_threads; i++) release(S.threads[nth(i, S.n_threads)]);
    }
    yield(t);
}

Vote warp_collective(const char *name, unsigned mask, int predicate, Site site) {
    Thread &t = running_thread(name, site);
    gather(t, {name, mask, 0, site}, predicate != 0, lane_of(t));
    return t.vote;
}

uint64_t shuffle_bits(const char *name, ShuffleMode mode, unsigned mask, uint64_t value,
                      unsigned bytes, int operand, int width, Site site) {
    Thread &t = running_thread(name, site);
    if (width < 1 || width > (int)kWarpSize || (width & (width - 1)) != 0)
        fail(site, "%s: width %d is not a power of 2 from 1 to 32", name, width);
    unsigned lane = lane_of(t), b = (unsigned)operand & 31; /* PTX uses the low 5 bits */
    unsigned first = lane & ~(unsigned)(width - 1), last = first + width - 1, src = lane;
    switch (mode) {
        case ShuffleMode::index: src = first | (b & (width - 1)); break;
        case ShuffleMode::up: src = lane >= first + b ? lane - b : lane; break;
        case ShuffleMode::down: src = lane + b <= last ? lane + b : lane; break;
        case ShuffleMode::xor_: src = (lane ^ b) <= last ? lane ^ b : lane; break;
    }
    gather(t, {name, mask, bytes, site}, value, src);
    return t.received;
}

void launch(dim3 grid, dim3 block, KernelRef body, Site site) {
    std::lock_guard<std::mutex> lock(S.mutex);
    std::string bad = configuration_error(grid, block);
    if (!bad.empty()) {
        record(cudaErrorInvalidConfiguration,
               format("kernel launched at %s:%d: %s", site.file, site.line, bad.c_str()));
        return;
    }
    if (!S.order_known) read_order();
    if (!S.order_error.empty()) {
        record(cudaErrorInitializationError, S.order_error);
        return;
    }
    if (!map_stacks()) {
        record(cudaErrorMemoryAllocation, "could not map the stacks of the emulated threads");
        return;
    }
    S.body = body;
    S.n_threads = block.x * block.y * block.z;
    position.block_dim = block;
    position.grid_dim = grid;
    /* block k of the run order: x fastest, then y, z; the last block first in reverse */
    uint64_t n_blocks = (uint64_t)grid.x * grid.y * grid.z;
    for (uint64_t k = 0; k < n_blocks; k++) {
        uint64_t b = S.order == Order::forward ? k : n_blocks - 1 - k;
        position.block_idx = {(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                              (unsigned)(b / grid.x / grid.y)};
        if (!run_block()) {
            record(cudaErrorLaunchFailure,
                   format("kernel launched at %s:%d: ", site.file, site.line) + S.failure);
            return;
        }
    }
}

}  // namespace emu

/* ------------------------------------------------------------------------------------------
 * The runtime API (cuda_emu.h). */
const char *cudaGetErrorString(cudaError_t error) {
    return error == explained_error && error != cudaSuccess ? explanation.c_str()
                                                             : plain_error_string(error);
}

const char *cudaGetErrorName(cudaError_t error) {
    switch (error) {
#define EMU_NAME(e) \
    case e: return #e;
        EMU_NAME(cudaSuccess)
        EMU_NAME(cudaErrorInvalidValue)
        EMU_NAME(cudaErrorMemoryAllocation)
        EMU_NAME(cudaErrorInitializationError)
        EMU_NAME(cudaErrorInvalidConfiguration)
        EMU_NAME(cudaErrorInvalidPitchValue)
        EMU_NAME(cudaErrorInvalidMemcpyDirection)
        EMU_NAME(cudaErrorNoDevice)
        EMU_NAME(cudaErrorInvalidDevice)
        EMU_NAME(cudaErrorLaunchFailure)
#undef EMU_NAME
    }
    return "unrecognized error code";
}

cudaError_t cudaGetLastError(void) {
    cudaError_t error = last_error;
    last_error = cudaSuccess;
    return error;
}

cudaError_t cudaPeekAtLastError(void) { return last_error; }

cudaError_t cudaGetDeviceCount(int *count) {
    if (!count) return record(cudaErrorInvalidValue, "cudaGetDeviceCount: count is NULL");
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (device != 0)
        return record(cudaErrorInvalidDevice,
                      format("cudaSetDevice(%d): the emulator has device 0 only", device));
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    if (!device) return record(cudaErrorInvalidValue, "cudaGetDevice: device is NULL");
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
    if (!prop) return record(cudaErrorInvalidValue, "cudaGetDeviceProperties: prop is NULL");
    if (device != 0)
        return record(cudaErrorInvalidDevice,
                      format("cudaGetDeviceProperties(%d): the emulator has device 0 only",
                             device));
    *prop = cudaDeviceProp{};
    snprintf(prop->name, sizeof prop->name, "CPU emulation (csrc/cuda/emu)");
    prop->totalGlobalMem = total_memory();
    prop->sharedMemPerBlock = kSharedMemPerBlock;
    prop->warpSize = (int)kWarpSize;
    prop->maxThreadsPerBlock = (int)kMaxThreadsPerBlock;
    for (int i = 0; i < 3; i++) {
        prop->maxThreadsDim[i] = (int)kMaxBlockDim[i];
        prop->maxGridSize[i] = (int)kMaxGridDim[i];
    }
    prop->multiProcessorCount = kMultiProcessors;
    prop->major = 9;
    prop->minor = 0;
    return cudaSuccess;
}

cudaError_t cudaDeviceReset(void) {
    std::lock_guard<std::mutex> lock(memory_mutex);
    for (const auto &a : allocations) free((void *)a.first);
    allocations.clear();
    allocated_bytes = 0;
    last_error = cudaSuccess;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    return last_error == cudaErrorLaunchFailure ? cudaErrorLaunchFailure : cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaDeviceSynchronize(); }

cudaError_t cudaMalloc(void **devPtr, size_t size) {
    if (!devPtr) return record(cudaErrorInvalidValue, "cudaMalloc: devPtr is NULL");
    if (size == 0) {
        *devPtr = nullptr;
        return cudaSuccess;
    }
    std::lock_guard<std::mutex> lock(memory_mutex);
    void *p = nullptr;
    if (size > total_memory() - allocated_bytes || posix_memalign(&p, 256, size) != 0)
        return record(cudaErrorMemoryAllocation,
                      format("cudaMalloc(%zu bytes): %zu of %zu bytes are free", size,
                             total_memory() - allocated_bytes, total_memory()));
    memset(p, 0xff, size);
    allocations[(uintptr_t)p] = size;
    allocated_bytes += size;
    *devPtr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void *devPtr) {
    if (!devPtr) return cudaSuccess;
    std::lock_guard<std::mutex> lock(memory_mutex);
    auto it = allocations.find((uintptr_t)devPtr);
    if (it == allocations.end())
        return record(cudaErrorInvalidValue,
                      format("cudaFree(%p): not the start of a live cudaMalloc allocation",
                             devPtr));
    allocated_bytes -= it->second;
    allocations.erase(it);
    free(devPtr);
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    if (!free_bytes || !total_bytes)
        return record(cudaErrorInvalidValue, "cudaMemGetInfo: NULL argument");
    std::lock_guard<std::mutex> lock(memory_mutex);
    *total_bytes = total_memory();
    *free_bytes = total_memory() - allocated_bytes;
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, cudaMemcpyKind kind) {
    cudaError_t status = check_copy("cudaMemcpy", dst, count, src, count, kind);
    if (status == cudaSuccess && count > 0) memmove(dst, src, count);
    return status;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t) {
    cudaError_t status = check_copy("cudaMemcpyAsync", dst, count, src, count, kind);
    if (status == cudaSuccess && count > 0) memmove(dst, src, count);
    return status;
}

cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                         size_t height, cudaMemcpyKind kind) {
    if (width > dpitch || width > spitch)
        return record(cudaErrorInvalidPitchValue,
                      format("cudaMemcpy2D: width %zu exceeds dpitch %zu or spitch %zu", width,
                             dpitch, spitch));
    /* the rows span from the first byte of the first row to the last byte of the last row */
    size_t rows = width == 0 ? 0 : height;
    size_t dst_span = rows ? (rows - 1) * dpitch + width : 0;
    size_t src_span = rows ? (rows - 1) * spitch + width : 0;
    cudaError_t status = check_copy("cudaMemcpy2D", dst, dst_span, src, src_span, kind);
    if (status != cudaSuccess) return status;
    for (size_t r = 0; r < rows; r++)
        memmove(static_cast<char *>(dst) + r * dpitch,
                static_cast<const char *>(src) + r * spitch, width);
    return cudaSuccess;
}

cudaError_t cudaMemset(void *devPtr, int value, size_t count) {
    if (count == 0) return cudaSuccess;
    cudaError_t status = check_device_range("cudaMemset", "devPtr", devPtr, count);
    if (status == cudaSuccess) memset(devPtr, value, count);
    return status;
}

cudaError_t cudaMemsetAsync(void *devPtr, int value, size_t count, cudaStream_t) {
    if (count == 0) return cudaSuccess;
    cudaError_t status = check_device_range("cudaMemsetAsync", "devPtr", devPtr, count);
    if (status == cudaSuccess) memset(devPtr, value, count);
    return status;
}
