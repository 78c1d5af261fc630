"""Normalization layers: BatchNorm, MVN, Scale, Bias (LRN lives in vision.py).

Formulas, checks and the order of the float operations follow Caffe's
batch_norm_layer.cpp, mvn_layer.cpp, scale_layer.cpp and bias_layer.cpp; the
CPU path works on (outer, dim, inner) views of whole blobs.
"""
import numpy as np

from .. import fillers
from ..layer import Layer, register
from ..proto import caffe_pb2
from .neuron import scratch


def _learned_shape(layer, bottom, axis, num_axes, what):
    """Shape of a learned scale/bias: bottom's axes [axis, axis + num_axes) (-1: to the end)."""
    axis = layer.canonical_axis(bottom, axis)
    if num_axes < -1:
        raise layer.error('num_axes must be non-negative, or -1 to extend to the end of bottom[0]')
    if num_axes >= 0 and bottom.num_axes < axis + num_axes:
        raise layer.error("%s blob's shape extends past bottom[0]'s shape when applied starting "
                          'with bottom[0] axis = %d' % (what, axis))
    return bottom.shape[axis:] if num_axes == -1 else bottom.shape[axis:axis + num_axes]


def _layout(layer, bottom, operand_shape, axis, what):
    """(outer, dim, inner) splitting bottom around an operand of `operand_shape` placed at `axis`
    (axis 0 for a scalar operand, as Caffe)."""
    n = len(operand_shape)
    axis = 0 if n == 0 else layer.canonical_axis(bottom, axis)
    if bottom.num_axes < axis + n:
        raise layer.error("%s blob's shape extends past bottom[0]'s shape when applied starting "
                          'with bottom[0] axis = %d' % (what, axis))
    for i, size in enumerate(operand_shape):
        if bottom.shape[axis + i] != size:
            raise layer.error('dimension mismatch between bottom[0]->shape(%d) = %d and '
                              '%s->shape(%d) = %d' % (axis + i, bottom.shape[axis + i], what, i, size))
    return bottom.count_range(0, axis), int(np.prod(operand_shape, dtype=np.int64)), \
        bottom.count_range(axis + n)


def _sum_outer_inner(array3):
    """Sum an (outer, dim, inner) array to (dim,): over inner first, then outer, as Caffe's gemvs."""
    return array3.sum(axis=2).sum(axis=0)


