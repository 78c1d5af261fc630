"""Common layers: InnerProduct, Concat, Slice, Split, Flatten, Reshape, Eltwise, Softmax, Tile,
Reduction, Crop, ArgMax, Filter, BatchReindex, Parameter, Silence, Embed.

Shapes, checks and the order of operations follow Caffe's *_layer.cpp; the
CPU path works on whole blobs (views reshaped to (outer, axis, inner)).
"""
import numpy as np

from .. import fillers, gpu
from ..layer import Layer, register
from ..proto import caffe_pb2
from .cores import matmul, matmul_add
from .neuron import scratch


def _scatter_add(xp, target, indices, values):
    """target[indices] += values, adding repeated indices up in their order (on the GPU too: a
    gather per table entry, no atomics)."""
    if xp is np:
        np.add.at(target, indices, values)
        return
    rows = target.shape[0]
    order = xp.argsort(indices, kind='stable')               # by index, then position
    placed = indices[order]
    every_row = xp.arange(rows)
    start = xp.searchsorted(placed, every_row, side='left').astype(np.int32)
    end = xp.searchsorted(placed, every_row, side='right').astype(np.int32)
    gpu.kernel('embed.cu', 'embed_backward', target.dtype)(   # a row: one whole item
        target.size, values, order.astype(np.int32), start, end, target.size // max(rows, 1), target)


def _share(top, bottom):
    top.share_data(bottom)
    top.share_diff(bottom)


@register('InnerProduct')
class InnerProductLayer(Layer):
    """y = x W^T + b over the axes from `axis` on; W is (num_output, K), or (K, num_output) with transpose."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.inner_product_param
        self.num_output = p.num_output
        if self.num_output <= 0:
            raise self.error('num_output must be given and positive')
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        self.k = bottom[0].count_range(self.canonical_axis(bottom[0], p.axis))
        if self.blobs:
            return
        shape = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
        self.blobs = [self.make_blob(shape)]
        fillers.fill(self.blobs[0], p.weight_filler)
        if self.bias_term:
            self.blobs.append(self.make_blob((self.num_output,)))
            fillers.fill(self.blobs[1], p.bias_filler)

    def reshape(self, bottom, top):
        axis = self.canonical_axis(bottom[0], self.layer_param.inner_product_param.axis)
        k = bottom[0].count_range(axis)
        if k != self.k:
            raise self.error('input size incompatible with inner product parameters: '
                             '%d inputs per item (bottom shape %s), the weights take %d'
                             % (k, bottom[0].shape, self.k))
        self.m = bottom[0].count_range(0, axis)
        top[0].reshape(bottom[0].shape[:axis] + (self.num_output,))

    def _weight_t(self):
        """The weights as a (K, num_output) view."""
        w = self.blobs[0].data
        return w if self.transpose else w.T

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.m, self.k)
        y = top[0].data.reshape(self.m, self.num_output)
        matmul(x, self._weight_t(), y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.m, self.num_output)
        if self.param_needs_backward(0):
            x = bottom[0].data.reshape(self.m, self.k)
            if self.transpose:
                matmul_add(x.T, dy, self.blobs[0].diff)
            else:
                matmul_add(dy.T, x, self.blobs[0].diff)
        if self.bias_term and self.param_needs_backward(1):
            self.blobs[1].diff[...] += dy.sum(axis=0)
        if propagate_down[0]:
            w = self.blobs[0].data
            matmul(dy, w.T if self.transpose else w, bottom[0].diff.reshape(self.m, self.k))


@register('Concat')
class ConcatLayer(Layer):
    """Joins the bottoms along `axis` (legacy: concat_dim)."""
    min_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.concat_param
        if p.HasField('axis') and p.HasField('concat_dim'):
            raise self.error('either axis or concat_dim should be specified; not both')

    def reshape(self, bottom, top):
        p = self.layer_param.concat_param
        num_axes = bottom[0].num_axes
        if p.HasField('concat_dim'):
            axis = p.concat_dim
            if axis >= num_axes:
                raise self.error('concat_dim %d out of range for %d-axis bottoms' % (axis, num_axes))
        else:
            axis = self.canonical_axis(bottom[0], p.axis)
        shape = list(bottom[0].shape)
        for i, blob in enumerate(bottom[1:], 1):
            if blob.num_axes != num_axes:
                raise self.error('all inputs must have the same number of axes: bottom 0 has shape %s, '
                                 'bottom %d has %s' % (bottom[0].shape, i, blob.shape))
            if any(blob.shape[j] != shape[j] for j in range(num_axes) if j != axis):
                raise self.error('all inputs must have the same shape except at the concat axis %d: '
                                 'bottom 0 has shape %s, bottom %d has %s'
                                 % (axis, bottom[0].shape, i, blob.shape))
            shape[axis] += blob.shape[axis]
        self.axis = axis
        self.outer = bottom[0].count_range(0, axis)
        self.inner = bottom[0].count_range(axis + 1)
        top[0].reshape(shape)
        if len(bottom) == 1:
            _share(top[0], bottom[0])

    def _pieces(self, bottom, top, which):
        """(bottom array, matching view of the top array) for each bottom."""
        whole = getattr(top[0], which).reshape(self.outer, top[0].shape[self.axis], self.inner)
        offset = 0
        for blob in bottom:
            n = blob.shape[self.axis]
            yield getattr(blob, which).reshape(self.outer, n, self.inner), whole[:, offset:offset + n]
            offset += n

    def forward(self, bottom, top):
        if len(bottom) == 1:
            return
        for part, window in self._pieces(bottom, top, 'data'):
            window[...] = part

    def backward(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            return
        for down, (part, window) in zip(propagate_down, self._pieces(bottom, top, 'diff')):
            if down:
                part[...] = window


@register('Slice')
class SliceLayer(Layer):
    """Cuts the bottom along `axis` (legacy: slice_dim) at slice_point, or evenly."""
    exact_num_bottom = 1
    min_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.slice_param
        if p.HasField('axis') and p.HasField('slice_dim'):
            raise self.error('either axis or slice_dim should be specified; not both')

    def reshape(self, bottom, top):
        p = self.layer_param.slice_param
        num_axes = bottom[0].num_axes
        if p.HasField('slice_dim'):
            axis = p.slice_dim
            if axis >= num_axes:
                raise self.error('slice_dim %d out of range for a %d-axis bottom' % (axis, num_axes))
        else:
            axis = self.canonical_axis(bottom[0], p.axis)
        size = bottom[0].shape[axis]
        points = list(p.slice_point)
        if points:
            if len(points) != len(top) - 1:
                raise self.error('%d slice points for %d tops (need one fewer than tops)'
                                 % (len(points), len(top)))
            if len(top) > size:
                raise self.error('%d tops but the slice axis %d of bottom shape %s has only %d'
                                 % (len(top), axis, bottom[0].shape, size))
            bounds = [0] + points + [size]
            if any(b <= a for a, b in zip(bounds, bounds[1:])):
                raise self.error('slice points %s must increase strictly within (0, %d)' % (points, size))
            sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        else:
            if size % len(top):
                raise self.error('number of top blobs (%d) should evenly divide input slice axis (%d)'
                                 % (len(top), size))
            sizes = [size // len(top)] * len(top)
        shape = list(bottom[0].shape)
        for blob, n in zip(top, sizes):
            shape[axis] = n
            blob.reshape(shape)
        self.axis = axis
        self.outer = bottom[0].count_range(0, axis)
        self.inner = bottom[0].count_range(axis + 1)
        if len(top) == 1:
            _share(top[0], bottom[0])

    def _pieces(self, bottom, top, which):
        whole = getattr(bottom[0], which).reshape(self.outer, bottom[0].shape[self.axis], self.inner)
        offset = 0
        for blob in top:
            n = blob.shape[self.axis]
            yield getattr(blob, which).reshape(self.outer, n, self.inner), whole[:, offset:offset + n]
            offset += n

    def forward(self, bottom, top):
        if len(top) == 1:
            return
        for part, window in self._pieces(bottom, top, 'data'):
            part[...] = window

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or len(top) == 1:
            return
        for part, window in self._pieces(bottom, top, 'diff'):
            window[...] = part


@register('Split')
class SplitLayer(Layer):
    """Every top shares the bottom's data; the backward sums the tops' diffs."""
    exact_num_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        for blob in top:
            if blob is bottom[0]:
                raise self.error('does not allow in-place computation')
            blob.reshape(bottom[0].shape)
            blob.share_data(bottom[0])

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        dx = bottom[0].diff
        if len(top) == 1:
            dx[...] = top[0].diff
            return
        xp.add(top[0].diff, top[1].diff, out=dx)
        for blob in top[2:]:
            dx += blob.diff


@register('Flatten')
class FlattenLayer(Layer):
    """Merges axes axis..end_axis into one; the top shares the bottom's memory."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error('does not allow in-place computation')
        p = self.layer_param.flatten_param
        start = self.canonical_axis(bottom[0], p.axis)
        end = self.canonical_axis(bottom[0], p.end_axis)
        if end < start:
            raise self.error('end_axis %d comes before axis %d for bottom shape %s'
                             % (p.end_axis, p.axis, bottom[0].shape))
        shape = bottom[0].shape
        top[0].reshape(shape[:start] + (bottom[0].count_range(start, end + 1),) + shape[end + 1:])
        _share(top[0], bottom[0])

    def forward(self, bottom, top):
        pass


@register('Reshape')
class ReshapeLayer(Layer):
    """New shape for axes [axis, axis + num_axes): 0 copies a bottom dimension, one -1 is inferred."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error('does not allow in-place computation')
        dims = list(self.layer_param.reshape_param.shape.dim)
        self.copy_axes = [i for i, d in enumerate(dims) if d == 0]
        inferred = [i for i, d in enumerate(dims) if d == -1]
        if len(inferred) > 1:
            raise self.error('new shape contains multiple -1 dims; at most a single (1) value of -1 '
                             'may be specified')
        if any(d < -1 for d in dims):
            raise self.error('new shape %s has a dimension below -1' % dims)
        self.inferred_axis = inferred[0] if inferred else None
        self.constant_count = int(np.prod([d for d in dims if d > 0], dtype=np.int64))
        self.dims = dims

    def reshape(self, bottom, top):
        p = self.layer_param.reshape_param
        n = bottom[0].num_axes
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        if not 0 <= start <= n:
            raise self.error('axis %d out of range for a %d-axis bottom' % (p.axis, n))
        if p.num_axes < -1:
            raise self.error('num_axes must be >= 0, or -1 for all; got %d' % p.num_axes)
        end = n if p.num_axes == -1 else start + p.num_axes
        if end > n:
            raise self.error('axis + num_axes = %d is out of range for a %d-axis bottom' % (end, n))
        shape = list(bottom[0].shape[:start]) + self.dims + list(bottom[0].shape[end:])
        for i in self.copy_axes:
            if start + i >= n:
                raise self.error('new shape contains a 0, but there was no corresponding bottom axis '
                                 'to copy (bottom shape %s)' % (bottom[0].shape,))
            shape[start + i] = bottom[0].shape[start + i]
        if self.inferred_axis is not None:
            explicit = (self.constant_count * bottom[0].count_range(0, start) * bottom[0].count_range(end)
                        * int(np.prod([shape[start + i] for i in self.copy_axes], dtype=np.int64)))
            if explicit == 0 or bottom[0].count % explicit:
                raise self.error('bottom count (%d) must be divisible by the product of the specified '
                                 'dimensions (%d)' % (bottom[0].count, explicit))
            shape[start + self.inferred_axis] = bottom[0].count // explicit
        count = int(np.prod(shape, dtype=np.int64))
        if count != bottom[0].count:
            raise self.error('output count must match input count: shape %s has %d, bottom %s has %d'
                             % (shape, count, bottom[0].shape, bottom[0].count))
        top[0].reshape(shape)
        _share(top[0], bottom[0])

    def forward(self, bottom, top):
        pass


@register('Eltwise')
class EltwiseLayer(Layer):
    """Elementwise SUM (with coefficients), PROD or MAX of the bottoms."""
    min_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.eltwise_param
        if p.coeff and len(p.coeff) != len(bottom):
            raise self.error('takes one coefficient per bottom blob (%d coefficients, %d bottoms)'
                             % (len(p.coeff), len(bottom)))
        if p.operation == p.PROD and p.coeff:
            raise self.error('only takes coefficients for summation')
        self.op = p.operation
        self.coeffs = [self.dtype.type(c) for c in p.coeff] or [self.dtype.type(1)] * len(bottom)
        self.stable_prod_grad = p.stable_prod_grad

    def reshape(self, bottom, top):
        for i, blob in enumerate(bottom[1:], 1):
            if blob.shape != bottom[0].shape:
                raise self.error('bottom[0]: %s, bottom[%d]: %s'
                                 % (bottom[0].shape_string(), i, blob.shape_string()))
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        y = top[0].data
        p = caffe_pb2.EltwiseParameter
        if self.op == p.PROD:
            xp.multiply(bottom[0].data, bottom[1].data, out=y)
            for blob in bottom[2:]:
                y *= blob.data
        elif self.op == p.SUM:
            first = self.coeffs[0]
            if first == 1:
                xp.copyto(y, bottom[0].data)
            else:
                xp.multiply(bottom[0].data, first, out=y)
            for blob, c in zip(bottom[1:], self.coeffs[1:]):
                if c == 1:
                    y += blob.data
                elif c == -1:
                    y -= blob.data
                else:
                    y += c * blob.data
        else:
            self._forward_max(xp, bottom, y)

    def _forward_max(self, xp, bottom, y):
        """Caffe's tie rule: bottom 1 wins a tie with bottom 0; a later bottom must be strictly greater."""
        shape = bottom[0].shape
        argmax = scratch(self, 'argmax', shape, np.int32, xp)
        wins = scratch(self, 'wins', shape, bool, xp)
        a, b = bottom[0].data, bottom[1].data
        xp.less_equal(a, b, out=wins)        # bottom 1 wins where not a > b
        xp.copyto(argmax, wins)
        xp.maximum(a, b, out=y)
        for k, blob in enumerate(bottom[2:], 2):
            xp.greater(blob.data, y, out=wins)
            xp.copyto(argmax, k, where=wins)
            xp.maximum(y, blob.data, out=y)

    def backward(self, top, propagate_down, bottom):
        xp = bottom[0].xp
        p = caffe_pb2.EltwiseParameter
        dy = top[0].diff
        for i, (down, blob) in enumerate(zip(propagate_down, bottom)):
            if not down:
                continue
            dx = blob.diff
            if self.op == p.PROD:
                if self.stable_prod_grad:
                    others = [b for j, b in enumerate(bottom) if j != i]
                    xp.copyto(dx, others[0].data)
                    for other in others[1:]:
                        dx *= other.data
                else:
                    xp.divide(top[0].data, blob.data, out=dx)
                dx *= dy
            elif self.op == p.SUM:
                if self.coeffs[i] == 1:
                    xp.copyto(dx, dy)
                else:
                    xp.multiply(dy, self.coeffs[i], out=dx)
            else:
                mine = scratch(self, 'wins', dy.shape, bool, xp)
                xp.equal(scratch(self, 'argmax', dy.shape, np.int32, xp), i, out=mine)
                xp.multiply(dy, mine, out=dx)


@register('Softmax')
class SoftmaxLayer(Layer):
    """exp(x - max) / sum over `axis`."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        axis = self.canonical_axis(bottom[0], self.layer_param.softmax_param.axis)
        self.shape3 = (bottom[0].count_range(0, axis), bottom[0].shape[axis], bottom[0].count_range(axis + 1))
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        outer, channels, inner = self.shape3
        x = bottom[0].data.reshape(self.shape3)
        y = top[0].data.reshape(self.shape3)
        scale = scratch(self, 'scale', (outer, 1, inner), self.dtype, xp)
        xp.max(x, axis=1, keepdims=True, out=scale)
        xp.subtract(x, scale, out=y)
        if xp is np and y.dtype == np.float32:
            # Caffe's std::exp is glibc's expf, correctly rounded (to 0.502 ulp); NumPy's float32
            # exp is an ulp off on ~40% of values, enough to drift a training run: exp in double
            xp.exp(y, out=y, dtype=np.float64)
        else:
            xp.exp(y, out=y)
        xp.sum(y, axis=1, keepdims=True, out=scale)
        y /= scale

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        outer, channels, inner = self.shape3
        y = top[0].data.reshape(self.shape3)
        dy = top[0].diff.reshape(self.shape3)
        dx = bottom[0].diff.reshape(self.shape3)
        scale = scratch(self, 'scale', (outer, 1, inner), self.dtype, xp)
        if top[0] is bottom[0]:
            xp.sum(dy * y, axis=1, keepdims=True, out=scale)
        else:
            xp.multiply(dy, y, out=dx)
            xp.sum(dx, axis=1, keepdims=True, out=scale)
        xp.subtract(dy, scale, out=dx)
        dx *= y


@register('Tile')
class TileLayer(Layer):
    """Repeats the axes from `axis` on `tiles` times."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.layer_param.tile_param
        if not p.HasField('tiles'):
            raise self.error('number of tiles must be specified')
        if p.tiles <= 0:
            raise self.error('number of tiles must be positive, got %d' % p.tiles)
        axis = self.canonical_axis(bottom[0], p.axis)
        self.tiles = p.tiles
        self.outer = bottom[0].count_range(0, axis)
        self.inner = bottom[0].count_range(axis)
        shape = list(bottom[0].shape)
        shape[axis] *= p.tiles
        top[0].reshape(shape)

    def forward(self, bottom, top):
        y = top[0].data.reshape(self.outer, self.tiles, self.inner)
        y[...] = bottom[0].data.reshape(self.outer, 1, self.inner)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.outer, self.tiles, self.inner)
        bottom[0].xp.sum(dy, axis=1, out=bottom[0].diff.reshape(self.outer, self.inner))


