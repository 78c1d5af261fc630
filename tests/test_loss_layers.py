"""Loss layers and Accuracy: float64 gradient checks, normalization modes, ignore_label, ties, errors."""
import numpy as np
import pytest
from google.protobuf import text_format

import caffe_py
from caffe_py import formats
from caffe_py.layer import LayerError
from caffe_py.net import NetError
from caffe_py.proto import caffe_pb2
from harness import numeric_gradient_check

RNG = np.random.default_rng(7)


def inputs(**shapes):
    """Input layers, one per blob: name=shape."""
    return ''.join('layer { name: "in_%s" type: "Input" top: "%s" input_param { shape { %s } } }\n'
                   % (n, n, ' '.join('dim: %d' % d for d in s)) for n, s in shapes.items())


def make_net(text, values, phase=caffe_py.TRAIN, dtype=np.float64):
    net = caffe_py.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase, dtype=dtype)
    for name, value in values.items():
        net.blobs[name].reshape(np.shape(value))
        net.blobs[name].data[...] = value
    return net


def softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def labels(shape, classes):
    return RNG.integers(0, classes, shape).astype(np.float64)


# -- SoftmaxWithLoss --------------------------------------------------------------

SOFTMAX_LOSS = inputs(x=(2, 3, 2, 2), lbl=(2, 1, 2, 2)) + '''
layer { name: "L" type: "SoftmaxWithLoss" bottom: "x" bottom: "lbl" top: "loss" %s }'''


@pytest.mark.parametrize('extra', [
    '',
    'loss_param { normalization: FULL ignore_label: 1 }',
    'loss_param { normalization: VALID ignore_label: 0 }',
    'loss_param { normalization: BATCH_SIZE }',
    'loss_param { normalization: NONE }',
    'loss_param { normalize: false ignore_label: 2 }',
    'loss_weight: 2.5 loss_param { normalize: true }',
])
def test_softmax_loss_gradient(extra):
    x = RNG.standard_normal((2, 3, 2, 2))
    numeric_gradient_check(SOFTMAX_LOSS % extra, {'x': x, 'lbl': labels((2, 1, 2, 2), 3)},
                           phase=caffe_py.TRAIN, no_grad=('lbl',))


def test_softmax_loss_gradient_other_axis():
    text = inputs(x=(3, 2, 4), lbl=(3, 2)) + '''
    layer { name: "L" type: "SoftmaxWithLoss" bottom: "x" bottom: "lbl" top: "loss"
            softmax_param { axis: -1 } }'''
    numeric_gradient_check(text, {'x': RNG.standard_normal((3, 2, 4)), 'lbl': labels((3, 2), 4)},
                           phase=caffe_py.TRAIN, no_grad=('lbl',))


def expected_softmax_loss(x, lbl, ignore=None):
    p = softmax(x)
    lbl = lbl.reshape(x.shape[0], *x.shape[2:]).astype(int)
    keep = np.ones(lbl.shape, bool) if ignore is None else lbl != ignore
    picked = np.take_along_axis(p, np.where(keep, lbl, 0)[:, None], axis=1)[:, 0]
    return -np.log(np.maximum(picked, np.finfo(np.float32).tiny))[keep].sum(), keep.sum()


@pytest.mark.parametrize('mode,normalizer', [('FULL', 8), ('VALID', None), ('BATCH_SIZE', 2),
                                             ('NONE', 1)])
def test_softmax_loss_normalizers(mode, normalizer):
    x, lbl = RNG.standard_normal((2, 3, 2, 2)), labels((2, 1, 2, 2), 3)
    lbl[0, 0, 0, 0] = 1
    net = make_net(SOFTMAX_LOSS % ('loss_param { normalization: %s ignore_label: 1 }' % mode),
                   {'x': x, 'lbl': lbl})
    net.forward_from_to()
    total, valid = expected_softmax_loss(x, lbl, ignore=1)
    assert float(net.blobs['loss'].data) == pytest.approx(total / (normalizer or valid))


