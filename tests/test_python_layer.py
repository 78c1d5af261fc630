"""The Python layer: pycaffe's interface for user layers (tests/pylayers.py), gradients, weights, errors."""
import sys

import numpy as np
import pytest
from google.protobuf import text_format

import caffe_py as caffe
from caffe_py.proto import caffe_pb2
from harness import numeric_gradient_check


def make_net(text, phase=caffe.TRAIN, **kwargs):
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase, **kwargs)


def python_layer(name, bottoms, tops, cls, param_str=None, module='pylayers', extra=''):
    fields = ''.join(' bottom: "%s"' % b for b in bottoms) + ''.join(' top: "%s"' % t for t in tops)
    param = ' param_str: "%s"' % param_str if param_str is not None else ''
    return ('layer { name: "%s" type: "Python"%s %s python_param { module: "%s" layer: "%s"%s } }\n'
            % (name, fields, extra, module, cls, param))


DATA = 'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 2 } } }\n'
CHAIN = ('force_backward: true\n' + DATA
         + python_layer('one', ['data'], ['one'], 'TimesLayer')
         + python_layer('two', ['one'], ['two'], 'TimesLayer', param_str='2')
         + python_layer('three', ['two'], ['three'], 'WithInitLayer', param_str='0.5'))


def test_forward_backward_reshape_param_str():
    net = make_net(CHAIN)
    net.blobs['data'].data[...] = 3
    net.forward()
    assert np.all(net.blobs['three'].data == 30)
    net.blobs['three'].diff[...] = 7
    net.backward()
    assert np.all(net.blobs['data'].diff == 70)
    net.blobs['data'].reshape(2, 5)
    net.forward()
    assert all(blob.shape == (2, 5) for blob in net.blobs.values())
    assert net.layers[list(net.layer_names).index('three')].created


def test_phase_and_type_list():
    assert 'Python' in caffe.layer_type_list()
    text = python_layer('p', [], ['phase'], 'PhaseLayer')
    for phase in (caffe.TRAIN, caffe.TEST):
        assert make_net(text, phase).forward()['phase'] == phase


LOSS_NET = ('force_backward: true\n'
            'layer { name: "in" type: "Input" top: "x" top: "target" '
            'input_param { shape { dim: 2 dim: 3 dim: 2 } } }\n'
            + python_layer('affine', ['x'], ['y'], 'ChannelAffineLayer')
            + python_layer('loss', ['y', 'target'], ['loss'], 'HalfSquaredErrorLayer',
                           extra='loss_weight: 2.5'))


def test_gradient_through_python_layers():
    rng = np.random.default_rng(3)
    inputs = {'x': rng.standard_normal((2, 3, 2)), 'target': rng.standard_normal((2, 3, 2))}
    params = {'affine': [rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)]}
    net = numeric_gradient_check(LOSS_NET, inputs, phase=caffe.TRAIN, params=params)
    assert net.blob_loss_weights['loss'] == 2.5
    assert net.params['affine'][0].data.dtype == np.float64
    expected = 2.5 * ((net.blobs['y'].data - inputs['target']) ** 2).sum() / 4
    assert net.forward_from_to() == pytest.approx(expected)


def test_learnable_blobs_train_save_load_share(tmp_path):
    net = make_net(LOSS_NET)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 2)).astype(np.float32)
    net.blobs['x'].data[...] = x
    net.blobs['target'].data[...] = 3 * x - 1
    losses = []
    for _ in range(100):
        net.clear_param_diffs()
        losses.append(net.forward_backward())
        for blob in net.learnable_params:
            blob.diff[...] *= 0.1
        net.update()
    assert losses[-1] < 1e-3 * losses[0]
    w, b = (blob.data.copy() for blob in net.params['affine'])
    np.testing.assert_allclose(w, 3, atol=0.05)
    np.testing.assert_allclose(b, -1, atol=0.05)
    path = str(tmp_path / 'affine.caffemodel')
    net.save(path)
    fresh = make_net(LOSS_NET)
    assert np.all(fresh.params['affine'][0].data == 1)
    fresh.copy_from(path)
    np.testing.assert_array_equal(fresh.params['affine'][0].data, w)
    other = make_net(LOSS_NET, caffe.TEST)
    other.share_with(net)
    np.testing.assert_array_equal(other.params['affine'][1].data, b)


def test_user_attributes_read_through_the_net():
    net = make_net(CHAIN)
    layer = net.layers[list(net.layer_names).index('two')]
    assert layer.type == 'Python' and layer.k == 2.0 and layer.param_str == '2'


def test_missing_module_names_layer_and_module():
    text = DATA + python_layer('mine', ['data'], ['out'], 'X', module='no_such_module_xyz')
    with pytest.raises(ImportError, match=r'Python layer "mine" \(module no_such_module_xyz, class X\).*'
                       r'No module named'):
        make_net(text)


def test_missing_class_names_layer_and_class():
    text = DATA + python_layer('mine', ['data'], ['out'], 'NoSuchLayer')
    with pytest.raises(AttributeError, match=r'Python layer "mine" \(module pylayers, class NoSuchLayer\)'
                       r'.*has no class NoSuchLayer'):
        make_net(text)


def test_user_errors_keep_their_type_and_name_the_layer():
    with pytest.raises(RuntimeError, match=r'"bad".*FailingSetupLayer.*setup failed.*deliberate'):
        make_net(DATA + python_layer('bad', ['data'], ['out'], 'FailingSetupLayer'))
    net = make_net(DATA + python_layer('bad', ['data'], ['out'], 'FailingForwardLayer'))
    with pytest.raises(caffe.layer.LayerError, match=r'"bad".*forward failed: KeyError'):
        net.forward()


def test_module_in_current_directory_and_caffe_import_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, 'path', [p for p in sys.path if p not in ('', '.')])
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'cwd_layer_mod.py').write_text(
        'import caffe_py as caffe\n'
        'class Copy(caffe.Layer):\n'
        '    def setup(self, bottom, top): pass\n'
        '    def reshape(self, bottom, top): top[0].reshape(*bottom[0].shape)\n'
        '    def forward(self, bottom, top): top[0].data[...] = bottom[0].data\n')
    (tmp_path / 'pycaffe_style_mod.py').write_text('import caffe\n')
    for name in ('cwd_layer_mod', 'pycaffe_style_mod'):
        monkeypatch.delitem(sys.modules, name, raising=False)
    net = make_net(DATA + python_layer('c', ['data'], ['out'], 'Copy', module='cwd_layer_mod'))
    net.blobs['data'].data[...] = 5
    assert np.all(net.forward()['out'] == 5)
    with pytest.raises(ImportError, match="import caffe_py as caffe"):
        make_net(DATA + python_layer('c', ['data'], ['out'], 'L', module='pycaffe_style_mod'))
    sys.modules.pop('cwd_layer_mod', None)


def test_python_param_must_name_module_and_class():
    with pytest.raises(ValueError, match='must name a module and a layer class'):
        make_net(DATA + 'layer { name: "p" type: "Python" bottom: "data" top: "o" }')
