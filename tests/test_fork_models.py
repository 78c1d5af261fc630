"""Small model definitions in the forks' styles (models/fork_styles) build with the forks' shapes,
run forward, and (the trainable ones) backward."""
import os

import numpy as np
import pytest

import caffe_py as caffe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STYLES = os.path.join(ROOT, 'models', 'fork_styles')
OUTPUTS = {
    'pspnet_style': {'conv4/interp': (1, 5, 65, 65)},
    'segnet_style': {'argmax': (1, 1, 36, 48), 'upsample2': (1, 8, 18, 24)},
    'yolo_style': {'reorg': (1, 64, 8, 8), 'upsample': (1, 16, 16, 16)},
    'shufflenet_se_style': {'prob': (2, 5)},
    'rfcn_style': {'cls_prob': (4, 3, 1, 1), 'bbox_pred': (4, 8, 1, 1)},
}


@pytest.mark.parametrize('name', sorted(OUTPUTS))
def test_fork_style_model_builds_and_runs(name):
    caffe.backend.set_random_seed(1)
    net = caffe.Net(os.path.join(STYLES, name + '.prototxt'), caffe.TEST)
    for blob, shape in OUTPUTS[name].items():
        assert net.blobs[blob].shape == shape, blob
    rng = np.random.default_rng(0)
    inputs = {'data': rng.standard_normal(net.blobs['data'].shape).astype(np.float32)}
    if 'rois' in net.blobs:
        inputs['rois'] = np.array([[0, 0, 0, 79, 63], [0, 10, 5, 40, 30], [0, 30, 30, 31, 31], [0, -5, 20, 90, 70]],
                                  np.float32)
    out = net.forward(**inputs)
    for value in out.values():
        assert np.isfinite(value).all()
    if name == 'yolo_style':
        rows = out['detection_out'].reshape(-1, 7)
        assert ((rows[:, 1] >= 1) & (rows[:, 1] <= 2)).all() or (rows[:, 1:] == -1).all()
        assert (np.diff(rows[:, 2]) <= 0).all()


@pytest.mark.parametrize('name', ['pspnet_style', 'segnet_style', 'shufflenet_se_style'])
def test_fork_style_model_backward(name):
    caffe.backend.set_random_seed(1)
    param = caffe.formats.read_net(os.path.join(STYLES, name + '.prototxt'))
    param.force_backward = True
    if param.layer[-1].type == 'ArgMax':      # not differentiable: back from the probabilities
        del param.layer[-1]
    net = caffe.Net(param, caffe.TRAIN)
    rng = np.random.default_rng(0)
    net.forward(data=rng.standard_normal(net.blobs['data'].shape).astype(np.float32))
    last = net.outputs[0]
    net.blobs[last].diff[...] = rng.standard_normal(net.blobs[last].shape)
    net.backward()
    assert np.abs(net.blobs['data'].diff).max() > 1e-4


def test_segnet_style_trains_from_dense_image_data_with_class_weights(tmp_path):
    import cv2
    rng = np.random.default_rng(0)
    lines = []
    for i in range(4):        # label: whether a pixel's blue channel is above the middle
        image = rng.integers(0, 256, (36, 48, 3)).astype(np.uint8)
        cv2.imwrite(str(tmp_path / ('im%d.png' % i)), image)
        cv2.imwrite(str(tmp_path / ('lab%d.png' % i)), image[:, :, 0] // 128)
        lines.append('im%d.png lab%d.png' % (i, i))
    (tmp_path / 'train.txt').write_text('\n'.join(lines) + '\n')
    param = caffe.formats.read_net(os.path.join(STYLES, 'segnet_style.prototxt'))
    del param.layer[-2:]                          # prob, argmax: train with the loss instead
    data = param.layer[0]
    data.Clear()
    caffe.formats.parse_text(
        'name: "data" type: "DenseImageData" top: "data" top: "label" transform_param { scale: 0.0039 } '
        'dense_image_data_param { source: "%s" root_folder: "%s/" batch_size: 2 shuffle: true mirror: true }'
        % (tmp_path / 'train.txt', tmp_path), data)
    loss = param.layer.add()
    caffe.formats.parse_text(
        'name: "loss" type: "SoftmaxWithLoss" bottom: "conv1_D" bottom: "label" top: "loss" '
        'loss_param { weight_by_label_freqs: true class_weighting: 1 class_weighting: 1.2 '
        'class_weighting: 0.8 class_weighting: 1 }', loss)
    solver_text = 'base_lr: 0.05 momentum: 0.9 lr_policy: "fixed" max_iter: 20 display: 0 random_seed: 3 ' \
                  'snapshot_after_train: false solver_mode: CPU net_param { %s }' % caffe.formats.to_text(param)
    (tmp_path / 'solver.prototxt').write_text(solver_text)
    solver = caffe.get_solver(str(tmp_path / 'solver.prototxt'))
    solver.step(1)
    first = float(solver.net.blobs['loss'].data)
    solver.step(19)
    losses = []
    for _ in range(4):
        solver.net.forward()
        losses.append(float(solver.net.blobs['loss'].data))
    assert np.mean(losses) < 0.7 * first
