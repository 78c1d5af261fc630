"""GPU mode without a GPU: SyncedMemory heads and copies, host views, parameters and solver state on
the device, kernels (emulated with g++) against the CPU path, every reference layer and solver case,
all on tests/fakecupy.py standing in for CuPy."""
import glob
import os

import numpy as np
import pytest

import caffe_py as caffe
import device_cases
import fakecupy
from caffe_py import backend, gpu
from caffe_py.blob import DEVICE, HOST, SYNCED, Blob
from caffe_py.layers import vision_gpu
from conftest import REFERENCE
from test_solver_reference import CASES as SOLVER_CASES

needs_compiler = pytest.mark.skipif(fakecupy.compiler() is None,
                                    reason='the fake device emulates kernels with g++, not installed')
LAYER_CASES = sorted(glob.glob(os.path.join(REFERENCE, 'layers', '*.npz')))


@pytest.fixture
def fake():
    with fakecupy.fake_gpu() as module:
        yield module


def transfers():
    return dict(fakecupy.TRANSFERS)


def moved(before):
    return {k: fakecupy.TRANSFERS[k] - before[k] for k in before}


# -- SyncedMemory and host views ------------------------------------------------------------

def test_heads_and_copies_only_when_the_other_side_is_ahead(fake):
    blob = Blob((2, 3))
    assert blob.on_device and blob.xp is fake and blob._data_mem.head is DEVICE
    before = transfers()
    blob.data[...] = fake.arange(6, dtype=np.float32).reshape(2, 3)    # device write
    assert moved(before) == {'h2d': 0, 'd2h': 0}
    host = blob.host_view()
    assert isinstance(host.data, np.ndarray)
    np.testing.assert_array_equal(host.data, np.arange(6).reshape(2, 3))
    assert moved(before) == {'h2d': 0, 'd2h': 1} and blob._data_mem.head is HOST
    host.data[1] = -1                                                  # host write
    host.data                                                          # host again: no copy
    assert moved(before) == {'h2d': 0, 'd2h': 1}
    assert float(blob.data.sum()) == 3 - 3                             # device read copies once
    assert moved(before) == {'h2d': 1, 'd2h': 1} and blob._data_mem.head is DEVICE
    blob.data
    assert moved(before) == {'h2d': 1, 'd2h': 1}
    readonly = blob.read_data()                                        # read-only host copy
    assert blob._data_mem.head is SYNCED and not readonly.flags.writeable
    blob.read_data()                                                   # both current: no copy
    blob.data                                                          # nor back to the device
    assert moved(before) == {'h2d': 1, 'd2h': 2} and blob._data_mem.head is DEVICE
    blob.read_data()                                                   # the device may have changed it
    assert moved(before) == {'h2d': 1, 'd2h': 3}
    assert blob._diff_mem.host is None                                 # the diff never left the device


def test_host_view_is_pycaffe_blob(fake):
    blob = Blob((2, 3))
    host = blob.host_view()
    assert host.host_view() is host and host.xp is np and not host.on_device
    host.reshape(3, 4)                                                 # reshapes the blob itself
    assert blob.shape == (3, 4) and host.shape == (3, 4) and host.count == 12 and host.num == 3
    host.data = np.ones((3, 4))
    host.diff[...] = 2
    assert float(blob.data.sum()) == 12 and float(blob.diff.sum()) == 24
    other = Blob((3, 4))
    other.share_data(host)
    assert float(other.data.sum()) == 12
    assert Blob().host_view().data.shape == (0,)                      # never shaped: empty


def test_cpu_blobs_have_no_device_side():
    blob = Blob((2, 2))
    assert not blob.on_device and blob.host_view() is blob and blob.xp is np
    assert blob._data_mem.device is None and blob._data_mem.head is HOST
    assert not blob.read_data().flags.writeable


def test_mode_errors_are_one_clear_line(monkeypatch):
    class NoDevice:
        class cuda:
            class runtime:
                @staticmethod
                def getDeviceCount():
                    raise RuntimeError('cudaErrorNoDevice: no CUDA-capable device is detected\nmore')
    previous = backend.use_device_module(NoDevice)
    try:
        with pytest.raises(backend.ModeError, match=r'^GPU mode needs a CUDA device: cudaErrorNoDevice: '
                                                   r'no CUDA-capable device is detected$'):
            caffe.set_mode_gpu()
    finally:
        backend.use_device_module(previous)
    assert backend.mode() == 'cpu'


