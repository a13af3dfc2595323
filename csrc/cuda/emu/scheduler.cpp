/* scheduler.cpp: the CUDA emulator's scheduler: how a kernel launch runs the grid's blocks and
 * their threads, fibers, the run queue, __syncthreads (declared in cuda_emu.h). The warp
 * collectives are in warp.cpp, the runtime API (errors, memory) in runtime.cpp, the state
 * they share in internal.h; README.md says what the emulation checks and what it cannot.
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
 * plain loop of function calls; a switch happens only when a thread waits. The stacks and
 * the switches are in fiber.cpp.
 */
#include "internal.h"

#include <cstdio>
#include <cstdlib>

namespace emu {
Position position;
}

using namespace emu::internal;

Scheduler emu::internal::S;

namespace {

bool same_site(emu::Site a, emu::Site b) { return a.line == b.line && !strcmp(a.file, b.file); }

std::string block_name() {
    const uint3 &b = emu::position.block_idx;
    return format("block (%u,%u,%u)", b.x, b.y, b.z);
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

/* A thread that waited, or the running thread that ended the wait, can run. A __syncthreads
 * releases the whole block into the (then empty) queue, nth(0) first; a warp collective puts
 * its members at the front of the queue, so that the warp carries on at once. */
void release(Thread &t) {
    t.state = State::ready;
    push(t);
}

void set_running(Thread &t) {
    t.state = State::running;
    S.running = &t;
    emu::position.thread_idx = t.idx;
}

void fiber_main();

/* A fiber from the free stack, set up to start fiber_main from its stack's top. */
Context &take_fiber() {
    Context &f = *S.free_fibers[--S.n_free_fibers];
    start_fiber(f, fiber_main);
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

}  // namespace

/* Which of n things (threads of a block, lanes of a warp, blocks of a grid) runs i-th. */
unsigned emu::internal::nth(unsigned i, unsigned n) {
    return S.order == Order::forward ? i : n - 1 - i;
}

void emu::internal::release_first(Thread &t) {
    t.state = State::ready;
    push_front(t);
}

/* The running thread t has arrived at a barrier or a warp collective. If the wait is not over
 * (t waits there, state at_barrier or at_warp), the CPU goes to the next thread of the queue
 * until a thread releases t. If t completed it (state ready), it released the threads that
 * waited and itself together, and runs again in its turn: at once if it is first in line. */
void emu::internal::yield(Thread &t) {
    if (t.state == State::ready && S.queue[S.queue_head] == t.tid) {
        pop();
        set_running(t);
        return;
    }
    run_next(*t.fiber, false);
}

Thread &emu::internal::running_thread(const char *name, emu::Site site) {
    if (!S.running) emu::fail(site, "%s called outside a kernel", name);
    return *S.running;
}

namespace {

/* The running thread has returned from the kernel: the collectives of its warp no longer wait
 * for it, and one of them may now be complete. */
void thread_returned() {
    Thread &t = *S.running;
    t.state = State::exited;
    S.live--;
    warp_lane_returned(t);
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
    for (const std::string &wait : describe_warp_waits()) {
        s += separator + wait;
        separator = "; ";
    }
    return s;
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
    if (S.failed) forget_abandoned_frames(S.n_threads);
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
