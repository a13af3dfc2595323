/* parallel.h: when a kernel's work is worth forking threads for. Not part of the C API.
 *
 * An OpenMP parallel region costs a fork and a join barrier: microseconds on an idle machine,
 * and far more on a shared one, where the barrier waits for a thread the OS has descheduled
 * (measured on the 2-core test machine under load: SiLU, RMSNorm and the residual add on one
 * decoding row of 384-1536 values took 16-44 us on one thread, 91-957 us on two). A decoding
 * step calls ~100 kernels on one row each, so the elementwise and row-wise kernels run on one
 * thread below PARALLEL_MIN values: 32768 floats (128 KiB) stream in ~10 us on one core.
 */
#ifndef TINYLLM_PARALLEL_H
#define TINYLLM_PARALLEL_H

#define PARALLEL_MIN 32768

#endif
