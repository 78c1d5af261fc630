"""Weight fillers: FillerParameter -> initial values, with Caffe's formulas.

Random draws come from Caffe's stream (caffe_py.rng) in Caffe's order and
precision (the blob's dtype), so a seeded net starts from Caffe's values bit
for bit: weights before bias, layer by layer.
"""
import math

import numpy as np

from . import rng as caffe_rng

FILLER_TYPES = ('constant', 'uniform', 'gaussian', 'positive_unitball', 'xavier', 'msra', 'bilinear')


def fill(blob, filler_param):
    """Fill `blob.data` as FillerParameter `filler_param` says."""
    kind = filler_param.type
    if kind not in FILLER_TYPES:
        raise ValueError('Unknown filler type "%s"; known: %s' % (kind, ', '.join(FILLER_TYPES)))
    if blob.count == 0:
        raise ValueError('cannot fill an empty blob')
    if filler_param.sparse != -1 and kind != 'gaussian':
        raise ValueError('filler "%s" does not support sparse' % kind)
    values = _FILLERS[kind](tuple(blob.shape), blob.count, filler_param, caffe_rng.stream(), blob.dtype.type)
    blob.data[...] = blob.xp.asarray(np.asarray(values, blob.dtype).reshape(blob.shape))


def _fans(shape, count):
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _norm(shape, count, param, t):
    """Caffe's n in the blob's dtype: fan_in, fan_out or their mean."""
    fan_in, fan_out = _fans(shape, count)
    norm = param.variance_norm
    if norm == param.AVERAGE:
        return (t(fan_in) + t(fan_out)) / t(2)
    if norm == param.FAN_OUT:
        return t(fan_out)
    return t(fan_in)


def _constant(shape, count, param, rng, t):
    return np.full(shape, param.value, t)


def _uniform(shape, count, param, rng, t):
    return rng.uniform(count, param.min, param.max, t)


def _gaussian(shape, count, param, rng, t):
    if param.sparse < -1:
        raise ValueError('gaussian filler: sparse must be >= -1, got %d' % param.sparse)
    values = rng.gaussian(count, param.mean, param.std, t)
    if param.sparse >= 0:
        values *= rng.bernoulli(count, t(param.sparse) / t(shape[0]), t)
    return values


def _positive_unitball(shape, count, param, rng, t):
    values = rng.uniform(count, 0, 1, t).reshape(shape[0], -1)
    sums = np.cumsum(values, axis=1, dtype=t)[:, -1:]      # Caffe's sequential sum, in dtype
    return values / sums


def _xavier(shape, count, param, rng, t):
    scale = np.sqrt(t(3) / _norm(shape, count, param, t))
    return rng.uniform(count, -scale, scale, t)


def _msra(shape, count, param, rng, t):
    return rng.gaussian(count, 0, np.sqrt(t(2) / _norm(shape, count, param, t)), t)


def _bilinear(shape, count, param, rng, t):
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ValueError('bilinear filler needs a 4-axis blob with square kernels, got %s' % (shape,))
    size = shape[3]
    f = math.ceil(size / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ramp = 1 - np.abs(np.arange(size) / f - c)
    return np.broadcast_to(np.outer(ramp, ramp), shape).copy()


_FILLERS = {
    'constant': _constant, 'uniform': _uniform, 'gaussian': _gaussian,
    'positive_unitball': _positive_unitball, 'xavier': _xavier, 'msra': _msra,
    'bilinear': _bilinear,
}
