"""SSD's layers (weiliu89/caffe): hand-computed cases, float64 gradient checks, and PriorBox,
Normalize, Permute and DetectionOutput against OpenCV dnn's implementation on the same net."""
import cv2
import numpy as np
import pytest

import caffe_py as caffe
import fakecupy
from caffe_py import TEST, TRAIN, backend, bbox, detection_eval
from caffe_py.proto import caffe_pb2
from device_cases import cpu_mode, gpu_mode, net_from_text
from harness import numeric_gradient_check

SQ2 = np.sqrt(2.0)


def _inputs(**shapes):
    return ''.join('layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }\n'
                   % (n, n, ' '.join('dim: %d' % d for d in s)) for n, s in shapes.items())


def _run(text, phase=TEST, **values):
    net = net_from_text(_inputs(**{k: np.shape(v) for k, v in values.items()}) + text, phase)
    for name, value in values.items():
        net.blobs[name].data[...] = value
    net.forward()
    return net


# -- PriorBox ----------------------------------------------------------------------------------
def test_prior_box_by_hand():
    net = _run('layer { name: "p" type: "PriorBox" bottom: "f" bottom: "img" top: "p" prior_box_param {'
               ' min_size: 4 max_size: 9 aspect_ratio: 2 flip: true variance: 0.1 } }',
               f=np.zeros((1, 1, 2, 2)), img=np.zeros((1, 3, 8, 8)))
    out = net.blobs['p'].data
    assert out.shape == (1, 2, 2 * 2 * 4 * 4)
    boxes = out[0, 0].reshape(2, 2, 4, 4)                    # h, w, prior, coordinate
    half = np.array([[2, 2], [3, 3], [2 * SQ2, SQ2], [SQ2, 2 * SQ2]])   # half width, half height
    for h in range(2):
        for w in range(2):
            cx, cy = 2 + 4 * w, 2 + 4 * h
            expected = np.stack([cx - half[:, 0], cy - half[:, 1], cx + half[:, 0], cy + half[:, 1]], 1) / 8
            np.testing.assert_allclose(boxes[h, w], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out[0, 1], np.float32(0.1))


def test_prior_box_clip_steps_and_four_variances():
    net = _run('layer { name: "p" type: "PriorBox" bottom: "f" bottom: "img" top: "p" prior_box_param {'
               ' min_size: 10 clip: true img_h: 20 img_w: 40 step_h: 10 step_w: 20 offset: 0'
               ' variance: 0.1 variance: 0.2 variance: 0.3 variance: 0.4 } }',
               f=np.zeros((1, 1, 1, 2)), img=np.zeros((1, 3, 5, 5)))
    out = net.blobs['p'].data[0]
    np.testing.assert_allclose(out[0].reshape(2, 4), [[0, 0, 5 / 40, 5 / 20], [15 / 40, 0, 25 / 40, 5 / 20]])
    np.testing.assert_allclose(out[1].reshape(2, 4), [[0.1, 0.2, 0.3, 0.4]] * 2, rtol=1e-7)


def test_prior_box_refuses_bad_parameters():
    with pytest.raises(ValueError, match='PriorBox layer "p": max_size must be greater than min_size'):
        _run('layer { name: "p" type: "PriorBox" bottom: "f" bottom: "img" top: "p" prior_box_param {'
             ' min_size: 4 max_size: 2 } }', f=np.zeros((1, 1, 2, 2)), img=np.zeros((1, 3, 8, 8)))


# -- Permute and Normalize ---------------------------------------------------------------------
def test_permute_orders_the_axes_and_keeps_the_rest():
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    net = _run('layer { name: "p" type: "Permute" bottom: "x" top: "y" permute_param { order: 0 order: 2 } }',
               x=x)
    np.testing.assert_array_equal(net.blobs['y'].data, x.transpose(0, 2, 1, 3))


def test_permute_gradient():
    numeric_gradient_check(_inputs(x=(2, 3, 2, 4)) + 'layer { name: "p" type: "Permute" bottom: "x" '
                           'top: "y" permute_param { order: 0 order: 3 order: 1 order: 2 } }',
                           {'x': np.random.default_rng(0).standard_normal((2, 3, 2, 4))})


