"""Weight fillers: FillerParameter -> initial values, with Caffe's formulas.

Random draws come from caffe-py's own seeded generator, so values are not
bitwise Caffe's (Caffe's boost streams are not reproducible outside it);
the distributions and their scales are the same.
"""
import math

import numpy as np

from . import backend

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
    values = _FILLERS[kind](blob.shape, blob.count, filler_param, backend.rng())
    blob.data[...] = blob.xp.asarray(values.astype(blob.dtype, copy=False))


def _fans(shape, count):
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _norm(shape, count, param):
    fan_in, fan_out = _fans(shape, count)
    norm = param.variance_norm
    if norm == param.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if norm == param.FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def _constant(shape, count, param, rng):
    return np.full(shape, param.value, np.float64)


def _uniform(shape, count, param, rng):
    return rng.uniform(param.min, param.max, shape)


def _gaussian(shape, count, param, rng):
    values = rng.normal(param.mean, param.std, shape)
    if param.sparse < -1:
        raise ValueError('gaussian filler: sparse must be >= -1, got %d' % param.sparse)
    if param.sparse >= 0:
        keep = rng.random(shape) < param.sparse / float(shape[0])
        values *= keep
    return values


def _positive_unitball(shape, count, param, rng):
    values = rng.uniform(0, 1, (shape[0], count // shape[0]))
    return (values / values.sum(axis=1, keepdims=True)).reshape(shape)


def _xavier(shape, count, param, rng):
    scale = math.sqrt(3.0 / _norm(shape, count, param))
    return rng.uniform(-scale, scale, shape)


def _msra(shape, count, param, rng):
    return rng.normal(0.0, math.sqrt(2.0 / _norm(shape, count, param)), shape)


def _bilinear(shape, count, param, rng):
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
