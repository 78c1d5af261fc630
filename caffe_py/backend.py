"""Compute mode and device: which array module (NumPy or CuPy) new blobs live in.

GPU mode needs CuPy and a CUDA device; without them `set_mode_gpu()` raises a
ModeError with one readable line. Blobs, layers and nets created in GPU mode
keep their arrays on the device (see caffe_py.blob); switch the mode before
building nets, as pycaffe scripts do.

float32 matrix products go through cuBLAS in full float32, CuPy's default. TF32
tensor cores (faster, about 3 decimal digits in the products' inputs) are CuPy's
to switch on, with the environment variable CUPY_TF32=1: results then differ
from the CPU's and from Caffe's beyond the usual float32 rounding.

Tests may stand a fake device module in for CuPy with `use_device_module`.
"""
import numpy as np

_state = {'mode': 'cpu', 'device': 0, 'module': None}   # module: CuPy (or its stand-in) once checked
_device = {'module': None}      # a stand-in for cupy (tests), or None: import cupy


class ModeError(RuntimeError):
    """Asking for the GPU where CuPy or a CUDA device is missing."""


def use_device_module(module):
    """Use `module` in place of CuPy (a test double); None restores CuPy. Returns the previous one."""
    previous, _device['module'] = _device['module'], module
    _state['module'] = None
    return previous


def device_module():
    """CuPy (or its stand-in) after checking once that a CUDA device is there; ModeError otherwise."""
    module = _state['module']
    if module is None:
        module = _state['module'] = _check_device_module()
    return module


def _check_device_module():
    module = _device['module']
    if module is None:
        try:
            import cupy as module
        except ImportError as exc:
            raise ModeError('GPU mode needs CuPy (pip install caffe-py[gpu]): %s' % exc) from None
    try:
        count = module.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        raise ModeError('GPU mode needs a CUDA device: %s' % _first_line(exc)) from None
    if count == 0:
        raise ModeError('GPU mode needs a CUDA device: none found')
    return module


def _first_line(exc):
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _use(module, device_id):
    count = module.cuda.runtime.getDeviceCount()
    if not 0 <= device_id < count:
        raise ModeError('GPU %d does not exist (found %d device(s))' % (device_id, count))
    module.cuda.Device(device_id).use()


def set_mode_cpu():
    _state['mode'] = 'cpu'


def set_mode_gpu():
    """Compute on the current device (set_device) from now on; ModeError without CuPy or a device."""
    module = device_module()
    _use(module, _state['device'])
    _state['mode'] = 'gpu'


def set_device(device_id):
    """Select the CUDA device for GPU mode (checked now in GPU mode or when the id is not 0)."""
    device_id = int(device_id)
    if _state['mode'] == 'gpu' or device_id != 0:
        _use(device_module(), device_id)
    _state['device'] = device_id


def mode():
    return _state['mode']


def device():
    return _state['device']


def xp():
    """The array module for arrays created now."""
    if _state['mode'] == 'gpu':
        return device_module()
    return np


def get_array_module(array):
    """numpy or the device module, whichever owns `array`."""
    if isinstance(array, np.ndarray):
        return np
    return device_module().get_array_module(array)


def is_device_array(array):
    """Whether `array` lives on the device (a CuPy array or the stand-in's)."""
    return not isinstance(array, np.ndarray) and hasattr(array, 'device') and hasattr(array, 'get')


def to_numpy(array):
    """A host (NumPy) copy or view of a NumPy or device array."""
    if is_device_array(array):
        return array.get()
    return array


def synchronize():
    """Wait for the device's queued work (no-op in CPU mode)."""
    if _state['mode'] == 'gpu':
        device_module().cuda.runtime.deviceSynchronize()


_rng = {'gen': np.random.default_rng()}


def set_random_seed(seed):
    """Caffe::set_random_seed: reseed Caffe's stream (caffe_py.rng: fillers, CPU dropout, data layers)
    and the NumPy generator of the draws Caffe makes with cuRAND (GPU dropout, stochastic pooling)."""
    from . import rng as caffe_rng
    caffe_rng.set_random_seed(seed)
    _rng['gen'] = np.random.default_rng(int(seed))


def rng():
    """The process-wide NumPy Generator of the draws Caffe makes on the GPU (cuRAND's in Caffe)."""
    return _rng['gen']
