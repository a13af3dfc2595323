"""Operands and the float64 reference shared by the C and CUDA matmul tests."""
import numpy as np

TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]


def operands(rng, batch, M, N, K, transpose_a, transpose_b):
    """Random float32 a, b laid out as the kernel reads them: a (K, M) when transpose_a, etc."""
    lead = () if batch is None else (batch,)
    a = rng.standard_normal(lead + ((K, M) if transpose_a else (M, K)), dtype=np.float32)
    b = rng.standard_normal(lead + ((N, K) if transpose_b else (K, N)), dtype=np.float32)
    return a, b


def reference(a, b, transpose_a, transpose_b):
    """op(a) @ op(b) in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.matmul(np.swapaxes(a, -1, -2) if transpose_a else a,
                     np.swapaxes(b, -1, -2) if transpose_b else b)