def test_softmax_loss_all_ignored_is_zero_not_nan():
    net = make_net('force_backward: true ' + SOFTMAX_LOSS % 'loss_param { ignore_label: 2 }',
                   {'x': RNG.standard_normal((2, 3, 2, 2)), 'lbl': np.full((2, 1, 2, 2), 2.0)})
    net.forward_from_to()
    net.backward_from_to()
    assert float(net.blobs['loss'].data) == 0
    assert not net.blobs['x'].diff.any()


def test_softmax_loss_clamps_probability_at_flt_min():
    x = np.array([[0.0, 200.0]], np.float32)
    text = inputs(x=(1, 2), lbl=(1,)) + \
        'layer { name: "L" type: "SoftmaxWithLoss" bottom: "x" bottom: "lbl" top: "loss" }'
    net = make_net(text, {'x': x, 'lbl': [0.0]}, dtype=np.float32)
    net.forward_from_to()
    assert float(net.blobs['loss'].data) == pytest.approx(-np.log(np.finfo(np.float32).tiny), rel=1e-6)


def test_softmax_loss_probability_top_needs_a_weight_per_top():
    base = inputs(x=(4, 3), lbl=(4,)) + '''
    layer { name: "L" type: "SoftmaxWithLoss" bottom: "x" bottom: "lbl" top: "loss" top: "prob" %s }'''
    x, lbl = RNG.standard_normal((4, 3)), labels((4,), 3)
    with pytest.raises(NetError, match='loss_weight'):
        make_net(base % '', {'x': x, 'lbl': lbl})
    net = make_net('force_backward: true ' + base % 'loss_weight: 1 loss_weight: 0',
                   {'x': x, 'lbl': lbl})
    net.forward_from_to()
    np.testing.assert_allclose(net.blobs['prob'].data, softmax(x))
    assert float(net.blobs['loss'].data) == pytest.approx(expected_softmax_loss(
        x[:, :, None], lbl[:, None])[0] / 4)
    net.backward_from_to()
    expected = softmax(x)
    expected[np.arange(4), lbl.astype(int)] -= 1
    np.testing.assert_allclose(net.blobs['x'].diff, expected / 4)


def test_loss_layers_refuse_backward_to_labels():
    text = inputs(x=(4, 3), lbl=(4,)) + '''
    layer { name: "L" type: "SoftmaxWithLoss" bottom: "x" bottom: "lbl" top: "loss"
            propagate_down: true propagate_down: true }'''
    net = make_net('force_backward: true ' + text,
                   {'x': RNG.standard_normal((4, 3)), 'lbl': labels((4,), 3)})
    net.forward_from_to()
    with pytest.raises(LayerError, match='cannot backpropagate to label inputs'):
        net.backward_from_to()


def test_label_checks():
    text = inputs(x=(4, 3), lbl=(4,)) + \
        'layer { name: "L" type: "SoftmaxWithLoss" bottom: "x" bottom: "lbl" top: "loss" }'
    net = make_net(text, {'x': RNG.standard_normal((4, 3)), 'lbl': [0.0, 1.0, 3.0, 2.0]})
    with pytest.raises(LayerError, match=r'label values must be integers in \[0, 3\)'):
        net.forward_from_to()
    with pytest.raises(NetError, match='Number of labels must match'):
        make_net(inputs(x=(4, 3, 2), lbl=(4,)) +
                 'layer { name: "L" type: "SoftmaxWithLoss" bottom: "x" bottom: "lbl" }', {})
    with pytest.raises(NetError, match='same first dimension'):
        make_net(inputs(x=(4, 3), lbl=(3,)) +
                 'layer { name: "L" type: "EuclideanLoss" bottom: "x" bottom: "lbl" }', {})


def test_loss_top_is_a_scalar_created_automatically():
    net = make_net(inputs(x=(4, 3), lbl=(4,)) +
                   'layer { name: "L" type: "SoftmaxWithLoss" bottom: "x" bottom: "lbl" }', {})
    assert net.blobs['(automatic)'].shape == ()
    assert net.blob_loss_weights['(automatic)'] == 1.0
    assert list(net.layer_dict['L'].layer_param.loss_weight) == [1.0]   # as Caffe's snapshots