def test_normalize_by_hand():
    x = np.array([[[[3.0]], [[4.0]]]], np.float32)                 # one item, two channels, 1 x 1
    net = _run('layer { name: "n" type: "Normalize" bottom: "x" top: "y" norm_param {'
               ' channel_shared: false scale_filler { type: "constant" value: 10 } } }', x=x)
    np.testing.assert_allclose(net.blobs['y'].data.reshape(-1), [6, 8], rtol=1e-6)
    x = np.array([[[[3.0, 0.0]], [[4.0, 2.0]]]], np.float32)       # two positions
    net = _run('layer { name: "n" type: "Normalize" bottom: "x" top: "y" norm_param {'
               ' across_spatial: false } }', x=x)
    np.testing.assert_allclose(net.blobs['y'].data[0, :, 0], [[0.6, 0], [0.8, 1]], rtol=1e-6)


@pytest.mark.parametrize('across', [True, False])
def test_normalize_gradient(across):
    rng = np.random.default_rng(1)
    text = _inputs(x=(2, 3, 2, 3)) + (
        'layer { name: "n" type: "Normalize" bottom: "x" top: "y" norm_param { across_spatial: %s '
        'scale_filler { type: "gaussian" std: 1 } } }' % str(across).lower())
    numeric_gradient_check(text, {'x': rng.standard_normal((2, 3, 2, 3))}, rtol=1e-5)


@pytest.mark.parametrize('across', [True, False])
def test_normalize_per_channel_backward_is_the_forks(across):
    """With one scale per channel the fork's backward scales the shared-scale gradient by each
    channel's scale (not the exact gradient); caffe-py computes what the fork computes."""
    rng = np.random.default_rng(2)
    x, dy, scale = rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((2, 3, 2, 2)), [1.0, 2.0, 3.0]
    net = net_from_text(_inputs(x=x.shape) + 'force_backward: true layer { name: "n" type: "Normalize" '
                        'bottom: "x" top: "y" norm_param { across_spatial: %s channel_shared: false } }'
                        % str(across).lower())
    net.blobs['x'].data[...] = x
    net.params['n'][0].data[...] = scale
    net.forward()
    net.blobs['y'].diff[...] = dy
    net.backward()
    axes = (1, 2, 3) if across else (1,)
    norm = np.sqrt((x * x).sum(axis=axes, keepdims=True) + 1e-10)
    s = np.reshape(scale, (1, 3, 1, 1))
    expected = (dy - x * (x * dy).sum(axis=axes, keepdims=True) / norm ** 2) / norm * s
    np.testing.assert_allclose(net.blobs['x'].diff, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.params['n'][0].diff, (x / norm * dy).sum(axis=(0, 2, 3)), rtol=1e-5)


# -- DetectionOutput ---------------------------------------------------------------------------
PRIORS = np.array([[0, 0, .5, .5], [.05, 0, .55, .5], [.5, .5, 1, 1], [0, .5, .5, 1]], np.float32)


def _prior_blob(priors=PRIORS, variance=0.1):
    return np.concatenate([priors.reshape(-1), np.full(priors.size, variance, np.float32)]).reshape(1, 2, -1)


def _detect(conf, loc=None, **param):
    settings = dict(num_classes=3, confidence_threshold=0.3, code='CORNER', extra='')
    settings.update(param)
    loc = np.zeros((1, PRIORS.size), np.float32) if loc is None else loc
    text = ('layer { name: "d" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "priors" top: "d" '
            'detection_output_param { num_classes: %(num_classes)d confidence_threshold: %(confidence_threshold)g '
            'code_type: %(code)s nms_param { nms_threshold: 0.5 } %(extra)s } }' % settings)
    return _run(text, loc=loc, conf=conf, priors=_prior_blob()).blobs['d'].data[0, 0]


CONF = np.array([[0, .9, .2], [0, .8, .6], [0, .1, .95], [0, .7, .05]], np.float32).reshape(1, -1)


def test_detection_output_by_hand():
    rows = _detect(CONF)
    expected = [[0, 1, .9] + list(PRIORS[0]), [0, 1, .7] + list(PRIORS[3]),
                [0, 2, .95] + list(PRIORS[2]), [0, 2, .6] + list(PRIORS[1])]
    np.testing.assert_allclose(rows, expected, rtol=1e-6)
    rows = _detect(CONF, extra='keep_top_k: 3')               # the 3 best over all classes, by class
    np.testing.assert_allclose(rows[:, :3], [[0, 1, .9], [0, 1, .7], [0, 2, .95]], rtol=1e-6)
    rows = _detect(CONF, confidence_threshold=0.99)          # nothing: one row of -1 per image
    np.testing.assert_array_equal(rows, [[0, -1, -1, -1, -1, -1, -1]])


