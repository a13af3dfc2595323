/* threads.c: how many OpenMP threads the kernels run on (OMP_NUM_THREADS sets it). */
#include "tinyllm.h"
#ifdef _OPENMP
#include <omp.h>
#endif

int num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
