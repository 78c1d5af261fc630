"""Layers of the mobile-network forks: depthwise convolution (MobileNet ports), ShuffleChannel
(ShuffleNet) and Axpy (SENet).

DepthwiseConvolution (yonghenglh6/DepthwiseConvolution) is Convolution with its own kernel: the
prototxt's num_output and group keep their meaning. ConvolutionDepthwise (the caffe-mobilenet
ports) ignores num_output and group: one filter per input channel, weights (C, 1, kh, kw).
Both run Caffe's grouped convolution; where every group is one channel in and one out (a
depthwise layer), the work is one multiply-add of whole minibatches per kernel offset instead of
one small GEMM per channel (DepthwiseCore), on NumPy and CuPy arrays alike.
"""
from ..backend import get_array_module
from ..layer import Layer, register
from .im2col import Window
from .vision import ConvolutionLayer


class DepthwiseCore:
    """Convolution with group == in == out channels: out[n, c] = sum_k w[c, k] * x[n, c, window k]."""

    def __init__(self, window):
        self.window = window
        self.lead = (slice(None), slice(None))

    def _padded(self, x):
        """x itself, or a zero-bordered copy holding the padding."""
        w = self.window
        if not w.needs_padding:
            return x
        buf = get_array_module(x).zeros(x.shape[:2] + w.padded, x.dtype)
        buf[w.inner(2)] = x
        return buf

    def _taps(self, weight):
        """weight (C, 1, *kernel) as (C, K) and the window's offsets, in the same order."""
        return weight.reshape(weight.shape[0], -1), self.window.offsets

    def forward(self, im, weight, out, bias=None):
        xp = get_array_module(im)
        xpad = self._padded(im)
        taps, offsets = self._taps(weight)
        shape = (1, -1) + (1,) * (im.ndim - 2)
        tmp = xp.empty_like(out)
        for k, offset in enumerate(offsets):
            view = xpad[self.lead + self.window.slices(offset)]
            if k == 0:
                xp.multiply(view, taps[:, k].reshape(shape), out=out)
            else:
                xp.multiply(view, taps[:, k].reshape(shape), out=tmp)
                out += tmp
        if bias is not None:
            out += bias.reshape(shape)

    def backward(self, im, out_diff, weight, weight_diff=None, im_diff=None):
        xp = get_array_module(out_diff)
        taps, offsets = self._taps(weight)
        shape = (1, -1) + (1,) * (out_diff.ndim - 2)
        spatial = tuple(range(2, out_diff.ndim))
        if weight_diff is not None:
            xpad = self._padded(im)
            grads = weight_diff.reshape(weight_diff.shape[0], -1)
            for k, offset in enumerate(offsets):
                view = xpad[self.lead + self.window.slices(offset)]
                grads[:, k] += (view * out_diff).sum(axis=spatial).sum(axis=0)
        if im_diff is not None:
            w = self.window
            acc = xp.zeros(im_diff.shape[:2] + w.padded, im_diff.dtype) if w.needs_padding else im_diff
            acc[...] = 0
            for k, offset in enumerate(offsets):
                acc[self.lead + w.slices(offset)] += out_diff * taps[:, k].reshape(shape)
            if w.needs_padding:
                im_diff[...] = acc[w.inner(2)]


class _Depthwise(ConvolutionLayer):
    """Convolution whose depthwise layers (one channel per group in and out) run DepthwiseCore."""

    def reshape(self, bottom, top):
        key = self._core_key
        super().reshape(bottom, top)
        if (self._core_key != key or not isinstance(self.core, DepthwiseCore)) and self.is_depthwise():
            shape = bottom[0].shape[self.axis + 1:]
            out = top[0].shape[self.axis + 1:]
            self.core = DepthwiseCore(Window(self.kernel, self.stride, self.pad, self.dilation, shape, out))

    def is_depthwise(self):
        return self.group == self.channels == self.num_output


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
