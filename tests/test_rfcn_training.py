"""R-FCN's training layers: the 3-bottom SmoothL1Loss with loss_param normalization and its
per-instance top, and BoxAnnotatorOHEM; hand cases, float64 gradients, the CuPy stand-in."""
import numpy as np
import pytest

from test_fork_layers import check, forward_backward, rand, run


def f(x):
    return np.where(np.abs(x) < 1, 0.5 * x * x, np.abs(x) - 0.5)


A = np.array([0.5, 3.0, -2.0, 0.1, 1.5, -0.4, 0.2, 4.0]).reshape(2, 4, 1, 1)
W = np.array([1, 0.5, 1, 0, 0, 1, 1, 0.5]).reshape(2, 4, 1, 1)


@pytest.mark.parametrize('loss_param, normalizer', [
    ('', 2), ('loss_param { normalization: FULL }', 2), ('loss_param { normalization: BATCH_SIZE }', 2),
    ('loss_param { normalization: NONE }', 1), ('loss_param { normalization: PRE_FIXED pre_fixed_normalizer: 128 }', 128),
    ('loss_param { normalization: PRE_FIXED pre_fixed_normalizer: 0.25 }', 1),   # at least 1
    ('loss_param { normalize: false }', 2)])
def test_rfcn_three_bottom_smooth_l1_hand_case(loss_param, normalizer):
    b = np.zeros_like(A)
    net = run({'a': A, 'b': b, 'w': W}, 'type: "SmoothL1Loss" %s' % loss_param)
    assert net.blobs['y'].data == pytest.approx(f(W * A).sum() / normalizer)
    net.blobs['y'].diff[...] = 1
    net.backward_from_to()
    d = W * A       # the fork's backward: f'(w (a - b)) / normalizer, without the factor w
    np.testing.assert_allclose(net.blobs['a'].diff, np.where(np.abs(d) < 1, d, np.sign(d)) / normalizer)
    np.testing.assert_allclose(net.blobs['b'].diff, -net.blobs['a'].diff)


def test_normalization_counts_spatial_positions_and_two_bottoms_keep_py_faster_rcnn():
    a, b = rand(2, 3, 2, 2), rand(2, 3, 2, 2, seed=1)
    errors = f(a - b).sum()
    w = np.ones_like(a)
    assert run({'a': a, 'b': b, 'w': w}, 'type: "SmoothL1Loss"').blobs['y'].data == pytest.approx(errors / 8)
    assert run({'a': a, 'b': b, 'w': w}, 'type: "SmoothL1Loss" loss_param { normalization: BATCH_SIZE }'
               ).blobs['y'].data == pytest.approx(errors / 2)
    assert run({'a': a, 'b': b}, 'type: "SmoothL1Loss"').blobs['y'].data == pytest.approx(errors / 2)
    assert run({'a': a, 'b': b}, 'type: "SmoothL1Loss" loss_param { normalization: VALID }'
               ).blobs['y'].data == pytest.approx(errors / 8)


def test_per_instance_loss_top_and_gradients():
    a, b = rand(3, 4, 2, 1) * 2, rand(3, 4, 2, 1, seed=1)
    w = (rand(3, 4, 2, 1, seed=2) > 0).astype(np.float64)       # the fork's weights: 0 or 1
    layer = 'type: "SmoothL1Loss" loss_param { normalization: PRE_FIXED pre_fixed_normalizer: 4 }'
    net = run({'a': a, 'b': b, 'w': w}, layer + ' loss_weight: 1 loss_weight: 0', tops=('y', 'per'))
    with pytest.raises(Exception, match='once per top'):     # as Caffe: R-FCN's nets give two weights
        run({'a': a, 'b': b, 'w': w}, layer, tops=('y', 'per'))
    np.testing.assert_allclose(net.blobs['per'].data, f(w * (a - b)).sum(axis=1, keepdims=True))
    assert net.blobs['y'].data == pytest.approx(f(w * (a - b)).sum() / 4)
    check({'a': a, 'b': b, 'w': w}, layer, no_grad=('w',))
    check({'a': a, 'b': b, 'w': w}, 'type: "SmoothL1Loss" smooth_l1_loss_param { sigma: 2 }', no_grad=('w',))