# -- nets -------------------------------------------------------------------------------------

def test_host_writes_reach_the_layers(fake):
    device_cases.host_writes_reach_the_layers()


def test_python_layer_sees_host_blobs(fake, monkeypatch):
    monkeypatch.syspath_prepend(os.path.dirname(__file__))
    text = '''
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "aff" type: "Python" bottom: "x" top: "y"
            python_param { module: "pylayers" layer: "ChannelAffineLayer" } }
    layer { name: "times" type: "Python" bottom: "y" top: "z"
            python_param { module: "pylayers" layer: "TimesLayer" param_str: "3" } }
    '''
    net = device_cases.net_from_text('force_backward: true\n' + text)
    assert net.layers[1].blobs[0].on_device                            # the solver's side
    assert all(isinstance(b.data, np.ndarray) for b in net.layers[1].impl.blobs)
    net.params['aff'][1].data[...] = [1, 2, 3]
    net.blobs['x'].data[...] = np.arange(6).reshape(2, 3)
    np.testing.assert_allclose(net.forward()['z'], 3 * (np.arange(6).reshape(2, 3) + [1, 2, 3]))
    net.backward(z=np.ones((2, 3)))
    np.testing.assert_allclose(net.blobs['x'].diff, 3 * np.ones((2, 3)))
    np.testing.assert_allclose(net.params['aff'][1].diff, [6, 6, 6])


@pytest.mark.slow       # 60M parameters: about 15 s here; tests/test_gpu.py runs it on a GPU
@needs_compiler
def test_caffenet_on_the_device_matches_the_cpu(fake):
    caffe.set_mode_cpu()
    cpu = device_cases.caffenet(batch=1)
    expected = device_cases.forward_backward(cpu)
    caffe.set_mode_gpu()
    device = device_cases.same_net_on_device(cpu, batch=1)
    device_cases.assert_nets_agree(expected, device_cases.forward_backward(device), rtol=1e-4)


# -- solvers: parameters and histories stay on the device -------------------------------------

@needs_compiler
def test_parameters_and_history_stay_on_the_device(fake, tmp_path):
    solver = device_cases.solver_state_stays_on_the_device(tmp_path)
    assert all(blob._data_mem.head is DEVICE for blob in solver.net.learnable_params)
    solver.close()


SOLVER = '''
type: "%s" base_lr: 0.1 momentum: %s weight_decay: 0.01 lr_policy: "fixed" max_iter: 100
display: 0 snapshot_after_train: false delta: 1e-6
net_param {
  layer { name: "data" type: "DummyData" top: "x" top: "t"
          dummy_data_param { shape { dim: 8 dim: 3 } shape { dim: 8 dim: 2 }
                             data_filler { type: "gaussian" } data_filler { type: "gaussian" } } }
  layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
          inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
  layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
}'''


@needs_compiler
@pytest.mark.parametrize('kind', ['SGD', 'Nesterov', 'AdaGrad', 'RMSProp', 'AdaDelta', 'Adam'])
def test_fused_updates_round_as_the_cpu(kind):
    """Every update kernel gives the CPU path's bits (the emulation rounds as CUDA with --fmad=false)."""
    from google.protobuf import text_format
    from caffe_py.proto import caffe_pb2
    momentum = '0.9' if kind in ('SGD', 'Nesterov', 'Adam', 'AdaDelta') else '0'
    param = text_format.Parse(SOLVER % (kind, momentum), caffe_pb2.SolverParameter())
    results = []
    for on_device in (False, True):
        backend.set_random_seed(3)
        with (fakecupy.fake_gpu() if on_device else device_cases.cpu_mode()):
            solver = caffe.get_solver(param)
            solver.step(4)
            results.append([np.array(b.read_data()) for b in solver.net.learnable_params]
                           + [backend.to_numpy(h).copy() for h in solver.history])
    for cpu, device in zip(*results):
        np.testing.assert_array_equal(device, cpu)


# -- kernels --------------------------------------------------------------------------------------

def test_launcher_checks_arguments(fake):
    launch = gpu.kernel('solver_updates.cu', 'sgd_update', np.float32)
    g, h = fake.zeros(4, np.float32), fake.zeros(4, np.float32)
    with pytest.raises(gpu.KernelError, match='must be a device array'):
        launch(4, np.zeros(4, np.float32), h, 0.9, 0.1)
    with pytest.raises(gpu.KernelError, match='C-contiguous float32'):
        launch(4, fake.zeros(4, np.float64), h, 0.9, 0.1)
    with pytest.raises(gpu.KernelError, match='not contiguous'):
        launch(2, g[::2], h, 0.9, 0.1)
    with pytest.raises(gpu.KernelError, match='takes 5 arguments'):
        launch(4, g, h)
    with pytest.raises(gpu.KernelError, match='has no kernel nope'):
        gpu.kernel('solver_updates.cu', 'nope', np.float32)


