"""BatchNorm, MVN, Scale, Bias: float64 gradient checks, stored statistics, parameter variants, errors."""
import numpy as np
import pytest
from google.protobuf import text_format

import caffe_py
from caffe_py.net import NetError
from caffe_py.proto import caffe_pb2
from harness import numeric_gradient_check

RNG = np.random.default_rng(11)


def inputs(**shapes):
    return ''.join('layer { name: "in_%s" type: "Input" top: "%s" input_param { shape { %s } } }\n'
                   % (n, n, ' '.join('dim: %d' % d for d in s)) for n, s in shapes.items())


def make_net(text, values=None, phase=caffe_py.TEST, dtype=np.float64):
    net = caffe_py.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase, dtype=dtype)
    for name, value in (values or {}).items():
        net.blobs[name].reshape(np.shape(value))
        net.blobs[name].data[...] = value
    return net


# -- BatchNorm ---------------------------------------------------------------------

BN = inputs(x=(3, 2, 2, 2)) + 'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" %s }'


@pytest.mark.parametrize('extra', ['', 'batch_norm_param { eps: 0.1 moving_average_fraction: 0.5 }'])
def test_batchnorm_train_gradient(extra):
    numeric_gradient_check(BN % extra, {'x': RNG.standard_normal((3, 2, 2, 2))}, phase=caffe_py.TRAIN)


def test_batchnorm_train_statistics_and_running_sums():
    x = RNG.standard_normal((3, 2, 2, 2)) * 2 + 1
    net = make_net(BN % 'batch_norm_param { moving_average_fraction: 0.9 eps: 0.01 }',
                   {'x': x}, caffe_py.TRAIN)
    bn = net.layer_dict['bn']
    assert [b.shape for b in bn.blobs] == [(2,), (2,), (1,)]
    assert not any(b.data.any() for b in bn.blobs)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    m = x.size // 2
    for step in (1, 2):
        net.forward_from_to()
        expected = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 0.01)
        np.testing.assert_allclose(net.blobs['y'].data, expected, rtol=1e-7)
    factor = 0.9 + 1                                  # (0 * 0.9 + 1) * 0.9 + 1
    np.testing.assert_allclose(bn.blobs[2].data, [factor])
    np.testing.assert_allclose(bn.blobs[0].data, mean * factor)
    np.testing.assert_allclose(bn.blobs[1].data, var * m / (m - 1) * factor)


def test_batchnorm_test_mode_uses_stored_statistics_over_the_scale_factor():
    x = RNG.standard_normal((3, 2, 2, 2))
    net = make_net('force_backward: true ' + BN % '', {'x': x})
    bn = net.layer_dict['bn']
    bn.blobs[0].data[...] = [2.0, -4.0]
    bn.blobs[1].data[...] = [8.0, 0.5]
    bn.blobs[2].data[...] = 2.0
    net.forward_from_to()
    std = np.sqrt(np.array([4.0, 0.25]) + 1e-5)[:, None, None]
    np.testing.assert_allclose(net.blobs['y'].data, (x - np.array([1.0, -2.0])[:, None, None]) / std)
    dy = RNG.standard_normal(x.shape)
    net.blobs['y'].diff[...] = dy
    net.backward_from_to()
    np.testing.assert_allclose(net.blobs['x'].diff, dy / std)    # the statistics are constants
    # a zero scale factor means "no statistics yet": mean 0, variance 0
    bn.blobs[2].data[...] = 0
    net.forward_from_to()
    np.testing.assert_allclose(net.blobs['y'].data, x / np.sqrt(1e-5))