def test_detection_output_decodes_center_size_and_per_class_locations():
    # per-class locations: class 1 moves prior 0 by (dx, dy) = (1, 0) in variance units; CENTER_SIZE
    loc = np.zeros((1, 4, 3, 4), np.float32)
    loc[0, 0, 1] = [1, 0, 0, 0]
    rows = _detect(CONF, loc=loc.reshape(1, -1), code='CENTER_SIZE', extra='share_location: false')
    first = rows[(rows[:, 1] == 1) & (rows[:, 2] > .85)][0]
    np.testing.assert_allclose(first[3:], [0.05, 0, 0.55, 0.5], rtol=1e-6, atol=1e-7)
    assert len(rows[rows[:, 1] == 1]) == 2                  # the moved box now overlaps prior 1 instead
    np.testing.assert_allclose(bbox.decode(PRIORS[:1], np.full((1, 4), .1, np.float32),
                                           np.array([[0, 0, 1, 0]], np.float32), bbox.CENTER_SIZE),
                               [[.25 - .25 * np.exp(.1), 0, .25 + .25 * np.exp(.1), .5]], rtol=1e-6)


def test_nms_eta_shrinks_the_threshold():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, .75], [0, .5, 1, 1.5], [0, .2, 1, 1.2]], np.float32)
    scores = np.array([.9, .8, .7, .6], np.float32)
    assert list(bbox.nms(boxes, scores, 0, 0.7)) == [0, 2, 3]      # IoU(0, 1) = .75; (0, 3) = .667
    assert list(bbox.nms(boxes, scores, 0, 0.7, eta=0.8)) == [0, 2]  # .56 after box 0, .448 after 2
    assert list(bbox.nms(boxes, scores, 0.75, 0.7)) == [0]          # score threshold first


# -- MultiBoxLoss ------------------------------------------------------------------------------
def _gt(*rows):
    """Ground-truth rows (item, label, xmin, ymin, xmax, ymax[, difficult]) as a (1, 1, G, 8) blob."""
    out = [[r[0], r[1], 0, r[2], r[3], r[4], r[5], r[6] if len(r) > 6 else 0] for r in rows]
    return np.array(out, np.float32).reshape(1, 1, -1, 8)


def _multibox(loc, conf, label, priors=PRIORS, param='', propagate=True):
    text = ('force_backward: true layer { name: "loss" type: "MultiBoxLoss" bottom: "loc" bottom: "conf" '
            'bottom: "priors" bottom: "label" top: "loss" %s multibox_loss_param { num_classes: 3 %s } }'
            % ('propagate_down: true propagate_down: true propagate_down: false propagate_down: false'
               if propagate else '', param))
    return _run(text, TRAIN, loc=loc, conf=conf, priors=_prior_blob(priors), label=label)


def test_multibox_loss_by_hand():
    loc = np.zeros((1, 16), np.float32)
    conf = np.zeros((1, 12), np.float32)
    label = _gt((0, 1, 0, 0, .5, .5))
    # priors 0 and 1 match (IoU 1 and .82); loc targets (CORNER, variance .1): 0 and (-.5, 0, -.5, 0);
    # both unmatched priors are negatives (3 per positive allowed); uniform softmax everywhere
    net = _multibox(loc, conf, label)
    expected = (2 * 0.125 + 4 * np.log(3)) / 2
    np.testing.assert_allclose(float(net.blobs['loss'].data), expected, rtol=1e-6)
    # one negative allowed: the one whose background score is lowest (prior 3)
    conf[0, 9] = -2
    net = _multibox(loc, conf, label, param='neg_pos_ratio: 0.5')
    e = np.exp([-2, 0, 0])
    expected = (0.25 + 2 * np.log(3) - np.log(e[0] / e.sum())) / 2
    np.testing.assert_allclose(float(net.blobs['loss'].data), expected, rtol=1e-6)
    net.backward()
    grad = net.blobs['conf'].diff.reshape(4, 3)
    np.testing.assert_allclose(grad[2], 0)                     # prior 2: not picked
    np.testing.assert_allclose(grad[3], (e / e.sum() - [1, 0, 0]) / 2, rtol=1e-6)
    np.testing.assert_allclose(net.blobs['loc'].diff.reshape(4, 4)[1], [0.25, 0, 0.25, 0], rtol=1e-6)


