"""Checks run in GPU mode, on CuPy (tests/test_gpu.py) or on the CPU stand-in (tests/fakecupy.py,
tests/test_synced_memory.py), through pycaffe's surface: inputs, parameters and results are set and
read through host views (Net.blobs, Net.params)."""
import contextlib
import json
import os

import numpy as np
import pytest
from google.protobuf import text_format

import caffe_py as caffe
import test_solver_reference as ref
from caffe_py import TEST, Net, backend, formats
from caffe_py.proto import caffe_pb2
from conftest import ROOT
from harness import _close
from harness import run_reference_case as run_layer_case  # noqa: F401  (device-agnostic)


# -- small nets: the CPU path against the device path -----------------------------------------
def net_from_text(text, phase=TEST):
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


@contextlib.contextmanager
def cpu_mode():
    caffe.set_mode_cpu()
    yield


@contextlib.contextmanager
def gpu_mode():
    """GPU mode on CuPy's device 0 for the block."""
    caffe.set_mode_gpu()
    try:
        yield
    finally:
        caffe.set_mode_cpu()


NET = '''
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "y" top: "y" }
'''


def host_writes_reach_the_layers():
    """In GPU mode (entered by the caller), pycaffe-style writes into Net.blobs and Net.params
    reach the layers."""
    net = net_from_text(NET)
    caffe.set_mode_cpu()
    reference = net_from_text(NET)
    caffe.set_mode_gpu()
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5
    for n in (net, reference):
        n.params['ip'][0].data[...] = weights
        n.blobs['x'].data[...] = [[1, 2, 3], [-1, 0, 2]]
    assert isinstance(net.blobs['x'].data, np.ndarray) and net.layers[1].blobs[0].on_device
    out = net.forward()['y']
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, reference.forward()['y'], rtol=1e-6)
    for n in (net, reference):
        n.blobs['x'].data[0] *= -2                                     # in place, between passes
    np.testing.assert_allclose(net.forward()['y'], reference.forward()['y'], rtol=1e-6)


VARIANTS = {
    'conv_group_dilated': ('Convolution', 'convolution_param { num_output: 4 kernel_size: 3 group: 2 '
                           'dilation: 2 pad: 1 stride: 2 weight_filler { type: "gaussian" } '
                           'bias_filler { type: "gaussian" } }', (3, 4, 9, 8)),
    'conv_no_spatial': ('Convolution', 'convolution_param { num_output: 2 weight_filler { type: "gaussian" } '
                        'bias_filler { type: "gaussian" } }', (3, 4)),
    'conv_1d': ('Convolution', 'convolution_param { num_output: 3 kernel_size: 3 pad: 1 '
                'weight_filler { type: "gaussian" } }', (2, 2, 7)),
    'conv_rect_chunks': ('Convolution', 'convolution_param { num_output: 2 kernel_h: 3 kernel_w: 2 '
                         'stride_h: 2 stride_w: 1 weight_filler { type: "gaussian" } }', (3, 3, 7, 6)),
    'deconv': ('Deconvolution', 'convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 group: 2 '
               'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }', (2, 2, 4, 5)),
    'im2col': ('Im2col', 'convolution_param { kernel_size: 3 stride: 2 pad: 1 dilation: 1 }', (2, 3, 6, 5)),
    'max_pad': ('Pooling', 'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }', (2, 3, 7, 6)),
    'ave_pad': ('Pooling', 'pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }', (2, 3, 7, 6)),
    'sto_test': ('Pooling', 'pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 }', (2, 3, 7, 6)),
    'lrn_across': ('LRN', 'lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 }', (2, 7, 3, 2)),
    'lrn_within': ('LRN', 'lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }',
                   (2, 3, 4, 5)),
}




def compare_variant(name, device):
    """One layer of VARIANTS forward and backward on the CPU and in `device()` mode: the same numbers."""
    kind, params, shape = VARIANTS[name]
    text = ('force_backward: true\nlayer { name: "x" type: "Input" top: "x" input_param { shape { %s } } }\n'
            'layer { name: "l" type: "%s" bottom: "x" top: "y" %s }'
            % (' '.join('dim: %d' % d for d in shape), kind, params))
    x = np.random.default_rng(0).uniform(0.1, 1, shape)       # positive: stochastic pooling's domain
    results = []
    for mode in (cpu_mode, device):
        caffe.set_random_seed(5)
        with mode():
            net = net_from_text(text)
            for i, blob in enumerate(net.params.get('l', [])):
                blob.data[...] = np.random.default_rng(i).standard_normal(blob.shape)
            net.blobs['x'].data[...] = x
            y = net.forward()['y'].copy()
            net.backward(y=np.random.default_rng(1).standard_normal(y.shape))
            results.append([y, net.blobs['x'].diff.copy()] + [b.diff.copy() for b in net.params.get('l', [])])
    for cpu, on_device in zip(*results):
        np.testing.assert_allclose(on_device, cpu, rtol=1e-5, atol=1e-6)


POOL = ('force_backward: true\nlayer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 '
        'dim: 7 dim: 6 } } }\nlayer { name: "l" type: "Pooling" bottom: "x" top: "y" %s '
        'pooling_param { %s } }')


