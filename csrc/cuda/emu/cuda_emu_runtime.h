/* cuda_emu_runtime.h: the host side of the emulator: the CUDA runtime API subset the
 * library calls (errors, devices, memory, copies), defined in runtime.cpp.
 * Part of cuda_emu.h, which includes it (inside its hidden-visibility region, after the
 * device-side definitions it uses): include cuda_emu.h, never this file. It includes no system
 * header of its own, since those must stay outside the hidden region.
 */
#ifndef TINYLLM_CUDA_EMU_RUNTIME_H
#define TINYLLM_CUDA_EMU_RUNTIME_H
#ifndef TINYLLM_CUDA_EMU_H
#error "include cuda_emu.h, which includes cuda_emu_runtime.h"
#endif

/* ------------------------------------------------------------------------------------------
 * The CUDA runtime API subset, with CUDA's names, signatures and error codes. Emulated
 * device memory is host memory; cudaMalloc remembers every live allocation, so the copies
 * and cudaMemset can reject a device pointer outside one (cudaErrorInvalidValue). Kernels run
 * to completion inside the launch: there is nothing asynchronous, and the *Async calls and
 * streams are synchronous. Errors: the failing call returns its code and it becomes the
 * calling thread's last error (cudaGetLastError returns and clears it); cudaGetErrorString of
 * that code then explains the failure in detail, e.g. "unspecified launch failure (emulator:
 * kernel launched at x.cu:12: block (3,0,0): __syncthreads (x.cu:40) reached by 96 of 128
 * threads; the other 32 had returned)". Unlike CUDA, a launch failure is not sticky: the next
 * launch runs normally. */
enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidPitchValue = 12,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorLaunchFailure = 719,
};
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4, /* each pointer is device memory if it lies in an allocation */
};

typedef struct CUstream_st *cudaStream_t;

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;    /* the machine's physical memory */
    size_t sharedMemPerBlock; /* 48 KiB, not enforced: static __shared__ arrays are unchecked */
    int warpSize;
    int maxThreadsPerBlock;
    int maxThreadsDim[3];
    int maxGridSize[3];
    int multiProcessorCount; /* fixed (an H100's 132), so grids sized by it are reproducible */
    int major, minor;        /* 9.0: every emulated feature is available */
};

const char *cudaGetErrorString(cudaError_t error);
const char *cudaGetErrorName(cudaError_t error);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device);
cudaError_t cudaDeviceReset(void); /* frees every allocation, clears the last error */
/* both return cudaErrorLaunchFailure while a launch failure is the last error (not yet taken
 * by cudaGetLastError), like CUDA reports a kernel's failure at the next synchronization */
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);

/* 256-byte aligned; new memory is filled with 0xff bytes (NaN as float, -1 as integers), so a
 * kernel that reads memory nobody wrote gets visibly wrong results rather than zeros. 0 bytes:
 * *devPtr = NULL. More than the free memory: cudaErrorMemoryAllocation. */
cudaError_t cudaMalloc(void **devPtr, size_t size);
template <class T>
cudaError_t cudaMalloc(T **devPtr, size_t size) {
    return cudaMalloc(reinterpret_cast<void **>(devPtr), size);
}
cudaError_t cudaFree(void *devPtr);
cudaError_t cudaMemGetInfo(size_t *free, size_t *total);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream = 0);
cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                         size_t height, cudaMemcpyKind kind);
cudaError_t cudaMemset(void *devPtr, int value, size_t count);
cudaError_t cudaMemsetAsync(void *devPtr, int value, size_t count, cudaStream_t stream = 0);


#endif /* TINYLLM_CUDA_EMU_RUNTIME_H */