def test_multibox_loss_bipartite_only_and_no_ground_truth():
    loc = np.zeros((1, 16), np.float32)
    conf = np.zeros((1, 12), np.float32)
    net = _multibox(loc, conf, _gt((0, 1, 0, 0, .5, .5)), param='match_type: BIPARTITE')
    np.testing.assert_allclose(float(net.blobs['loss'].data), 3 * np.log(3) / 1, rtol=1e-6)
    # an image without ground truth has no matches and no negatives: the loss is 0
    net = _multibox(loc, conf, _gt((-1, 1, 0, 0, 0, 0)))
    assert float(net.blobs['loss'].data) == 0


def test_multibox_loss_refuses_background_ground_truth():
    with pytest.raises(ValueError, match='MultiBoxLoss layer "loss": Found background label 0'):
        _multibox(np.zeros((1, 16)), np.zeros((1, 12)), _gt((0, 0, 0, 0, .5, .5)))


def test_multibox_loss_refuses_labels_beyond_num_classes():
    with pytest.raises(ValueError, match='ground truth label 3 is outside \\[0, num_classes = 3\\)'):
        _multibox(np.zeros((1, 16)), np.zeros((1, 12)), _gt((0, 3, 0, 0, .5, .5)))


def _random_case(rng, num=2, priors_side=4):
    grid = (np.arange(priors_side) + 0.5) / priors_side
    cx, cy = np.meshgrid(grid, grid)
    sizes = [0.3, 0.55]
    priors = np.concatenate([np.stack([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], -1).reshape(-1, 4)
                             for s in sizes]).astype(np.float32)
    label = _gt((0, 1, .1, .1, .45, .5), (0, 2, .5, .4, .95, .9), (1, 2, .2, .3, .7, .8, 1))
    p = len(priors)
    return priors, label, rng.standard_normal((num, p * 4)) * 0.5, rng.standard_normal((num, p * 3))


LOSS_VARIANTS = {
    'default': '',
    'center_size_l2': 'code_type: CENTER_SIZE loc_loss_type: L2 loc_weight: 0.7',
    'logistic_full': 'conf_loss_type: LOGISTIC mining_type: NONE',
    'hard_example': 'mining_type: HARD_EXAMPLE sample_size: 5 code_type: CORNER_SIZE',
    'per_class_decoded': 'share_location: false mining_type: NONE use_prior_for_matching: false '
                         'overlap_threshold: 0.3 code_type: CENTER_SIZE',
    'nms_mining': 'nms_param { nms_threshold: 0.5 } neg_pos_ratio: 2 use_difficult_gt: false',
}


@pytest.mark.parametrize('variant', sorted(LOSS_VARIANTS))
def test_multibox_loss_gradient(variant):
    rng = np.random.default_rng(3)
    priors, label, loc, conf = _random_case(rng)
    param = LOSS_VARIANTS[variant]
    loc_classes = 3 if 'share_location: false' in param else 1
    loc = rng.standard_normal((2, len(priors) * 4 * loc_classes)) * 0.5
    text = _inputs(loc=loc.shape, conf=conf.shape, priors=(1, 2, priors.size), label=label.shape) + (
        'layer { name: "loss" type: "MultiBoxLoss" bottom: "loc" bottom: "conf" bottom: "priors" '
        'bottom: "label" top: "loss" loss_weight: 2 multibox_loss_param { num_classes: 3 %s } }' % param)
    net = numeric_gradient_check(text, {'loc': loc, 'conf': conf, 'priors': _prior_blob(priors),
                                        'label': label}, phase=TRAIN, no_grad=('priors', 'label'))
    assert float(net.blobs['loss'].data) > 0
    assert np.abs(net.blobs['loc'].diff).max() > 0 and np.abs(net.blobs['conf'].diff).max() > 0


