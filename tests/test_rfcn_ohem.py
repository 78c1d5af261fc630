"""py-R-FCN's SoftmaxWithLossOHEM and SmoothL1LossOHEM: hand cases, float64 gradients, the CuPy
stand-in, and a py-R-FCN-style OHEM net (models/fork_styles/rfcn_ohem_style.prototxt) training."""
import os

import numpy as np
import pytest

import caffe_py as caffe
from test_fork_layers import check, forward_backward, rand, run

STYLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'models', 'fork_styles',
                     'rfcn_ohem_style.prototxt')


def smooth_l1(x):
    return np.where(np.abs(x) < 1, 0.5 * x * x, np.abs(x) - 0.5)


def softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


SCORES = rand(5, 3, 1, 1)
LABELS = np.array([0, 2, -1, 1, 2], np.float64).reshape(5, 1, 1, 1)


@pytest.mark.parametrize('loss_param, normalizer', [
    ('', 4), ('normalization: FULL', 5), ('normalization: BATCH_SIZE', 5), ('normalization: NONE', 1),
    ('normalize: false', 5)])
def test_softmax_ohem_per_region_losses_and_normalization(loss_param, normalizer):
    layer = ('type: "SoftmaxWithLossOHEM" loss_weight: 1 loss_weight: 0 loss_weight: 0 '
             'loss_param { ignore_label: -1 %s }' % loss_param)
    net = run({'x': SCORES, 'labels': LABELS}, layer, bottoms=('x', 'labels'), tops=('y', 'prob', 'per'))
    p = softmax(SCORES.reshape(5, 3))
    per = np.where(LABELS.reshape(5) == -1, 0, -np.log(p[np.arange(5), np.maximum(LABELS.reshape(5), 0).astype(int)]))
    np.testing.assert_allclose(net.blobs['per'].data, per.reshape(LABELS.shape))
    np.testing.assert_allclose(net.blobs['prob'].data.reshape(5, 3), p)
    assert net.blobs['y'].data == pytest.approx(per.sum() / normalizer)
    assert net.blobs['per'].shape == LABELS.shape
    check({'x': SCORES, 'labels': LABELS}, layer.replace('loss_weight: 1 loss_weight: 0 loss_weight: 0', ''),
          no_grad=('labels',))


def test_softmax_ohem_takes_the_softmax_axis_and_refuses_bad_labels():
    x, labels = rand(2, 4, 3), np.array([[0, 3, 1], [2, 2, 0]], np.float64)
    net = run({'x': x, 'labels': labels}, 'type: "SoftmaxWithLossOHEM" loss_weight: 1 loss_weight: 0 '
              'loss_weight: 0', tops=('y', 'prob', 'per'))
    p = softmax(x)
    expected = -np.log(np.take_along_axis(p, labels.astype(int)[:, None], axis=1))[:, 0]
    np.testing.assert_allclose(net.blobs['per'].data, expected)
    assert net.blobs['y'].data == pytest.approx(expected.sum() / 6)
    with pytest.raises(Exception, match='label values'):
        run({'x': x, 'labels': labels + 2}, 'type: "SoftmaxWithLossOHEM"')


A = np.array([0.5, 3.0, -2.0, 0.1, 1.5, -0.4, 0.2, 4.0]).reshape(2, 4, 1, 1)
W = np.array([1, 0.5, 1, 0, 0, 1, 1, 0.5]).reshape(2, 4, 1, 1)


@pytest.mark.parametrize('loss_param, normalizer', [
    ('', 2), ('loss_param { normalization: BATCH_SIZE }', 2), ('loss_param { normalization: NONE }', 1),
    ('loss_param { normalization: PRE_FIXED pre_fixed_normalizer: 16 }', 16),
    ('loss_param { normalization: PRE_FIXED pre_fixed_normalizer: 0.5 }', 1)])
