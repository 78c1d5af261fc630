"""Neuron layers: float64 gradient checks (also in place), Dropout in TRAIN, refusals."""
import numpy as np
import pytest
from google.protobuf import text_format

import caffe_py
from caffe_py import TEST, TRAIN, Net
from caffe_py.proto import caffe_pb2
from harness import numeric_gradient_check

SHAPE = (2, 3, 2, 2)


def net_text(layer, shape=SHAPE, in_place=False):
    """Input x -> layer L (x -> y), or, in place, x -> identity Power -> y -> L (y -> y)."""
    dims = ' '.join('dim: %d' % d for d in shape)
    text = 'layer { name: "in" type: "Input" top: "x" input_param { shape { %s } } }\n' % dims
    if in_place:
        text += 'layer { name: "copy" type: "Power" bottom: "x" top: "y" }\n'
        return text + 'layer { name: "L" bottom: "y" top: "y" %s }' % layer
    return text + 'layer { name: "L" bottom: "x" top: "y" %s }' % layer


def away_from(kinks, shape=SHAPE, low=-2.0, high=2.0, gap=0.1, seed=1):
    """Random values in [low, high] at least `gap` from every kink."""
    x = np.random.default_rng(seed).uniform(low, high, shape)
    for k in kinks:
        near = np.abs(x - k) < gap
        x[near] = k + np.where(x[near] >= k, gap, -gap) * 2
    return x


def build(layer, phase=TEST, shape=SHAPE, in_place=False, dtype=np.float64):
    param = text_format.Parse(net_text(layer, shape, in_place), caffe_pb2.NetParameter())
    param.force_backward = True
    return Net(param, phase, dtype=dtype)


def run(net, x, dy):
    net.blobs['x'].data[...] = x
    net.forward()
    net.blobs['y'].diff[...] = dy
    net.backward()
    return net.blobs['y'].data.copy(), net.blobs['x'].diff.copy()


GRADIENT_CASES = [
    ('relu', 'type: "ReLU"', [0.0], True),
    ('relu_leaky', 'type: "ReLU" relu_param { negative_slope: 0.2 }', [0.0], True),
    ('sigmoid', 'type: "Sigmoid"', [], True),
    ('tanh', 'type: "TanH"', [], True),
    ('dropout_test', 'type: "Dropout" dropout_param { dropout_ratio: 0.4 }', [], True),
    ('elu', 'type: "ELU" elu_param { alpha: 0.6 }', [0.0], True),
    ('absval', 'type: "AbsVal"', [0.0], False),
    ('bnll', 'type: "BNLL"', [], False),
    ('clip', 'type: "Clip" clip_param { min: -0.5 max: 0.8 }', [-0.5, 0.8], False),
    ('swish', 'type: "Swish" swish_param { beta: 1.3 }', [], True),
    ('exp_e', 'type: "Exp"', [], True),
    ('exp_base', 'type: "Exp" exp_param { base: 3 scale: 0.7 shift: -0.2 }', [], True),
    ('prelu', 'type: "PReLU" prelu_param { filler { type: "uniform" min: 0.1 max: 0.5 } }', [0.0], True),
    ('prelu_shared', 'type: "PReLU" prelu_param { channel_shared: true }', [0.0], True),
]


@pytest.mark.parametrize('name,layer,kinks,in_place', GRADIENT_CASES, ids=[c[0] for c in GRADIENT_CASES])
def test_gradient(name, layer, kinks, in_place):
    x = away_from(kinks)
    numeric_gradient_check(net_text(layer), {'x': x})
    if in_place:
        numeric_gradient_check(net_text(layer, in_place=True), {'x': x})


POSITIVE_CASES = [
    ('power_general', 'power_param { power: 1.7 scale: 0.8 shift: 0.4 }'),
    ('power_square', 'power_param { power: 2 scale: -1.5 shift: 0.3 }'),
    ('power_square_noshift', 'power_param { power: 2 scale: 0.5 }'),
    ('power_noshift', 'power_param { power: -0.7 scale: 1.2 }'),
    ('power_linear', 'power_param { power: 1 scale: 2.5 shift: -1 }'),
    ('power_constant', 'power_param { power: 0 scale: 2 shift: 3 }'),
    ('power_zero_scale', 'power_param { power: 3 scale: 0 shift: 2 }'),
]


@pytest.mark.parametrize('name,param', POSITIVE_CASES, ids=[c[0] for c in POSITIVE_CASES])
def test_power_gradient(name, param):
    x = np.random.default_rng(2).uniform(0.5, 2.0, SHAPE)
    numeric_gradient_check(net_text('type: "Power" ' + param), {'x': x})


@pytest.mark.parametrize('param', ['', 'log_param { base: 10 }',
                                   'log_param { base: 2 scale: 0.5 shift: 0.3 }'])
def test_log_gradient(param):
    x = np.random.default_rng(3).uniform(0.5, 2.0, SHAPE)
    numeric_gradient_check(net_text('type: "Log" ' + param), {'x': x})