# -- Accuracy ------------------------------------------------------------------------

def accuracy_net(shape, label_shape, extra='', tops='top: "acc"'):
    return inputs(x=shape, lbl=label_shape) + '''
    layer { name: "A" type: "Accuracy" bottom: "x" bottom: "lbl" %s %s }''' % (tops, extra)


def run_accuracy(x, lbl, extra='', tops='top: "acc"'):
    net = make_net(accuracy_net(np.shape(x), np.shape(lbl), extra, tops), {'x': x, 'lbl': lbl},
                   caffe_py.TEST, np.float32)
    net.forward_from_to()
    return net


def test_accuracy_ties_count_against_the_label():
    x = np.array([[1.0, 1.0, 0.0], [0.5, 0.5, 0.5], [0.0, 2.0, 1.0]])
    # row 0: class 0 ties with class 1 -> wrong; row 2: label 1 strictly best -> right
    assert float(run_accuracy(x, [0.0, 2.0, 1.0]).blobs['acc'].data) == pytest.approx(1 / 3)
    # top 2: a tie with one other class is fine, with two it is not
    net = run_accuracy(x, [0.0, 2.0, 2.0], 'accuracy_param { top_k: 2 }')
    assert float(net.blobs['acc'].data) == pytest.approx(2 / 3)
    assert float(run_accuracy(x, [0.0, 2.0, 2.0], 'accuracy_param { top_k: 3 }')
                 .blobs['acc'].data) == 1.0


def test_accuracy_top_k_matches_a_sort():
    x = RNG.standard_normal((50, 6))
    lbl = labels((50,), 6)
    for k in (1, 2, 4):
        rank = (x > x[np.arange(50), lbl.astype(int)][:, None]).sum(axis=1)
        net = run_accuracy(x, lbl, 'accuracy_param { top_k: %d }' % k)
        assert float(net.blobs['acc'].data) == pytest.approx((rank < k).mean())


def test_accuracy_per_class_ignore_label_and_axis():
    x = RNG.standard_normal((3, 2, 4))                     # classes on axis 2
    lbl = np.array([[0, 1], [1, 3], [3, 3]], np.float64)
    net = run_accuracy(x, lbl, 'accuracy_param { axis: 2 ignore_label: 3 }',
                       tops='top: "acc" top: "per_class"')
    pred = x.argmax(axis=2)
    keep = lbl != 3
    right = (pred == lbl) & keep
    assert float(net.blobs['acc'].data) == pytest.approx(right.sum() / keep.sum())
    per_class = net.blobs['per_class'].data
    assert per_class.shape == (4,)
    for c in range(4):
        n = (keep & (lbl == c)).sum()
        assert per_class[c] == pytest.approx(0 if n == 0 else (right & (lbl == c)).sum() / n)


def test_accuracy_with_everything_ignored_is_zero():
    net = run_accuracy(RNG.standard_normal((2, 3)), [1.0, 1.0], 'accuracy_param { ignore_label: 1 }')
    assert float(net.blobs['acc'].data) == 0


def test_accuracy_errors():
    with pytest.raises(NetError, match='top_k must be less than or equal'):
        make_net(accuracy_net((2, 3), (2,), 'accuracy_param { top_k: 4 }'), {})
    net = make_net('force_backward: true ' + accuracy_net((2, 3), (2,)),
                   {'x': RNG.standard_normal((2, 3)), 'lbl': [0.0, 1.0]})
    net.forward_from_to()
    with pytest.raises(LayerError, match='no backward'):
        net.backward_from_to()


# -- the other losses ----------------------------------------------------------------

def test_euclidean_gradient_to_both_bottoms():
    text = inputs(a=(3, 2, 2), b=(3, 4)) + \
        'layer { name: "L" type: "EuclideanLoss" bottom: "a" bottom: "b" loss_weight: 0.7 }'
    a, b = RNG.standard_normal((3, 2, 2)), RNG.standard_normal((3, 4))
    net = numeric_gradient_check(text, {'a': a, 'b': b}, phase=caffe_py.TRAIN)
    assert net.forward_from_to() == pytest.approx(0.7 * ((a.reshape(3, 4) - b) ** 2).sum() / 3 / 2)


