"""The vision layers on the device: CUDA kernels (kernels/im2col.cu, pooling.cu, lrn.cu) and cuBLAS.

caffe_py.layers.vision hands its work here where its blobs live on the device
and the array code would be slow or would need what CuPy lacks (pooling's
reductions with `initial`, `where=` ufuncs, bincount's atomics). Every kernel
gathers (no atomics), so results are the same bits run after run.
"""
import numpy as np

from .. import gpu
from ..backend import get_array_module
from ..proto import caffe_pb2
from .im2col import Buffers

MAX, AVE = caffe_pb2.PoolingParameter.MAX, caffe_pb2.PoolingParameter.AVE

# the columns of one chunk of images may take this much device memory
DEVICE_COL_BYTES = 1 << 30


def _pair(values, fill):
    """A 2-D geometry value from a 1-D or 2-D one (a 1-D convolution is 2-D with height 1)."""
    return tuple(values) if len(values) == 2 else (fill,) + tuple(values)


class DeviceConv:
    """The four convolution passes of vision._GemmConv on the device, for 1-D and 2-D windows.

    The columns of a chunk of m images are one (group, K / group, m * P) array, channel-major
    (K = in_channels * kernel_h * kernel_w, P output positions): im2col.cu writes them and
    col2im.cu gathers them back; each group's product is one cuBLAS GEMM.
    """

    def __init__(self, window, group, in_channels, out_channels):
        self.group, self.in_channels, self.out_channels = group, in_channels, out_channels
        self.height, self.width = _pair(window.size, 1)
        self.out_h, self.out_w = _pair(window.out, 1)
        kernel = _pair(window.kernel, 1)
        # the kernels' order: kernel, pad, stride, dilation (each h, w)
        self.taps = kernel + _pair(window.pad, 0) + _pair(window.stride, 1) + _pair(window.dilation, 1)
        self.positions = self.out_h * self.out_w
        self.kdim = in_channels // group * kernel[0] * kernel[1]
        self.buffers = Buffers()

    def chunks(self, num, itemsize):
        """Equal runs of images whose columns fit in DEVICE_COL_BYTES."""
        per_image = self.group * self.kdim * self.positions * itemsize
        most = max(1, DEVICE_COL_BYTES // max(per_image, 1))
        step = -(-num // -(-num // most)) if num else 1
        return [(n0, min(num, n0 + step)) for n0 in range(0, num, step)]

    def _geometry(self, m):
        return (m, self.in_channels, self.height, self.width) + self.taps + (self.out_h, self.out_w)

    def im2col(self, im, n0, n1):
        """Columns (group, kdim, m * P) of images n0:n1 of `im` (N, C, H, W)."""
        m = n1 - n0
        col = self.buffers.flat('col', self.group * self.kdim * m * self.positions, im.dtype, im)
        gpu.kernel('im2col.cu', 'im2col', im.dtype)(
            self.in_channels * m * self.positions, im[n0:n1], *self._geometry(m), col)
        return col.reshape(self.group, self.kdim, m * self.positions)

    def col2im(self, col, im, n0, n1):
        """im[n0:n1] = the sum of the columns `col` (group, kdim, m * P) over every pixel they read."""
        target = im[n0:n1]
        gpu.kernel('im2col.cu', 'col2im', im.dtype)(target.size, col, *self._geometry(n1 - n0), target)

    def channel_major(self, out_side, n0, n1, name):
        """Out-side images n0:n1 (m, C, P...) as (group, C / group, m * P)."""
        m, c, p = n1 - n0, self.out_channels, self.positions
        if m == 1:
            return out_side[n0].reshape(self.group, -1, p)
        buf = self.buffers.flat(name, c * m * p, out_side.dtype, out_side)
        buf.reshape(c, m, p)[...] = out_side[n0:n1].reshape(m, c, p).transpose(1, 0, 2)
        return buf.reshape(self.group, -1, m * p)

    def gemm_out(self, weight, col, out_side, n0, n1, bias=None):
        """out_side[n0:n1] = weight x columns (+ bias)."""
        xp = get_array_module(col)
        m, c, p = n1 - n0, self.out_channels, self.positions
        wg = weight.reshape(self.group, -1, self.kdim)
        out = self.buffers.flat('gemm', c * m * p, col.dtype, col).reshape(self.group, -1, m * p)
        for g in range(self.group):
            xp.dot(wg[g], col[g], out=out[g])
        src = out.reshape(c, m, p).transpose(1, 0, 2)
        dst = out_side[n0:n1].reshape(m, c, p)
        if bias is not None:
            xp.add(src, bias.reshape(1, c, 1), out=dst)
        else:
            dst[...] = src

    def weight_grad(self, out_cm, col, weight_diff):
        """weight_diff += out-side (channel-major) x columns^T, per group."""
        xp = get_array_module(col)
        wd = weight_diff.reshape(self.group, -1, self.kdim)
        product = self.buffers.get('wgrad', wd.shape[1:], wd.dtype, wd)
        for g in range(self.group):
            xp.dot(out_cm[g], col[g].T, out=product)
            wd[g] += product

    def back_columns(self, weight, out_cm):
        """weight^T x out-side columns: (group, kdim, m * P)."""
        xp = get_array_module(out_cm)
        wg = weight.reshape(self.group, -1, self.kdim)
        col = self.buffers.flat('col', self.group * self.kdim * out_cm.shape[2], out_cm.dtype, out_cm)
        col = col.reshape(self.group, self.kdim, -1)
        for g in range(self.group):
            xp.dot(wg[g].T, out_cm[g], out=col[g])
        return col

    # -- the four passes, as vision._GemmConv's --------------------------------
    def forward(self, im, weight, out_side, bias=None):
        for n0, n1 in self.chunks(im.shape[0], im.itemsize):
            self.gemm_out(weight, self.im2col(im, n0, n1), out_side, n0, n1, bias)

    def backward(self, im, out_diff, weight, weight_diff=None, im_diff=None):
        for n0, n1 in self.chunks(out_diff.shape[0], out_diff.itemsize):
            out_cm = self.channel_major(out_diff, n0, n1, 'cm')
            if weight_diff is not None:
                self.weight_grad(out_cm, self.im2col(im, n0, n1), weight_diff)
            if im_diff is not None:
                self.col2im(self.back_columns(weight, out_cm), im_diff, n0, n1)

    def transposed_forward(self, out_side, weight, im):
        for n0, n1 in self.chunks(out_side.shape[0], out_side.itemsize):
            out_cm = self.channel_major(out_side, n0, n1, 'cm')
            self.col2im(self.back_columns(weight, out_cm), im, n0, n1)

    def transposed_backward(self, im_diff, out_side, weight, weight_diff=None, out_diff=None):
        for n0, n1 in self.chunks(im_diff.shape[0], im_diff.itemsize):
            col = self.im2col(im_diff, n0, n1)
            if weight_diff is not None:
                self.weight_grad(self.channel_major(out_side, n0, n1, 'cm'), col, weight_diff)
            if out_diff is not None:
                self.gemm_out(weight, col, out_diff, n0, n1)


def im2col_layer(window, bottom, top):
    """The Im2col layer's forward: top[n] (C * kernel, P) = the columns of image n of `bottom`."""
    conv = DeviceConv(window, 1, bottom.shape[1], 1)
    launch = gpu.kernel('im2col.cu', 'im2col', bottom.dtype)
    for n in range(bottom.shape[0]):
        launch(conv.in_channels * conv.positions, bottom[n:n + 1], *conv._geometry(1), top[n])


def col2im_layer(window, top_diff, bottom_diff):
    """The Im2col layer's backward: each pixel gathers the column entries that copied it."""
    conv = DeviceConv(window, 1, bottom_diff.shape[1], 1)
    for n in range(bottom_diff.shape[0]):
        conv.col2im(top_diff[n], bottom_diff, n, n + 1)


class DevicePool:
    """vision.Pool2d's forward and backward on the device (kernels/pooling.cu over N * C planes)."""

    def __init__(self, pool):
        self.pool = pool
        self.argmax = None    # per output, the plane index its gradient goes to (-1: none)

    def _geometry(self, bottom_shape, top_shape, padded=True):
        pool = self.pool
        geometry = (bottom_shape[2], bottom_shape[3], top_shape[2], top_shape[3]) + pool.kernel + pool.stride
        return geometry + (pool.pad if padded else ())

    def forward(self, x, top, mask=None, uniform=None):
        """top from x (both contiguous); `uniform` in (0, 1] per output for STOCHASTIC in TRAIN."""
        method, dtype = self.pool.method, x.dtype
        geometry = self._geometry(x.shape, top.shape, padded=method in (MAX, AVE))
        if method == MAX or (method != AVE and self.pool.train):
            self.argmax = self.pool.buffers.get('argmax', top.shape, np.int32, x)
        if method == MAX:
            _pool('max_pool_forward', dtype, top.size, x, *geometry, top, self.argmax)
            if mask is not None:
                mask[...] = self.argmax
        elif method == AVE:
            _pool('ave_pool_forward', dtype, top.size, x, *geometry, top)
        elif self.pool.train:
            _pool('sto_pool_forward_train', dtype, top.size, x, *geometry, uniform, top, self.argmax)
        else:
            _pool('sto_pool_forward_test', dtype, top.size, x, *geometry, top)

    def backward(self, top_diff, bottom_diff, mask=None):
        """bottom_diff (contiguous, overwritten): each pixel gathers over the windows covering it."""
        xp = get_array_module(top_diff)
        top_diff = xp.ascontiguousarray(top_diff)
        geometry = self._geometry(bottom_diff.shape, top_diff.shape)
        if self.pool.method == AVE:
            _pool('ave_pool_backward', top_diff.dtype, bottom_diff.size, top_diff, *geometry, bottom_diff)
            return
        if mask is not None:
            argmax = mask.astype(np.int32)
        elif self.argmax is not None:
            argmax = self.argmax
        else:                                   # no forward in TRAIN yet (Caffe reads stale indices)
            argmax = xp.full(top_diff.shape, -1, np.int32)
        _pool('argmax_pool_backward', top_diff.dtype, bottom_diff.size, top_diff, argmax, *geometry,
              bottom_diff)


def _pool(name, dtype, *args):
    gpu.kernel('pooling.cu', name, dtype)(*args)


def lrn_forward(layer, x, y):
    """ACROSS_CHANNELS LRN forward; keeps layer.scale and layer.factor for the backward."""
    dt = x.dtype.type
    layer.scale = layer.buffers.get('scale', x.shape, x.dtype, x)
    layer.factor = layer.buffers.get('factor', x.shape, x.dtype, x)
    gpu.kernel('lrn.cu', 'lrn_forward', x.dtype)(
        x.size, x, x.shape[1], x.shape[2] * x.shape[3], layer.size, dt(dt(layer.alpha) / dt(layer.size)),
        dt(layer.k), dt(-layer.beta), layer.scale, layer.factor, y)


def lrn_backward(layer, x, y, dy, dx):
    dt = x.dtype.type
    gpu.kernel('lrn.cu', 'lrn_backward', x.dtype)(
        x.size, x, y, dy, layer.scale, layer.factor, x.shape[1], x.shape[2] * x.shape[3], layer.size,
        dt(-2.0 * layer.alpha * layer.beta / layer.size), dx)
