"""The tiny SSD trained here (models/tiny_ssd): caffe-py's detections equal OpenCV dnn's on the demo
scene, they find the scene's shapes, and the example runs end to end."""
import importlib.util
import os

import cv2
import numpy as np
import pytest

import caffe_py as caffe
from conftest import ROOT

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
    for name, deploy in (('deploy.prototxt', True), ('train.prototxt', False)):
        with open(os.path.join(TINY, name)) as f:
            assert f.read() == make.net_text(deploy), name + ' is stale: run make_tiny_ssd.py --nets'


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