def test_box_annotator_ohem_keeps_each_images_hardest_regions():
    rois = np.array([[0, 1, 1, 5, 5], [1, 0, 0, 3, 3], [0, 2, 2, 6, 6], [0, 0, 0, 9, 9],
                     [1, 1, 1, 2, 2], [1, 4, 4, 8, 8], [0, 3, 3, 4, 4]], np.float64).reshape(7, 5, 1, 1)
    loss = np.array([0.5, 2.0, 3.0, 0.5, 0.1, 2.0, 0.2]).reshape(7, 1, 1, 1)
    labels = np.arange(1, 8, dtype=np.float64).reshape(7, 1, 1, 1)
    weights = np.arange(14, dtype=np.float64).reshape(7, 2, 1, 1) + 1
    net = run({'rois': rois, 'loss': loss, 'labels': labels, 'weights': weights},
              'type: "BoxAnnotatorOHEM" box_annotator_ohem_param { roi_per_img: 2 ignore_label: -1 }',
              tops=('labels_ohem', 'weights_ohem'))
    # image 0: regions 0, 2, 3, 6 with losses 0.5, 3, 0.5, 0.2 -> 2 and 0 (the earlier of the tie)
    # image 1: regions 1, 4, 5 with losses 2, 0.1, 2 -> 1 and 5
    kept = np.array([1, 1, 1, 0, 0, 1, 0], bool)
    np.testing.assert_array_equal(net.blobs['labels_ohem'].data.reshape(-1), np.where(kept, labels.reshape(-1), -1))
    np.testing.assert_array_equal(net.blobs['weights_ohem'].data.reshape(7, 2),
                                  np.where(kept[:, None], weights.reshape(7, 2), 0))
    assert net.blobs['labels_ohem'].data.shape == (7, 1, 1, 1)


def test_box_annotator_ohem_refuses_misshapen_bottoms():
    with pytest.raises(Exception, match='5 channels'):
        run({'rois': np.zeros((3, 4)), 'loss': np.zeros((3, 1)), 'labels': np.zeros((3, 1)), 'w': np.zeros((3, 8))},
            'type: "BoxAnnotatorOHEM" box_annotator_ohem_param { roi_per_img: 2 }', tops=('l', 'w2'))
    with pytest.raises(Exception, match='bottom\\[1\\]'):
        run({'rois': np.zeros((3, 5)), 'loss': np.zeros((2, 1)), 'labels': np.zeros((3, 1)), 'w': np.zeros((3, 8))},
            'type: "BoxAnnotatorOHEM" box_annotator_ohem_param { roi_per_img: 2 }', tops=('l', 'w2'))


def test_ohem_pipeline_sends_gradients_to_the_kept_regions_only():
    """R-FCN's OHEM: per-region losses, the hardest kept, the box loss over them (PRE_FIXED)."""
    from harness import layer_net_text as net_text
    from caffe_py import TRAIN, Net, formats
    from caffe_py.proto import caffe_pb2
    rois = np.zeros((6, 5, 1, 1))
    rois[3:, 0] = 1
    pred, target = rand(6, 8, 1, 1) * 2, rand(6, 8, 1, 1, seed=1)
    inside = np.ones((6, 8, 1, 1))
    text = net_text({'rois': rois.shape, 'pred': pred.shape, 'target': target.shape, 'inside': inside.shape,
                     'labels': (6, 1, 1, 1)},
                    'type: "SmoothL1Loss" loss_weight: 0 loss_weight: 0', tops=('unused', 'per_roi'))
    text = text.replace('bottom: "rois" bottom: "pred" bottom: "target" bottom: "inside" bottom: "labels"',
                        'bottom: "pred" bottom: "target" bottom: "inside" propagate_down: false '
                        'propagate_down: false propagate_down: false')
    text += ('\nlayer { name: "ohem" type: "BoxAnnotatorOHEM" bottom: "rois" bottom: "per_roi" bottom: "labels" '
             'bottom: "inside" top: "labels_ohem" top: "weights_ohem" box_annotator_ohem_param { roi_per_img: 2 } }'
             '\nlayer { name: "loss" type: "SmoothL1Loss" bottom: "pred" bottom: "target" bottom: "weights_ohem" '
             'top: "loss" loss_param { normalization: PRE_FIXED pre_fixed_normalizer: 4 } }')
    param = formats.parse_text(text, caffe_pb2.NetParameter())
    param.force_backward = True         # the inputs stand for bbox_pred
    net = Net(param, TRAIN)
    net.forward(rois=rois, pred=pred, target=target, inside=inside, labels=np.zeros((6, 1, 1, 1)))
    net.backward()
    per_roi = f(pred - target).sum(axis=1).reshape(-1)
    kept = np.zeros(6, bool)
    for image in (slice(0, 3), slice(3, 6)):
        kept[np.arange(6)[image][np.argsort(-per_roi[image], kind='stable')[:2]]] = True
    assert net.blobs['loss'].data == pytest.approx(per_roi[kept].sum() / 4)
    grad = net.blobs['pred'].diff.reshape(6, 8)
    assert (grad[~kept] == 0).all() and (np.abs(grad[kept]).sum(axis=1) > 0).all()