@register('Reduction')
class ReductionLayer(Layer):
    """SUM, ASUM, SUMSQ or MEAN over the axes from `axis` on, times coeff."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        self.op = self.layer_param.reduction_param.operation
        if self.op not in caffe_pb2.ReductionParameter.ReductionOp.values():
            raise self.error('unknown reduction operation %d' % self.op)

    def reshape(self, bottom, top):
        p = self.layer_param.reduction_param
        axis = self.canonical_axis(bottom[0], p.axis)
        top[0].reshape(bottom[0].shape[:axis])
        self.num = bottom[0].count_range(0, axis)
        self.dim = bottom[0].count_range(axis)
        self.coeff = self.dtype.type(p.coeff)
        if self.op == p.MEAN:
            self.coeff /= self.dtype.type(self.dim)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        p = caffe_pb2.ReductionParameter
        x = bottom[0].data.reshape(self.num, self.dim)
        y = top[0].data.reshape(self.num)
        if self.op in (p.SUM, p.MEAN):
            xp.sum(x, axis=1, out=y)
        elif self.op == p.ASUM:
            xp.sum(xp.abs(x), axis=1, out=y)
        else:
            xp.sum(x * x, axis=1, out=y)
        if self.coeff != 1:
            y *= self.coeff

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        p = caffe_pb2.ReductionParameter
        coeff = top[0].diff.reshape(self.num, 1) * self.coeff
        dx = bottom[0].diff.reshape(self.num, self.dim)
        if self.op in (p.SUM, p.MEAN):
            dx[...] = coeff
        elif self.op == p.ASUM:
            xp.sign(bottom[0].data.reshape(self.num, self.dim), out=dx)
            dx *= coeff
        else:
            coeff *= 2
            xp.multiply(bottom[0].data.reshape(self.num, self.dim), coeff, out=dx)


@register('Crop')
class CropLayer(Layer):
    """Crops bottom 0 to bottom 1's shape on the axes from `axis` on, at the given offset(s)."""
    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.crop_param
        start = self.canonical_axis(bottom[0], p.axis)
        if len(p.offset) > 1 and start + len(p.offset) != bottom[0].num_axes:
            raise self.error('number of offset values specified (%d) must be equal to the number of '
                             'dimensions following axis %d (%d)'
                             % (len(p.offset), start, bottom[0].num_axes - start))

    def reshape(self, bottom, top):
        p = self.layer_param.crop_param
        start = self.canonical_axis(bottom[0], p.axis)
        if bottom[1].num_axes < bottom[0].num_axes:
            raise self.error('bottom 1 (shape %s) has fewer axes than bottom 0 (shape %s)'
                             % (bottom[1].shape, bottom[0].shape))
        shape, window = [], []
        for i, size in enumerate(bottom[0].shape):
            offset = 0
            if i >= start:
                offset = p.offset[0] if len(p.offset) == 1 else p.offset[i - start] if p.offset else 0
                if size - offset < bottom[1].shape[i]:
                    raise self.error('the crop for dimension %d is out-of-bounds with size %d and offset %d '
                                     '(bottom 0 has %d)' % (i, bottom[1].shape[i], offset, size))
                size = bottom[1].shape[i]
            shape.append(size)
            window.append(slice(offset, offset + size))
        self.window = tuple(window)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[self.window]

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        dx.fill(0)
        dx[self.window] = top[0].diff