def test_batchnorm_use_global_stats_overrides_the_phase():
    x = RNG.standard_normal((4, 3))
    net = make_net(inputs(x=(4, 3)) + '''layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y"
                   batch_norm_param { use_global_stats: true } }''', {'x': x}, caffe_py.TRAIN)
    net.layer_dict['bn'].blobs[2].data[...] = 1
    net.forward_from_to()
    np.testing.assert_allclose(net.blobs['y'].data, x / np.sqrt(1e-5))
    assert net.layer_dict['bn'].blobs[2].data[0] == 1          # no running update
    net = make_net(inputs(x=(4, 3)) + '''layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y"
                   batch_norm_param { use_global_stats: false } }''', {'x': x}, caffe_py.TEST)
    net.forward_from_to()
    np.testing.assert_allclose(net.blobs['y'].data.mean(axis=0), 0, atol=1e-12)
    assert net.layer_dict['bn'].blobs[2].data[0] == 1


def test_batchnorm_in_place_matches_out_of_place():
    x = RNG.standard_normal((4, 3, 2))
    dy = RNG.standard_normal((4, 3, 2))
    results = []
    for top in ('y', 'x'):
        net = make_net('force_backward: true ' + inputs(x=(4, 3, 2)) +
                       'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "%s" }' % top,
                       {'x': x}, caffe_py.TRAIN)
        net.forward_from_to()
        out = net.blobs[top].data.copy()
        net.blobs[top].diff[...] = dy
        net.layers[-1].backward([net.blobs[top]], [True], [net.blobs['x']])
        results.append((out, net.blobs['x'].diff.copy()))
    np.testing.assert_allclose(results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1], results[1][1])


def test_batchnorm_statistics_are_not_learned():
    net = make_net(BN % '', phase=caffe_py.TRAIN)
    assert net.params_lr[-3:] == [0, 0, 0]
    assert [p.lr_mult for p in net.layer_dict['bn'].layer_param.param] == [0, 0, 0]
    assert not any(net.layer_dict['bn'].param_needs_backward(i) for i in range(3))
    net = make_net(BN % 'param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }')
    assert net.params_lr[-3:] == [0, 0, 0]
    with pytest.raises(NetError, match='Cannot configure batch normalization statistics'):
        make_net(BN % 'param { lr_mult: 1 }')


# -- MVN -----------------------------------------------------------------------------

@pytest.mark.parametrize('extra', ['', 'mvn_param { across_channels: true }',
                                   'mvn_param { normalize_variance: false }',
                                   'mvn_param { normalize_variance: false across_channels: true }'])
def test_mvn_gradient(extra):
    text = inputs(x=(2, 3, 2, 3)) + 'layer { name: "mvn" type: "MVN" bottom: "x" top: "y" %s }' % extra
    numeric_gradient_check(text, {'x': RNG.standard_normal((2, 3, 2, 3))}, rtol=2e-5)


def test_mvn_values_eps_on_the_std_and_legacy_top_shape():
    x = RNG.standard_normal((2, 3)) * 3 + 1
    net = make_net(inputs(x=(2, 3)) + '''layer { name: "mvn" type: "MVN" bottom: "x" top: "y"
                   mvn_param { across_channels: true eps: 0.5 } }''', {'x': x})
    net.forward_from_to()
    assert net.blobs['y'].shape == (2, 3, 1, 1)
    mean, std = x.mean(axis=1, keepdims=True), x.std(axis=1, keepdims=True)
    y = (x - mean) / (std + 0.5)
    np.testing.assert_allclose(net.blobs['y'].data.reshape(2, 3), y)
    # Caffe's backward treats the eps as if it were not there in the std's own derivative:
    # (dy - mean(dy) - y * mean(dy * y)) / (std + eps), exact only as eps -> 0
    dy = RNG.standard_normal((2, 3))
    net.blobs['y'].diff[...] = dy.reshape(2, 3, 1, 1)
    net.layers[-1].backward([net.blobs['y']], [True], [net.blobs['x']])
    expected = (dy - dy.mean(axis=1, keepdims=True) - y * (dy * y).mean(axis=1, keepdims=True))
    np.testing.assert_allclose(net.blobs['x'].diff, expected / (std + 0.5))
    with pytest.raises(NetError, match='5-axis'):
        make_net(inputs(x=(1, 1, 1, 1, 2)) + 'layer { name: "mvn" type: "MVN" bottom: "x" top: "y" }')