def test_smooth_l1_ohem_hand_case(loss_param, normalizer):
    b = np.zeros_like(A)
    net = run({'a': A, 'b': b, 'w': W}, 'type: "SmoothL1LossOHEM" loss_weight: 1 loss_weight: 0 %s' % loss_param,
              tops=('y', 'per'))
    assert net.blobs['y'].data == pytest.approx(smooth_l1(W * A).sum() / normalizer)
    np.testing.assert_allclose(net.blobs['per'].data, smooth_l1(W * A).sum(axis=1, keepdims=True))
    net.blobs['y'].diff[...] = 1
    net.backward_from_to()
    d = W * A       # the fork's backward: f'(w (a - b)) / normalizer, without the factor w
    np.testing.assert_allclose(net.blobs['a'].diff, np.where(np.abs(d) < 1, d, np.sign(d)) / normalizer)
    np.testing.assert_allclose(net.blobs['b'].diff, -net.blobs['a'].diff)


def test_smooth_l1_ohem_normalizes_two_bottoms_too_and_implies_no_loss_weight():
    a, b = rand(2, 3, 2, 2), rand(2, 3, 2, 2, seed=1)
    errors = smooth_l1(a - b).sum()
    assert run({'a': a, 'b': b}, 'type: "SmoothL1LossOHEM" loss_weight: 1').blobs['y'].data == pytest.approx(errors / 8)
    net = run({'a': a, 'b': b}, 'type: "SmoothL1LossOHEM"', tops=('y', 'per'))   # two tops, no weights: fine
    assert net.blob_loss_weights['y'] == 0 and net.blobs['y'].data == pytest.approx(errors / 8)


def test_smooth_l1_ohem_float64_gradients():
    a, b = rand(3, 4, 2, 1) * 2, rand(3, 4, 2, 1, seed=1)
    w = (rand(3, 4, 2, 1, seed=2) > 0).astype(np.float64)       # the fork's weights: 0 or 1
    check({'a': a, 'b': b, 'w': w}, 'type: "SmoothL1LossOHEM" loss_weight: 1 loss_param { normalization: '
          'PRE_FIXED pre_fixed_normalizer: 4 }', no_grad=('w',))
    check({'a': a, 'b': b}, 'type: "SmoothL1LossOHEM" loss_weight: 2')


def test_ohem_layers_on_the_cupy_stand_in_match_the_cpu():
    import fakecupy
    cases = [
        ({'x': SCORES, 'labels': LABELS}, 'type: "SoftmaxWithLossOHEM" loss_weight: 1 loss_weight: 0 loss_weight: 0 '
         'loss_param { ignore_label: -1 }', ('y', 'prob', 'per')),
        ({'a': A, 'b': rand(2, 4, 1, 1), 'w': W}, 'type: "SmoothL1LossOHEM" loss_weight: 1 loss_weight: 0 '
         'loss_param { normalization: PRE_FIXED pre_fixed_normalizer: 3 }', ('y', 'per')),
    ]
    for inputs, layer, tops in cases:
        host = forward_backward(inputs, layer, tops)
        with fakecupy.fake_gpu():
            device = forward_backward(inputs, layer, tops)
        for a, e in zip(device[0] + device[1], host[0] + host[1]):
            np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12, err_msg=layer)


def _inputs(rng):
    rois = np.zeros((8, 5), np.float32)
    rois[4:, 0] = 1
    corners = rng.uniform(0, 30, (8, 2))
    rois[:, 1:3], rois[:, 3:] = corners, corners + rng.uniform(4, 20, (8, 2))
    labels = rng.integers(0, 3, (8, 1, 1, 1)).astype(np.float32)
    targets = rng.standard_normal((8, 8, 1, 1)).astype(np.float32)
    inside = np.zeros((8, 8, 1, 1), np.float32)
    inside[:, 4:] = (labels > 0).reshape(8, 1, 1, 1)       # class-agnostic boxes: foreground regions
    return {'data': rng.standard_normal((2, 3, 32, 40)).astype(np.float32), 'rois': rois, 'labels': labels,
            'bbox_targets': targets, 'bbox_inside_weights': inside}