def test_rfcn_layers_on_the_cupy_stand_in_match_the_cpu():
    import fakecupy
    cases = [
        ({'a': rand(3, 4, 2, 1), 'b': rand(3, 4, 2, 1, seed=1), 'w': (rand(3, 4, 2, 1, seed=2) > 0) * 1.0},
         'type: "SmoothL1Loss" loss_weight: 1 loss_weight: 0 loss_param { normalization: PRE_FIXED '
         'pre_fixed_normalizer: 3 }', ('y', 'per')),
        ({'rois': np.repeat(np.arange(4.0) % 2, 5).reshape(4, 5), 'loss': rand(4, 1), 'labels': rand(4, 1, seed=1),
          'w': rand(4, 8, seed=2)}, 'type: "BoxAnnotatorOHEM" box_annotator_ohem_param { roi_per_img: 1 }',
         ('l', 'w2')),
    ]
    for inputs, layer, tops in cases:
        host = forward_backward(inputs, layer, tops)
        with fakecupy.fake_gpu():
            device = forward_backward(inputs, layer, tops)
        for a, e in zip(device[0] + device[1], host[0] + host[1]):
            np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12, err_msg=layer)


SOFTMAX3 = ('type: "SoftmaxWithLoss" loss_weight: 1 loss_weight: 0 loss_weight: 0 '
            'loss_param { ignore_label: -1 %s }')


@pytest.mark.parametrize('norm, normalizer', [('', 3), ('normalization: BATCH_SIZE', 4), ('normalization: NONE', 1)])
def test_softmax_loss_per_instance_top(norm, normalizer):
    """R-FCN's third top: -log(max(prob, FLT_MIN)) per label, shaped as the labels, 0 where ignored,
    not normalized; the loss and the gradient are those of the one-top layer."""
    x = rand(4, 3, 1, 1) * 3
    x[1, 0] = 200                           # prob of the label underflows: clamped at FLT_MIN
    labels = np.array([2, 1, -1, 0], np.float64).reshape(4, 1, 1, 1)
    layer = SOFTMAX3 % norm
    net = run({'x': x, 'labels': labels}, layer, tops=('y', 'prob', 'per'))
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    picked = np.take_along_axis(p, np.maximum(labels, 0).astype(int), axis=1)
    expected = np.where(labels == -1, 0, -np.log(np.maximum(picked, np.finfo(np.float32).tiny)))
    assert net.blobs['per'].data.shape == labels.shape
    np.testing.assert_allclose(net.blobs['per'].data, expected)
    assert net.blobs['y'].data == pytest.approx(expected.sum() / normalizer)
    np.testing.assert_allclose(net.blobs['prob'].data, p)
    net.blobs['y'].diff[...] = 1
    net.blobs['per'].diff[...] = 5          # no gradient from the per-instance top, as the fork's
    net.blobs['prob'].diff[...] = 7
    net.backward_from_to()
    one_top = run({'x': x, 'labels': labels}, 'type: "SoftmaxWithLoss" loss_param { ignore_label: -1 %s }' % norm)
    one_top.backward_from_to()
    np.testing.assert_allclose(net.blobs['x'].diff, one_top.blobs['x'].diff)
    x[1, 0] = 1                             # (the clamp has no gradient)
    check({'x': x, 'labels': labels}, 'type: "SoftmaxWithLoss" loss_param { ignore_label: -1 %s }' % norm,
          no_grad=('labels',))
    with pytest.raises(Exception, match='at most 3 top'):
        run({'x': x, 'labels': labels}, layer, tops=('y', 'prob', 'per', 'more'))