SIGMOID_XENT = inputs(x=(3, 4), t=(3, 4)) + '''
layer { name: "L" type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" top: "loss" %s }'''


@pytest.mark.parametrize('extra', ['', 'loss_param { normalization: VALID ignore_label: -1 }',
                                   'loss_param { normalization: FULL }',
                                   'loss_param { normalize: true ignore_label: 0 }'])
def test_sigmoid_cross_entropy_gradient(extra):
    t = RNG.integers(-1, 2, (3, 4)).astype(np.float64)
    numeric_gradient_check(SIGMOID_XENT % extra, {'x': 3 * RNG.standard_normal((3, 4)), 't': t},
                           phase=caffe_py.TRAIN, no_grad=('t',))


def test_sigmoid_cross_entropy_defaults_to_batch_size_and_is_stable():
    x = np.array([[-200.0, 0.5, 300.0], [1.0, -2.0, 0.0]])
    t = np.array([[0.0, 1.0, 1.0], [0.25, 0.0, 1.0]])
    net = make_net(SIGMOID_XENT.replace('3, 4', '2, 3') % '', {'x': x, 't': t})
    net.blobs['x'].reshape(2, 3)
    net.blobs['t'].reshape(2, 3)
    net.blobs['x'].data[...], net.blobs['t'].data[...] = x, t
    net.forward_from_to()
    p = 1 / (1 + np.exp(-np.clip(x, -50, 50)))
    expected = -(t * np.log(np.maximum(p, 1e-300)) + (1 - t) * np.log(np.maximum(1 - p, 1e-300)))
    expected[0, 0] = 0.0      # -200 with target 0: no loss
    expected[0, 2] = 0.0      # 300 with target 1: no loss
    assert float(net.blobs['loss'].data) == pytest.approx(expected.sum() / 2)


@pytest.mark.parametrize('norm', ['L1', 'L2'])
def test_hinge_gradient(norm):
    text = inputs(x=(4, 3), lbl=(4,)) + '''
    layer { name: "L" type: "HingeLoss" bottom: "x" bottom: "lbl" hinge_loss_param { norm: %s } }''' % norm
    # keep every margin 1 -+ x away from the kink at 0
    x = RNG.choice([-1, 1], (4, 3)) * RNG.uniform(0.2, 0.8, (4, 3)) + RNG.choice([-1, 1], (4, 3))
    x = np.where(np.abs(np.abs(x) - 1) < 0.1, x * 1.3, x)
    numeric_gradient_check(text, {'x': x, 'lbl': labels((4,), 3)}, phase=caffe_py.TRAIN,
                           no_grad=('lbl',))


INFOGAIN = inputs(x=(3, 3, 2), lbl=(3, 2), H=(3, 3)) + '''
layer { name: "L" type: "InfogainLoss" bottom: "x" bottom: "lbl" bottom: "H" top: "loss" %s }'''


@pytest.mark.parametrize('extra', ['', 'loss_param { normalization: BATCH_SIZE ignore_label: 1 }',
                                   'loss_param { normalization: NONE } loss_weight: 3'])
def test_infogain_gradient_with_h_bottom(extra):
    values = {'x': RNG.standard_normal((3, 3, 2)), 'lbl': labels((3, 2), 3),
              'H': RNG.uniform(0, 2, (3, 3))}
    net = numeric_gradient_check(INFOGAIN % extra, values, phase=caffe_py.TRAIN, no_grad=('lbl', 'H'))
    assert not net.blobs['H'].diff.any()


def test_infogain_from_source_file_equals_softmax_loss_for_identity(tmp_path):
    path = str(tmp_path / 'H.binaryproto')
    formats.write_binaryproto(path, np.eye(4).reshape(1, 1, 4, 4))
    text = inputs(x=(2, 3, 4), lbl=(2, 3)) + '''
    layer { name: "L" type: "InfogainLoss" bottom: "x" bottom: "lbl" top: "loss"
            infogain_loss_param { source: "%s" axis: 2 } }''' % path
    x, lbl = RNG.standard_normal((2, 3, 4)), labels((2, 3), 4)
    numeric_gradient_check(text, {'x': x, 'lbl': lbl}, phase=caffe_py.TRAIN, no_grad=('lbl',))
    net = make_net(text, {'x': x, 'lbl': lbl})
    p = softmax(x, axis=2)
    expected = -np.log(np.take_along_axis(p, lbl.astype(int)[..., None], axis=2)).sum() / 6
    assert net.forward_from_to() == pytest.approx(expected)


