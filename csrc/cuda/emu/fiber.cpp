/* fiber.cpp: the CUDA emulator's fibers: the stacks its threads run on, the switches between
 * them, and what AddressSanitizer must be told about both. Which thread runs when is decided
 * in scheduler.cpp; this file only knows contexts and stacks (internal.h declares its calls).
 * A switch is glibc's swapcontext, a few hundred nanoseconds because it also saves the signal
 * mask with a system call. Faster user-space switches (setjmp/longjmp between stacks,
 * hand-written assembly) are not used: they would break where x86 shadow stacks (CET) are
 * enabled, which swapcontext and makecontext support.
 */
#include "internal.h"

#include <sys/mman.h>
#include <unistd.h>

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

using namespace emu::internal;

namespace {

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
#else
void before_switch(Context &, const Context &, bool) {}
#endif

}  // namespace

/* First thing on the stack switched to; learns the bounds of the stack switched from. */
void emu::internal::after_switch(Context *self) {
#ifdef EMU_ASAN
    const void *bottom;
    size_t size;
    __sanitizer_finish_switch_fiber(self ? self->fake_stack : nullptr, &bottom, &size);
    switching_from->stack_bottom = bottom;
    switching_from->stack_size = size;
#endif
}

void emu::internal::switch_context(Context &from, Context &to, bool from_finished) {
    before_switch(from, to, from_finished);
    swapcontext(&from.uc, &to.uc);
    after_switch(&from);
}

void emu::internal::start_fiber(Context &f, void (*entry)()) {
    ucontext_t &uc = f.uc;
    uc.uc_stack.ss_sp = const_cast<void *>(f.stack_bottom);
    uc.uc_stack.ss_size = f.stack_size;
    uc.uc_link = nullptr;
    makecontext(&uc, entry, 0);
#ifdef EMU_ASAN
    /* ASan's swapcontext interceptor clears the shadow of the whole target stack when
     * uc_stack names one (slow, and it forgets the redzones of the suspended frames); the
     * switch annotations already tell ASan everything, and uc_stack is only read by
     * makecontext, so hide it. */
    uc.uc_stack.ss_size = 0;
#endif
    f.fake_stack = nullptr;
}

/* Maps the fiber stacks, once: one region, with an inaccessible guard page below each stack
 * so that a stack overflow faults instead of corrupting the next stack. */
bool emu::internal::map_stacks() {
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

void emu::internal::forget_abandoned_frames(unsigned n_fibers) {
#ifdef EMU_ASAN
    /* the abandoned threads of a failed block leave poisoned frames on their stacks */
    for (unsigned i = 0; i < n_fibers; i++)
        __asan_unpoison_memory_region(S.fibers[i].stack_bottom, kStackSize);
#endif
}
