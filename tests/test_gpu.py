"""GPU mode on a real CUDA device (CuPy): every reference layer and solver case with the CPU tolerances,
CaffeNet against the CPU, the kernels against the CPU path, determinism, pycaffe-style host writes.
Skipped (tests/conftest.py) where CuPy or a device is missing; tests/test_synced_memory.py runs the
same checks on the CPU with a stand-in for CuPy."""
import glob
import os

import numpy as np
import pytest

import caffe_py as caffe
import device_cases
from caffe_py import gpu
from caffe_py.layers import vision_gpu
from conftest import REFERENCE
from test_solver_reference import CASES as SOLVER_CASES

pytestmark = pytest.mark.gpu
LAYER_CASES = sorted(glob.glob(os.path.join(REFERENCE, 'layers', '*.npz')))
KERNEL_FILES = ['embed.cu', 'im2col.cu', 'lrn.cu', 'pooling.cu', 'softmax_loss.cu', 'solver_updates.cu']


@pytest.fixture
def cuda():
    caffe.set_mode_gpu()
    yield
    caffe.set_mode_cpu()


@pytest.mark.parametrize('filename', KERNEL_FILES)
def test_kernels_compile_on_this_device(cuda, filename):
    source = gpu.kernel_source(filename)
    for name in gpu.parse_kernels(source):
        for dtype in (np.float32, np.float64):
            gpu.kernel(filename, name, dtype)


def test_full_float32_products_unless_cupy_is_told_tf32(cuda):
    from cupy._core import _routines_linalg as linalg
    if int(os.environ.get('CUPY_TF32', '0')) > 0:
        pytest.skip('CUPY_TF32 is set in this environment')
    caffe.set_mode_gpu()
    assert linalg.get_compute_type(np.float32) != linalg.COMPUTE_TYPE_TF32


def test_host_writes_reach_the_layers(cuda):
    device_cases.host_writes_reach_the_layers()


@pytest.mark.parametrize('name', sorted(device_cases.VARIANTS))
def test_vision_kernels_match_the_cpu(name, monkeypatch):
    if name.endswith('chunks'):
        monkeypatch.setattr(vision_gpu, 'DEVICE_COL_BYTES', 1)
    device_cases.compare_variant(name, device_cases.gpu_mode)


@pytest.mark.parametrize('train', [True, False])
def test_pooling_argmax_and_draws_as_the_cpu(train):
    device_cases.compare_pooling(train, device_cases.gpu_mode)


def test_caffenet_gpu_matches_cpu():
    cpu = device_cases.caffenet(batch=2)
    expected = device_cases.forward_backward(cpu)
    with device_cases.gpu_mode():
        net = device_cases.same_net_on_device(cpu, batch=2)
        device_cases.assert_nets_agree(expected, device_cases.forward_backward(net), rtol=1e-4)


def test_same_bits_every_run(tmp_path):
    weights = device_cases.caffenet(batch=2)
    runs = []
    for _ in range(2):
        with device_cases.gpu_mode():
            runs.append(device_cases.forward_backward(device_cases.same_net_on_device(weights, batch=2)))
    for key in runs[0]:
        np.testing.assert_array_equal(runs[1][key], runs[0][key], err_msg=key)
    if 'sgd_fixed' in SOLVER_CASES:
        snapshots = []
        for i in range(2):
            with device_cases.gpu_mode():
                device_cases.train_solver_case('sgd_fixed', tmp_path / str(i))
            folder = tmp_path / str(i) / 'sgd_fixed' / 'snap'
            snapshots.append({name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))})
        assert snapshots[0] == snapshots[1]


def test_parameters_and_history_stay_on_the_device(cuda, tmp_path):
    device_cases.solver_state_stays_on_the_device(tmp_path).close()


@pytest.mark.skipif(not LAYER_CASES, reason='../shared/reference/layers is absent')
@pytest.mark.parametrize('path', LAYER_CASES, ids=[os.path.basename(c)[:-4] for c in LAYER_CASES])
def test_reference_layer_case_on_the_gpu(cuda, path):
    device_cases.run_layer_case(path)


@pytest.mark.parametrize('case', SOLVER_CASES)
def test_reference_solver_case_on_the_gpu(cuda, case, tmp_path):
    device_cases.train_solver_case(case, tmp_path)


def test_cli_device_query(cuda):
    from caffe_py.tools import cli
    assert cli.main(['device_query', '-gpu', '0']) == 0


def test_classifier_on_the_gpu():
    import test_pycaffe_api as api
    if not all(os.path.exists(p) for p in api.IMAGES):
        pytest.skip('example images absent')
    expected = api.classify_styles()
    with device_cases.gpu_mode():
        got = api.classify_styles()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