def test_power_constant_values():
    net = build('type: "Power" power_param { power: 3 scale: 0 shift: 2 }')
    y, dx = run(net, np.ones(SHAPE), np.ones(SHAPE))
    assert np.all(y == 8) and np.all(dx == 0)
    net = build('type: "Power" power_param { power: 0 scale: 2 shift: 2 }')
    y, _ = run(net, np.ones(SHAPE), np.ones(SHAPE))
    assert np.all(y == 1)


def test_relu_forward_backward_values():
    x = np.array([-2.0, -0.0, 0.0, 1.5, 3.0]).reshape(1, 5, 1, 1)
    net = build('type: "ReLU" relu_param { negative_slope: 0.5 }', shape=x.shape, dtype=np.float32)
    y, dx = run(net, x, np.full(x.shape, 2.0))
    np.testing.assert_array_equal(y.ravel(), [-1, 0, 0, 1.5, 3])
    np.testing.assert_array_equal(dx.ravel(), [1, 1, 1, 2, 2])


def test_threshold_forward_and_no_backward():
    x = np.array([-1.0, 0.2, 0.21, 5.0]).reshape(1, 4, 1, 1)
    net = build('type: "Threshold" threshold_param { threshold: 0.2 }', shape=x.shape)
    net.blobs['x'].data[...] = x
    net.forward()
    np.testing.assert_array_equal(net.blobs['y'].data.ravel(), [0, 0, 1, 1])
    with pytest.raises(ValueError, match='Threshold layer "L"'):
        net.backward()


def test_in_place_matches_out_of_place_float32():
    x = away_from([0.0]).astype(np.float32)
    dy = np.random.default_rng(4).standard_normal(SHAPE).astype(np.float32)
    for layer in ('type: "ReLU"', 'type: "Sigmoid"', 'type: "TanH"', 'type: "ELU"', 'type: "Swish"',
                  'type: "PReLU"', 'type: "Exp"'):
        plain = run(build(layer, dtype=np.float32), x, dy)
        inplace = run(build(layer, in_place=True, dtype=np.float32), x, dy)
        np.testing.assert_allclose(inplace[0], plain[0], rtol=1e-6, err_msg=layer)
        np.testing.assert_allclose(inplace[1], plain[1], rtol=1e-6, err_msg=layer)


def test_prelu_in_place_slope_gradient():
    x = away_from([0.0])
    dy = np.random.default_rng(5).standard_normal(SHAPE)
    grads = []
    for in_place in (False, True):
        net = build('type: "PReLU"', in_place=in_place)
        run(net, x, dy)
        grads.append(net.params['L'][0].diff.copy())
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12)
    assert net.params['L'][0].shape == (3,)
    np.testing.assert_array_equal(net.params['L'][0].data, 0.25)   # Caffe's default filler


def test_dropout_train_statistics_and_scaling():
    caffe_py.set_random_seed(7)
    shape = (4, 50, 25, 20)
    net = build('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', TRAIN, shape, dtype=np.float32)
    x = np.random.default_rng(6).uniform(0.5, 1.5, shape).astype(np.float32)
    dy = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    y, dx = run(net, x, dy)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    scale = np.float32(1 / (1 - 0.3))
    np.testing.assert_array_equal(y[kept], x[kept] * scale)
    np.testing.assert_array_equal(dx, np.where(kept, dy * scale, 0))
    y2, _ = run(net, x, dy)
    assert np.any((y2 != 0) != kept)                     # a fresh mask each pass
    caffe_py.set_random_seed(7)
    again = build('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', TRAIN, shape, dtype=np.float32)
    np.testing.assert_array_equal(run(again, x, dy)[0], y)   # seeded


def test_dropout_train_in_place():
    caffe_py.set_random_seed(3)
    net = build('type: "Dropout"', TRAIN, in_place=True)
    x = away_from([])
    dy = np.random.default_rng(1).standard_normal(SHAPE)
    y, dx = run(net, x, dy)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 2 * x[kept])
    np.testing.assert_allclose(dx, np.where(kept, 2 * dy, 0))


@pytest.mark.parametrize('layer,message', [
    ('type: "Exp" exp_param { base: -2 }', 'base must be strictly positive'),
    ('type: "Log" log_param { base: 0 }', 'base must be strictly positive'),
    ('type: "Log" log_param { base: 1 }', 'not finite'),
    ('type: "Dropout" dropout_param { dropout_ratio: 1 }', 'dropout_ratio'),
])
def test_refusals(layer, message):
    with pytest.raises(ValueError, match='layer "L".*' + message):
        build(layer)


def test_absval_refuses_in_place():
    with pytest.raises(ValueError, match='AbsVal layer "L".*in-place'):
        build('type: "AbsVal"', in_place=True)


def test_prelu_refuses_one_axis_bottom():
    with pytest.raises(ValueError, match='PReLU layer "L".*2 axes'):
        build('type: "PReLU"', shape=(5,))
