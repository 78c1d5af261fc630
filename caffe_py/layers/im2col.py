"""Sliding-window geometry for whole minibatches: im2col as a strided view, col2im as k-offset adds.

Arrays are (N, C, *spatial). A `Window` knows the kernel, stride, pad and
dilation along each spatial axis and the input and output extents. It pads an
input into a reusable buffer, exposes every patch as one strided view
(N, C, *kernel, *out) without copying, and adds patch-shaped arrays back into a
padded image with one vectorised add per kernel offset (Caffe's col2im).
"""
import itertools

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
        """x itself, or x copied into the interior of a cached buffer whose border holds `fill`."""
        if not self.needs_padding:
            return x
        shape = x.shape[:2] + self.padded
        buf = buffers.get(name, shape, x.dtype, x, fill=fill)
        buf[(slice(None), slice(None)) + self.interior] = x
        return buf

    def patches(self, xpad):
        """The strided view (N, C, *kernel, *out) of a padded (C-contiguous) input."""
        xp = _module(xpad)
        n, c = xpad.shape[:2]
        sn, sc = xpad.strides[:2]
        spatial = xpad.strides[2:]
        shape = (n, c) + self.kernel + self.out
        strides = ((sn, sc) + tuple(s * d for s, d in zip(spatial, self.dilation))
                   + tuple(s * st for s, st in zip(spatial, self.stride)))
        return as_strided(xp, xpad, shape, strides)

    def add_patches(self, dpad, cols, reverse=False):
        """dpad (n, C, *padded) += every patch of cols (n, C, *kernel, *out), one add per offset.

        `reverse` walks the kernel offsets backwards, which sums each pixel's windows in
        increasing output order (Caffe's order for AVE pooling's backward).
        """
        lead = (slice(None), slice(None))
        offsets = reversed(self.offsets) if reverse else self.offsets
        for offset in offsets:
            dpad[lead + self.slices(offset)] += cols[lead + offset]

    def unpad(self, dpad):
        """The interior (n, C, *size) of a padded array."""
        return dpad[(slice(None), slice(None)) + self.interior]


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