@register('ArgMax')
class ArgMaxLayer(Layer):
    """Indices (and/or values) of the top_k largest entries, per item or along `axis`; no backward."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.argmax_param
        self.out_max_val = p.out_max_val
        self.top_k = p.top_k
        self.axis = None
        if self.top_k < 1:
            raise self.error('top_k must not be less than 1')
        if p.HasField('axis'):
            self.axis = self.canonical_axis(bottom[0], p.axis)
            if self.top_k > bottom[0].shape[self.axis]:
                raise self.error('top_k (%d) must be less than or equal to the dimension of the axis (%d)'
                                 % (self.top_k, bottom[0].shape[self.axis]))
        elif self.top_k > bottom[0].count_range(1):
            raise self.error('top_k (%d) must be less than or equal to the dimension of the flattened '
                             'bottom blob per instance (%d)' % (self.top_k, bottom[0].count_range(1)))

    def reshape(self, bottom, top):
        if self.axis is not None:
            shape = list(bottom[0].shape)
            shape[self.axis] = self.top_k
        else:
            shape = [1] * max(bottom[0].num_axes, 3)
            shape[0] = bottom[0].shape[0]
            shape[1] = 2 if self.out_max_val else 1
            shape[2] = self.top_k
        top[0].reshape(shape)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].data
        k = self.top_k
        if self.axis is not None:
            outer, dim = bottom[0].count_range(0, self.axis), x.shape[self.axis]
            rows = x.reshape(outer, dim, -1).transpose(0, 2, 1).reshape(-1, dim)
        else:
            dim = bottom[0].count_range(1)
            rows = x.reshape(-1, dim)
        # std::partial_sort with std::greater on (value, index): larger values first, ties by larger index
        order = xp.argsort(-rows[:, ::-1], axis=1, kind='stable')[:, :k]
        values = xp.take_along_axis(rows[:, ::-1], order, axis=1)
        indices = (dim - 1 - order).astype(self.dtype)
        if self.axis is not None:
            out = values if self.out_max_val else indices
            y = top[0].data.reshape(outer, k, -1)
            y[...] = out.reshape(outer, -1, k).transpose(0, 2, 1)
        elif self.out_max_val:
            y = top[0].data.reshape(-1, 2, k)
            y[:, 0] = indices
            y[:, 1] = values
        else:
            top[0].data.reshape(-1, k)[...] = indices

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error('has no backward (argmax is not differentiable)')


@register('Filter')
class FilterLayer(Layer):
    """Keeps the items (along axis 0) whose selector (the last bottom) is non-zero."""
    min_bottom = 2
    min_top = 1

    def setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise self.error('needs one top per filtered bottom (%d bottoms including the selector, '
                             '%d tops)' % (len(bottom), len(top)))
        self.first_reshape = True

    def allow_force_backward(self, bottom_index):
        return bottom_index != len(self.layer_param.bottom) - 1

    def reshape(self, bottom, top):
        selector = bottom[-1]
        if any(d != 1 for d in selector.shape[1:]):
            raise self.error('selector blob dimensions must be singletons (1), except the first; got %s'
                             % (selector.shape,))
        for i, blob in enumerate(bottom[:-1]):
            if blob.shape[0] != selector.shape[0]:
                raise self.error('each bottom should have the same 0th dimension as the selector blob: '
                                 'bottom %d has shape %s, the selector %s' % (i, blob.shape, selector.shape))
        self.indices = selector.xp.flatnonzero(selector.data.reshape(-1))
        num = len(self.indices)
        if self.first_reshape:      # as Caffe: the selector is not filled at setup
            num = bottom[0].shape[0]
            self.first_reshape = False
        for blob, source in zip(top, bottom):
            blob.reshape((num,) + source.shape[1:])

    def forward(self, bottom, top):
        for blob, source in zip(top, bottom):
            blob.data[...] = source.data[self.indices]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise self.error('cannot backpropagate to the selector (the last bottom)')
        for down, blob, source in zip(propagate_down, top, bottom):
            if down:
                source.diff.fill(0)
                source.diff[self.indices] = blob.diff


@register('BatchReindex')
class BatchReindexLayer(Layer):
    """Top item i is bottom 0's item indices[i] (bottom 1, floats); the backward adds up repeats."""
    exact_num_bottom = 2
    exact_num_top = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def reshape(self, bottom, top):
        if bottom[1].num_axes != 1:
            raise self.error('the index bottom must have 1 axis, got shape %s' % (bottom[1].shape,))
        top[0].reshape(bottom[1].shape[:1] + bottom[0].shape[1:])

    def _indices(self, bottom):
        raw = bottom[1].data
        if raw.size and (float(raw.min()) < 0 or float(raw.max()) >= bottom[0].shape[0]):
            raise self.error('index out of range [0, %d): the indices span [%g, %g]'
                             % (bottom[0].shape[0], float(raw.min()), float(raw.max())))
        return raw.astype(np.int64)

    def forward(self, bottom, top):
        idx = self._indices(bottom)
        if top[0].count:
            bottom[0].xp.take(bottom[0].data, idx, axis=0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error('cannot backpropagate to the index bottom')
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        dx.fill(0)
        _scatter_add(bottom[0].xp, dx, self._indices(bottom), top[0].diff)


@register('Parameter')
class ParameterLayer(Layer):
    """Outputs its learnable blob (parameter_param.shape) as the top, sharing data and diff."""
    exact_num_bottom = 0
    exact_num_top = 1

    def setup(self, bottom, top):
        shape = tuple(self.layer_param.parameter_param.shape.dim)
        if not self.blobs:
            self.blobs = [self.make_blob(shape)]
        top[0].reshape(shape)
        _share(top[0], self.blobs[0])

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        _share(top[0], self.blobs[0])


@register('Silence')
class SilenceLayer(Layer):
    """Consumes its bottoms; the backward zeroes their diffs."""
    min_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for down, blob in zip(propagate_down, bottom):
            if down:
                blob.diff.fill(0)


@register('Embed')
class EmbedLayer(Layer):
    """Looks up rows of a (input_dim, num_output) table by integer-valued indices (+ bias)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.embed_param
        self.num_output = p.num_output
        if self.num_output <= 0:
            raise self.error('num_output must be positive')
        self.input_dim = p.input_dim
        if self.input_dim <= 0:
            raise self.error('input_dim must be positive')
        self.bias_term = p.bias_term
        if self.blobs:
            return
        self.blobs = [self.make_blob((self.input_dim, self.num_output))]
        fillers.fill(self.blobs[0], p.weight_filler)
        if self.bias_term:
            self.blobs.append(self.make_blob((self.num_output,)))
            fillers.fill(self.blobs[1], p.bias_filler)

    def allow_force_backward(self, bottom_index):
        return False

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.num_output,))

    def _indices(self, bottom):
        raw = bottom[0].data.reshape(-1)
        idx = raw.astype(np.int64)
        if raw.size and (bool((idx != raw).any()) or int(idx.min()) < 0 or int(idx.max()) >= self.input_dim):
            raise self.error('indices must be integers in [0, %d); they span [%g, %g]'
                             % (self.input_dim, float(raw.min()), float(raw.max())))
        return idx

    def forward(self, bottom, top):
        xp = bottom[0].xp
        y = top[0].data.reshape(-1, self.num_output)
        xp.take(self.blobs[0].data, self._indices(bottom), axis=0, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("can't backpropagate to the input (indices)")
        dy = top[0].diff.reshape(-1, self.num_output)
        if self.param_needs_backward(0):
            _scatter_add(bottom[0].xp, self.blobs[0].diff, self._indices(bottom), dy)
        if self.bias_term and self.param_needs_backward(1):
            self.blobs[1].diff[...] += dy.sum(axis=0)
