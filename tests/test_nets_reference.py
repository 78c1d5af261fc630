"""Real model files build as Caffe builds them, and real caffemodels compute Caffe's outputs."""
import glob
import json
import os

import numpy as np
import pytest

import caffe_py
from conftest import CORPUS, REFERENCE

SHAPES = sorted(glob.glob(os.path.join(REFERENCE, 'nets', '*', '*.shapes.json')))
FORWARDS = sorted(glob.glob(os.path.join(REFERENCE, 'nets', '*', '*.forward.npz')))


def _source(reference_file, suffix):
    folder = os.path.basename(os.path.dirname(reference_file))
    return os.path.join(CORPUS, folder, os.path.basename(reference_file)[:-len(suffix)])


def _ids(paths):
    return ['/'.join(p.split(os.sep)[-2:]) for p in paths]


@pytest.mark.skipif(not SHAPES, reason='../shared/reference/nets is absent')
@pytest.mark.parametrize('path', SHAPES, ids=_ids(SHAPES))
def test_net_builds_with_caffes_shapes(path):
    expected = json.load(open(path))
    net = caffe_py.Net(_source(path, '.shapes.json'), caffe_py.TEST)
    assert [[l.name, l.type] for l in net.layers] == expected['layers']
    assert list(net.blobs) == list(expected['blobs'])
    assert {k: list(v.shape) for k, v in net.blobs.items()} == expected['blobs']
    want_params = {k: v for k, v in expected['params'].items() if v}
    assert {k: [list(b.shape) for b in v] for k, v in net.params.items()} == want_params
    assert net.inputs == expected['inputs']
    assert net.outputs == expected['outputs']


def _deploy_for(folder):
    """The deploy prototxt beside a corpus caffemodel (the one whose name has no train/test/solver)."""
    names = [p for p in glob.glob(os.path.join(folder, '*.prototxt'))
             if not any(w in os.path.basename(p) for w in ('train', 'test', 'solver'))]
    assert len(names) == 1, names
    return names[0]


@pytest.mark.skipif(not FORWARDS, reason='../shared/reference/nets is absent')
@pytest.mark.parametrize('path', FORWARDS, ids=_ids(FORWARDS))
def test_real_weights_forward_as_caffe(path):
    weights = _source(path, '.forward.npz')
    expected = np.load(path)
    net = caffe_py.Net(_deploy_for(os.path.dirname(weights)), caffe_py.TEST, weights=weights)
    for key in expected.files:
        if key.startswith('in/'):
            net.blobs[key[3:]].reshape(expected[key].shape)
            net.blobs[key[3:]].data[...] = expected[key]
    net.reshape()
    net.forward()
    for key in expected.files:
        if key.startswith('out/'):
            want = expected[key]
            scale = max(1.0, float(np.abs(want).max()))
            np.testing.assert_allclose(net.blobs[key[4:]].data, want, rtol=1e-4, atol=1e-4 * scale,
                                       err_msg=key)
