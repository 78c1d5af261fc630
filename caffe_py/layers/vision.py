"""Vision layers: Convolution, Deconvolution, Im2col, Pooling, SPP, LRN.

The CPU path works on whole minibatches: im2col is one strided-view copy (or, for
strided 2-D windows, one per stride phase) into a column buffer (C*k, n*P), or
(C*k, P*n) batch-last where the columns are large; each group is one GEMM, col2im is one
vectorised add per kernel offset, and pooling makes one contiguous pass per kernel
offset over a stride-phase grid (im2col.PhaseGrid).
Minibatches whose column buffer would exceed COL_BYTES run in chunks of images.
2-D unit-stride convolutions whose kernels are large next to their planes (CIFAR-10's
5x5 ones) run as products of spectra instead, where spectral.worthwhile says so.
Element-wise work and the GEMMs are split over the cores (caffe_py.layers.cores).
On the device, convolution (1-D and 2-D), Im2col, pooling and LRN across channels
run CUDA kernels instead (vision_gpu).
"""

import numpy as np

from .. import backend
from ..fillers import fill
from ..layer import Layer, register
from . import vision_gpu
from .cores import add, assign, matmul, matmul_add, parallel, split_apply
from .im2col import Buffers, ForwardMemo, PhaseGrid, Window, conv_out_size, strided_columns
from .spectral import SpectralConv, worthwhile

FLT_MAX = float(np.finfo(np.float32).max)
COL_BYTES = 128 << 20
PER_IMAGE_MACS = 1 << 22     # weight-gradient products summed image by image below this size


def _prod(values):
    return int(np.prod(values, dtype=np.int64))


def _per_axis(values, num_spatial, default):
    """Caffe's rule: no value (the default), one value for every axis, or one per axis."""
    if not values:
        return [default] * num_spatial
    return [values[0 if len(values) == 1 else i] for i in range(num_spatial)]


def _spatial_param(layer, param, name, plural, num_spatial, default):
    """One value per spatial axis from `plural` (repeated) or name_h/name_w, as Caffe reads them."""
    h, w = name + '_h', name + '_w'
    repeated = list(getattr(param, plural))
    if param.HasField(h) or param.HasField(w):
        if num_spatial != 2:
            raise layer.error('%s & %s can only be used for 2D convolution.' % (h, w))
        if repeated:
            raise layer.error('Either %s or %s/w should be specified; not both.' % (plural, h))
        return [getattr(param, h), getattr(param, w)]
    allowed = (1, num_spatial) if default is None else (0, 1, num_spatial)
    if len(repeated) not in allowed:
        raise layer.error('%s must be specified once, or once per spatial dimension '
                          '(%s specified %d times; %d spatial dims).'
                          % (plural, plural, len(repeated), num_spatial))
    return _per_axis(repeated, num_spatial, default)


def conv_geometry(layer, param, num_spatial):
    """(kernel, stride, pad, dilation) lists from a ConvolutionParameter, with Caffe's checks."""
    kernel = _spatial_param(layer, param, 'kernel', 'kernel_size', num_spatial, None)
    if any(k <= 0 for k in kernel):
        raise layer.error('Filter dimensions must be nonzero (kernel %s).' % (kernel,))
    stride = _spatial_param(layer, param, 'stride', 'stride', num_spatial, 1)
    if any(s <= 0 for s in stride):
        raise layer.error('Stride dimensions must be nonzero (stride %s).' % (stride,))
    pad = _spatial_param(layer, param, 'pad', 'pad', num_spatial, 0)
    dilation = list(param.dilation)
    if len(dilation) not in (0, 1, num_spatial):
        raise layer.error('dilation must be specified once, or once per spatial dimension '
                          '(dilation specified %d times; %d spatial dims).' % (len(dilation), num_spatial))
    return kernel, stride, pad, _per_axis(dilation, num_spatial, 1)


