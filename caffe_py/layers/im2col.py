"""Sliding-window geometry for whole minibatches: im2col as a strided view, col2im as k-offset adds.

A `Window` knows the kernel, stride, pad and dilation along each spatial axis and
the input and output extents. It pads an input (N, C, *spatial) into a reusable
buffer, exposes every patch as one strided view (the spatial axes, from a given
axis, become *kernel, *out) without copying, and adds patch-shaped arrays back
into a padded image with one vectorised add per kernel offset (Caffe's col2im).
`strided_columns` builds strided 2-D columns from stride phases; `PhaseGrid`
lays planes out so that every pooling offset is one contiguous pass; `Buffers`
keeps scratch arrays across calls and `ForwardMemo` what a forward pass leaves for backward.
"""
import itertools

import numpy as np

from ..backend import get_array_module as _module
from .cores import assign, parallel, split_apply


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

    def padded_input(self, x, buffers, name='pad'):
        """x (N, C, *size) itself, or copied into the interior of a cached buffer whose border holds 0."""
        if not self.needs_padding:
            return x
        shape = x.shape[:2] + self.padded
        buf = buffers.get(name, shape, x.dtype, x, fill=0)
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
        self.out = (oh, ow)
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
            phases[qh, qw] = source, buffers.get('phase%d,%d,%d' % (qh, qw, m), source.shape, pad.dtype, pad)

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


class ForwardMemo:
    """What a forward pass derived from an array (columns, a spectrum), for backward to reuse
    if the array still holds the same values then (checked against a copy, by value)."""

    def __init__(self):
        self.seen = None
        self.derived = None

    def keep(self, array, derived):
        if self.seen is None or self.seen.shape != array.shape or self.seen.dtype != array.dtype:
            self.seen = _module(array).empty_like(array)
        split_apply(assign, self.seen, array)
        self.derived = derived

    def forget(self):
        self.derived = None

    def recall(self, array):
        """What keep() was given if `array` is unchanged since, else None; either way, forgotten."""
        derived, self.derived = self.derived, None
        if derived is None or self.seen.shape != array.shape:
            return None
        return derived if _module(array).array_equal(self.seen, array) else None
