/* warp.cpp: the CUDA emulator's warp collectives (shuffles, votes, __syncwarp, __activemask,
 * and the waits of wmma's load, store and mma; declared in cuda_emu.h). A lane that calls one
 * waits, through the scheduler (scheduler.cpp), until every lane the collective waits for has
 * arrived; the lane that completes it hands each member its result. Lanes that wait for each
 * other in different collectives are a warp divergence, which the scheduler reports as a
 * deadlock with describe_warp_waits' words. README.md says what is checked.
 */
#include "internal.h"

using namespace emu::internal;

namespace {

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

}  // namespace

void emu::internal::warp_lane_returned(Thread &t) {
    Warp &w = warp_of(t);
    w.live &= ~(1u << lane_of(t));
    const Thread *lane = lanes_of(w);
    for (unsigned l = 0; l < kWarpSize; l++)
        if (w.waiting >> l & 1) complete_if_gathered(w, lane[l].op);
}

std::vector<std::string> emu::internal::describe_warp_waits() {
    std::vector<std::string> waits;
    for (unsigned i = 0; i * kWarpSize < S.n_threads; i++) {
        const Warp &w = S.warps[i];
        unsigned described = 0;
        for (unsigned l = 0; l < kWarpSize; l++) {
            if (!(w.waiting >> l & 1) || (described >> l & 1)) continue;
            const WarpOp &op = lanes_of(w)[l].op;
            unsigned members = lanes_in(w, op);
            described |= members;
            waits.push_back(format("lanes %s of warp %u wait at %s (%s:%d, mask 0x%08x) for "
                                   "lanes %s (warp divergence)", lane_list(members).c_str(), i,
                                   op.name, op.site.file, op.site.line, op.mask,
                                   lane_list(op.mask & w.live & ~members).c_str()));
        }
    }
    return waits;
}

namespace emu {

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

}  // namespace emu