def test_mvn_in_place_matches_out_of_place():
    x = RNG.standard_normal((2, 2, 5))
    dy = RNG.standard_normal((2, 2, 5, 1))
    results = []
    for top in ('y', 'x'):
        net = make_net(inputs(x=(2, 2, 5)) +
                       'layer { name: "mvn" type: "MVN" bottom: "x" top: "%s" }' % top, {'x': x})
        net.forward_from_to()
        out = net.blobs[top].data.copy()
        net.blobs[top].diff[...] = dy
        net.layers[-1].backward([net.blobs[top]], [True], [net.blobs['x']])
        results.append((out, net.blobs['x'].diff.copy()))
    assert net.blobs['x'].shape == (2, 2, 5, 1)           # in place, Caffe's 4-d top reshapes x
    np.testing.assert_allclose(results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1].reshape(-1), results[1][1].reshape(-1))


# -- Scale and Bias ----------------------------------------------------------------

@pytest.mark.parametrize('extra,param_shapes', [
    ('scale_param { bias_term: true }', [(3,), (3,)]),
    ('scale_param { axis: 1 num_axes: 2 }', [(3, 2)]),
    ('scale_param { axis: -1 num_axes: -1 bias_term: true }', [(2,), (2,)]),
    ('scale_param { num_axes: 0 bias_term: true }', [(), ()]),
    ('scale_param { axis: 0 num_axes: -1 }', [(2, 3, 2)]),
])
def test_scale_learned_gradient(extra, param_shapes):
    text = inputs(x=(2, 3, 2)) + 'layer { name: "s" type: "Scale" bottom: "x" top: "y" %s }' % extra
    params = [RNG.standard_normal(shape) for shape in param_shapes]
    net = numeric_gradient_check(text, {'x': RNG.standard_normal((2, 3, 2))}, params={'s': params})
    assert [b.shape for b in net.layer_dict['s'].blobs] == param_shapes


@pytest.mark.parametrize('scale_shape,extra', [((2, 3), 'axis: 0'), ((3,), 'bias_term: true'),
                                               ((), 'bias_term: true'), ((3, 2), '')])
def test_scale_two_bottoms_gradient(scale_shape, extra):
    text = inputs(x=(2, 3, 2), s=scale_shape) + \
        'layer { name: "s" type: "Scale" bottom: "x" bottom: "s" top: "y" scale_param { %s } }' % extra
    params = {'s': [RNG.standard_normal(scale_shape)]} if 'bias' in extra else None
    net = numeric_gradient_check(text, {'x': RNG.standard_normal((2, 3, 2)),
                                        's': RNG.standard_normal(scale_shape)}, params=params)
    # with two bottoms the bias, when learned, is the layer's only blob
    assert len(net.layer_dict['s'].blobs) == (1 if 'bias' in extra else 0)


def test_scale_in_place_after_bias_gradient():
    text = inputs(x=(2, 3, 2)) + '''
    layer { name: "b" type: "Bias" bottom: "x" top: "h" }
    layer { name: "s" type: "Scale" bottom: "h" top: "h" scale_param { bias_term: true } }'''
    numeric_gradient_check(text, {'x': RNG.standard_normal((2, 3, 2))},
                           params={'b': [RNG.standard_normal(3)],
                                   's': [RNG.standard_normal(3), RNG.standard_normal(3)]})


