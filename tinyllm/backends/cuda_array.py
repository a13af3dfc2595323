"""DeviceArray: an n-dimensional array in GPU memory, the CUDA backend's ndarray.

It holds a block from the library's caching allocator, a shape and a dtype
(float32 activations and parameters, int64 token ids), and knows only what
the autograd engine, the optimizer and generation ask of an array: its shape,
reshaping (a view of the same block), copies, taking one position
(`logits[:, -1, :]`), `+` of two arrays of one shape and `*=` by a number
(both kernels on the device), and explicit transfers (`numpy()`, `item()`,
`from_numpy`). It refuses to become a NumPy array implicitly:
`np.asarray(device_array)` raises, so a host transfer hidden in the training
step fails loudly instead of running slowly.

The block goes back to the allocator's cache when the last array viewing it
is garbage collected, so a training step that repeats its shapes reuses the
memory of the previous one.
"""
import math

import numpy as np

from tinyllm.backends.cuda_runtime import check, ffi, lib

_C_TYPES = {np.dtype(np.float32): "float *", np.dtype(np.int64): "int64_t *",
            np.dtype(np.float64): "double *"}


class _Block:
    """One allocation; returned to the cache when no array uses it any more."""
    __slots__ = ("ptr",)

    def __init__(self, nbytes):
        self.ptr = ffi.NULL                  # what __del__ frees if the allocation fails
        ptr = ffi.new("void **")
        check(lib.device_alloc(ptr, nbytes))
        self.ptr = ptr[0]

    def __del__(self):
        lib.device_free(self.ptr)


class DeviceArray:
    __tinyllm_device__ = True   # tensor.is_device_array looks for this

    def __init__(self, shape, dtype=np.float32, block=None, offset=0):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _C_TYPES:
            raise TypeError(f"device arrays hold float32, float64 or int64, not {self.dtype}")
        self._block = block if block is not None else _Block(self.nbytes)
        self._offset = offset   # in bytes, for views into a larger block

    # -- making one ------------------------------------------------------------
    @classmethod
    def zeros(cls, shape, dtype=np.float32):
        out = cls(shape, dtype)
        if out.dtype != np.float32:
            return cls.from_numpy(np.zeros(shape, dtype))
        check(lib.fill(out.ptr, 0.0, out.size))
        return out

    @classmethod
    def from_numpy(cls, a):
        """A device copy of a NumPy array (float arrays become float32 unless float64)."""
        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.integer):
            a = a.astype(np.int64)
        elif a.dtype != np.float64:
            a = a.astype(np.float32)
        a = np.ascontiguousarray(a)
        out = cls(a.shape, a.dtype)
        check(lib.copy_to_device(out.raw, ffi.cast("void *", a.ctypes.data), a.nbytes))
        return out

    # -- what it is ------------------------------------------------------------
    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return math.prod(self.shape)

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    @property
    def raw(self):
        """The device address as void * (for copies)."""
        return ffi.cast("char *", self._block.ptr) + self._offset

    @property
    def ptr(self):
        """The device address, typed for the kernels (float *, int64_t *, double *)."""
        return ffi.cast(_C_TYPES[self.dtype], self.raw)

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype})"

    # -- back to the host, explicitly -----------------------------------------
    def numpy(self):
        out = np.empty(self.shape, self.dtype)
        check(lib.copy_to_host(ffi.cast("void *", out.ctypes.data), self.raw, self.nbytes))
        return out

    def item(self):
        if self.size != 1:
            raise ValueError(f"item() needs a one-element array, got shape {self.shape}")
        return self.numpy().item()

    def __float__(self):
        return float(self.item())

    def __array__(self, *args, **kwargs):
        raise TypeError("a DeviceArray does not become a NumPy array implicitly (that would be "
                        "a hidden copy from the GPU); call .numpy() to copy it to the host")

    # -- views and copies ------------------------------------------------------
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        shape = list(shape)
        if shape.count(-1) == 1:
            known = math.prod(n for n in shape if n != -1)
            shape[shape.index(-1)] = self.size // known if known else 0
        if math.prod(shape) != self.size:
            raise ValueError(f"cannot reshape a DeviceArray of shape {self.shape} "
                             f"into {tuple(shape)}")
        return DeviceArray(shape, self.dtype, self._block, self._offset)

    def __getitem__(self, index):
        """A copy of a[..., i, ...]: full slices and one integer index (logits[:, -1, :])."""
        index = index if isinstance(index, tuple) else (index,)
        ints = [axis for axis, i in enumerate(index) if not isinstance(i, slice)]
        if len(ints) != 1 or any(i != slice(None) for i in index if isinstance(i, slice)):
            raise TypeError(f"a DeviceArray takes one integer index among full slices "
                            f"(such as a[:, -1, :]), got {index!r}; use .numpy() for more")
        axis = ints[0]
        n = self.shape[axis]
        i = int(index[axis])
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for axis {axis} of size {n}")
        out = DeviceArray(self.shape[:axis] + self.shape[axis + 1:], self.dtype)
        width = out.nbytes // max(math.prod(self.shape[:axis]), 1)   # bytes after the index
        check(lib.copy_rows(out.raw, width, self.raw + (i % n) * width, n * width, width,
                            math.prod(self.shape[:axis])))
        return out

    def copy(self):
        out = DeviceArray(self.shape, self.dtype)
        check(lib.copy_on_device(out.raw, self.raw, self.nbytes))
        return out

    def astype(self, dtype, copy=True):
        if np.dtype(dtype) != self.dtype:
            raise TypeError(f"a DeviceArray of {self.dtype} cannot change dtype to "
                            f"{np.dtype(dtype)} on the device; go through .numpy()")
        return self.copy() if copy else self

    def __setitem__(self, index, value):
        """a[...] = host_array: overwrite the whole array from the host."""
        if index is not Ellipsis:
            raise TypeError("a DeviceArray supports only a[...] = array (a whole overwrite)")
        value = np.ascontiguousarray(np.broadcast_to(np.asarray(value, self.dtype), self.shape))
        check(lib.copy_to_device(self.raw, ffi.cast("void *", value.ctypes.data), self.nbytes))

    # -- the arithmetic autograd and the optimizer need -------------------------
    def _same(self, other, op):
        if not isinstance(other, DeviceArray) or other.shape != self.shape \
                or other.dtype != np.float32 or self.dtype != np.float32:
            raise TypeError(f"DeviceArray {op} takes another float32 DeviceArray of shape "
                            f"{self.shape}, got {other!r}")

    def __add__(self, other):
        self._same(other, "+")
        out = DeviceArray(self.shape)
        check(lib.add_forward(self.ptr, other.ptr, out.ptr, self.size))
        return out

    def __iadd__(self, other):
        self._same(other, "+=")
        check(lib.add_forward(self.ptr, other.ptr, self.ptr, self.size))
        return self

    def __imul__(self, number):
        if not np.isscalar(number) or self.dtype != np.float32:
            raise TypeError(f"DeviceArray *= takes a number, got {type(number).__name__}")
        check(lib.scale(self.ptr, float(number), self.size))
        return self