class _GemmConv:
    """Convolution in Caffe's terms: `im` is the side that is im2col'd (conv_in_channels),
    `out` the side the GEMM writes (conv_out_channels). Arrays are (num, C, *spatial);
    weights are (out_channels, in_channels / group, *kernel).

    Per chunk of m images, the columns are one (in_channels * kernel, m * P) matrix and each
    group is one GEMM. Two column orders: batch before the output positions (C, *k, m, *out),
    or batch innermost (C, *k, *out, m). The second turns im2col and col2im into runs of
    out_w * m contiguous values when the last axis has stride 1; it costs slower transposes of
    the out side, so it is used where the columns are large next to the output.
    """
    keeps_columns = True        # forward's columns serve backward's weight gradient if the bottom is unchanged

    def __init__(self, window, group, in_channels, out_channels):
        self.window = window
        self.group = group
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kdim = in_channels // group * window.kernel_count
        self.is_1x1 = (all(k == 1 for k in window.kernel) and all(s == 1 for s in window.stride)
                       and all(p == 0 for p in window.pad))
        self.batch_last = (not self.is_1x1 and window.stride[-1] == 1
                           and self.kdim >= 4 * (out_channels // group))
        self.buffers = Buffers()
        self.memo = ForwardMemo()

    def chunks(self, num, itemsize):
        """Equal runs of images whose columns fit in column_bytes()."""
        per_image = self.group * self.kdim * self.window.out_count * itemsize
        most = max(1, self.column_bytes() // max(per_image, 1))
        step = -(-num // -(-num // most)) if num else 1
        return [(n0, min(num, n0 + step)) for n0 in range(0, num, step)]

    def column_bytes(self):
        return COL_BYTES

    # -- layout ------------------------------------------------------------
    def columns(self, im, n0, n1):
        """Columns (group, kdim, m*P) of images n0:n1 of `im`."""
        return self.im2col(self.padded_chunk(im, n0, n1))

    def padded_chunk(self, im, n0, n1):
        """Images n0:n1, zero-padded: (m, C, *padded), or (C, *padded, m) when batch_last."""
        w, chunk = self.window, im[n0:n1]
        if not self.batch_last:
            return w.padded_input(chunk, self.buffers, 'pad%d' % len(chunk))
        shape = (self.in_channels,) + w.padded + (len(chunk),)
        buf = self.buffers.get('pad%d' % len(chunk), shape, im.dtype, im, fill=0)
        split_apply(assign, buf[w.inner(1)], _batch_last(chunk))
        return buf

    def im2col(self, pad):
        """Columns (group, kdim, m*P) of a padded chunk."""
        g, p = self.group, self.window.out_count
        if self.is_1x1 and len(pad) == 1:
            return pad[0].reshape(g, self.kdim, p)
        if self.batch_last:
            view = self.window.patches(pad, 1)
        else:
            d = len(self.window.kernel)
            order = (1,) + tuple(range(2, 2 + d)) + (0,) + tuple(range(2 + d, 2 + 2 * d))
            view = self.window.patches(pad, 2).transpose(order)
        col = self.buffers.flat('col', view.size, pad.dtype, pad).reshape(view.shape)
        if not self.batch_last and len(self.window.kernel) == 2 and max(self.window.stride) > 1:
            strided_columns(self.window, pad, col, self.buffers)
        else:
            split_apply(assign, col, view)
        return col.reshape(g, self.kdim, -1)

    def channel_major(self, out_side, n0, n1, name):
        """Out-side images n0:n1 as (group, out_channels / group, m*P) in the column order."""
        m, g, p, c = n1 - n0, self.group, self.window.out_count, self.out_channels
        if m == 1:
            return out_side[n0].reshape(g, -1, p)
        chunk = out_side[n0:n1].reshape(m, c, p)
        buf = self.buffers.flat(name, c * m * p, out_side.dtype, out_side)
        if self.batch_last:
            split_apply(assign, buf.reshape(c, p, m), chunk.transpose(1, 2, 0))
        else:
            split_apply(assign, buf.reshape(c, m, p), chunk.transpose(1, 0, 2))
        return buf.reshape(g, -1, m * p)

    # -- the GEMMs ---------------------------------------------------------
    def gemm_out(self, weight, col, out_side, n0, n1, bias=None):
        """out_side[n0:n1] = weight x columns (+ bias), written in (num, C, *spatial) order."""
        m, g, p, c = n1 - n0, self.group, self.window.out_count, self.out_channels
        wg = weight.reshape(g, -1, self.kdim)
        dst = out_side[n0:n1].reshape(m, g, -1, p)
        if m == 1:
            for i in range(g):
                matmul(wg[i], col[i], dst[0, i])
            src = dst
        else:
            buf = self.buffers.flat('gemm', c * m * p, col.dtype, col).reshape(g, -1, m * p)
            for i in range(g):
                matmul(wg[i], col[i], buf[i])
            if self.batch_last:
                src = buf.reshape(g, -1, p, m).transpose(3, 0, 1, 2)
            else:
                src = buf.reshape(g, -1, m, p).transpose(2, 0, 1, 3)
        if bias is not None:
            split_apply(add, dst, src, bias.reshape(g, -1, 1))
        elif src is not dst:
            split_apply(assign, dst, src)

    def weight_grad(self, out_cm, col, weight_diff, out_images):
        """weight_diff += out-side (channel-major) x columns^T, per group (`out_images`: the
        chunk's out side as (m, C, *spatial)).

        Small products (under PER_IMAGE_MACS multiply-adds) go image by image on the CPU, as
        Caffe's per-image GEMMs: each image's (C/g, P) x (P, kdim) product added to weight_diff
        in turn, so that float32 rounds as Caffe's does (a from-scratch run of a small net
        stays on Caffe's trajectory only so). Larger ones are one product over the chunk:
        image by image costs 5-25% of a CaffeNet convolution's backward.
        """
        g, c, p, kdim = self.group, self.out_channels // self.group, self.window.out_count, self.kdim
        m = len(out_images)
        wd = weight_diff.reshape(g, c, kdim)
        if isinstance(weight_diff, np.ndarray) and m * g * c * p * kdim < PER_IMAGE_MACS:
            if self.batch_last:
                images = np.ascontiguousarray(col.reshape(g, kdim, p, m).transpose(3, 0, 1, 2))
            else:
                images = col.reshape(g, kdim, m, p).transpose(2, 0, 1, 3)
            outs = out_images.reshape(m, g, c, p)
            for j in range(m):
                for i in range(g):
                    wd[i] += outs[j, i] @ images[j, i].T
            return
        for i in range(g):
            # computed as the tall (kdim, C/g) product, split over kdim
            matmul_add(col[i], out_cm[i].T, wd[i].T)

    def back_columns(self, weight, out_cm):
        """weight^T x out-side columns, per group: (group, kdim, m*P)."""
        wg = weight.reshape(self.group, -1, self.kdim)
        col = self.buffers.flat('col', self.group * self.kdim * out_cm.shape[2], out_cm.dtype, out_cm)
        col = col.reshape(self.group, self.kdim, -1)
        for i in range(self.group):
            matmul(wg[i].T, out_cm[i], col[i])
        return col

    def col2im(self, weight, out_cm, im, n0, n1):
        """im[n0:n1] = col2im(weight^T x out-side columns)."""
        m, w = n1 - n0, self.window
        col = self.back_columns(weight, out_cm)
        c = self.in_channels
        if self.is_1x1:
            split_apply(assign, im[n0:n1].swapaxes(0, 1), col.reshape((c, m) + w.out))
            return
        if self.batch_last:
            acc = self.buffers.get('acc%d' % m, (c,) + w.padded + (m,), im.dtype, im)
            cols, first, images = col.reshape((c,) + w.kernel + w.out + (m,)), 1, _batch_last(im[n0:n1])
        else:
            acc = self.buffers.get('acc%d' % m, (c, m) + w.padded, im.dtype, im)
            cols, first, images = col.reshape((c,) + w.kernel + (m,) + w.out), 2, im[n0:n1].swapaxes(0, 1)

        def channels(part):
            acc[part] = 0
            w.add_patches(acc[part], first, cols[part], 1)
            images[part] = w.unpad(acc[part], first)
        parallel(channels, c, cols.size, acc)

    # -- the four passes ---------------------------------------------------
    def forward(self, im, weight, out_side, bias=None):
        """Convolution: out_side = weight * im (+ bias)."""
        chunks = self.chunks(im.shape[0], im.itemsize)
        for n0, n1 in chunks:
            col = self.columns(im, n0, n1)
            self.gemm_out(weight, col, out_side, n0, n1, bias)
        self.memo.forget()
        if self.keeps_columns and len(chunks) == 1 and not (self.is_1x1 and im.shape[0] == 1):
            self.memo.keep(im, col)   # backward's weight gradient reuses them

    def backward(self, im, out_diff, weight, weight_diff=None, im_diff=None):
        """Convolution's backward: weight_diff += ..., im_diff = ... (either may be None)."""
        col = self.memo.recall(im) if weight_diff is not None else None
        for n0, n1 in self.chunks(out_diff.shape[0], out_diff.itemsize):
            out_cm = self.channel_major(out_diff, n0, n1, 'cm')
            if weight_diff is not None:
                if col is None:
                    col = self.columns(im, n0, n1)
                self.weight_grad(out_cm, col, weight_diff, out_diff[n0:n1])
                col = None
            if im_diff is not None:
                self.col2im(weight, out_cm, im_diff, n0, n1)

    def transposed_forward(self, out_side, weight, im):
        """Deconvolution's forward: im = col2im(weight^T x out_side)."""
        for n0, n1 in self.chunks(out_side.shape[0], out_side.itemsize):
            self.col2im(weight, self.channel_major(out_side, n0, n1, 'cm'), im, n0, n1)

    def transposed_backward(self, im_diff, out_side, weight, weight_diff=None, out_diff=None):
        """Deconvolution's backward: one im2col of the top diff serves both gradients."""
        for n0, n1 in self.chunks(im_diff.shape[0], im_diff.itemsize):
            col = self.columns(im_diff, n0, n1)
            if weight_diff is not None:
                out_cm = self.channel_major(out_side, n0, n1, 'cm')
                self.weight_grad(out_cm, col, weight_diff, out_side[n0:n1])
            if out_diff is not None:
                self.gemm_out(weight, col, out_diff, n0, n1)


class _DeviceConv(_GemmConv):
    """_GemmConv on the device for 1-D and 2-D windows: kernels/im2col.cu writes the columns
    straight from the images and gathers them back (no padded copy; recomputing them beats
    keeping them); the products and transposes are _GemmConv's, through CuPy."""
    keeps_columns = False

    def __init__(self, window, group, in_channels, out_channels):
        super().__init__(window, group, in_channels, out_channels)
        self.batch_last = False
        self.kernels = vision_gpu.ColumnKernels(window, in_channels)

    def column_bytes(self):
        return vision_gpu.DEVICE_COL_BYTES

    def columns(self, im, n0, n1):
        col = self.buffers.flat('col', self.group * self.kdim * (n1 - n0) * self.window.out_count, im.dtype, im)
        self.kernels.im2col(im[n0:n1], col)
        return col.reshape(self.group, self.kdim, -1)

    def col2im(self, weight, out_cm, im, n0, n1):
        self.kernels.col2im(self.back_columns(weight, out_cm), im[n0:n1])


def _batch_last(array):
    """(m, C, *spatial) -> (C, *spatial, m), a view."""
    return array.transpose(tuple(range(1, array.ndim)) + (0,))


class _ConvolutionBase(Layer):
    """What Convolution and Deconvolution share: parameters, weights, shapes (BaseConvolutionLayer)."""
    min_bottom = 1
    min_top = 1
    equal_num_bottom_top = True
    reverse = False

    def setup(self, bottom, top):
        param = self.layer_param.convolution_param
        self.axis = self.canonical_axis(bottom[0], param.axis)
        self.num_spatial = bottom[0].num_axes - self.axis - 1
        self.kernel, self.stride, self.pad, self.dilation = conv_geometry(self, param, self.num_spatial)
        self.channels = bottom[0].shape[self.axis]
        self.num_output = param.num_output
        self.group = param.group
        if self.num_output <= 0:
            raise self.error('num_output must be positive')
        if self.group <= 0:
            raise self.error('group must be positive')
        if self.channels % self.group:
            raise self.error('input channels (%d) must be a multiple of group (%d)'
                             % (self.channels, self.group))
        if self.num_output % self.group:
            raise self.error('Number of output should be multiples of group (num_output %d, group %d).'
                             % (self.num_output, self.group))
        conv_out, conv_in = ((self.channels, self.num_output) if self.reverse
                             else (self.num_output, self.channels))
        self.conv_in, self.conv_out = conv_in, conv_out
        weight_shape = (conv_out, conv_in // self.group) + tuple(self.kernel)
        self.bias_term = param.bias_term
        if self.blobs:
            if len(self.blobs) != 1 + self.bias_term:
                raise self.error('Incorrect number of weight blobs: %d given, %d expected'
                                 % (len(self.blobs), 1 + self.bias_term))
            self._check_shape('weight', self.blobs[0], weight_shape)
            if self.bias_term:
                self._check_shape('bias', self.blobs[1], (self.num_output,))
        else:
            self.blobs = [self.make_blob(weight_shape)]
            fill(self.blobs[0], param.weight_filler)
            if self.bias_term:
                self.blobs.append(self.make_blob((self.num_output,)))
                fill(self.blobs[1], param.bias_filler)
        self._core_key = None

    def _check_shape(self, what, blob, shape):
        if tuple(blob.shape) != tuple(shape):
            raise self.error('Incorrect %s shape: expected shape %s; instead, shape was %s'
                             % (what, ' '.join(map(str, shape)), ' '.join(map(str, blob.shape))))

    def reshape(self, bottom, top):
        first = bottom[0]
        if first.num_axes != self.axis + 1 + self.num_spatial:
            raise self.error('bottom num_axes may not change (was %d, now %d).'
                             % (self.axis + 1 + self.num_spatial, first.num_axes))
        if first.shape[self.axis] != self.channels:
            raise self.error('Input size incompatible with convolution kernel: bottom %s has %d channels, '
                             'the layer was set up for %d.'
                             % (first.shape_string(), first.shape[self.axis], self.channels))
        for i, blob in enumerate(bottom[1:], 1):
            if blob.shape != first.shape:
                raise self.error('shape mismatch - bottom[0]: %s vs. bottom[%d]: %s'
                                 % (first.shape_string(), i, blob.shape_string()))
        spatial = first.shape[self.axis + 1:]
        out = [self.output_size(s, i) for i, s in enumerate(spatial)]
        if any(o <= 0 for o in out):
            raise self.error('output spatial shape %s is empty: input %s, kernel %s, stride %s, pad %s, '
                             'dilation %s' % (tuple(out), tuple(spatial), self.kernel, self.stride,
                                             self.pad, self.dilation))
        for blob in top:
            blob.reshape(first.shape[:self.axis] + (self.num_output,) + tuple(out))
        self.num = _prod(first.shape[:self.axis])
        self.bottom_shape = (self.num, self.channels) + tuple(spatial)
        self.top_shape = (self.num, self.num_output) + tuple(out)
        im_size, out_size = (out, spatial) if self.reverse else (spatial, out)
        key = (tuple(im_size), tuple(out_size), self.num, first.xp is np)
        if key != self._core_key:
            window = Window(self.kernel, self.stride, self.pad, self.dilation, im_size, out_size)
            if first.xp is not np:
                core = _DeviceConv if 1 <= self.num_spatial <= 2 else _GemmConv
            elif worthwhile(window, self.group, self.conv_in, self.conv_out, self.num):
                core = SpectralConv
            else:
                core = _GemmConv
            self.core = core(window, self.group, self.conv_in, self.conv_out)
            self._core_key = key

    def _bias(self):
        return self.blobs[1].data if self.bias_term else None

    def _bias_grad(self, top_diff):
        if self.bias_term and self.param_needs_backward(1):
            self.blobs[1].diff[...] += top_diff.reshape(self.num, self.num_output, -1).sum(axis=(0, 2))


@register('Convolution')
class ConvolutionLayer(_ConvolutionBase):
    """Caffe's Convolution: N-D, grouped, dilated; weights (out, in/group, *kernel)."""

    def output_size(self, size, i):
        return conv_out_size(size, self.kernel[i], self.stride[i], self.pad[i], self.dilation[i])

    def forward(self, bottom, top):
        for b, t in zip(bottom, top):
            self.core.forward(b.data.reshape(self.bottom_shape), self.blobs[0].data,
                              t.data.reshape(self.top_shape), self._bias())

    def backward(self, top, propagate_down, bottom):
        want_w = self.param_needs_backward(0)
        for t, down, b in zip(top, propagate_down, bottom):
            self._bias_grad(t.diff)
            if want_w or down:
                self.core.backward(b.data.reshape(self.bottom_shape), t.diff.reshape(self.top_shape),
                                   self.blobs[0].data, self.blobs[0].diff if want_w else None,
                                   b.diff.reshape(self.bottom_shape) if down else None)


@register('Deconvolution')
class DeconvolutionLayer(_ConvolutionBase):
    """Caffe's Deconvolution (convolution's backward as forward); weights (in, out/group, *kernel)."""
    reverse = True

    def output_size(self, size, i):
        extent = self.dilation[i] * (self.kernel[i] - 1) + 1
        return self.stride[i] * (size - 1) + extent - 2 * self.pad[i]

    def forward(self, bottom, top):
        for b, t in zip(bottom, top):
            out = t.data.reshape(self.top_shape)
            self.core.transposed_forward(b.data.reshape(self.bottom_shape), self.blobs[0].data, out)
            if self.bias_term:
                out.reshape(self.num, self.num_output, -1)[...] += self.blobs[1].data[:, None]

    def backward(self, top, propagate_down, bottom):
        want_w = self.param_needs_backward(0)
        for t, down, b in zip(top, propagate_down, bottom):
            self._bias_grad(t.diff)
            if want_w or down:
                self.core.transposed_backward(t.diff.reshape(self.top_shape),
                                              b.data.reshape(self.bottom_shape), self.blobs[0].data,
                                              self.blobs[0].diff if want_w else None,
                                              b.diff.reshape(self.bottom_shape) if down else None)


@register('Im2col')
class Im2colLayer(Layer):
    """Every convolution patch as channels: (N, C, *spatial) -> (N, C*prod(kernel), *out)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.convolution_param
        self.axis = self.canonical_axis(bottom[0], param.axis)
        self.num_spatial = bottom[0].num_axes - self.axis - 1
        if self.num_spatial < 1:
            raise self.error('needs at least one spatial axis after the channel axis %d (bottom %s)'
                             % (self.axis, bottom[0].shape_string()))
        self.kernel, self.stride, self.pad, self.dilation = conv_geometry(self, param, self.num_spatial)
        self.buffers = Buffers()

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != self.axis + 1 + self.num_spatial:
            raise self.error('bottom num_axes may not change')
        spatial = shape[self.axis + 1:]
        out = tuple(conv_out_size(s, k, st, p, d) for s, k, st, p, d
                    in zip(spatial, self.kernel, self.stride, self.pad, self.dilation))
        if any(o <= 0 for o in out):
            raise self.error('output spatial shape %s is empty for input %s' % (out, tuple(spatial)))
        channels = shape[self.axis]
        top[0].reshape(shape[:self.axis] + (channels * _prod(self.kernel),) + out)
        num = _prod(shape[:self.axis])
        self.bottom_shape = (num, channels) + tuple(spatial)
        self.cols_shape = (num, channels) + tuple(self.kernel) + out
        self.window = Window(self.kernel, self.stride, self.pad, self.dilation, spatial, out)

    def forward(self, bottom, top):
        if bottom[0].xp is not np and self.num_spatial <= 2:
            vision_gpu.im2col_layer(self.window, bottom[0].data.reshape(self.bottom_shape),
                                    top[0].data.reshape(self.bottom_shape[0], -1))
            return
        x = self.window.padded_input(bottom[0].data.reshape(self.bottom_shape), self.buffers)
        top[0].data.reshape(self.cols_shape)[...] = self.window.patches(x)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff.reshape(self.bottom_shape)
        if bottom[0].xp is not np and self.num_spatial <= 2:
            vision_gpu.col2im_layer(self.window, top[0].diff.reshape(diff.shape[0], -1), diff)
            return
        acc = diff
        if self.window.needs_padding:
            acc = self.buffers.get('acc', diff.shape[:2] + self.window.padded, diff.dtype, diff)
        acc[...] = 0
        self.window.add_patches(acc, 2, top[0].diff.reshape(self.cols_shape), 2)
        if acc is not diff:
            diff[...] = self.window.unpad(acc)


# -- pooling -------------------------------------------------------------------
MAX, AVE, STOCHASTIC = 0, 1, 2


def pooled_extent(size, kernel, stride, pad, ceil_mode=True):
    """Caffe's pooled size along one axis: rounded up (CEIL) or down (FLOOR), then one less where
    the last window would start in the padding."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class Pool2d:
    """Caffe's 2-D pooling over (N, C, H, W): window rules, MAX argmax mask, AVE divisor, STOCHASTIC.

    MAX keeps, per output, the position of the first maximum inside its window (a small
    integer code); the plane index Caffe's mask holds is looked up from it when needed.
    MAX and AVE run on a PhaseGrid (contiguous passes, one per kernel offset); outputs and
    codes live in its extended layout until copied out.
    """

    def __init__(self, method, kernel, stride, pad, ceil_mode=True, train=True):
        self.method = method
        self.kernel, self.stride, self.pad = tuple(kernel), tuple(stride), tuple(pad)
        self.ceil_mode = ceil_mode
        self.train = train
        self.buffers = Buffers()
        self.shape = None
        self.device = None       # vision_gpu.DevicePool, for device arrays

    def pooled_size(self, height, width):
        """Caffe's pooled (height, width), see pooled_extent."""
        return tuple(pooled_extent(size, k, s, p, self.ceil_mode)
                     for size, k, s, p in zip((height, width), self.kernel, self.stride, self.pad))

    def reshape(self, shape):
        """Prepare for bottoms of `shape` (N, C, H, W); returns the top shape."""
        n, c, h, w = shape
        out = self.pooled_size(h, w)
        if min(out) < 1:
            raise ValueError('pooling kernel %s with pad %s and stride %s does not fit the %dx%d input '
                             '(output %s)' % (list(self.kernel), list(self.pad), list(self.stride), h, w, list(out)))
        if tuple(shape) != self.shape:
            self.shape = tuple(shape)
            self.window = Window(self.kernel, self.stride, self.pad, (1, 1), (h, w), out)
            self.grid = PhaseGrid(self.kernel, self.stride, self.pad, (h, w), out)
            # one window exactly covering the plane (global pooling, SPP's first level)
            self.whole = out == (1, 1) and self.pad == (0, 0) and self.kernel == (h, w)
            rows = np.arange(out[0]) * self.stride[0] - self.pad[0]
            cols = np.arange(out[1]) * self.stride[1] - self.pad[1]
            planes, inside = [], []
            for i, j in self.window.offsets:
                r, q = rows[:, None] + i, cols[None, :] + j
                planes.append((r * w + q).ravel())
                inside.append((r >= 0) & (r < h) & (q >= 0) & (q < w))
            # row `code` of the table: plane index of window offset `code`; the last row: none (-1)
            self.table = np.vstack(planes + [np.full(out[0] * out[1], -1)]).astype(np.int64)
            self.inside = inside
            hend = np.minimum(rows + self.kernel[0], h + self.pad[0])
            wend = np.minimum(cols + self.kernel[1], w + self.pad[1])
            self.pool_size = ((hend - rows)[:, None] * (wend - cols)[None, :]).astype(np.float64)
            self.code_dtype = np.uint8 if len(self.window.offsets) < 256 else np.int32
            self.code = self.plane = self.device = None
        return (n, c) + out

    def _views(self, x):
        """Every window offset's (N, C, PH, PW) strided view of x zero-padded."""
        xpad = self.window.padded_input(x, self.buffers)
        lead = (slice(None), slice(None))
        return [xpad[lead + self.window.slices(o)] for o in self.window.offsets]

    def _on(self, xp, array, dtype=None):
        return xp.asarray(array) if dtype is None else xp.asarray(array, dtype=dtype)

    def forward(self, x, top, mask=None):
        """top (N, C, PH, PW) from x; MAX writes its plane indices to `mask` when given."""
        xp = backend.get_array_module(x)
        if xp is not np:
            uniform = None
            if self.method == STOCHASTIC and self.train:    # the same draw as the CPU's, below
                uniform = _uniform(xp, top)
            self._device().forward(x, top, mask, uniform)
            return
        if self.method == MAX:
            self._max(xp, x, top)
            if mask is not None:
                mask[...] = self.plane_indices()
        elif self.method == AVE:
            if self.whole:
                x.reshape(top.shape[:2] + (-1,)).sum(axis=2, out=top.reshape(top.shape[:2]))
                top /= self._on(xp, self.pool_size, top.dtype)
            else:
                self._average(x, top)
        elif self.train:
            self._stochastic_train(xp, x, top)
        else:
            total, squares = xp.zeros_like(top), xp.zeros_like(top)
            for view in self._views(x):
                total += view
                squares += view * view
            top[...] = 0
            xp.divide(squares, total, out=top, where=total > 0)

    def _max(self, xp, x, top):
        """Caffe's running max from -FLT_MAX with strict >: NaN never wins, the first maximum does."""
        n, c = top.shape[:2]
        if self.whole:
            flat = x.reshape(n, c, -1)
            xp.fmax.reduce(flat, axis=2, out=top.reshape(n, c), initial=-FLT_MAX)
            equal = flat == top.reshape(n, c, 1)
            plane = equal.argmax(axis=2)
            plane[~equal.any(axis=2)] = -1
            self.code, self.plane = None, plane.reshape(top.shape)
            return
        grid, count, (oh, ow) = self.grid, len(self.grid.offsets), top.shape[2:]
        phases, ext, x_planes, top_planes = self._phase_arrays(x, top, 'x', -np.inf)
        code = self.buffers.get('code', ext.shape, self.code_dtype, x)
        step = self.buffers.get('step', (ext.size,), self.code_dtype, x)
        equal = self.buffers.get('equal', (ext.size,), bool, x)
        flat, flat_ext, flat_code = phases.reshape(len(phases), -1), ext.reshape(-1), code.reshape(-1)

        def planes(part):
            grid.split(x_planes, phases, part)
            a, b = grid.runs(part)
            t, k, st, eq = flat_ext[a:b], flat_code[a:b], step[a:b], equal[a:b]
            hit = eq.view(np.uint8) if self.code_dtype == np.uint8 else eq
            t.fill(-FLT_MAX)
            for offset in range(count):
                np.fmax(t, grid.shifted(flat, offset, a, b), out=t)
            k.fill(count)
            # backwards over the offsets, so the first offset holding the maximum is the one
            # kept: code += hit * (offset - code), exact in modular integer arithmetic
            for offset in range(count - 1, -1, -1):
                np.equal(grid.shifted(flat, offset, a, b), t, out=eq)
                np.subtract(self.code_dtype(offset), k, out=st)
                np.multiply(st, hit, out=st)
                k += st
            top_planes[part] = ext[part, :oh, :ow]
        parallel(planes, len(ext), ext.size * count, x)
        self.code, self.plane = code, None

    def _phase_arrays(self, image, pooled, name, fill):
        """For image (N, C, H, W) and pooled (N, C, PH, PW): the grid's phase buffer (cells
        outside the image hold `fill`), the extended outputs (zero when allocated), and image
        and pooled as planes."""
        n, c, h, w = image.shape
        grid = self.grid
        phases = self.buffers.get(name + 'phases', (len(grid.phases), n * c, grid.hq, grid.wq), image.dtype,
                                  image, fill=fill)
        ext = self.buffers.get(name + 'ext', (n * c, grid.hq, grid.wq), image.dtype, image, fill=0)
        return phases, ext, image.reshape(n * c, h, w), pooled.reshape((n * c,) + pooled.shape[2:])

    def _average(self, x, top):
        """Caffe's AVE: window sums from 0 in window order (padding adds zeros), then / pool_size."""
        grid, count, (oh, ow) = self.grid, len(self.grid.offsets), top.shape[2:]
        phases, ext, x_planes, top_planes = self._phase_arrays(x, top, 'x', 0)
        size = np.asarray(self.pool_size, top.dtype)
        flat, flat_ext = phases.reshape(len(phases), -1), ext.reshape(-1)

        def planes(part):
            grid.split(x_planes, phases, part)
            a, b = grid.runs(part)
            t = flat_ext[a:b]
            t.fill(0)
            for offset in range(count):
                t += grid.shifted(flat, offset, a, b)
            np.divide(ext[part, :oh, :ow], size, out=top_planes[part])
        parallel(planes, len(ext), ext.size * count, x)

    def _device(self):
        if self.device is None:
            self.device = vision_gpu.DevicePool(self)
        return self.device

    def plane_indices(self):
        """Per output, the plane index (h * W + w) its gradient goes to; -1 for none."""
        if self.device is not None:
            return self.device.argmax
        if self.plane is None and self.code is not None:
            n, c = self.shape[:2]
            ph, pw = self.grid.out
            flat = self.code[:, :ph, :pw].reshape(n * c, ph * pw).astype(np.intp)
            self.plane = self.table[flat, np.arange(ph * pw)].reshape(n, c, ph, pw)
        return self.plane

    def _stochastic_train(self, xp, x, top):
        """Sample one cell per window with probability value / window sum (Caffe's GPU kernel)."""
        views = self._views(x)
        total = xp.zeros_like(top)
        for view in views:
            total += view
        # Caffe draws uniform (0, 1]
        threshold = _uniform(xp, top) * total
        plane = xp.full(top.shape, -1, np.int64)
        top[...] = 0
        running = xp.zeros_like(top)
        found = xp.zeros(top.shape, bool)
        for view, cells, inside in zip(views, self.table, self.inside):
            running += view
            hit = (running >= threshold) & ~found & self._on(xp, inside)
            xp.copyto(top, view, where=hit)
            xp.copyto(plane, self._on(xp, cells.reshape(inside.shape)), where=hit)
            found |= hit
        self.code, self.plane = None, plane

    def backward(self, top_diff, bottom_diff, mask=None):
        """bottom_diff (overwritten) from top_diff; MAX reads `mask` (plane indices) when given."""
        xp = backend.get_array_module(top_diff)
        if xp is not np:
            self._device().backward(top_diff, bottom_diff, mask)
            return
        if self.method == AVE and self.whole:
            bottom_diff[...] = top_diff / self._on(xp, self.pool_size, top_diff.dtype)
            return
        if self.method == AVE or (mask is None and self.code is not None):
            self._scatter(top_diff, bottom_diff)
            return
        if mask is not None:
            plane = mask.astype(np.int64)
        else:
            plane = self.plane_indices()
            if plane is None:  # no forward in TRAIN yet (Caffe reads stale indices)
                plane = xp.full(top_diff.shape, -1, np.int64)
        n, h, w = bottom_diff.shape[0], bottom_diff.shape[2], bottom_diff.shape[3]

        def channels(part):
            cells, weights = plane[:, part], top_diff[:, part]
            size = bottom_diff[:, part].shape
            if (cells < 0).any() or (cells >= h * w).any():
                valid = (cells >= 0) & (cells < h * w)
                cells, weights = xp.where(valid, cells, 0), xp.where(valid, weights, 0)
            flat = cells + (xp.arange(n * size[1], dtype=np.int64) * (h * w)).reshape(n, -1, 1, 1)
            bottom_diff[:, part] = xp.bincount(flat.ravel(), weights.ravel(),
                                               minlength=_prod(size)).reshape(size)
        parallel(channels, bottom_diff.shape[1], bottom_diff.size, bottom_diff)

    def _scatter(self, top_diff, bottom_diff):
        """bottom_diff from top_diff through the grid: AVE spreads dy / pool_size over each
        window, MAX routes dy to the code's cell. Offsets run backwards, so that every bottom
        cell adds up its outputs in Caffe's (row-major) order."""
        grid, count, (oh, ow) = self.grid, len(self.grid.offsets), top_diff.shape[2:]
        phases, ext, dx_planes, dy_planes = self._phase_arrays(bottom_diff, top_diff, 'd', 0)
        flat, flat_ext = phases.reshape(len(phases), -1), ext.reshape(-1)
        average = self.method == AVE
        if average:
            size = np.asarray(self.pool_size, top_diff.dtype)
        else:
            flat_code = self.code.reshape(-1)
            hit = self.buffers.get('hit', (ext.size,), bool, ext)
            routed = self.buffers.get('routed', (ext.size,), ext.dtype, ext)
            # dy * hit is dy or 0 for finite dy; otherwise only the hits may see it
            finite = bool(np.isfinite(top_diff).all())

        def planes(part):
            if average:
                np.divide(dy_planes[part], size, out=ext[part, :oh, :ow])
            else:
                ext[part, :oh, :ow] = dy_planes[part]
            phases[:, part] = 0
            a, b = grid.runs(part)
            dy = flat_ext[a:b]
            for offset in range(count - 1, -1, -1):
                cells = grid.shifted(flat, offset, a, b)
                if average:
                    cells += dy
                    continue
                h, r = hit[a:b], routed[a:b]
                np.equal(flat_code[a:b], offset, out=h)
                if finite:
                    np.multiply(dy, h, out=r)
                else:
                    r.fill(0)
                    np.copyto(r, dy, where=h)
                cells += r
            grid.merge(phases, dx_planes, part)
        parallel(planes, len(ext), ext.size * count, ext)


def _uniform(xp, top):
    """STOCHASTIC pooling's draws for `top`: uniform in (0, 1] as Caffe's, the same on either device."""
    return xp.asarray(1.0 - backend.rng().random(top.shape), dtype=top.dtype)


def _pooling_geometry(layer, param):
    """(kernel, stride, pad) from a PoolingParameter with Caffe's checks; kernel None if global."""
    has = param.HasField
    if param.global_pooling:
        if has('kernel_size') or has('kernel_h') or has('kernel_w'):
            raise layer.error('With Global_pooling: true Filter size cannot specified')
        kernel = None
    else:
        if has('kernel_size') == (has('kernel_h') and has('kernel_w')):
            raise layer.error('Filter size is kernel_size OR kernel_h and kernel_w; not both '
                              '(and not neither)')
        kernel = ((param.kernel_size,) * 2 if has('kernel_size') else (param.kernel_h, param.kernel_w))
        if min(kernel) <= 0:
            raise layer.error('Filter dimensions cannot be zero.')
    if not ((not has('pad') and has('pad_h') and has('pad_w')) or (not has('pad_h') and not has('pad_w'))):
        raise layer.error('pad is pad OR pad_h and pad_w are required.')
    if not ((not has('stride') and has('stride_h') and has('stride_w'))
            or (not has('stride_h') and not has('stride_w'))):
        raise layer.error('Stride is stride OR stride_h and stride_w are required.')
    pad = (param.pad_h, param.pad_w) if has('pad_h') else (param.pad,) * 2
    stride = (param.stride_h, param.stride_w) if has('stride_h') else (param.stride,) * 2
    if min(stride) <= 0:
        raise layer.error('Stride dimensions must be nonzero.')
    if param.global_pooling and (pad != (0, 0) or stride != (1, 1)):
        raise layer.error('With Global_pooling: true; only pad = 0 and stride = 1')
    return kernel, stride, pad


def _check_pool_padding(layer, method, kernel, pad):
    if pad != (0, 0):
        if method not in (MAX, AVE):
            raise layer.error('Padding implemented only for average and max pooling.')
        if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
            raise layer.error('pad (%d, %d) must be smaller than the kernel (%d, %d)' % (pad + kernel))


def _check_4d(layer, blob):
    if blob.num_axes != 4:
        raise layer.error('Input must have 4 axes, corresponding to (num, channels, height, width); got %s'
                          % blob.shape_string())


@register('Pooling')
class PoolingLayer(Layer):
    """Caffe's Pooling: MAX (optional mask top), AVE, STOCHASTIC; global pooling; CEIL/FLOOR rounding."""
    exact_num_bottom = 1
    min_top = 1
    max_top = 2

    def setup(self, bottom, top):
        param = self.layer_param.pooling_param
        self.method = param.pool
        if len(top) > 1 and self.method != MAX:
            raise self.error('only MAX pooling has a second (mask) top')
        self.kernel, self.stride, self.pad = _pooling_geometry(self, param)
        self.global_pooling = param.global_pooling
        self.ceil_mode = param.round_mode == param.CEIL
        if self.global_pooling:
            _check_4d(self, bottom[0])
            self.kernel = bottom[0].shape[2:]
        _check_pool_padding(self, self.method, self.kernel, self.pad)
        self.pool = None

    def reshape(self, bottom, top):
        _check_4d(self, bottom[0])
        kernel = bottom[0].shape[2:] if self.global_pooling else self.kernel
        if self.pool is None or self.pool.kernel != tuple(kernel):
            self.pool = Pool2d(self.method, kernel, self.stride, self.pad, self.ceil_mode,
                               train=self.phase == 0)
        shape = self.pool.reshape(bottom[0].shape)
        for blob in top:
            blob.reshape(shape)

    def forward(self, bottom, top):
        self.pool.forward(bottom[0].data, top[0].data, top[1].data if len(top) > 1 else None)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.pool.backward(top[0].diff, bottom[0].diff, top[1].data if len(top) > 1 else None)


@register('SPP')
class SPPLayer(Layer):
    """Spatial pyramid pooling: level l pools into 2^l x 2^l bins; levels flattened and concatenated."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.spp_param
        self.height = param.pyramid_height
        if self.height <= 0:
            raise self.error('pyramid_height must be positive')
        self.method = param.pool
        self._shape = None

    def reshape(self, bottom, top):
        _check_4d(self, bottom[0])
        n, c, h, w = bottom[0].shape
        if h <= 0 or w <= 0:
            raise self.error('Input dimensions cannot be zero.')
        if bottom[0].shape != self._shape:
            self._shape = bottom[0].shape
            self.pools, self.level_shapes = [], []
            for level in range(self.height):
                bins = 2 ** level
                kernel = (-(-h // bins), -(-w // bins))
                pad = ((kernel[0] * bins - h + 1) // 2, (kernel[1] * bins - w + 1) // 2)
                _check_pool_padding(self, self.method, kernel, pad)
                # Caffe's inner pooling layers are built from a fresh LayerParameter: phase TRAIN
                pool = Pool2d(self.method, kernel, kernel, pad, ceil_mode=True, train=True)
                self.level_shapes.append(pool.reshape(bottom[0].shape))
                self.pools.append(pool)
            self.buffers = Buffers()
        if self.height == 1:
            top[0].reshape(self.level_shapes[0])
        else:
            top[0].reshape((n, sum(_prod(s[1:]) for s in self.level_shapes)))

    def _levels(self, top_array):
        """(pool, view of top_array shaped as that level's pooled output) per level."""
        n, start = self._shape[0], 0
        flat = top_array.reshape(n, -1)
        for pool, shape in zip(self.pools, self.level_shapes):
            size = _prod(shape[1:])
            yield pool, flat[:, start:start + size], shape
            start += size

    def forward(self, bottom, top):
        for i, (pool, view, shape) in enumerate(self._levels(top[0].data)):
            out = self.buffers.get('out%d' % i, shape, view.dtype, view)
            pool.forward(bottom[0].data, out)
            view[...] = out.reshape(view.shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        level_diff = self.buffers.get('diff', diff.shape, diff.dtype, diff)
        for i, (pool, view, shape) in enumerate(self._levels(top[0].diff)):
            target = diff if i == 0 else level_diff
            pool.backward(view.reshape(shape), target)
            if i:
                diff += level_diff


# -- LRN -----------------------------------------------------------------------
def negative_power(base, beta, out):
    """out = base ** -beta. The usual LRN exponent 0.75 (and 0.5, 1) goes through square roots
    and one division, several times faster than powf and within an ulp or two of it."""
    xp = backend.get_array_module(base)
    one = out.dtype.type(1)
    if beta == 1:
        return xp.divide(one, base, out=out)
    if beta == 0.75:
        xp.sqrt(base, out=out)
        out *= base
        return xp.divide(one, xp.sqrt(out, out=out), out=out)
    if beta == 0.5:
        return xp.divide(one, xp.sqrt(base, out=out), out=out)
    return xp.power(base, out.dtype.type(-beta), out=out)


def _power_backward(x, y, dy, power, scale, shift):
    """Bottom diff of Caffe's PowerLayer y = (shift + scale*x)^power, in its order of operations."""
    diff_scale = power * scale
    if diff_scale == 0:
        return dy * 0
    if power == 1:
        return dy * diff_scale
    if power == 2:
        grad = x * (diff_scale * scale)
        if shift != 0:
            grad += diff_scale * shift
    elif shift == 0:
        grad = y / x
        grad *= power
    else:
        grad = x * scale if scale != 1 else x.copy()
        if shift != 0:
            grad += shift
        grad = y / grad
        if diff_scale != 1:
            grad *= diff_scale
    grad *= dy
    return grad


@register('LRN')
class LRNLayer(Layer):
    """Local response normalization, ACROSS_CHANNELS or WITHIN_CHANNEL, with Caffe's formulas."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.lrn_param
        self.size = param.local_size
        if self.size % 2 != 1:
            raise self.error('LRN only supports odd values for local_size (got %d)' % self.size)
        self.pre_pad = (self.size - 1) // 2
        self.alpha, self.beta, self.k = param.alpha, param.beta, param.k
        self.across = param.norm_region == param.ACROSS_CHANNELS
        self.buffers = Buffers()
        if not self.across:
            self.pool = Pool2d(AVE, (self.size,) * 2, (1, 1), (self.pre_pad,) * 2)

    def reshape(self, bottom, top):
        _check_4d(self, bottom[0])
        top[0].reshape(bottom[0].shape)
        if not self.across:
            self.pool.reshape(bottom[0].shape)

    def _buf(self, name, like, shape=None, fill=None):
        return self.buffers.get(name, like.shape if shape is None else shape, like.dtype, like, fill=fill)

    def _channel_padded(self, name, x):
        """A cached (N, C + size - 1, H, W) buffer, zero outside channels pre_pad .. pre_pad + C."""
        n, c, h, w = x.shape
        return self._buf(name, x, (n, c + self.size - 1, h, w), fill=0)

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        xp = backend.get_array_module(x)
        dt = x.dtype.type
        if self.across and xp is not np:
            vision_gpu.lrn_forward(self, x, y)
            return
        self.factor = self._buf('factor', x)
        if self.across:
            padded = self._channel_padded('sqpad', x)
            self.scale = self._buf('scale', x)
            c, pre = x.shape[1], self.pre_pad
            alpha_over_size, k = dt(dt(self.alpha) / dt(self.size)), dt(self.k)

            def images(part):
                squares = padded[part, pre:pre + c]
                xp.multiply(x[part], x[part], out=squares)
                squares *= alpha_over_size
                scale = self.scale[part]
                scale[...] = k
                for j in range(self.size):
                    scale += padded[part, j:j + c]
                negative_power(scale, self.beta, self.factor[part])
                xp.multiply(x[part], self.factor[part], out=y[part])
            parallel(images, x.shape[0], x.size * self.size, x)
            return
        squares = self._buf('sq', x)
        xp.multiply(x, x, out=squares)
        self.mean = self._buf('mean', x)
        self.pool.forward(squares, self.mean)
        if dt(-self.beta) * dt(self.alpha) == 0:
            self.factor[...] = 1
        else:
            base = self.mean * dt(self.alpha) if self.alpha != 1 else self.mean.copy()
            base += dt(1)
            negative_power(base, self.beta, self.factor)
        xp.multiply(x, self.factor, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, dy, dx = bottom[0].data, top[0].data, top[0].diff, bottom[0].diff
        xp = backend.get_array_module(x)
        dt = x.dtype.type
        if self.across and xp is not np:
            vision_gpu.lrn_backward(self, x, y, dy, dx)
            return
        if self.across:
            padded = self._channel_padded('ratiopad', x)
            accum = self._buf('accum', x)
            c, pre = x.shape[1], self.pre_pad
            cache_ratio = dt(-2.0 * self.alpha * self.beta / self.size)

            def images(part):
                ratio = padded[part, pre:pre + c]
                xp.multiply(dy[part], y[part], out=ratio)
                ratio /= self.scale[part]
                acc = accum[part]
                acc[...] = 0
                for j in range(self.size):
                    acc += padded[part, j:j + c]
                acc *= x[part]
                acc *= cache_ratio
                xp.multiply(dy[part], self.factor[part], out=dx[part])
                dx[part] += acc
            parallel(images, x.shape[0], x.size * self.size, x)
            return
        # WITHIN_CHANNEL: Caffe's split -> square -> AVE pool -> power -> product, backwards
        d_factor = x * dy
        d_mean = _power_backward(self.mean, self.factor, d_factor, dt(-self.beta), dt(self.alpha), dt(1))
        d_squares = self._buf('dsq', x)
        self.pool.backward(d_mean, d_squares)
        d_squares *= x * dt(2)
        dx[...] = self.factor * dy
        dx += d_squares