def test_match_bipartite_then_per_prediction():
    gt = np.array([[0, 0, .5, .5], [.5, .5, 1, 1]], np.float32)
    index, overlap = bbox.match(gt, PRIORS, bipartite=False, overlap_threshold=0.5)
    assert list(index) == [0, 0, 1, -1]
    np.testing.assert_allclose(overlap, [1, .225 / .275, 1, 0], rtol=1e-6)
    index, _ = bbox.match(gt, PRIORS, bipartite=True, overlap_threshold=0.5)
    assert list(index) == [0, -1, 1, -1]


# -- DetectionEvaluate -------------------------------------------------------------------------
def test_detection_evaluate_by_hand():
    det = np.array([[0, 1, .9, 0, 0, .5, .5], [0, 1, .95, 0, 0, .5, .5], [0, 1, .5, .5, .5, 1, 1],
                    [0, 2, .4, 0, 0, .5, .5], [1, 1, .3, 0, 0, 1, 1]], np.float32).reshape(1, 1, -1, 7)
    gt = _gt((0, 1, 0, 0, .5, .5), (0, 2, .5, .5, 1, 1), (0, 2, 0, 0, .6, .6, 1))
    net = _run('layer { name: "e" type: "DetectionEvaluate" bottom: "det" bottom: "gt" top: "e" '
               'detection_evaluate_param { num_classes: 3 evaluate_difficult_gt: false } }', det=det, gt=gt)
    np.testing.assert_allclose(net.blobs['e'].data[0, 0], [
        [-1, 1, 1, -1, -1], [-1, 2, 1, -1, -1],
        [0, 1, .95, 1, 0], [0, 1, .9, 0, 1], [0, 1, .5, 0, 1],   # best first; the second hit is a duplicate
        [0, 2, .4, 0, 0],                                         # matches only a difficult box: ignored
        [1, 1, .3, 0, 1]], rtol=1e-6)


@pytest.mark.parametrize('resize, true_positive', [
    ('', 0),        # in pixels of the 100x200 image: IoU (201 x 51) / (201 x 101) < 0.6
    ('resize_param { resize_mode: FIT_LARGE_SIZE_AND_PAD height: 300 width: 300 }', 1)])
def test_detection_evaluate_in_pixels_of_the_original_image(tmp_path, resize, true_positive):
    """With a name_size_file the boxes are scored in pixels of each image's size, through
    resize_param (OutputBBox): the padded band of a 100x200 image letterboxed to 300x300 is y in
    [0.25, 0.75], so a detection of that band is the whole image, as the ground truth."""
    sizes = tmp_path / 'sizes.txt'
    sizes.write_text('img0 100 200\n')
    det = np.array([[0, 1, .9, 0, .25, 1, .75]], np.float32).reshape(1, 1, -1, 7)
    net = _run('layer { name: "e" type: "DetectionEvaluate" bottom: "det" bottom: "gt" top: "e" '
               'detection_evaluate_param { num_classes: 2 overlap_threshold: 0.6 name_size_file: "%s" %s } }'
               % (sizes, resize), det=det, gt=_gt((0, 1, 0, 0, 1, 1)))
    assert net.blobs['e'].data[0, 0, 1].tolist() == [0, 1, pytest.approx(.9), true_positive, 1 - true_positive]


def test_detection_evaluate_names_a_bad_name_size_line(tmp_path):
    sizes = tmp_path / 'sizes.txt'
    sizes.write_text('img0 100\n')
    with pytest.raises(Exception, match='line 1 .detection_evaluate_param.name_size_file.'):
        _run('layer { name: "e" type: "DetectionEvaluate" bottom: "det" bottom: "gt" top: "e" '
             'detection_evaluate_param { num_classes: 2 name_size_file: "%s" } }' % sizes,
             det=np.zeros((1, 1, 1, 7), np.float32), gt=_gt((0, 1, 0, 0, 1, 1)))


