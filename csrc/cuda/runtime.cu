/* runtime.cu: the device, a caching allocator, copies, and errors that Python can read.
 *
 * Errors: CUDA reports failures as status codes, and a kernel's fault surfaces at a later call.
 * Every host function of the library returns the status; the first failing call also records
 * "<call>: <CUDA's message> (<error name>)" in a per-thread buffer that last_error() returns,
 * so the Python binding raises an exception naming the call. With TINYLLM_CUDA_SYNC=1 in the
 * environment every launch is followed by a synchronize, so a kernel's fault is reported by the
 * kernel that caused it (slower; for debugging).
 *
 * The allocator: cudaMalloc and cudaFree synchronize the device and cost tens of microseconds,
 * and a training step frees and reallocates the same activation shapes every time. Freed
 * blocks are kept in a size-ordered pool and handed out again to a request of the same rounded
 * size (or up to twice as small), so after the first step the loop never calls cudaMalloc.
 * All kernels run on the default stream, so a block freed right after queueing the kernel
 * that uses it is only reused by kernels queued later, which run after it: no event is
 * needed. This file holds the library's only mutable state (the pool and the error buffer),
 * as the CUDA runtime itself holds its context: one process, one device.
 */
#include "common.cuh"

#include <map>
#include <mutex>
#include <stdio.h>
#include <stdlib.h>
#include <unordered_map>

static thread_local char error_message[512];

static const char *describe(int status) {
    return cudaGetErrorString((cudaError_t)status);
}

int record_error(int status, const char *call) {
    if (status != 0)
        snprintf(error_message, sizeof error_message, "%s: %s (%s)", call, describe(status),
                 cudaGetErrorName((cudaError_t)status));
    return status;
}

static bool sync_after_launch(void) {
    static const bool sync = getenv("TINYLLM_CUDA_SYNC") && atoi(getenv("TINYLLM_CUDA_SYNC"));
    return sync;
}

int launch_status(const char *what) {
    int status = (int)cudaGetLastError();
    if (status == 0 && sync_after_launch()) status = (int)cudaDeviceSynchronize();
    if (status != 0) {
        char call[128];
        snprintf(call, sizeof call, "%s kernel", what);
        record_error(status, call);
    }
    return status;
}

extern "C" const char *last_error(void) { return error_message; }

extern "C" int is_emulated(void) {
#ifdef TINYLLM_CUDA_EMU
    return 1;
#else
    return 0;
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* the device */

extern "C" int device_count(int *count) {
    *count = 0;
    cudaError_t status = cudaGetDeviceCount(count);
    if (status != cudaSuccess) *count = 0;
    return record_error((int)status, "cudaGetDeviceCount");
}

static char name_of_device[320];

extern "C" int device_init(int device) {
    CHECK(cudaSetDevice(device));
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, device));
    snprintf(name_of_device, sizeof name_of_device, "%.200s (sm_%d%d, %.1f GiB)", prop.name,
             prop.major, prop.minor, (double)prop.totalGlobalMem / (1 << 30));
    return 0;
}

extern "C" const char *device_name(void) { return name_of_device; }

extern "C" int synchronize(void) {
    CHECK(cudaDeviceSynchronize());
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* the caching allocator */

static const int64_t ROUND = 512;   /* sizes are rounded up so near-equal requests share blocks */

static std::mutex pool_lock;                        /* the Python binding may call from threads */
static std::multimap<int64_t, void *> cached;       /* free blocks by size */
static std::unordered_map<void *, int64_t> in_use;  /* live blocks and their sizes */
static int64_t n_cuda_malloc, bytes_in_use, bytes_held, peak_in_use;

static int release_cached(void) {
    for (auto &block : cached) {
        cudaError_t status = cudaFree(block.second);
        if (status != cudaSuccess) return record_error((int)status, "cudaFree");
    }
    for (auto &block : cached) bytes_held -= block.first;
    cached.clear();
    return 0;
}

extern "C" int device_alloc(void **ptr, int64_t bytes) {
    *ptr = NULL;
    if (bytes <= 0) return 0;
    int64_t size = ceil_div(bytes, ROUND) * ROUND;
    std::lock_guard<std::mutex> hold(pool_lock);
    auto fit = cached.lower_bound(size);
    if (fit != cached.end() && fit->first <= 2 * size) {
        *ptr = fit->second;
        size = fit->first;
        cached.erase(fit);
    } else {
        cudaError_t status = cudaMalloc(ptr, (size_t)size);
        if (status == cudaErrorMemoryAllocation) {   /* the cache may hold what is missing */
            cudaGetLastError();
            int released = release_cached();
            if (released != 0) return released;
            status = cudaMalloc(ptr, (size_t)size);
        }
        if (status != cudaSuccess) {
            char call[96];
            snprintf(call, sizeof call, "cudaMalloc(%.3f MiB)", (double)size / (1 << 20));
            *ptr = NULL;
            cudaGetLastError();   /* an allocation failure is not sticky: later calls may work */
            return record_error((int)status, call);
        }
        n_cuda_malloc++;
        bytes_held += size;
    }
    in_use[*ptr] = size;
    bytes_in_use += size;
    if (bytes_in_use > peak_in_use) peak_in_use = bytes_in_use;
    return 0;
}

extern "C" int device_free(void *ptr) {
    if (ptr == NULL) return 0;
    std::lock_guard<std::mutex> hold(pool_lock);
    auto block = in_use.find(ptr);
    if (block == in_use.end())
        return record_error((int)cudaErrorInvalidValue,
                            "device_free (pointer not from device_alloc)");
    cached.emplace(block->second, ptr);
    bytes_in_use -= block->second;
    in_use.erase(block);
    return 0;
}

extern "C" int device_empty_cache(void) {
    std::lock_guard<std::mutex> hold(pool_lock);
    CHECK(cudaDeviceSynchronize());   /* queued kernels may still use cached blocks */
    return release_cached();
}

extern "C" void allocator_stats(int64_t *stats_host) {
    std::lock_guard<std::mutex> hold(pool_lock);
    stats_host[0] = n_cuda_malloc;
    stats_host[1] = bytes_in_use;
    stats_host[2] = bytes_held;
    stats_host[3] = peak_in_use;
}

/* ------------------------------------------------------------------------------------------ */
/* copies */

extern "C" int copy_to_device(void *dst, const void *src_host, int64_t bytes) {
    if (bytes > 0) CHECK(cudaMemcpy(dst, src_host, (size_t)bytes, cudaMemcpyHostToDevice));
    return 0;
}

extern "C" int copy_to_host(void *dst_host, const void *src, int64_t bytes) {
    if (bytes > 0) CHECK(cudaMemcpy(dst_host, src, (size_t)bytes, cudaMemcpyDeviceToHost));
    return 0;
}

extern "C" int copy_on_device(void *dst, const void *src, int64_t bytes) {
    if (bytes > 0)
        CHECK(cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToDevice, 0));
    return 0;
}

extern "C" int copy_rows(void *dst, int64_t dst_pitch, const void *src, int64_t src_pitch,
                         int64_t width, int64_t rows) {
    if (width > 0 && rows > 0)
        CHECK(cudaMemcpy2D(dst, (size_t)dst_pitch, src, (size_t)src_pitch, (size_t)width,
                           (size_t)rows, cudaMemcpyDeviceToDevice));
    return 0;
}
