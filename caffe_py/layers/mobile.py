"""Layers of the mobile-network forks: depthwise convolution (MobileNet ports), ReLU6
(MobileNet-YOLO), ShuffleChannel (ShuffleNet) and Axpy (SENet).

DepthwiseConvolution (yonghenglh6/DepthwiseConvolution) is Convolution with its own kernel: the
prototxt's num_output and group keep their meaning. ConvolutionDepthwise (the caffe-mobilenet
ports) ignores num_output and group: one filter per input channel, weights (C, 1, kh, kw).
Both run Caffe's grouped convolution; where every group is one channel in and one out (a
depthwise layer), the work is one multiply-add of whole minibatches per kernel offset instead of
one small GEMM per channel (DepthwiseCore), on NumPy and CuPy arrays alike, where the planes are
large enough for that to pay (MIN_PLANE).
"""
import numpy as np

from ..backend import get_array_module
from ..layer import Layer, register
from .cores import parallel
from .im2col import Window
from .neuron import NeuronLayer
from .vision import ConvolutionLayer


class DepthwiseCore:
    """Convolution with group == in == out channels: out[n, c] = sum_k w[c, k] * x[n, c, window k].

    One multiply-add per kernel tap over a block of images at a time (a block's planes stay in
    cache across the taps); the blocks are spread over the cores (NumPy) or are the whole batch (CuPy).
    """
    BLOCK_BYTES = 1 << 21

    def __init__(self, window):
        self.window = window

    def _blocks(self, fn, array):
        """fn(images) over runs of images of about BLOCK_BYTES, the runs spread over the cores."""
        num = array.shape[0]
        step = max(1, self.BLOCK_BYTES // max(1, array[:1].nbytes))

        def run(part):
            for n0 in range(part.start, part.stop, step):
                fn(slice(n0, min(part.stop, n0 + step)))
        parallel(run, num, array.size, array)

    def _padded(self, x):
        """x itself, or a zero-bordered copy holding the padding."""
        w = self.window
        if not w.needs_padding:
            return x
        buf = get_array_module(x).zeros(x.shape[:2] + w.padded, x.dtype)
        buf[w.inner(2)] = x
        return buf

    def _taps(self, weight, ndim):
        """(per-tap (1, C, 1, ...) weights, per-tap slices into the padded input)."""
        taps = weight.reshape(weight.shape[0], -1)
        shape = (1, -1) + (1,) * (ndim - 2)
        lead = (slice(None), slice(None))
        return [(taps[:, k].reshape(shape), lead + self.window.slices(offset))
                for k, offset in enumerate(self.window.offsets)]

    def forward(self, im, weight, out, bias=None):
        xp = get_array_module(im)
        xpad = self._padded(im)
        taps = self._taps(weight, im.ndim)
        shape = (1, -1) + (1,) * (im.ndim - 2)

        def block(images):
            o, x = out[images], xpad[images]
            tmp = xp.empty_like(o)
            for k, (w, window) in enumerate(taps):
                if k == 0:
                    xp.multiply(x[window], w, out=o)
                else:
                    xp.multiply(x[window], w, out=tmp)
                    o += tmp
            if bias is not None:
                o += bias.reshape(shape)
        self._blocks(block, out)

    def backward(self, im, out_diff, weight, weight_diff=None, im_diff=None):
        xp = get_array_module(out_diff)
        taps = self._taps(weight, out_diff.ndim)
        spatial = tuple(range(2, out_diff.ndim))
        w = self.window
        xpad = self._padded(im) if weight_diff is not None else None
        partials = []

        def block(images):
            dy = out_diff[images]
            tmp = xp.empty_like(dy)
            if weight_diff is not None:
                x = xpad[images]
                grad = xp.empty((len(taps), dy.shape[1]), dy.dtype)
                for k, (_, window) in enumerate(taps):
                    xp.multiply(x[window], dy, out=tmp)
                    grad[k] = tmp.sum(axis=spatial).sum(axis=0)
                partials.append(grad)
            if im_diff is not None:
                target = im_diff[images]
                acc = xp.zeros(target.shape[:2] + w.padded, target.dtype) if w.needs_padding else target
                if not w.needs_padding:
                    acc[...] = 0
                for tap, window in taps:
                    xp.multiply(dy, tap, out=tmp)
                    acc[window] += tmp
                if w.needs_padding:
                    target[...] = acc[w.inner(2)]
        self._blocks(block, out_diff)
        if weight_diff is not None:
            grads = weight_diff.reshape(weight_diff.shape[0], -1)
            grads += sum(partials[1:], partials[0]).T


class _Depthwise(ConvolutionLayer):
    """Convolution whose depthwise layers (one channel per group in and out) run DepthwiseCore."""

    def reshape(self, bottom, top):
        key = self._core_key
        super().reshape(bottom, top)
        if (self._core_key != key or not isinstance(self.core, DepthwiseCore)) and self.is_depthwise():
            shape = bottom[0].shape[self.axis + 1:]
            out = top[0].shape[self.axis + 1:]
            self.core = DepthwiseCore(Window(self.kernel, self.stride, self.pad, self.dilation, shape, out))

    # below this many output positions per plane the per-tap passes cost more than the grouped GEMMs
    # (benchmarks/bench_depthwise.py: 2x faster at 56x56 and 28x28, slower at 7x7)
    MIN_PLANE = 144

    def is_depthwise(self):
        plane = int(np.prod(self.top_shape[2:]))
        return self.group == self.channels == self.num_output and plane >= self.MIN_PLANE


@register('DepthwiseConvolution')
class DepthwiseConvolutionLayer(_Depthwise):
    """yonghenglh6's DepthwiseConvolution: Convolution's parameters and shapes, a depthwise kernel."""


@register('ConvolutionDepthwise')
class ConvolutionDepthwiseLayer(_Depthwise):
    """caffe-mobilenet's ConvolutionDepthwise: one filter per input channel whatever num_output
    and group say; weights (C, 1, kh, kw), output channels = input channels."""

    def setup(self, bottom, top):
        param = self.layer_param.convolution_param
        channels = bottom[0].shape[self.canonical_axis(bottom[0], param.axis)]
        param.num_output = channels
        param.group = channels
        super().setup(bottom, top)


@register('ReLU6')
class ReLU6Layer(NeuronLayer):
    """MobileNet-YOLO's ReLU6: min(max(x, 0) + negative_slope * min(x, 0), 6) (relu6_param);
    the gradient passes below 6 (times negative_slope at or below 0)."""

    def setup(self, bottom, top):
        self.slope = self.scalar(self.layer_param.relu6_param.negative_slope)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].data
        y = xp.maximum(x, 0) + self.slope * xp.minimum(x, 0)
        xp.minimum(y, self.scalar(6), out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = bottom[0].data     # the output when in place, which gives the same masks
            gate = bottom[0].xp.where(x > 0, self.scalar(1), self.slope) * (x < 6)
            bottom[0].diff[...] = top[0].diff * gate


@register('ShuffleChannel')
class ShuffleChannelLayer(Layer):
    """ShuffleNet's channel shuffle: channels seen as (group, C/group) are written as (C/group, group)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        self.group = self.layer_param.shuffle_channel_param.group
        if self.group <= 0:
            raise self.error('group must be greater than 0')

    def reshape(self, bottom, top):
        channels = bottom[0].shape[1]
        if channels % self.group:
            raise self.error('Wrong group size: %d channels do not split into %d groups'
                             % (channels, self.group))
        top[0].reshape(bottom[0].shape)
        num = bottom[0].shape[0]
        self.grid = (num, self.group, channels // self.group, -1)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.grid)
        top[0].data.reshape(self.grid[0], self.grid[2], self.grid[1], -1)[...] = x.transpose(0, 2, 1, 3)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy = top[0].diff.reshape(self.grid[0], self.grid[2], self.grid[1], -1)
            bottom[0].diff.reshape(self.grid)[...] = dy.transpose(0, 2, 1, 3)


@register('Axpy')
class AxpyLayer(Layer):
    """SENet's Axpy: top = a * x + y, a (N, C) or (N, C, 1, 1) scaling each channel of x (N, C, ...)."""
    exact_num_bottom = 3
    exact_num_top = 1

    def reshape(self, bottom, top):
        a, x, y = bottom
        if a.shape[:2] != x.shape[:2] or a.count != x.shape[0] * x.shape[1]:
            raise self.error('bottom[0] %s must hold one scale per channel of bottom[1] %s'
                             % (a.shape_string(), x.shape_string()))
        if x.shape != y.shape:
            raise self.error('bottom[1] %s and bottom[2] %s must have the same shape'
                             % (x.shape_string(), y.shape_string()))
        top[0].reshape(x.shape)
        self.shape3 = (x.shape[0], x.shape[1], -1)

    def forward(self, bottom, top):
        a, x, y = bottom
        xp = x.xp
        out = top[0].data.reshape(self.shape3)
        xp.multiply(x.data.reshape(self.shape3), a.data.reshape(self.shape3[:2] + (1,)), out=out)
        out += y.data.reshape(self.shape3)

    def backward(self, top, propagate_down, bottom):
        a, x, y = bottom
        dy = top[0].diff.reshape(self.shape3)
        if propagate_down[0]:
            a.diff.reshape(self.shape3[:2])[...] = (dy * x.data.reshape(self.shape3)).sum(axis=2)
        if propagate_down[1]:
            x.xp.multiply(dy, a.data.reshape(self.shape3[:2] + (1,)), out=x.diff.reshape(self.shape3))
        if propagate_down[2] and y is not top[0]:
            y.diff[...] = top[0].diff
