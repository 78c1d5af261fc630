"""Shared test fixtures: where ../shared lives, the slow / gpu markers, the captured log."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), 'shared')
REFERENCE = os.path.join(SHARED, 'reference')
CORPUS = os.path.join(SHARED, 'corpus')


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', help='run tests marked slow')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long tests, run with --runslow')
    config.addinivalue_line('markers', 'gpu: needs CuPy and a CUDA device')


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason='slow: run with --runslow')
    skip_gpu = pytest.mark.skip(reason=gpu_unavailable_reason() or '')
    gpu_missing = gpu_unavailable_reason()
    for item in items:
        if 'slow' in item.keywords and not config.getoption('--runslow'):
            item.add_marker(skip_slow)
        if 'gpu' in item.keywords and gpu_missing:
            item.add_marker(skip_gpu)


def gpu_unavailable_reason():
    """None when CuPy sees a CUDA device, else why not."""
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return None
        return 'no CUDA device'
    except Exception as exc:  # ImportError or a CUDA runtime error
        return 'CuPy/CUDA unavailable: %s' % type(exc).__name__


def need(path):
    """Skip unless `path` (under ../shared) exists."""
    if not os.path.exists(path):
        pytest.skip('%s is absent (../shared is not beside the project)' % path)
    return path


@pytest.fixture
def captured_log():
    """The caffe_py log written during the test (a StringIO, glog format)."""
    from harness import captured_log_text
    with captured_log_text() as stream:
        yield stream