def test_kernel_signatures_are_parsed():
    kernels = gpu.parse_kernels(gpu.kernel_source('pooling.cu'))
    assert sorted(kernels) == ['argmax_pool_backward', 'ave_pool_backward', 'ave_pool_forward',
                               'max_pool_forward', 'sto_pool_forward_test', 'sto_pool_forward_train']
    params = kernels['max_pool_forward']
    assert [p.name for p in params][:2] == ['n', 'bottom']
    assert [(p.base, p.pointer) for p in params][-2:] == [('T', True), ('int', True)]


@needs_compiler
@pytest.mark.parametrize('name', sorted(device_cases.VARIANTS))
def test_vision_kernels_match_the_cpu(name, monkeypatch):
    if name.endswith('chunks'):                                # one image per chunk of columns
        monkeypatch.setattr(vision_gpu, 'DEVICE_COL_BYTES', 1)
    device_cases.compare_variant(name, fakecupy.fake_gpu)


@needs_compiler
@pytest.mark.parametrize('train', [True, False])
def test_pooling_argmax_and_draws_as_the_cpu(train):
    device_cases.compare_pooling(train, fakecupy.fake_gpu)


@needs_compiler
def test_embed_backward_adds_repeated_indices_in_order(fake):
    text = '''force_backward: false
    layer { name: "i" type: "Input" top: "i" input_param { shape { dim: 7 } } }
    layer { name: "e" type: "Embed" bottom: "i" top: "y"
            embed_param { num_output: 3 input_dim: 5 weight_filler { type: "gaussian" } } }'''
    indices = np.array([4, 1, 4, 0, 4, 1, 3], np.float32)
    dy = (np.random.default_rng(2).standard_normal((7, 3)) * [1, 1e-8, 1e8]).astype(np.float32)
    net = device_cases.net_from_text(text)
    net.blobs['i'].data[...] = indices
    net.forward()
    net.clear_param_diffs()
    net.params['e'][0].diff[...] = 0.5
    net.blobs['y'].diff[...] = dy
    net.layers[1].backward(net.top_vecs[1], [False], net.bottom_vecs[1])
    expected = np.full((5, 3), 0.5, np.float32)
    np.add.at(expected, indices.astype(int), dy)
    np.testing.assert_array_equal(net.params['e'][0].diff, expected)


@needs_compiler
def test_batch_reindex_backward_of_4d_items_adds_repeats_in_order(fake):
    """The gather kernel's row is a whole item (C * H * W values), not just its channels."""
    text = """force_backward: true
    layer { name: "x" type: "Input" top: "x" top: "i"
            input_param { shape { dim: 4 dim: 2 dim: 3 dim: 2 } shape { dim: 5 } } }
    layer { name: "r" type: "BatchReindex" bottom: "x" bottom: "i" top: "y"
            propagate_down: true propagate_down: false }"""
    indices = np.array([3, 0, 3, 1, 3], np.float32)
    dy = np.random.default_rng(3).standard_normal((5, 2, 3, 2)).astype(np.float32)
    net = device_cases.net_from_text(text)
    net.blobs['i'].data[...] = indices
    net.forward()
    net.backward(y=dy)
    expected = np.zeros((4, 2, 3, 2), np.float32)
    np.add.at(expected, indices.astype(int), dy)
    np.testing.assert_array_equal(net.blobs['x'].diff, expected)


# -- every reference case in GPU mode ----------------------------------------------------------

@needs_compiler
@pytest.mark.skipif(not LAYER_CASES, reason='../shared/reference/layers is absent')
@pytest.mark.parametrize('path', LAYER_CASES, ids=[os.path.basename(c)[:-4] for c in LAYER_CASES])
def test_reference_layer_case_on_the_fake_device(fake, path):
    device_cases.run_layer_case(path)


@needs_compiler
@pytest.mark.parametrize('case', SOLVER_CASES)
def test_reference_solver_case_on_the_fake_device(fake, case, tmp_path):
    device_cases.train_solver_case(case, tmp_path)
