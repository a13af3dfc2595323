/* runtime.cpp: the emulator's CUDA runtime API (declared in cuda_emu_runtime.h): errors, kept
 * per host thread as CUDA keeps them; device memory, which is host memory with every live
 * allocation remembered so that copies, cudaMemset and cudaFree can reject a pointer outside
 * one; the device's properties. Kernel launches are not here but in scheduler.cpp; README.md
 * says what the emulation checks and what it cannot.
 */
#include "internal.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>

using namespace emu::internal;

namespace {

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

}  // namespace

namespace emu {
namespace internal {

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

cudaError_t record(cudaError_t error, const std::string &why) {
    last_error = error;
    explained_error = error;
    explanation = std::string(plain_error_string(error)) + " (emulator: " + why + ")";
    return error;
}

}  // namespace internal
}  // namespace emu

namespace {

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

}  // namespace

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