def compare_pooling(train, device):
    """STOCHASTIC pooling in TRAIN (the same draws) or MAX with a mask top: the CPU's exact outputs."""
    text = (POOL % ('', 'pool: STOCHASTIC kernel_size: 3 stride: 2') if train
            else POOL % ('top: "mask"', 'pool: MAX kernel_size: 3 stride: 2'))
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 7, 6))
    results = []
    for mode in (cpu_mode, device):
        caffe.set_random_seed(9)
        with mode():
            net = net_from_text(text, caffe.TRAIN)
            net.blobs['x'].data[...] = x
            outputs = {k: v.copy() for k, v in net.forward().items()}
            net.backward(y=np.ones(outputs['y'].shape))
            results.append([outputs[k] for k in sorted(outputs)] + [net.blobs['x'].diff.copy()])
    for cpu, on_device in zip(*results):
        np.testing.assert_array_equal(on_device, cpu)


# -- whole nets -------------------------------------------------------------------------------
CAFFENET = os.path.join(ROOT, 'models', 'bvlc_reference_caffenet', 'deploy.prototxt')


def caffenet(batch, seed=0):
    """CaffeNet's deploy net with `batch` images, force_backward, seeded weights (He-scaled) and input."""
    param = formats.read_net(CAFFENET)
    param.force_backward = True
    net = Net(param, TEST)
    net.blobs['data'].reshape((batch,) + net.blobs['data'].shape[1:])
    net.reshape()
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        weight = blobs[0]
        fan_in = weight.count // weight.shape[0]
        weight.data[...] = rng.standard_normal(weight.shape) * np.sqrt(2.0 / fan_in)
        blobs[1].data[...] = rng.uniform(-0.1, 0.1, blobs[1].shape)
    net.blobs['data'].data[...] = rng.standard_normal(net.blobs['data'].shape)
    return net


def same_net_on_device(cpu_net, batch):
    """A CaffeNet built now (in GPU mode) with the CPU net's weights and input."""
    param = formats.read_net(CAFFENET)
    param.force_backward = True
    net = Net(param, TEST)
    net.blobs['data'].reshape((batch,) + net.blobs['data'].shape[1:])
    net.reshape()
    for name, blobs in cpu_net.params.items():
        for mine, theirs in zip(net.params[name], blobs):
            mine.data[...] = theirs.data
    net.blobs['data'].data[...] = cpu_net.blobs['data'].data
    return net


def forward_backward(net, seed=1):
    """Forward, a seeded top diff on the output, backward; returns {name: host copy} of every
    blob's data and diff and every parameter's diff."""
    net.forward()
    out = net.outputs[0]
    rng = np.random.default_rng(seed)
    net.clear_param_diffs()
    net.blobs[out].diff[...] = rng.standard_normal(net.blobs[out].shape)
    net.backward()
    arrays = {}
    for name, blob in net.blobs.items():
        arrays['data ' + name] = np.array(blob.data)
        arrays['diff ' + name] = np.array(blob.diff)
    for name, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            arrays['param diff %s/%d' % (name, i)] = np.array(blob.diff)
    return arrays


def assert_nets_agree(cpu_arrays, device_arrays, rtol):
    assert sorted(cpu_arrays) == sorted(device_arrays)
    for key, expected in cpu_arrays.items():
        _close(device_arrays[key], expected, key, rtol)


# -- solvers ----------------------------------------------------------------------------------
def train_solver_case(case, tmp_path):
    """`train -gpu 0` a reference solver case; the log and the final weights must be Caffe's."""
    folder = ref.copy_case(case, tmp_path, with_snapshots=False)
    ours = ref.trajectory(ref.train(folder, '-weights', 'init.caffemodel', '-gpu', '0'))
    with open(os.path.join(ref.case_dir(case), 'trajectory.json')) as f:
        caffe = json.load(f)
    assert ours['events'] == caffe['events']
    ref.assert_series(ours['train'], caffe['train'], 'displayed loss')
    ref.assert_series(ours['lr'], caffe['lr'], 'lr')
    for mine, theirs in zip(ours['test'], caffe['test']):
        for name, value in theirs['outputs'].items():
            assert mine['outputs'][name] == pytest.approx(value, rel=ref.RTOL, abs=1e-7), \
                'test output %s at iteration %d' % (name, mine['iter'])
    ref.assert_final_weights(folder, ours['events'], case)


def solver_state_stays_on_the_device(tmp_path):
    """Five steps of the sgd_fixed reference solver in the current (device) mode: parameters,
    their diffs and the history must never have needed a host copy."""
    if 'sgd_fixed' not in ref.CASES:
        pytest.skip('reference solvers absent')
    folder = ref.copy_case('sgd_fixed', tmp_path, with_snapshots=False)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        solver = caffe.get_solver('solver.prototxt')
        solver.step(5)
    finally:
        os.chdir(cwd)
    for blob in solver.net.learnable_params:
        assert blob.on_device and blob._data_mem.host is None and blob._diff_mem.host is None
    assert all(backend.is_device_array(h) for h in solver.history)
    return solver
