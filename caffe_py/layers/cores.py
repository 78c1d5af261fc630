"""Work spread over the CPU cores: element-wise slices on threads, and matrix products split
into single-threaded BLAS calls.

NumPy releases the GIL inside its loops, so `parallel`/`split_apply` run element-wise
work on big arrays in slices on all cores; `matmul` and `matmul_add` split NumPy
matrix products over the same cores. Device (CuPy) arrays pass straight through.
"""
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..backend import get_array_module as _module


def _cores():
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


CORES = min(_cores(), 4)
MIN_PARALLEL = 1 << 18
_executor = None


def parallel(fn, count, work, like):
    """fn(part) for `count` rows split into contiguous slices, run on the cores at once.

    Serial for CuPy arrays, one core, or less than MIN_PARALLEL elements of `work`.
    `fn` must only touch its own rows and must not call parallel itself.
    """
    global _executor
    parts = min(CORES, count)
    if parts < 2 or work < MIN_PARALLEL or not isinstance(like, np.ndarray):
        fn(slice(0, count))
        return
    if _executor is None:
        _executor = ThreadPoolExecutor(CORES - 1, thread_name_prefix='caffe_py')
    bounds = [count * i // parts for i in range(parts + 1)]
    futures = [_executor.submit(fn, slice(bounds[i], bounds[i + 1])) for i in range(1, parts)]
    fn(slice(bounds[0], bounds[1]))
    for future in futures:
        future.result()


def split_apply(fn, out, *args):
    """fn(out_part, *arg_parts) over slices of `out` along its first axis with at least CORES
    entries, in parallel; arguments are sliced alongside where they span that axis (they
    broadcast against `out` as NumPy aligns shapes, from the right)."""
    axis = next((i for i, n in enumerate(out.shape) if n >= CORES), 0)
    args = [a.reshape((1,) * (out.ndim - a.ndim) + a.shape) for a in args]

    def part(sl):
        index = (slice(None),) * axis + (sl,)
        fn(out[index], *[a[index] if a.shape[axis] == out.shape[axis] else a for a in args])
    parallel(part, out.shape[axis] if out.ndim else 1, out.size, out)


def assign(dst, src):
    """dst[...] = src (a function, for split_apply)."""
    dst[...] = src


def add(dst, a, b):
    """dst = a + b (a function, for split_apply)."""
    _module(dst).add(a, b, out=dst)


# -- matrix products -----------------------------------------------------------
# OpenBLAS's own threads keep spinning on the cores for a while after each threaded product,
# which slows the element-wise work that follows severalfold. Products of NumPy arrays are
# therefore split over the cores here, each part a single-threaded BLAS call.
MIN_SPLIT_GEMM = 1 << 22       # multiply-adds below which a product runs in one piece
ACCUMULATE_BYTES = 1 << 20     # matmul_add's scratch rows per core, at least 64 of them
FEW_ROWS = 16                  # products with at most this many rows may run transposed


def _find_openblas():
    """(get_num_threads, set_num_threads) of the OpenBLAS NumPy loaded, or None."""
    try:
        with open('/proc/self/maps') as maps:
            paths = sorted({line.split()[-1] for line in maps if 'openblas' in line.lower()})
    except OSError:
        return None
    names = ['scipy_openblas_%s_num_threads64_', 'scipy_openblas_%s_num_threads',
             'openblas_%s_num_threads64_', 'openblas_%s_num_threads']
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            get, put = getattr(lib, name % 'get', None), getattr(lib, name % 'set', None)
            if get is not None and put is not None:
                return get, put
    return None


class _SingleThreadedBlas:
    """A context in which OpenBLAS runs on the calling thread only (nested and thread-safe)."""

    def __init__(self, functions):
        self.get, self.set = functions
        self.lock = threading.Lock()
        self.depth = 0
        self.saved = 1

    def __enter__(self):
        with self.lock:
            if self.depth == 0:
                self.saved = self.get()
                self.set(1)
            self.depth += 1

    def __exit__(self, *exc):
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                self.set(self.saved)


_openblas = _find_openblas()
_single_blas = _SingleThreadedBlas(_openblas) if _openblas is not None else None


def _ours(out):
    return _single_blas is not None and isinstance(out, np.ndarray)


def _split(out, a):
    return CORES > 1 and out.size * a.shape[1] >= MIN_SPLIT_GEMM


def matmul(a, b, out):
    """out = a @ b for 2-D arrays (`out` may be a strided view); split along out's longer side."""
    if not _ours(out):
        _module(out).matmul(a, b, out=out)
        return
    with _single_blas:
        if not _split(out, a):
            np.matmul(a, b, out=out)
        elif out.shape[0] >= out.shape[1]:
            parallel(lambda rows: np.matmul(a[rows], b, out=out[rows]), out.shape[0], MIN_SPLIT_GEMM, out)
        elif out.shape[0] <= FEW_ROWS and b.flags.f_contiguous:
            # a few rows times a transposed matrix (InnerProduct's forward on a small batch):
            # out^T = b^T a^T with contiguous operands is the faster product
            a_t, out_t = np.ascontiguousarray(a.T), np.empty(out.shape[::-1], out.dtype)
            parallel(lambda rows: np.matmul(b.T[rows], a_t, out=out_t[rows]), out_t.shape[0], MIN_SPLIT_GEMM,
                     out)
            out[...] = out_t.T
        else:
            parallel(lambda cols: np.matmul(a, b[:, cols], out=out[:, cols]), out.shape[1], MIN_SPLIT_GEMM,
                     out)


def matmul_add(a, b, out):
    """out += a @ b for 2-D arrays, through scratch blocks of rows rather than one temporary
    the size of `out` (weight gradients of large layers)."""
    if not _ours(out):
        out += _module(out).matmul(a, b)
        return
    n = out.shape[1]
    step = max(64, ACCUMULATE_BYTES // max(1, n * out.itemsize))

    def rows(part):
        start, stop = part.start, part.stop
        scratch = np.empty((min(step, stop - start), n), out.dtype)
        for r0 in range(start, stop, step):
            r1 = min(stop, r0 + step)
            np.matmul(a[r0:r1], b, out=scratch[:r1 - r0])
            out[r0:r1] += scratch[:r1 - r0]
    with _single_blas:
        if _split(out, a):
            parallel(rows, out.shape[0], MIN_SPLIT_GEMM, out)
        else:
            rows(slice(0, out.shape[0]))


def matmul_stack(a, b, out):
    """out[i] = a[i] @ b[i] for stacks of matrices (any leading axes, NumPy's broadcasting),
    the stack split over the cores, each part single-threaded BLAS."""
    if not _ours(out):
        _module(out).matmul(a, b, out=out)
        return
    with _single_blas:
        if CORES > 1 and out.size * a.shape[-1] >= MIN_SPLIT_GEMM:
            parallel(lambda part: np.matmul(a[part], b[part], out=out[part]), out.shape[0], MIN_SPLIT_GEMM, out)
        else:
            np.matmul(a, b, out=out)