@register('BatchNorm')
class BatchNormLayer(Layer):
    """Per-channel (x - mean) / sqrt(var + eps), with batch statistics (TRAIN by default) or the
    stored ones (TEST by default). Blobs: running sums of mean and variance and their scale
    factor; they are statistics, never learned (lr_mult forced to 0)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.batch_norm_param
        self.fraction = self.dtype.type(param.moving_average_fraction)
        self.global_stats = self.phase == caffe_pb2.TEST
        if param.HasField('use_global_stats'):
            self.global_stats = param.use_global_stats
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        self.eps = self.dtype.type(param.eps)
        if not self.blobs:
            self.blobs = [self.make_blob((self.channels,)), self.make_blob((self.channels,)),
                          self.make_blob((1,))]
        for i in range(len(self.blobs)):
            specs = self.layer_param.param
            if len(specs) == i:
                specs.add().lr_mult = 0
            elif specs[i].lr_mult != 0:
                raise self.error('Cannot configure batch normalization statistics as layer '
                                 'parameters (param %d has lr_mult %g).' % (i, specs[i].lr_mult))

    def reshape(self, bottom, top):
        if bottom[0].num_axes > 1 and bottom[0].shape[1] != self.channels:
            raise self.error('bottom has %d channels, the layer was set up with %d'
                             % (bottom[0].shape[1], self.channels))
        top[0].reshape(bottom[0].shape)
        num = bottom[0].shape[0]
        self.shape3 = (num, self.channels, bottom[0].count // (num * self.channels) if num else 0)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].data.reshape(self.shape3)
        y = top[0].data.reshape(self.shape3)
        if self.global_stats:
            factor = self.blobs[2].data.reshape(-1)[0]
            factor = self.dtype.type(0) if factor == 0 else 1 / factor
            mean = self.blobs[0].data.reshape(-1) * factor
            var = self.blobs[1].data.reshape(-1) * factor
        else:
            count = self.shape3[0] * self.shape3[2]
            mean = _sum_outer_inner(x) * self.dtype.type(1.0 / count)
        xp.subtract(x, mean[:, None], out=y)
        if not self.global_stats:
            var = _sum_outer_inner(y * y) * self.dtype.type(1.0 / count)
            self.blobs[2].data *= self.fraction
            self.blobs[2].data += 1
            m = bottom[0].count // self.channels
            correction = self.dtype.type(m) / self.dtype.type(m - 1) if m > 1 else self.dtype.type(1)
            running_mean = self.blobs[0].data.reshape(-1)
            running_var = self.blobs[1].data.reshape(-1)
            running_mean *= self.fraction
            running_mean += mean
            running_var *= self.fraction
            running_var += correction * var
        self.std = xp.sqrt(var + self.eps)
        y /= self.std[:, None]
        # kept for backward: a later in-place layer may overwrite the top
        self.x_norm = scratch(self, 'x_norm', self.shape3, self.dtype, xp)
        self.x_norm[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        dy = top[0].diff.reshape(self.shape3)
        if top[0] is bottom[0]:
            dy = dy.copy()
        dx = bottom[0].diff.reshape(self.shape3)
        if self.global_stats:
            xp.divide(dy, self.std[:, None], out=dx)
            return
        y = self.x_norm
        xp.multiply(y, dy, out=dx)
        sum_dy_y = _sum_outer_inner(dx)
        xp.multiply(y, sum_dy_y[:, None], out=dx)
        dx += _sum_outer_inner(dy)[:, None]
        dx *= self.dtype.type(-1.0 / (self.shape3[0] * self.shape3[2]))
        dx += dy
        dx /= self.std[:, None]


@register('MVN')
class MVNLayer(Layer):
    """Subtract the mean over each (num, channel) or, across_channels, each num; with
    normalize_variance divide by std + eps. The top has Caffe's 4-d legacy shape."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.mvn_param
        self.scale_variance = param.normalize_variance
        self.across_channels = param.across_channels
        self.eps = self.dtype.type(param.eps)

    def reshape(self, bottom, top):
        try:
            shape = tuple(bottom[0].legacy_dim(k) for k in range(4))
        except ValueError as exc:
            raise self.error(str(exc)) from None
        top[0].reshape(shape)
        groups = shape[0] if self.across_channels else shape[0] * shape[1]
        self.shape2 = (groups, bottom[0].count // groups if groups else 0)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        groups, dim = self.shape2
        x = bottom[0].data.reshape(self.shape2)
        y = top[0].data.reshape(self.shape2)
        mean = x.sum(axis=1) * self.dtype.type(1.0 / dim)
        xp.subtract(x, mean[:, None], out=y)
        if self.scale_variance:
            var = (y * y).sum(axis=1) * self.dtype.type(1.0 / dim)
            self.std = xp.sqrt(var) + self.eps
            y /= self.std[:, None]

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        groups, dim = self.shape2
        dy = top[0].diff.reshape(self.shape2)
        dx = bottom[0].diff.reshape(self.shape2)
        if not self.scale_variance:
            mean = dy.sum(axis=1) * self.dtype.type(1.0 / dim)
            xp.subtract(dy, mean[:, None], out=dx)
            return
        y = top[0].data.reshape(self.shape2)
        sum_dy_y = (y * dy).sum(axis=1)
        sum_dy = dy.sum(axis=1)
        if top[0] is bottom[0]:
            dy = dy.copy()
        xp.multiply(y, sum_dy_y[:, None], out=dx)
        dx += sum_dy[:, None]
        dx *= self.dtype.type(-1.0 / dim)
        dx += dy
        dx /= self.std[:, None]


def _add_bias(xp, source, target, bias, layout):
    """target = source + bias, arrays viewed as `layout` (outer, dim, inner), bias as (dim,)."""
    xp.add(source.reshape(layout), bias.reshape(1, -1, 1), out=target.reshape(layout))


def _reduce_into(array3, target, accumulate):
    """array3 (outer, dim, inner) summed to `target`'s shape (dim elements), as += or =."""
    grad = _sum_outer_inner(array3).reshape(target.shape)
    if accumulate:
        target += grad
    else:
        target[...] = grad


@register('Bias')
class BiasLayer(Layer):
    """top = bottom[0] + b, b the second bottom or a learned blob of bottom[0]'s shape at
    [axis, axis + num_axes), broadcast over the other axes."""
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.bias_param
        if len(bottom) == 1 and not self.blobs:
            shape = _learned_shape(self, bottom[0], param.axis, param.num_axes, 'bias')
            self.blobs = [self.make_blob(shape)]
            fillers.fill(self.blobs[0], param.filler)

    def _bias(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        self.layout = _layout(self, bottom[0], self._bias(bottom).shape,
                              self.layer_param.bias_param.axis, 'bias')
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        _add_bias(bottom[0].xp, bottom[0].data, top[0].data, self._bias(bottom).data, self.layout)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff[...] = top[0].diff
        dy = top[0].diff.reshape(self.layout)
        if len(bottom) > 1:
            if propagate_down[1]:
                _reduce_into(dy, bottom[1].diff, accumulate=False)
        elif self.param_needs_backward(0):
            _reduce_into(dy, self.blobs[0].diff, accumulate=True)


@register('Scale')
class ScaleLayer(Layer):
    """top = bottom[0] * s (+ b with bias_term), s the second bottom or a learned blob of
    bottom[0]'s shape at [axis, axis + num_axes) (filled with 1 unless a filler is given).
    The learned bias, shaped like the scale, is the layer's last blob."""
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.scale_param
        if len(bottom) == 1 and not self.blobs:
            shape = _learned_shape(self, bottom[0], param.axis, param.num_axes, 'scale')
            self.blobs = [self.make_blob(shape)]
            filler = param.filler
            if not param.HasField('filler'):
                filler = caffe_pb2.FillerParameter(type='constant', value=1)
            fillers.fill(self.blobs[0], filler)
        self.bias_index = None
        if param.bias_term:
            num_axes = bottom[1].num_axes if len(bottom) > 1 else param.num_axes
            shape = _learned_shape(self, bottom[0], param.axis, num_axes, 'bias')
            if len(self.blobs) + len(bottom) < 3:
                self.blobs.append(self.make_blob(shape))
                fillers.fill(self.blobs[-1], param.bias_filler)
            self.bias_index = len(self.blobs) - 1

    def _scale(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        axis = self.layer_param.scale_param.axis
        self.layout = _layout(self, bottom[0], self._scale(bottom).shape, axis, 'scale')
        if self.bias_index is not None:
            self.bias_layout = _layout(self, bottom[0], self.blobs[self.bias_index].shape, axis, 'bias')
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].data.reshape(self.layout)
        if top[0] is bottom[0]:
            # the backward needs the input that the in-place product overwrites
            self.saved = scratch(self, 'saved', self.layout, self.dtype, xp)
            self.saved[...] = x
        xp.multiply(x, self._scale(bottom).data.reshape(1, -1, 1), out=top[0].data.reshape(self.layout))
        if self.bias_index is not None:
            _add_bias(xp, top[0].data, top[0].data, self.blobs[self.bias_index].data, self.bias_layout)

    def backward(self, top, propagate_down, bottom):
        xp = bottom[0].xp
        dy = top[0].diff.reshape(self.layout)
        if self.bias_index is not None and self.param_needs_backward(self.bias_index):
            _reduce_into(top[0].diff.reshape(self.bias_layout), self.blobs[self.bias_index].diff,
                       accumulate=True)
        scale = self._scale(bottom)
        learned = len(bottom) == 1
        if (learned and self.param_needs_backward(0)) or (not learned and propagate_down[1]):
            x = self.saved if top[0] is bottom[0] else bottom[0].data.reshape(self.layout)
            product = scratch(self, 'product', self.layout, self.dtype, xp)
            xp.multiply(dy, x, out=product)
            _reduce_into(product, scale.diff, accumulate=learned)
        if propagate_down[0]:
            xp.multiply(dy, scale.data.reshape(1, -1, 1), out=bottom[0].diff.reshape(self.layout))
