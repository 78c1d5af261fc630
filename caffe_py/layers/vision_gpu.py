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

MAX, AVE = caffe_pb2.PoolingParameter.MAX, caffe_pb2.PoolingParameter.AVE

# the columns of one chunk of images may take this much device memory
DEVICE_COL_BYTES = 1 << 30


def _pair(values, fill):
    """A 2-D geometry value from a 1-D or 2-D one (a 1-D convolution is 2-D with height 1)."""
    return tuple(values) if len(values) == 2 else (fill,) + tuple(values)


class ColumnKernels:
    """kernels/im2col.cu for a 1-D or 2-D window over images of `channels` channels: the columns
    of m images are one (channels * kernel_h * kernel_w, m * P) matrix, P output positions."""

    def __init__(self, window, channels):
        self.channels = channels
        height, width = _pair(window.size, 1)
        out_h, out_w = _pair(window.out, 1)
        self.positions = out_h * out_w
        # the kernels' order: image size, kernel, pad, stride, dilation (each h, w), output size
        self.taps = ((height, width) + _pair(window.kernel, 1) + _pair(window.pad, 0) + _pair(window.stride, 1)
                     + _pair(window.dilation, 1) + (out_h, out_w))

    def im2col(self, images, col):
        """col (flat) = the columns of images (m, C, ...)."""
        m = len(images)
        gpu.kernel('im2col.cu', 'im2col', images.dtype)(
            self.channels * m * self.positions, images, m, self.channels, *self.taps, col)

    def col2im(self, col, images):
        """images (m, C, ...) = the sum of the column entries that read each pixel."""
        gpu.kernel('im2col.cu', 'col2im', images.dtype)(
            images.size, col, len(images), self.channels, *self.taps, images)


def im2col_layer(window, bottom, top):
    """The Im2col layer's forward: top[n] (C * kernel, P) = the columns of image n of `bottom`."""
    kernels = ColumnKernels(window, bottom.shape[1])
    for n in range(bottom.shape[0]):
        kernels.im2col(bottom[n:n + 1], top[n])


def col2im_layer(window, top_diff, bottom_diff):
    """The Im2col layer's backward: each pixel gathers the column entries that copied it."""
    kernels = ColumnKernels(window, bottom_diff.shape[1])
    for n in range(bottom_diff.shape[0]):
        kernels.col2im(top_diff[n], bottom_diff[n:n + 1])


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