def test_softmax_loss_per_instance_top_on_the_cupy_stand_in():
    import fakecupy
    inputs = {'x': rand(5, 4, 2, 1), 'labels': np.array([0, 3, -1, 2, 1, 1, 0, -1, 3, 2.0]).reshape(5, 1, 2, 1)}
    layer = SOFTMAX3 % ''
    host = forward_backward(inputs, layer, ('y', 'prob', 'per'))
    with fakecupy.fake_gpu():
        device = forward_backward(inputs, layer, ('y', 'prob', 'per'))
    for a, e in zip(device[0] + device[1], host[0] + host[1]):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


def test_ohem_ranks_regions_by_classification_and_box_losses():
    """R-FCN's OHEM train_val: per-region softmax (third top) + per-region box loss, summed by
    Eltwise, rank the regions; the classification loss over labels_ohem reaches the kept ones only."""
    from caffe_py import TRAIN, Net, formats
    from caffe_py.proto import caffe_pb2
    rois = np.zeros((6, 5, 1, 1))
    rois[3:, 0] = 1
    score, pred, target = rand(6, 3, 1, 1) * 2, rand(6, 8, 1, 1, seed=1), rand(6, 8, 1, 1, seed=2)
    labels = np.array([0, 1, 2, 2, 1, 0], np.float64).reshape(6, 1, 1, 1)
    inside = np.ones((6, 8, 1, 1))
    text = ''.join('layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }\n'
                   % (n, n, ' '.join('dim: %d' % d for d in v.shape)) for n, v in (('rois', rois), ('score', score), ('pred', pred), ('target', target),
                                ('labels', labels), ('inside', inside)))
    text += '''
layer { name: "per_roi_loss_cls" type: "SoftmaxWithLoss" bottom: "score" bottom: "labels"
  top: "temp_loss_cls" top: "temp_prob_cls" top: "per_roi_loss_cls"
  loss_weight: 0 loss_weight: 0 loss_weight: 0 propagate_down: false propagate_down: false }
layer { name: "per_roi_loss_bbox" type: "SmoothL1Loss" bottom: "pred" bottom: "target" bottom: "inside"
  top: "temp_loss_bbox" top: "per_roi_loss_bbox" loss_weight: 0 loss_weight: 0
  propagate_down: false propagate_down: false propagate_down: false }
layer { name: "per_roi_loss" type: "Eltwise" bottom: "per_roi_loss_cls" bottom: "per_roi_loss_bbox"
  top: "per_roi_loss" propagate_down: false propagate_down: false }
layer { name: "ohem" type: "BoxAnnotatorOHEM" bottom: "rois" bottom: "per_roi_loss" bottom: "labels"
  bottom: "inside" top: "labels_ohem" top: "weights_ohem" box_annotator_ohem_param { roi_per_img: 2 ignore_label: -1 } }
layer { name: "loss_cls" type: "SoftmaxWithLoss" bottom: "score" bottom: "labels_ohem" top: "loss_cls"
  propagate_down: true propagate_down: false loss_param { ignore_label: -1 } }
'''
    param = formats.parse_text(text, caffe_pb2.NetParameter())
    param.force_backward = True
    net = Net(param, TRAIN)
    net.forward(rois=rois, score=score, pred=pred, target=target, labels=labels, inside=inside)
    net.backward()
    p = np.exp(score.reshape(6, 3))
    p /= p.sum(axis=1, keepdims=True)
    per_roi = -np.log(p[np.arange(6), labels.reshape(-1).astype(int)]) + f(pred - target).sum(axis=1).reshape(-1)
    np.testing.assert_allclose(net.blobs['per_roi_loss'].data.reshape(-1), per_roi)
    kept = np.zeros(6, bool)
    for image in (slice(0, 3), slice(3, 6)):
        kept[np.arange(6)[image][np.argsort(-per_roi[image], kind='stable')[:2]]] = True
    grad = net.blobs['score'].diff.reshape(6, 3)
    assert (grad[~kept] == 0).all() and (np.abs(grad[kept]).sum(axis=1) > 0).all()