# -- against OpenCV dnn ------------------------------------------------------------------------
OPENCV_NET = '''
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 20 dim: 24 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8
  kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "norm" type: "Normalize" bottom: "conv1" top: "norm" norm_param { %(norm)s
  scale_filler { type: "gaussian" mean: 5 std: 1 } } }
layer { name: "loc" type: "Convolution" bottom: "norm" top: "loc" convolution_param { num_output: %(nloc)d
  kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" }
layer { name: "conf" type: "Convolution" bottom: "norm" top: "conf" convolution_param { num_output: %(nconf)d
  kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.15 } } }
layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf_flat" }
layer { name: "conf_rs" type: "Reshape" bottom: "conf_flat" top: "conf_rs"
  reshape_param { shape { dim: 0 dim: -1 dim: 3 } } }
layer { name: "conf_sm" type: "Softmax" bottom: "conf_rs" top: "conf_sm" softmax_param { axis: 2 } }
layer { name: "conf_out" type: "Flatten" bottom: "conf_sm" top: "conf_out" }
layer { name: "priors" type: "PriorBox" bottom: "norm" bottom: "data" top: "priors" prior_box_param { %(prior)s } }
layer { name: "det" type: "DetectionOutput" bottom: "loc_flat" bottom: "conf_out" bottom: "priors" top: "det"
  detection_output_param { num_classes: 3 background_label_id: 0 nms_param { nms_threshold: 0.45 top_k: 100 }
  confidence_threshold: 0.3 %(det)s } }
'''
OPENCV_VARIANTS = {
    'vgg_style': dict(norm='across_spatial: false channel_shared: false', priors=3,
                      prior='min_size: 6 max_size: 12 aspect_ratio: 2 flip: false clip: false '
                            'variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2',
                      det='code_type: CENTER_SIZE share_location: true keep_top_k: 30'),
    'clipped_steps': dict(norm='across_spatial: true channel_shared: true', priors=6,
                          prior='min_size: 5 max_size: 10 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: true '
                                'step: 3 offset: 0.25 variance: 0.1',
                          det='code_type: CORNER share_location: true keep_top_k: 1000'),
    'per_class_locations': dict(norm='across_spatial: false channel_shared: true', priors=2,
                                prior='min_size: 7 aspect_ratio: 3 flip: false clip: false step_h: 1 step_w: 1.5 '
                                      'variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2',
                                det='code_type: CENTER_SIZE share_location: false keep_top_k: 40'),
}


def _canonical(rows):
    """Detections sorted by item, label, descending score: OpenCV lists keep_top_k's survivors by
    score where the fork groups them by label."""
    return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]


@pytest.mark.parametrize('variant', sorted(OPENCV_VARIANTS))
def test_ssd_layers_match_opencv_dnn(variant, tmp_path):
    v = OPENCV_VARIANTS[variant]
    loc_classes = 3 if 'share_location: false' in v['det'] else 1
    text = OPENCV_NET % dict(v, nloc=v['priors'] * 4 * loc_classes, nconf=v['priors'] * 3)
    prototxt = tmp_path / 'ssd.prototxt'
    prototxt.write_text(text)
    backend.set_random_seed(7)                                    # the same weights in any test order
    net = caffe.Net(str(prototxt), TEST)
    weights = str(tmp_path / 'ssd.caffemodel')
    net.params['norm'][0].reshape((net.params['norm'][0].count,))   # OpenCV cannot read a 0-d blob
    net.save(weights)
    x = np.random.default_rng(0).standard_normal((2, 3, 20, 24)).astype(np.float32)
    net.blobs['data'].data[...] = x
    net.forward()
    cv = cv2.dnn.readNetFromCaffe(str(prototxt), weights)
    cv.setInput(x)
    names = ['norm', 'loc_flat', 'conf_out', 'priors', 'det']
    for name, theirs in zip(names, cv.forward(names)):
        mine = net.blobs[name].data
        if name == "det":
            theirs = theirs[0, 0][theirs[0, 0][:, 2] > 0]              # OpenCV pads with zero rows
            mine, theirs = _canonical(mine[0, 0]), _canonical(theirs)
            assert len(mine) > 5
        assert mine.shape == theirs.shape, name
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4 * max(1, np.abs(theirs).max()),
                                   err_msg=name)


