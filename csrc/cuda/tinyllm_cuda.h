/* tinyllm_cuda.h: the C API of tinyllm's CUDA library, and the single source of its cffi cdef.
 *
 * tinyllm/backends/cuda_kernels.py reads this file, drops the preprocessor lines and hands the
 * declarations to cffi. Every kernel has the name and the meaning of its twin in
 * tinyllm/backends/numpy_kernels.py and csrc/tinyllm.h (read those for the maths); the tests
 * compare them. Conventions, as in tinyllm.h, plus:
 *   - every pointer argument is device memory (from device_alloc) unless its name ends in _host;
 *   - kernels are queued on the default stream and return at once; copies to the host wait.
 * Errors, one rule for this header and csrc/tinyllm.h: the Python side checks shapes, dtypes
 * and ranges before calling, and no function prints, aborts or exits; a function that can
 * fail says so by its return value, which the Python binding turns into an exception. Here
 * every call can fail (an allocation, a launch, the device, a size the kernel does not
 * support), so every function returns int: 0 on success, or a nonzero CUDA error code, and
 * then last_error() names the call that failed and why ("cudaMalloc(1 GiB): out of memory");
 * cuda_runtime.check raises it as CudaError. Only the queries device_name, is_emulated,
 * last_error and allocator_stats cannot fail, and return their answer.
 * The same sources build against the real CUDA runtime (nvcc) or against csrc/cuda/emu/, which
 * runs every thread of every block on the CPU; is_emulated() tells which.
 */
#ifndef TINYLLM_CUDA_H
#define TINYLLM_CUDA_H
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* runtime.cu: devices, memory, errors. */
int device_count(int *count);                 /* 0 GPUs is success with *count = 0 */
int device_init(int device);                  /* select the device; call before anything else */
const char *device_name(void);                /* of the selected device */
int is_emulated(void);                        /* 1 in the CPU-emulation build */
const char *last_error(void);                 /* message of the last failure on this thread */
int synchronize(void);                        /* wait for every queued kernel; reports their errors */

/* A caching allocator: freed blocks are kept by size and handed out again, so a training
 * loop whose shapes repeat calls cudaMalloc only in its first step. */
int device_alloc(void **ptr, int64_t bytes);  /* 256-byte aligned; *ptr = NULL for 0 bytes */
int device_free(void *ptr);                   /* back to the cache (NULL is allowed) */
int device_empty_cache(void);                 /* cudaFree every cached block */
/* stats[0] cudaMalloc calls so far, [1] bytes in use, [2] bytes held (in use + cached),
 * [3] peak bytes in use */
void allocator_stats(int64_t *stats_host);

int copy_to_device(void *dst, const void *src_host, int64_t bytes);
int copy_to_host(void *dst_host, const void *src, int64_t bytes);
int copy_on_device(void *dst, const void *src, int64_t bytes);
/* rows strided copies: row r of `width` bytes from src + r * src_pitch to dst + r * dst_pitch */
int copy_rows(void *dst, int64_t dst_pitch, const void *src, int64_t src_pitch, int64_t width,
              int64_t rows);

/* matmul.cu: out = op(a) @ op(b), batch times, as in tinyllm.h. matmul uses float32 shared-
 * memory tiles with register blocking; matmul_tf32 uses tensor cores (WMMA m16n16k8, TF32
 * inputs rounded from float32, float32 accumulation: ~1e-3 relative error). */
int matmul(const float *a, const float *b, float *out, int64_t batch, int64_t M, int64_t N,
           int64_t K, int transpose_a, int transpose_b);
int matmul_tf32(const float *a, const float *b, float *out, int64_t batch, int64_t M, int64_t N,
                int64_t K, int transpose_a, int transpose_b);

/* attention.cu: causal flash attention, as in tinyllm.h (query i at position Tk - Tq + i). */
int attention_forward(const float *q, const float *k, const float *v, float *out, float *lse,
                      int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t hs);
int attention_backward(const float *dout, const float *q, const float *k, const float *v,
                       const float *out, const float *lse, float *dq, float *dk, float *dv,
                       int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t hs);

/* quant.cu: the quantized products, as quant_i8.c and quant.c in tinyllm.h. quantize_rows_q8:
 * x (M, K) -> qx int8 (M, K) and dx (M, K / 32); matmul_q_i8: out (M, N) from that qx and dx
 * and a weight W (N, K) as q8_0 (q4 = 0: q int8 (N, K)) or q4_0 (q4 = 1: q uint8 (N, K / 2))
 * blocks with fp16 scale bits (N, K / 32), M <= 16; dequantize_q: out (N, K) = dequant(W). */
int quantize_rows_q8(const float *x, int8_t *qx, float *dx, int64_t M, int64_t K);
int matmul_q_i8(const int8_t *qx, const float *dx, const void *q, const uint16_t *scale,
                float *out, int64_t M, int64_t N, int64_t K, int q4);