def test_scale_default_fillers_and_given_fillers():
    net = make_net(inputs(x=(2, 4, 3)) + '''
    layer { name: "s" type: "Scale" bottom: "x" top: "y" scale_param { bias_term: true } }
    layer { name: "t" type: "Scale" bottom: "x" top: "z" scale_param { bias_term: true
            filler { type: "constant" value: 3 } bias_filler { type: "constant" value: -2 } } }''')
    s, t = net.layer_dict['s'].blobs, net.layer_dict['t'].blobs
    assert (s[0].data == 1).all() and (s[1].data == 0).all()
    assert (t[0].data == 3).all() and (t[1].data == -2).all()
    x = RNG.standard_normal((2, 4, 3))
    net.blobs['x'].data[...] = x
    net.forward_from_to()
    np.testing.assert_allclose(net.blobs['z'].data, 3 * x - 2)


def test_scale_param_gradients_accumulate():
    text = 'force_backward: true ' + inputs(x=(2, 3)) + \
        'layer { name: "s" type: "Scale" bottom: "x" top: "y" scale_param { bias_term: true } }'
    x, dy = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 3))
    net = make_net(text, {'x': x})
    net.forward_from_to()
    net.blobs['y'].diff[...] = dy
    net.clear_param_diffs()
    net.backward_from_to()
    net.backward_from_to()
    np.testing.assert_allclose(net.layer_dict['s'].blobs[0].diff, 2 * (dy * x).sum(axis=0))
    np.testing.assert_allclose(net.layer_dict['s'].blobs[1].diff, 2 * dy.sum(axis=0))


@pytest.mark.parametrize('extra,shape', [('', (3,)), ('bias_param { axis: 0 num_axes: 2 }', (2, 3)),
                                         ('bias_param { num_axes: 0 }', ()),
                                         ('bias_param { axis: 2 num_axes: -1 }', (2,))])
def test_bias_learned_gradient(extra, shape):
    text = inputs(x=(2, 3, 2)) + 'layer { name: "b" type: "Bias" bottom: "x" top: "y" %s }' % extra
    net = numeric_gradient_check(text, {'x': RNG.standard_normal((2, 3, 2))},
                                 params={'b': [RNG.standard_normal(shape)]})
    assert net.layer_dict['b'].blobs[0].shape == shape


@pytest.mark.parametrize('bias_shape,extra', [((3, 2), ''), ((2,), 'bias_param { axis: 0 }'), ((), '')])
def test_bias_two_bottoms_gradient(bias_shape, extra):
    text = inputs(x=(2, 3, 2), b=bias_shape) + \
        'layer { name: "b" type: "Bias" bottom: "x" bottom: "b" top: "y" %s }' % extra
    numeric_gradient_check(text, {'x': RNG.standard_normal((2, 3, 2)),
                                  'b': RNG.standard_normal(bias_shape)})


def test_bias_in_place_gradient():
    text = inputs(x=(2, 3)) + '''
    layer { name: "s" type: "Scale" bottom: "x" top: "h" }
    layer { name: "b" type: "Bias" bottom: "h" top: "h" bias_param { filler { type: "gaussian" } } }'''
    numeric_gradient_check(text, {'x': RNG.standard_normal((2, 3))},
                           params={'s': [RNG.standard_normal(3)]})


def test_scale_and_bias_errors():
    with pytest.raises(NetError, match='dimension mismatch'):
        make_net(inputs(x=(2, 3), s=(2,)) +
                 'layer { name: "s" type: "Scale" bottom: "x" bottom: "s" top: "y" }')
    with pytest.raises(NetError, match='extends past'):
        make_net(inputs(x=(2, 3)) +
                 'layer { name: "b" type: "Bias" bottom: "x" top: "y" bias_param { num_axes: 2 } }')
    with pytest.raises(NetError, match='num_axes must be non-negative'):
        make_net(inputs(x=(2, 3)) +
                 'layer { name: "s" type: "Scale" bottom: "x" top: "y" scale_param { num_axes: -2 } }')
    with pytest.raises(NetError, match='axis 3 out of range'):
        make_net(inputs(x=(2, 3)) +
                 'layer { name: "b" type: "Bias" bottom: "x" top: "y" bias_param { axis: 3 } }')
