"""Elementwise (neuron) layers: ReLU, Sigmoid, TanH, Dropout, ELU, AbsVal, BNLL, Power, Exp, Log,
Threshold, Clip, Swish, PReLU.

Each follows Caffe's *_layer.cpp formula for formula, including what the backward
reads: where Caffe reads the bottom data and the layer runs in place, that is the
output, as in Caffe.
"""
import numpy as np

from .. import backend, fillers, rng as caffe_rng
from ..layer import Layer, register
from ..proto import caffe_pb2
from .cores import split_apply


def scratch(layer, name, shape, dtype, xp):
    """A reusable work array of the layer, reallocated only when shape, dtype or array module change."""
    buffers = layer.__dict__.setdefault('_scratch', {})
    array = buffers.get(name)
    if (array is None or array.shape != tuple(shape) or array.dtype != np.dtype(dtype)
            or backend.get_array_module(array) is not xp):
        array = xp.empty(shape, dtype)
        buffers[name] = array
    return array


class NeuronLayer(Layer):
    """One bottom, one top of the same shape (in place allowed)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def scalar(self, value):
        """`value` as a scalar of the layer's dtype (keeps NumPy from promoting float32 arrays)."""
        return self.dtype.type(value)


@register('ReLU')
class ReLULayer(NeuronLayer):
    """max(x, 0) + negative_slope * min(x, 0)."""

    def setup(self, bottom, top):
        self.slope = self.layer_param.relu_param.negative_slope

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x, y = bottom[0].data, top[0].data
        if self.slope == 0:
            split_apply(_relu, y, x)
            return
        negative = xp.minimum(x, 0)
        negative *= self.scalar(self.slope)
        xp.maximum(x, 0, out=y)
        y += negative

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        x = bottom[0].data  # the output when in place, as in Caffe
        mask = scratch(self, 'mask', x.shape, bool, xp)
        if self.slope == 0:
            split_apply(_relu_grad, bottom[0].diff, x, top[0].diff, mask)
            return
        # Caffe's factor (x > 0) + slope * (x <= 0), exactly 1 or slope
        xp.less_equal(x, 0, out=mask)
        factor = xp.multiply(mask, self.scalar(self.slope))
        xp.greater(x, 0, out=mask)
        factor += mask
        xp.multiply(top[0].diff, factor, out=bottom[0].diff)


def _relu(y, x):
    backend.get_array_module(y).maximum(x, 0, out=y)


def _relu_grad(dx, x, dy, mask):
    xp = backend.get_array_module(dx)
    xp.greater(x, 0, out=mask)
    xp.multiply(dy, mask, out=dx)


@register('Sigmoid')
class SigmoidLayer(NeuronLayer):
    """0.5 * tanh(0.5 x) + 0.5; the backward reads the output."""

    def forward(self, bottom, top):
        xp = bottom[0].xp
        y = top[0].data
        xp.multiply(bottom[0].data, 0.5, out=y)
        xp.tanh(y, out=y)
        y *= 0.5
        y += 0.5

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        y = top[0].data
        grad = xp.subtract(1, y)
        grad *= y
        xp.multiply(top[0].diff, grad, out=bottom[0].diff)


@register('TanH')
class TanHLayer(NeuronLayer):
    """tanh(x); the backward reads the output."""

    def forward(self, bottom, top):
        bottom[0].xp.tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        y = top[0].data
        grad = xp.multiply(y, y)
        xp.subtract(1, grad, out=grad)
        xp.multiply(top[0].diff, grad, out=bottom[0].diff)