int dequantize_q(const void *q, const uint16_t *scale, float *out, int64_t N, int64_t K, int q4);

/* decode.cu: the decode kernels, as in tinyllm.h: gemv for M = 1..16 rows; attention_decode
 * of the newest Tq queries against a KV cache (B, nh, Tmax, hs) read in place, hs <= 256. */
int gemv(const float *x, const float *w, float *out, int64_t M, int64_t N, int64_t K);
int attention_decode(const float *q, const float *k_cache, const float *v_cache, float *out,
                     int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t Tmax, int64_t hs);

/* heads.cu: x (B, T, P, nh, hs), the fused projection's output, holds P parts (q, k, v: P = 3;
 * an attention output: P = 1). split_heads writes part p as out (B, nh, T, hs); merge_heads
 * writes x (B, nh, T, hs) into part p of out (B, T, P, nh, hs), leaving the other parts. */
int split_heads(const float *x, float *out, int64_t B, int64_t T, int64_t P, int64_t p,
                int64_t nh, int64_t hs);
int merge_heads(const float *x, float *out, int64_t B, int64_t T, int64_t P, int64_t p,
                int64_t nh, int64_t hs);

/* softmax.cu: row-wise over the last axis. x, y, dy, dx: (N, C). */
int softmax_forward(const float *x, float *y, int64_t N, int64_t C);
int softmax_backward(const float *dy, const float *y, float *dx, int64_t N, int64_t C);

/* norm.cu: RMSNorm, as in tinyllm.h. dweight is overwritten (a deterministic reduction). */
int rmsnorm_forward(const float *x, const float *weight, float *y, float *rstd, int64_t N,
                    int64_t C, float eps);
int rmsnorm_backward(const float *dy, const float *x, const float *weight, const float *rstd,
                     float *dx, float *dweight, int64_t N, int64_t C);

/* norm.cu: LayerNorm (a model variant), as numpy_kernels.layernorm_*: mean, rstd (N,);
 * dweight and dbias (C,) overwritten by deterministic reductions. */
int layernorm_forward(const float *x, const float *weight, const float *bias, float *y,
                      float *mean, float *rstd, int64_t N, int64_t C, float eps);
int layernorm_backward(const float *dy, const float *x, const float *weight, const float *mean,
                       const float *rstd, float *dx, float *dweight, float *dbias, int64_t N,
                       int64_t C);

/* activation.cu: SiLU over n values. */
int silu_forward(const float *x, float *y, int64_t n);
int silu_backward(const float *dy, const float *x, float *dx, int64_t n);

/* dropout.cu: y (n,) = x * scale where element i's hash of seed keeps it, else 0; the mask is
 * numpy_kernels.dropout's. The backward is dropout of dy with the same seed. */
int dropout(const float *x, float *y, int64_t n, float scale, uint32_t threshold, uint64_t seed);

/* embedding.cu: out (N, C) = weight[ids], ids (N,) in [0, V). embedding_backward overwrites
 * dweight (V, C): with atomics (fast; the order of additions varies from run to run), or with
 * deterministic = 1 by sorting the ids so each row is summed by one thread in a fixed order. */
int embedding_forward(const int64_t *ids, const float *weight, float *out, int64_t N, int64_t V,
                      int64_t C);
int embedding_backward(const float *dout, const int64_t *ids, float *dweight, int64_t N,
                       int64_t V, int64_t C, int deterministic);

/* cross_entropy.cu: logits (N, V), targets (N,) in [0, V) or -1 (ignored); n_kept is the
 * number of targets != -1. Forward writes lse (N,) and loss (1,) = the mean over kept rows
 * of lse - logit[target] (0 when n_kept is 0). Backward overwrites dlogits (N, V) with
 * (softmax - onehot) * dloss / n_kept, zero on ignored rows. */
int cross_entropy_forward(const float *logits, const int64_t *targets, float *lse, float *loss,
                          int64_t N, int64_t V, int64_t n_kept);
int cross_entropy_backward(float dloss, const float *logits, const int64_t *targets,
                           const float *lse, float *dlogits, int64_t N, int64_t V,
                           int64_t n_kept);

/* elementwise.cu: out = a + b (out may be a: in-place accumulation); x *= s; x = value. */
int add_forward(const float *a, const float *b, float *out, int64_t n);
int scale(float *x, float s, int64_t n);
int fill(float *x, float value, int64_t n);
/* out (1,) = the sum of x * x in float64, by a fixed-order (deterministic) reduction */
int sum_of_squares(const float *x, double *out, int64_t n);

/* adamw.cu: one AdamW step in place, as in tinyllm.h. */
int adamw_update(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                 float beta1, float beta2, float eps, float weight_decay, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
