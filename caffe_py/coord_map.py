"""pycaffe's coord_map: how coordinates of one net_spec top map onto another's, and `crop` to
align them (the Crop layers of fully convolutional nets, e.g. FCN's score maps to the image).

A map is (axis, a, b): the coordinate x of the first spatial axis on (axis, the axis before
the spatial ones; None while only point-wise layers were passed) maps to a * x + b; a and b
are arrays with one value per spatial axis (or scalars).

    from caffe_py import layers as L
    from caffe_py.coord_map import crop
    n.upscore = L.Deconvolution(n.score, convolution_param=dict(num_output=21, kernel_size=64,
                                                                stride=32, bias_term=False))
    n.score_crop = crop(n.upscore, n.data)     # a Crop layer aligning upscore to data
"""
from collections import deque

import numpy as np

from .net_spec import layers as L

PASS_THROUGH_LAYERS = ['AbsVal', 'BatchNorm', 'Bias', 'BNLL', 'Dropout', 'Eltwise', 'ELU', 'Log',
                       'LRN', 'Exp', 'MVN', 'Power', 'ReLU', 'PReLU', 'Scale', 'Sigmoid', 'Split',
                       'TanH', 'Threshold']
LEGACY_SPATIAL = ('pad_h', 'pad_w', 'kernel_h', 'kernel_w', 'stride_h', 'stride_w')


class UndefinedMapException(Exception):
    """The layer has no coordinate mapping (InnerProduct, Reshape, global pooling ...)."""


class AxisMismatchException(Exception):
    """Two maps on different axes cannot be composed."""


def _spatial_params(fn):
    """The keywords holding fn's spatial parameters: its convolution_param / pooling_param
    dict when given, else its own keywords (as pycaffe reads them)."""
    for field in ('convolution_param', 'pooling_param'):
        if field in fn.params:
            return fn.params[field]
    return fn.params


def conv_params(fn):
    """(axis, stride, effective kernel extent (kernel - 1) * dilation + 1, pad) of a
    Convolution, Deconvolution, Im2col or Pooling Function, as arrays."""
    params = _spatial_params(fn)
    legacy = set(LEGACY_SPATIAL) & (set(fn.params) | set(params))
    if legacy:
        raise AssertionError('cropping does not support legacy _h/_w params (layer type %s: %s)'
                             % (fn.type_name, ', '.join(sorted(legacy))))
    if params.get('global_pooling') or 'kernel_size' not in params:
        raise UndefinedMapException('%s without kernel_size has no coordinate map' % fn.type_name)
    kernel = np.array(params['kernel_size'], ndmin=1)
    dilation = np.array(params.get('dilation', 1), ndmin=1)
    return (params.get('axis', 1), np.array(params.get('stride', 1), ndmin=1),
            (kernel - 1) * dilation + 1, np.array(params.get('pad', 0), ndmin=1))


def crop_params(fn):
    """(axis, offset array) of a Crop Function, with Caffe's defaults (axis 2, offset 0)."""
    params = fn.params.get('crop_param', fn.params)
    return params.get('axis', 2), np.array(params.get('offset', 0), ndmin=1)


def coord_map(fn):
    """The map from fn's output coordinates to its input's: (axis, scale, shift)."""
    if fn.type_name in ('Convolution', 'Pooling', 'Im2col'):
        axis, stride, extent, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if fn.type_name == 'Deconvolution':
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == 'Crop':
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset          # the axis before the first cropped one
    raise UndefinedMapException('%s has no coordinate map' % fn.type_name)


def compose(base_map, next_map):
    """base_map followed by next_map: scales multiply, next's shift scales by base's scale."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is not None and ax2 is not None and ax1 != ax2:
        raise AxisMismatchException('cannot compose maps on axis %s and axis %s' % (ax1, ax2))
    return (ax2 if ax1 is None else ax1), a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map back: scale 1 / a, shift -b / a."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _mappable_bottoms(top):
    """The bottoms a top's coordinates map through: all, but only the first of a Crop (its
    second bottom gives the size alone)."""
    bottoms = top.fn.inputs
    return bottoms[:1] if top.fn.type_name == 'Crop' else bottoms


def _walk(top):
    """Yield (Top, map from `top` to it) for `top` and its ancestors reachable through layers
    with a coordinate map, nearest first."""
    maps = {top: (None, 1, 0)}
    queue = deque([top])
    while queue:
        current = queue.popleft()
        yield current, maps[current]
        try:
            step = coord_map(current.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(current):
            if bottom not in maps:
                maps[bottom] = compose(maps[current], step)
                queue.append(bottom)


def coord_map_from_to(top_from, top_to):
    """The map (axis, a, b) taking coordinates of `top_from` to those of `top_to`, through
    their nearest common ancestor: x in top_from corresponds to a * x + b in top_to. Raises
    RuntimeError when no ancestor is shared through spatial layers."""
    from_maps = dict(_walk(top_from))
    for top, to_map in _walk(top_to):
        if top in from_maps:
            return compose(to_map, inverse(from_maps[top]))
    raise RuntimeError('Could not compute map between tops; are they connected by spatial layers?')


def crop(top_from, top_to):
    """A Crop layer (net_spec Top) cutting `top_from` to `top_to`'s size and alignment: its
    crop_param axis and offsets follow from coord_map_from_to. AssertionError when the scales
    differ or the offsets are negative or fractional."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    a, b = np.asarray(a), np.asarray(b)
    if not (a == 1).all():
        raise AssertionError('scale mismatch on crop (a = {})'.format(a))
    if not (b <= 0).all():
        raise AssertionError('cannot crop negative offset (b = {})'.format(b))
    if not (np.round(b) == b).all():
        raise AssertionError('cannot crop noninteger offset (b = {})'.format(b))
    crop_param = dict(offset=[int(v) for v in -np.round(b).ravel()])
    if ax is not None:
        crop_param['axis'] = ax + 1           # the first cropped axis
    return L.Crop(top_from, top_to, crop_param=crop_param)
