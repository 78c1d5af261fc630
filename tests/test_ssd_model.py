"""The tiny SSD trained here (models/tiny_ssd): caffe-py's detections equal OpenCV dnn's on the demo
scene, they find the scene's shapes, and the example runs end to end."""
import importlib.util
import os
import re

import cv2
import numpy as np
import pytest

import caffe_py as caffe
import fakecupy
from conftest import ROOT
from device_cases import cpu_mode

TINY = os.path.join(ROOT, 'models', 'tiny_ssd')
DEPLOY = os.path.join(TINY, 'deploy.prototxt')
WEIGHTS = os.path.join(TINY, 'tiny_ssd.caffemodel')
SCENE = os.path.join(ROOT, 'examples', 'ssd_detect', 'scene.jpg')


def _module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def make():
    return _module(os.path.join(TINY, 'make_tiny_ssd.py'), 'make_tiny_ssd')


@pytest.fixture(scope='module')
def detect():
    return _module(os.path.join(ROOT, 'examples', 'ssd_detect', 'detect.py'), 'ssd_detect')


def test_committed_nets_are_what_the_script_writes(make):
    for name, text in make.prototxt_files():
        with open(os.path.join(TINY, name)) as f:
            assert f.read() == text, name + ' is stale: run make_tiny_ssd.py --nets'


def test_tiny_ssd_detections_equal_opencv_dnn(make):
    image = cv2.imread(SCENE)
    x = make.preprocess([image])
    net = caffe.Net(DEPLOY, caffe.TEST, weights=WEIGHTS)
    net.blobs['data'].data[...] = x
    mine = net.forward()['detection_out'][0, 0]
    cv = cv2.dnn.readNetFromCaffe(DEPLOY, WEIGHTS)
    cv.setInput(x)
    theirs = cv.forward()[0, 0]
    theirs = theirs[theirs[:, 2] > 0]

    def order(rows):
        return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]
    assert len(mine) >= 4
    np.testing.assert_allclose(order(mine), order(theirs), rtol=1e-4, atol=1e-5)


def test_tiny_ssd_finds_the_shapes_of_the_scene(make, detect):
    image, truth = make.scene(np.random.default_rng(2026), count=4)
    net = caffe.Net(DEPLOY, caffe.TEST, weights=WEIGHTS)
    found = detect.detect(net, cv2.imread(SCENE))
    found = found[found[:, 1] >= 0.5]
    hits = 0
    for label, x0, y0, x1, y1 in truth:
        box = np.array([x0, y0, x1, y1]) * 300
        w = np.minimum(found[:, 4], box[2]) - np.maximum(found[:, 2], box[0])
        h = np.minimum(found[:, 5], box[3]) - np.maximum(found[:, 3], box[1])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        union = (found[:, 4] - found[:, 2]) * (found[:, 5] - found[:, 3]) + (box[2] - box[0]) * (box[3] - box[1])
        hits += bool(((inter / (union - inter) >= 0.5) & (found[:, 0] == label)).any())
    assert hits >= 3, found


def test_example_draws_the_detections(detect, tmp_path, capsys):
    out = str(tmp_path / 'boxes.png')
    assert detect.main(['--out', out]) == 0
    drawn = cv2.imread(out)
    assert drawn.shape == (300, 300, 3)
    assert (drawn != cv2.imread(SCENE)).any()
    assert 'circle' in capsys.readouterr().out


def test_tiny_ssd_trains_from_an_annotated_lmdb(make, tmp_path):
    """SSD's training path end to end: AnnotatedData (with the fork's augmentations) feeding the
    tiny SSD's train net, a few SGD steps through caffe-py's solver."""
    from caffe_py.data.db import DBWriter
    from caffe_py.proto import caffe_pb2
    from google.protobuf import text_format
    from test_annotated_data import _record
    rng = np.random.default_rng(0)
    source = str(tmp_path / 'scenes_lmdb')
    with DBWriter(source, 'lmdb') as db:
        for i in range(6):
            image, boxes = make.scene(rng)
            db.put('%08d' % i, _record(image, [b + (False,) for b in boxes]))
    text = make.net_text(deploy=False)
    start = text.index('layer { name: "data"')
    end = text.index('\n', start) + 1
    data = ('layer { name: "data" type: "AnnotatedData" top: "data" top: "label" '
            'data_param { source: "%s" backend: LMDB batch_size: 2 } '
            'transform_param { mirror: true mean_value: 127.5 scale: 0.007843 '
            'resize_param { resize_mode: WARP height: 300 width: 300 } emit_constraint { emit_type: CENTER } '
            'expand_param { prob: 0.5 max_expand_ratio: 2 } } '
            'annotated_data_param { batch_sampler { max_sample: 1 max_trials: 1 } '
            'batch_sampler { sampler { min_scale: 0.5 max_scale: 1 min_aspect_ratio: 0.5 max_aspect_ratio: 2 } '
            'sample_constraint { min_jaccard_overlap: 0.5 } max_sample: 1 max_trials: 20 } } }\n' % source)
    solver_param = caffe_pb2.SolverParameter(base_lr=0.001, momentum=0.9, lr_policy='fixed', max_iter=4,
                                             type='SGD', random_seed=1, snapshot_after_train=False)
    text_format.Parse(text[:start] + data + text[end:], solver_param.net_param)
    solver = caffe.get_solver(solver_param)
    before = solver.net.params['conv1'][0].data.copy()
    solver.step(4)
    assert np.isfinite(float(solver.net.blobs['mbox_loss'].data))
    assert not np.allclose(solver.net.params['conv1'][0].data, before)
    label = solver.net.blobs['label'].data[0, 0]
    assert label.shape[1] == 8 and set(label[:, 0]) <= {-1, 0, 1}