def test_rfcn_ohem_style_net_trains_on_the_kept_regions_only(tmp_path):
    caffe.backend.set_random_seed(1)
    param = caffe.formats.read_net(STYLE)
    (tmp_path / 'solver.prototxt').write_text(
        'base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" max_iter: 5 display: 0 random_seed: 3 '
        'snapshot_after_train: false solver_mode: CPU net_param { %s }' % caffe.formats.to_text(param))
    solver = caffe.get_solver(str(tmp_path / 'solver.prototxt'))
    net = solver.net
    for name, value in _inputs(np.random.default_rng(0)).items():
        net.blobs[name].data[...] = value
    before = net.params['rfcn_cls'][0].data.copy()
    solver.step(1)
    kept = net.blobs['labels_ohem'].data.reshape(8) != -1
    assert kept.sum() == 4 and kept[:4].sum() == 2            # two regions per image
    per_roi = net.blobs['per_roi_loss'].data.reshape(8)
    for image in (slice(0, 4), slice(4, 8)):
        assert per_roi[image][kept[image]].min() >= per_roi[image][~kept[image]].max()
    cls_grad = net.blobs['cls_score'].diff.reshape(8, 3)
    box_grad = net.blobs['bbox_pred'].diff.reshape(8, 8)
    assert (cls_grad[~kept] == 0).all() and (np.abs(cls_grad[kept]).sum(axis=1) > 0).all()
    assert (box_grad[~kept] == 0).all()
    foreground = kept & (net.blobs['labels'].data.reshape(8) > 0)
    assert foreground.any()
    assert (np.abs(box_grad[foreground][:, 4:]).sum(axis=1) > 0).all() and (box_grad[:, :4] == 0).all()
    solver.step(4)
    assert np.isfinite(float(net.blobs['loss_cls'].data)) and np.isfinite(float(net.blobs['loss_bbox'].data))
    assert not np.array_equal(before, net.params['rfcn_cls'][0].data)


def test_a_py_rfcn_caffemodel_is_read_with_its_field_numbers(tmp_path):
    """Microsoft/caffe numbers roi_pooling_param 147, smooth_l1_loss_param 148, psroi_pooling_param 149,
    box_annotator_ohem_param 150, and PRE_FIXED 3: read by layer type (formats/fork_fields.py)."""
    from test_fork_schema import CONV, f32, layer, msg, read, vint
    from caffe_py.proto import caffe_pb2
    data = (CONV + layer('roi', 'ROIPooling', msg(147, vint(1, 7), vint(2, 6), f32(3, 0.0625)), bottoms=('conv', 'rois'))
            + layer('rpn_loss', 'SmoothL1Loss', msg(148, f32(1, 3.0)), bottoms=('a', 'b'))
            + layer('ps', 'PSROIPooling', msg(149, f32(1, 0.0625), vint(2, 21), vint(3, 7)), bottoms=('conv', 'rois'))
            + layer('ohem', 'BoxAnnotatorOHEM', msg(150, vint(1, 128), vint(2, -1 & 0xFFFFFFFFFFFFFFFF)),
                    bottoms=('rois', 'l', 'labels', 'w'), tops=('labels_ohem', 'w_ohem'))
            + layer('loss_bbox', 'SmoothL1LossOHEM', msg(101, vint(3, 3), f32(4, 128.0)), bottoms=('a', 'b', 'w'))
            + layer('reorg', 'Reorg', msg(149, vint(1, 2))) + layer('up', 'Upsample', msg(150, vint(1, 2))))
    roi, rpn_loss, ps, ohem, loss_bbox, reorg, up = read(data, tmp_path).layer[1:]
    assert (roi.roi_pooling_param.pooled_h, roi.roi_pooling_param.pooled_w) == (7, 6) and not roi.HasField('swish_param')
    assert rpn_loss.smooth_l1_loss_param.sigma == 3.0 and not rpn_loss.HasField('clip_param')
    assert (ps.psroi_pooling_param.output_dim, ps.psroi_pooling_param.group_size) == (21, 7)
    assert not ps.HasField('reorg_param') and not ohem.HasField('upsample_param')
    assert (ohem.box_annotator_ohem_param.roi_per_img, ohem.box_annotator_ohem_param.ignore_label) == (128, -1)
    assert loss_bbox.loss_param.normalization == caffe_pb2.LossParameter.PRE_FIXED
    assert (reorg.reorg_param.stride, up.upsample_param.scale) == (2, 2)      # the YOLO ports' own stay
