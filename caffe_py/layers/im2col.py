"""Sliding-window geometry for whole minibatches: im2col as a strided view, col2im as k-offset adds.

Arrays are (N, C, *spatial). A `Window` knows the kernel, stride, pad and
dilation along each spatial axis and the input and output extents. It pads an
input into a reusable buffer, exposes every patch as one strided view
(N, C, *kernel, *out) without copying, and adds patch-shaped arrays back into a
padded image with one vectorised add per kernel offset (Caffe's col2im).
`parallel`/`split_apply` run element-wise work in slices on all cores; `matmul` and
`matmul_add` split NumPy matrix products over the same cores.
"""
import ctypes
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..backend import get_array_module as _module


def conv_out_size(size, kernel, stride, pad, dilation=1):
    """Caffe's convolution output extent, with C's truncating integer division."""
    extent = dilation * (kernel - 1) + 1
    span = size + 2 * pad - extent
    return (abs(span) // stride) * (1 if span >= 0 else -1) + 1


def as_strided(xp, array, shape, strides):
    """xp's as_strided (numpy or cupy)."""
    return xp.lib.stride_tricks.as_strided(array, shape=shape, strides=strides)


class Window:
    """Kernel/stride/pad/dilation over input extents `size`, producing extents `out`."""

    def __init__(self, kernel, stride, pad, dilation, size, out):
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.pad = tuple(pad)
        self.dilation = tuple(dilation)
        self.size = tuple(size)
        self.out = tuple(out)
        # the padded extent covers the image plus padding and every window, even one that
        # reaches past the padding (Caffe reads zeros there)
        self.padded = tuple(max(s + 2 * p, (o - 1) * st + (k - 1) * d + 1)
                            for s, p, o, st, k, d in zip(size, pad, out, stride, kernel, dilation))
        self.interior = tuple(slice(p, p + s) for p, s in zip(pad, size))
        self.offsets = list(itertools.product(*(range(k) for k in self.kernel)))
        self.needs_padding = self.padded != self.size

    @property
    def kernel_count(self):
        return int(np.prod(self.kernel, dtype=np.int64))

    @property
    def out_count(self):
        return int(np.prod(self.out, dtype=np.int64))

    def slices(self, offset):
        """Spatial slices of the padded image read by kernel position `offset` over all outputs."""
        return tuple(slice(k * d, k * d + s * (o - 1) + 1, s)
                     for k, d, s, o in zip(offset, self.dilation, self.stride, self.out))

    def padded_input(self, x, buffers, name='pad', fill=0):
        """x (N, C, *size) itself, or copied into the interior of a cached buffer whose border holds `fill`."""
        if not self.needs_padding:
            return x
        shape = x.shape[:2] + self.padded
        buf = buffers.get(name, shape, x.dtype, x, fill=fill)
        split_apply(assign, buf[self.inner(2)], x)
        return buf

    def patches(self, xpad, first=2):
        """A strided view of every window, no copy: the spatial axes of xpad (C-contiguous,
        starting at axis `first`) become *kernel, *out; (N, C, *padded) -> (N, C, *kernel, *out)."""
        d = len(self.kernel)
        lead, spatial, trail = xpad.shape[:first], xpad.strides[first:first + d], xpad.shape[first + d:]
        shape = lead + self.kernel + self.out + trail
        strides = (xpad.strides[:first] + tuple(s * dl for s, dl in zip(spatial, self.dilation))
                   + tuple(s * st for s, st in zip(spatial, self.stride)) + xpad.strides[first + d:])
        return as_strided(_module(xpad), xpad, shape, strides)

    def add_patches(self, acc, first, cols, cols_first):
        """acc (spatial axes padded, from axis `first`) += every window of cols (kernel axes from
        axis `cols_first`, then the other axes in acc's order with out in place of padded):
        one vectorised add per kernel offset (Caffe's col2im)."""
        lead, cols_lead = (slice(None),) * first, (slice(None),) * cols_first
        for offset in self.offsets:
            acc[lead + self.slices(offset)] += cols[cols_lead + offset]

    def inner(self, first):
        """The index of the image inside a padded array whose spatial axes start at `first`."""
        return (slice(None),) * first + self.interior

    def unpad(self, acc, first=2):
        """The interior (*lead, *size, *trail) of a padded array."""
        return acc[self.inner(first)]


class PhaseGrid:
    """2-D windows over planes (P, H, W) in which every kernel offset is one contiguous slice.

    The padded planes are split by stride phase: phase (qr, qc) holds the cells
    (a * sh + qr, b * sw + qc), a < hq, b < wq, cells outside the image holding a fill value.
    Outputs live in an extended (P, hq, wq) layout whose first (oh, ow) cells are the real
    ones; kernel offset (i, j) then reads phase (i % sh, j % sw) shifted by
    (i // sh) * wq + j // sw cells, over the flattened planes. Cells beyond the real outputs
    read neighbouring rows or planes and are ignored; the last `tail` cells of a run of planes
    are never computed. Splitting and merging are one strided copy per phase.
    """

    def __init__(self, kernel, stride, pad, size, out):
        (kh, kw), (sh, sw), (ph, pw), (h, w), (oh, ow) = kernel, stride, pad, size, out
        self.stride, self.out = (sh, sw), (oh, ow)
        self.hq, self.wq = oh + (kh - 1) // sh, ow + (kw - 1) // sw
        row_phases, col_phases = min(sh, kh), min(sw, kw)
        self.span = self.hq * self.wq
        # per kernel offset, row-major: (phase, shift)
        self.offsets = [((i % sh) * col_phases + j % sw, (i // sh) * self.wq + j // sw)
                        for i in range(kh) for j in range(kw)]
        self.tail = max(shift for _, shift in self.offsets)
        # per phase: (grid rows, grid cols), (image rows, image cols)
        self.phases = []
        for qr in range(row_phases):
            grid_rows, image_rows = self._axis(qr, sh, ph, h, self.hq)
            for qc in range(col_phases):
                grid_cols, image_cols = self._axis(qc, sw, pw, w, self.wq)
                self.phases.append(((grid_rows, grid_cols), (image_rows, image_cols)))
        # whether every image cell is in some phase (else split leaves some out, merge zeroes them)
        self.covers = kh >= sh and kw >= sw and h + ph <= self.hq * sh and w + pw <= self.wq * sw

    @staticmethod
    def _axis(q, s, p, size, extent):
        """(grid slice, image slice) of the grid cells a < extent whose image cell a*s + q - p
        lies inside 0 .. size."""
        a0 = -(-(p - q) // s) if p > q else 0
        a1 = max(a0, min(extent, (size - 1 + p - q) // s + 1))
        start = a0 * s + q - p
        return slice(a0, a1), slice(start, start + (a1 - a0 - 1) * s + 1, s)

    def buffers(self, buffers, name, planes, dtype, like, fill):
        """The phases scratch array (phases, planes, hq, wq) for `planes` planes; cells outside
        the image hold `fill`."""
        return buffers.get(name + 'phases', (len(self.phases), planes, self.hq, self.wq), dtype, like,
                           fill=fill)

    def split(self, x, phases, part):
        """Planes `part` of x (P, H, W) into the phases."""
        for i, ((grid_rows, grid_cols), (image_rows, image_cols)) in enumerate(self.phases):
            phases[i, part, grid_rows, grid_cols] = x[part, image_rows, image_cols]

    def merge(self, phases, x, part):
        """Planes `part` of the phases back into x (P, H, W); cells in no phase become 0."""
        if not self.covers:
            x[part] = 0
        for i, ((grid_rows, grid_cols), (image_rows, image_cols)) in enumerate(self.phases):
            x[part, image_rows, image_cols] = phases[i, part, grid_rows, grid_cols]

    def shifted(self, flat_phases, offset, start, stop):
        """Extended cells start .. stop as read by kernel offset `offset` (a view)."""
        phase, shift = self.offsets[offset]
        return flat_phases[phase, start + shift:stop + shift]

    def runs(self, part):
        """The computed extended cells (start, stop) of planes `part`."""
        return part.start * self.span, part.stop * self.span - self.tail


class Buffers:
    """Scratch arrays kept across calls, reallocated only when shape or dtype changes."""

    def __init__(self):
        self._arrays = {}

    def get(self, name, shape, dtype, like, fill=None):
        """A cached array; `fill` (if given) is written only when the array is (re)allocated."""
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        array = self._arrays.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            xp = _module(like)
            array = xp.empty(shape, dtype) if fill is None else xp.full(shape, fill, dtype)
            self._arrays[name] = array
        return array

    def flat(self, name, count, dtype, like):
        """The first `count` elements of a cached 1-d array that grows as needed."""
        array = self._arrays.get(name)
        if array is None or array.size < count or array.dtype != np.dtype(dtype):
            array = _module(like).empty(int(count), dtype)
            self._arrays[name] = array
        return array[:count]



def _cores():
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# NumPy releases the GIL inside its loops: element-wise work on big arrays is split over the cores
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


def _offset_classes(kernel, stride, dilation):
    """Kernel offsets along one axis grouped by the stride phase they read: per phase q,
    (q, slice of the offsets, first phase cell, cell step, count)."""
    members = {}
    for i in range(kernel):
        members.setdefault(i * dilation % stride, []).append((i, i * dilation // stride))
    classes = []
    for q, cells in members.items():
        (i0, a0), (i1, a1) = cells[0], cells[-1]
        n = len(cells)
        # offsets and cells both advance in equal steps
        classes.append((q, slice(i0, i1 + 1, (i1 - i0) // (n - 1) if n > 1 else 1),
                        a0, (a1 - a0) // (n - 1) if n > 1 else 1, n))
    return classes


def strided_columns(window, pad, cols, buffers):
    """cols (C, kh, kw, m, oh, ow) = every window of pad (m, C, Hp, Wp) for a 2-D window with a
    stride: pad is first split into its stride phases (one strided copy each), after which every
    kernel offset reads contiguous runs of ow values."""
    (sh, sw), (dh, dw), (oh, ow) = window.stride, window.dilation, window.out
    rows, columns = _offset_classes(window.kernel[0], sh, dh), _offset_classes(window.kernel[1], sw, dw)
    m, c = pad.shape[:2]
    phases = {}
    for qh, *_ in rows:
        for qw, *_ in columns:
            source = pad[:, :, qh::sh, qw::sw]
            phases[qh, qw] = source, buffers.get('phase%d,%d' % (qh, qw), source.shape, pad.dtype, pad)

    def images(part):
        count = part.stop - part.start
        for source, phase in phases.values():
            phase[part] = source[part]
        for qh, kernel_rows, a0, da, ni in rows:
            for qw, kernel_cols, b0, db, nj in columns:
                phase = phases[qh, qw][1]
                s = phase.strides
                view = as_strided(np, phase[part, :, a0:, b0:], (c, ni, nj, count, oh, ow),
                                  (s[1], da * s[2], db * s[3], s[0], s[2], s[3]))
                cols[:, kernel_rows, kernel_cols, part] = view
    parallel(images, m, cols.size, pad)


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