@register('Dropout')
class DropoutLayer(NeuronLayer):
    """TRAIN: keep units with probability 1 - ratio, scaled by 1/(1 - ratio); TEST: identity.
    caffe-fast-rcnn's scale_train: false keeps TRAIN unscaled and scales TEST by 1 - ratio.
    Bayesian SegNet's sample_weights_test drops (as in TRAIN) in TEST too."""

    def setup(self, bottom, top):
        self.ratio = self.layer_param.dropout_param.dropout_ratio
        if not 0 <= self.ratio < 1:
            raise self.error('dropout_ratio must be in [0, 1), got %g' % self.ratio)
        self.scale_train = self.layer_param.dropout_param.scale_train
        self.scale = self.scalar(1.0 / (1.0 - self.ratio) if self.scale_train else 1.0)
        self.test_scale = None if self.scale_train else self.scalar(1.0 - self.ratio)
        self.drops = self.phase == caffe_pb2.TRAIN or self.layer_param.dropout_param.sample_weights_test
        self.mask = None

    def forward(self, bottom, top):
        xp = bottom[0].xp
        if not self.drops:
            if self.test_scale is not None:
                xp.multiply(bottom[0].data, self.test_scale, out=top[0].data)
            elif top[0] is not bottom[0]:
                top[0].data[...] = bottom[0].data
            return
        shape = bottom[0].shape
        mask = scratch(self, 'mask', shape, self.dtype, xp)
        keep = scratch(self, 'keep', shape, bool, xp)
        if xp is np:        # Caffe's bernoulli(1. - ratio): p and the comparison in double
            keep[...] = caffe_rng.stream().bernoulli(mask.size, 1.0 - self.ratio, np.float64).reshape(shape)
        else:               # Caffe draws GPU masks with cuRAND: a stream of its own here too
            mask[...] = xp.asarray(backend.rng().random(shape, dtype=self.dtype))
            xp.greater_equal(mask, self.scalar(self.ratio), out=keep)
        xp.multiply(keep, self.scale, out=mask)
        xp.multiply(bottom[0].data, mask, out=top[0].data)
        self.mask = mask

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if not self.drops:
            if self.test_scale is not None:
                bottom[0].xp.multiply(top[0].diff, self.test_scale, out=bottom[0].diff)
            elif top[0] is not bottom[0]:
                bottom[0].diff[...] = top[0].diff
            return
        bottom[0].xp.multiply(top[0].diff, self.mask, out=bottom[0].diff)


@register('ELU')
class ELULayer(NeuronLayer):
    """max(x, 0) + alpha * (exp(min(x, 0)) - 1)."""

    def setup(self, bottom, top):
        self.alpha = self.scalar(self.layer_param.elu_param.alpha)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].data
        negative = xp.minimum(x, 0)
        xp.exp(negative, out=negative)
        negative -= 1
        negative *= self.alpha
        xp.maximum(x, 0, out=top[0].data)
        top[0].data[...] += negative

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        x, y = bottom[0].data, top[0].data
        grad = y + self.alpha
        grad *= x <= 0
        grad += x > 0
        xp.multiply(top[0].diff, grad, out=bottom[0].diff)