# -- a training net in GPU mode (CuPy, or the stand-in) -------------------------------------------
@pytest.mark.parametrize('device', ['stand_in', pytest.param('cuda', marks=pytest.mark.gpu)])
def test_ssd_training_net_on_the_device_agrees_with_the_cpu(device):
    rng = np.random.default_rng(5)
    label = _random_case(rng)[1]
    feature = rng.standard_normal((2, 8, 4, 4))
    text = _inputs(f=feature.shape, label=label.shape) + '''
layer { name: "n" type: "Normalize" bottom: "f" top: "n" norm_param { across_spatial: false channel_shared: false } }
layer { name: "perm" type: "Permute" bottom: "n" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "flat" type: "Flatten" bottom: "perm" top: "flat" }
layer { name: "split" type: "Slice" bottom: "flat" top: "loc" top: "conf" slice_param { slice_point: 64 } }
layer { name: "img" type: "DummyData" top: "img" dummy_data_param { shape { dim: 1 dim: 1 dim: 16 dim: 16 } } }
layer { name: "p" type: "PriorBox" bottom: "n" bottom: "img" top: "p" prior_box_param { min_size: 5 } }
layer { name: "pad" type: "Slice" bottom: "conf" top: "conf3" top: "rest" slice_param { slice_point: 48 } }
layer { name: "silence" type: "Silence" bottom: "rest" }
layer { name: "loss" type: "MultiBoxLoss" bottom: "loc" bottom: "conf3" bottom: "p" bottom: "label" top: "loss"
  propagate_down: true propagate_down: true propagate_down: false propagate_down: false
  multibox_loss_param { num_classes: 3 overlap_threshold: 0.3 } }
'''
    results = []
    for on_device in (False, True):
        with ((fakecupy.fake_gpu() if device == 'stand_in' else gpu_mode()) if on_device else cpu_mode()):
            net = net_from_text(text, TRAIN)
            net.blobs['f'].data[...] = feature
            net.blobs['label'].data[...] = label
            net.params['n'][0].data[...] = np.linspace(1, 2, 8)
            net.forward()
            net.clear_param_diffs()
            net.backward()
            results.append((float(net.blobs['loss'].data), np.array(net.blobs['f'].diff),
                            np.array(net.params['n'][0].diff)))
    assert results[0][0] > 0
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    for cpu, dev in zip(results[0][1:], results[1][1:]):
        np.testing.assert_allclose(dev, cpu, rtol=1e-5, atol=1e-6)


def test_ssd_layer_parameters_keep_the_forks_field_numbers():
    layer = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    numbers = {name: layer[name].number for name in (
        'annotated_data_param', 'multibox_loss_param', 'permute_param', 'prior_box_param',
        'detection_output_param', 'detection_evaluate_param', 'norm_param', 'video_data_param')}
    assert numbers == {'annotated_data_param': 200, 'multibox_loss_param': 201, 'permute_param': 202,
                       'prior_box_param': 203, 'detection_output_param': 204,
                       'detection_evaluate_param': 205, 'norm_param': 206, 'video_data_param': 207}
    transform = caffe_pb2.TransformationParameter.DESCRIPTOR.fields_by_name
    assert [transform[n].number for n in ('resize_param', 'noise_param', 'emit_constraint', 'crop_h',
                                          'crop_w', 'distort_param', 'expand_param')] == list(range(8, 15))


def test_average_precision_by_hand():
    # scores .9 (hit), .8 (miss), .7 (hit) of 2 positives: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    args = ([.8, .9, .7], [0, 1, 1], 2)
    assert detection_eval.average_precision(*args, 'Integral') == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert detection_eval.average_precision(*args, 'MaxIntegral') == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert detection_eval.average_precision(*args, '11point') == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert detection_eval.average_precision([.9, .8], [0, 1], 1, '11point') == pytest.approx(0.5)
    with pytest.raises(ValueError, match='Unknown ap_version: VOC'):
        detection_eval.average_precision(*args, 'VOC')


def test_mean_average_precision_over_detection_evaluate_rows():
    rows = [np.array([[-1, 1, 2, -1, -1], [-1, 2, 1, -1, -1], [0, 1, .9, 1, 0], [0, 1, .8, 0, 1]]),
            np.array([[-1, 1, 0, -1, -1], [-1, 2, 0, -1, -1], [1, 1, .7, 1, 0], [1, 1, .6, 0, 0]])]
    mean_ap, per_class = detection_eval.mean_average_precision(rows, 'Integral')
    assert per_class == {1: pytest.approx(0.5 + 0.5 * 2 / 3)}          # class 2: no detections
    assert mean_ap == pytest.approx((0.5 + 0.5 * 2 / 3) / 2)