def test_infogain_errors(tmp_path):
    base = inputs(x=(2, 3), lbl=(2,)) + \
        'layer { name: "L" type: "InfogainLoss" bottom: "x" bottom: "lbl" %s }'
    with pytest.raises(NetError, match='source must be specified'):
        make_net(base % '', {})
    with pytest.raises(NetError, match='normalize is deprecated'):
        make_net(base % 'loss_param { normalize: true }', {})
    with pytest.raises(NetError, match='nowhere.binaryproto'):
        make_net(base % 'infogain_loss_param { source: "%s/nowhere.binaryproto" }' % tmp_path, {})
    path = str(tmp_path / 'H.binaryproto')
    formats.write_binaryproto(path, np.eye(2))
    with pytest.raises(NetError, match='H must be 3x3'):
        make_net(base % 'infogain_loss_param { source: "%s" }' % path, {})


@pytest.mark.parametrize('legacy', ['false', 'true'])
def test_contrastive_gradient(legacy):
    text = inputs(a=(6, 3), b=(6, 3, 1, 1), sim=(6, 1, 1, 1)) + '''
    layer { name: "L" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "sim"
            contrastive_loss_param { margin: 1.5 legacy_version: %s } }''' % legacy
    a = RNG.standard_normal((6, 3)) * 0.6
    b = RNG.standard_normal((6, 3, 1, 1)) * 0.6
    sim = np.array([1, 0, 0, 1, 0, 0], np.float64).reshape(6, 1, 1, 1)
    net = numeric_gradient_check(text, {'a': a, 'b': b, 'sim': sim}, phase=caffe_py.TRAIN,
                                 no_grad=('sim',))
    d2 = ((a - b.reshape(6, 3)) ** 2).sum(axis=1)
    if legacy == 'true':
        apart = np.maximum(1.5 - d2, 0)
    else:
        apart = np.maximum(1.5 - np.sqrt(d2), 0) ** 2
    expected = np.where(sim.ravel() != 0, d2, apart).sum() / 6 / 2
    assert net.forward_from_to() == pytest.approx(expected)
    assert not net.blobs['sim'].diff.any()


def test_contrastive_shape_checks():
    with pytest.raises(NetError, match='same channels'):
        make_net(inputs(a=(2, 3), b=(2, 4), s=(2,)) +
                 'layer { name: "L" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "s" }', {})
    with pytest.raises(NetError, match='size 1 on axis 2'):
        make_net(inputs(a=(2, 3, 2), b=(2, 3, 2), s=(2,)) +
                 'layer { name: "L" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "s" }', {})


def test_multinomial_logistic_gradient_and_clamp():
    text = inputs(p=(4, 3), lbl=(4, 1)) + \
        'layer { name: "L" type: "MultinomialLogisticLoss" bottom: "p" bottom: "lbl" }'
    p = RNG.uniform(0.1, 1.0, (4, 3))
    lbl = labels((4, 1), 3)
    numeric_gradient_check(text, {'p': p, 'lbl': lbl}, phase=caffe_py.TRAIN, no_grad=('lbl',))
    p[0, int(lbl[0, 0])] = 0.0
    net = make_net(text, {'p': p, 'lbl': lbl})
    picked = np.maximum(p[np.arange(4), lbl.ravel().astype(int)], 1e-20)
    assert net.forward_from_to() == pytest.approx(-np.log(picked).sum() / 4)
    with pytest.raises(NetError, match='one value per item'):
        make_net(inputs(p=(4, 3), lbl=(4, 2)) +
                 'layer { name: "L" type: "MultinomialLogisticLoss" bottom: "p" bottom: "lbl" }', {})