@register('AbsVal')
class AbsValLayer(NeuronLayer):
    """|x|; not in place (Caffe refuses it)."""

    def setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error('does not allow in-place computation')

    def forward(self, bottom, top):
        bottom[0].xp.abs(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        xp.sign(bottom[0].data, out=bottom[0].diff)
        bottom[0].diff[...] *= top[0].diff


BNLL_THRESHOLD = 50.0


@register('BNLL')
class BNLLLayer(NeuronLayer):
    """log(1 + exp(x)), computed stably."""

    def forward(self, bottom, top):
        bottom[0].xp.logaddexp(bottom[0].data, 0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        e = xp.minimum(bottom[0].data, BNLL_THRESHOLD)
        xp.exp(e, out=e)
        grad = e + 1
        xp.divide(e, grad, out=grad)
        xp.multiply(top[0].diff, grad, out=bottom[0].diff)


@register('Power')
class PowerLayer(NeuronLayer):
    """(shift + scale * x) ^ power, with Caffe's special cases."""

    def setup(self, bottom, top):
        p = self.layer_param.power_param
        self.power = self.scalar(p.power)
        self.scale = self.scalar(p.scale)
        self.shift = self.scalar(p.shift)
        self.diff_scale = self.power * self.scale

    def forward(self, bottom, top):
        xp = bottom[0].xp
        y = top[0].data
        if self.diff_scale == 0:
            y[...] = 1 if self.power == 0 else self.shift ** self.power
            return
        if top[0] is not bottom[0]:
            y[...] = bottom[0].data
        if self.scale != 1:
            y *= self.scale
        if self.shift != 0:
            y += self.shift
        if self.power != 1:
            xp.power(y, self.power, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        x, dx = bottom[0].data, bottom[0].diff
        if self.diff_scale == 0 or self.power == 1:
            dx[...] = self.diff_scale
        elif self.power == 2:
            # d/dx = 2 scale (shift + scale x)
            xp.multiply(x, self.diff_scale * self.scale, out=dx)
            if self.shift != 0:
                dx += self.diff_scale * self.shift
        elif self.shift == 0:
            # d/dx = power * y / x
            xp.divide(top[0].data, x, out=dx)
            dx *= self.power
        else:
            base = x * self.scale if self.scale != 1 else x.copy()
            if self.shift != 0:
                base += self.shift
            xp.divide(top[0].data, base, out=dx)
            if self.diff_scale != 1:
                dx *= self.diff_scale
        if self.diff_scale != 0:
            dx *= top[0].diff


def _log_base(layer, base):
    """Caffe's log(base) for Exp/Log: base -1 means e (log 1 exactly); otherwise base must be > 0."""
    if base == -1:
        return layer.scalar(1)
    if not base > 0:
        raise layer.error('base must be strictly positive, got %g' % base)
    log_base = np.log(layer.scalar(base))
    if not np.isfinite(log_base):
        raise layer.error('log(base) = log(%g) is not finite' % base)
    return log_base


@register('Exp')
class ExpLayer(NeuronLayer):
    """base ^ (shift + scale * x); base -1 means e."""

    def setup(self, bottom, top):
        p = self.layer_param.exp_param
        base = p.base
        self.inner_scale = _log_base(self, base) * self.scalar(p.scale)
        if p.shift == 0:
            self.outer_scale = self.scalar(1)
        elif base == -1:
            self.outer_scale = np.exp(self.scalar(p.shift))
        else:
            self.outer_scale = self.scalar(base) ** self.scalar(p.shift)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        y = top[0].data
        if self.inner_scale == 1:
            xp.exp(bottom[0].data, out=y)
        else:
            xp.multiply(bottom[0].data, self.inner_scale, out=y)
            xp.exp(y, out=y)
        if self.outer_scale != 1:
            y *= self.outer_scale

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        bottom[0].xp.multiply(top[0].data, top[0].diff, out=dx)
        if self.inner_scale != 1:
            dx *= self.inner_scale


@register('Log')
class LogLayer(NeuronLayer):
    """log_base(shift + scale * x); base -1 means e."""

    def setup(self, bottom, top):
        p = self.layer_param.log_param
        log_base = _log_base(self, p.base)
        if log_base == 0:
            raise self.error('1 / log(base) is not finite for base %g' % p.base)
        self.base_scale = self.scalar(1) / log_base
        self.input_scale = self.scalar(p.scale)
        self.input_shift = self.scalar(p.shift)
        self.backward_num_scale = self.input_scale / log_base

    def _shifted(self, x, out):
        if out is not x:
            out[...] = x
        if self.input_scale != 1:
            out *= self.input_scale
        if self.input_shift != 0:
            out += self.input_shift
        return out

    def forward(self, bottom, top):
        xp = bottom[0].xp
        y = top[0].data
        xp.log(self._shifted(bottom[0].data, y), out=y)
        if self.base_scale != 1:
            y *= self.base_scale

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        dx = bottom[0].diff
        x = bottom[0].data
        grad = self._shifted(x, x.copy() if top[0] is bottom[0] else dx)
        xp.reciprocal(grad, out=grad)
        if self.backward_num_scale != 1:
            grad *= self.backward_num_scale
        xp.multiply(top[0].diff, grad, out=dx)


@register('Threshold')
class ThresholdLayer(NeuronLayer):
    """1 where x > threshold, else 0; no backward (not differentiable)."""

    def setup(self, bottom, top):
        self.threshold = self.scalar(self.layer_param.threshold_param.threshold)

    def forward(self, bottom, top):
        bottom[0].xp.greater(bottom[0].data, self.threshold, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error('has no backward (the threshold is not differentiable)')


@register('Clip')
class ClipLayer(NeuronLayer):
    """max(min, min(x, max)); the gradient passes where min <= x <= max."""

    def setup(self, bottom, top):
        p = self.layer_param.clip_param
        if not (p.HasField('min') and p.HasField('max')):
            raise self.error('clip_param needs both min and max')
        self.min = self.scalar(p.min)
        self.max = self.scalar(p.max)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        y = top[0].data
        xp.minimum(bottom[0].data, self.max, out=y)
        xp.maximum(y, self.min, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        x = bottom[0].data
        inside = x >= self.min
        inside &= x <= self.max
        xp.multiply(top[0].diff, inside, out=bottom[0].diff)


@register('Swish')
class SwishLayer(NeuronLayer):
    """x * sigmoid(beta x), the sigmoid computed as Caffe's Sigmoid layer does."""

    def setup(self, bottom, top):
        self.beta = self.scalar(self.layer_param.swish_param.beta)
        self.sig = None

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].data
        sig = scratch(self, 'sigmoid', x.shape, self.dtype, xp)
        xp.multiply(x, self.beta, out=sig)
        sig *= 0.5
        xp.tanh(sig, out=sig)
        sig *= 0.5
        sig += 0.5
        xp.multiply(x, sig, out=top[0].data)
        self.sig = sig

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        beta_y = xp.multiply(top[0].data, self.beta)
        grad = xp.subtract(1, beta_y)
        grad *= self.sig
        grad += beta_y
        xp.multiply(top[0].diff, grad, out=bottom[0].diff)


@register('PReLU')
class PReLULayer(NeuronLayer):
    """max(x, 0) + a_c * min(x, 0) with a learnable slope per channel (or one shared)."""

    def setup(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.error('bottom must have at least 2 axes, got shape %s' % (bottom[0].shape,))
        p = self.layer_param.prelu_param
        self.channel_shared = p.channel_shared
        channels = bottom[0].shape[1]
        if not self.blobs:
            self.blobs = [self.make_blob(() if self.channel_shared else (channels,))]
            filler = p.filler
            if not p.HasField('filler'):
                filler = caffe_pb2.FillerParameter(type='constant', value=0.25)
            fillers.fill(self.blobs[0], filler)
        expected = 1 if self.channel_shared else channels
        if self.blobs[0].count != expected:
            raise self.error('negative slope blob has %d values, the configuration needs %d'
                             % (self.blobs[0].count, expected))
        self.saved_bottom = None

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.error('bottom must have at least 2 axes, got shape %s' % (bottom[0].shape,))
        top[0].reshape(bottom[0].shape)

    def _slope(self, x):
        """The slope broadcastable against `x` viewed as (N, C, rest)."""
        slope = self.blobs[0].data
        return slope.reshape(()) if self.channel_shared else slope.reshape(1, -1, 1)

    @staticmethod
    def _view(array):
        return array.reshape(array.shape[0], array.shape[1], int(np.prod(array.shape[2:])))

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].data
        if top[0] is bottom[0]:
            self.saved_bottom = scratch(self, 'bottom', x.shape, self.dtype, xp)
            self.saved_bottom[...] = x
        x3 = self._view(x)
        negative = xp.minimum(x3, 0)
        negative *= self._slope(x3)
        y3 = self._view(top[0].data)
        xp.maximum(x3, 0, out=y3)
        y3 += negative

    def backward(self, top, propagate_down, bottom):
        xp = bottom[0].xp
        x = self.saved_bottom if top[0] is bottom[0] else bottom[0].data
        x3 = self._view(x)
        dy3 = self._view(top[0].diff)
        nonpositive = x3 <= 0
        # the slope's gradient first: in place, the bottom diff overwrites the top diff
        if self.param_needs_backward(0):
            contrib = dy3 * x3
            contrib *= nonpositive
            if self.channel_shared:
                self.blobs[0].diff[...] += contrib.sum()
            else:
                self.blobs[0].diff[...] += contrib.sum(axis=(0, 2))
        if propagate_down[0]:
            grad = nonpositive * self._slope(x3)
            grad += x3 > 0
            xp.multiply(dy3, grad, out=self._view(bottom[0].diff))