@pytest.mark.skipif(fakecupy.compiler() is None, reason='the fake device emulates kernels with g++, not installed')
def test_tiny_ssd_in_gpu_mode_on_the_stand_in_detects_as_the_cpu(make):
    x = make.preprocess([cv2.imread(SCENE)])
    results = []
    for device in (cpu_mode, fakecupy.fake_gpu):
        with device():
            net = caffe.Net(DEPLOY, caffe.TEST, weights=WEIGHTS)
            net.blobs['data'].data[...] = x
            results.append(np.array(net.forward()['detection_out']))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-6)


def test_caffe_py_train_runs_the_ssd_recipe(make, tmp_path):
    """`caffe-py train` on the AnnotatedData training net (SSD's augmentations) for two iterations."""
    from caffe_py.tools import cli
    source = str(tmp_path / 'scenes_lmdb')
    make.write_lmdb(source, 4)
    net = tmp_path / 'train_lmdb.prototxt'
    net.write_text(make.lmdb_net_text().replace(make.LMDB, source))
    solver = tmp_path / 'solver.prototxt'
    solver.write_text(make.SOLVER.replace('models/tiny_ssd/train_lmdb.prototxt', str(net))
                      .replace('max_iter: 2000', 'max_iter: 2').replace('snapshot: 1000', 'snapshot: 0')
                      + 'snapshot_after_train: false\n')
    assert cli.main(['train', '-solver', str(solver)]) == 0


def test_caffe_py_train_tests_the_tiny_ssd_as_ssd_does(make, tmp_path, capfd):
    """solver_detection.prototxt (SSD's solver fields) through `caffe-py train`: the test net's
    DetectionEvaluate rows give the mAP line, high for the trained weights on unseen scenes."""
    from caffe_py.tools import cli
    make.write_lmdb(str(tmp_path / 'train_lmdb'), 2)
    make.write_lmdb(str(tmp_path / 'test_lmdb'), 16, seed=99)
    for name, lmdb in (('train_lmdb.prototxt', make.LMDB), ('test_lmdb.prototxt', make.TEST_LMDB)):
        with open(os.path.join(TINY, name)) as f:
            (tmp_path / name).write_text(f.read().replace(lmdb, str(tmp_path / name.split('.')[0])))
    solver = tmp_path / 'solver.prototxt'
    solver.write_text(make.SOLVER_DETECTION.replace('models/tiny_ssd', str(tmp_path))
                      .replace('test_iter: 8', 'test_iter: 2').replace('max_iter: 2000', 'max_iter: 0')
                      .replace('snapshot: 1000', 'snapshot: 0')
                      + 'snapshot_after_train: false\n')
    assert cli.main(['train', '-solver', str(solver), '-weights', WEIGHTS]) == 0
    err = capfd.readouterr().err
    found = re.findall(r'\] {5}Test net output #0: detection_eval = ([0-9.]+)\n', err)
    assert len(found) == 1 and float(found[0]) > 0.75, err[-2000:]


def test_tiny_ssd_mean_average_precision_on_new_scenes(make):
    """DetectionOutput -> DetectionEvaluate -> the solver's mAP, on scenes the model never saw."""
    from caffe_py import detection_eval
    from device_cases import net_from_text
    net = caffe.Net(DEPLOY, caffe.TEST, weights=WEIGHTS)
    rng = np.random.default_rng(99)
    rows = []
    for _ in range(20):
        image, boxes = make.scene(rng)
        net.blobs['data'].data[...] = make.preprocess([image])
        det = net.forward()['detection_out'].copy()
        gt = np.array([[0, b[0], 0, *b[1:], 0] for b in boxes], np.float32).reshape(1, 1, -1, 8)
        evaluate = net_from_text(
            'layer { name: "det" type: "Input" top: "det" input_param { shape { dim: 1 dim: 1 dim: %d dim: 7 } } }\n'
            'layer { name: "gt" type: "Input" top: "gt" input_param { shape { dim: 1 dim: 1 dim: %d dim: 8 } } }\n'
            'layer { name: "e" type: "DetectionEvaluate" bottom: "det" bottom: "gt" top: "e" '
            'detection_evaluate_param { num_classes: 3 overlap_threshold: 0.5 } }' % (det.shape[2], gt.shape[2]))
        evaluate.blobs['det'].data[...] = det
        evaluate.blobs['gt'].data[...] = gt
        rows.append(evaluate.forward()['e'][0, 0].copy())
    mean_ap, per_class = detection_eval.mean_average_precision(rows, '11point')
    assert sorted(per_class) == [1, 2] and mean_ap > 0.75, per_class
