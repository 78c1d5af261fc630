"""Compute mode and device: which array module (NumPy or CuPy) new blobs live in."""
import numpy as np

_state = {'mode': 'cpu', 'device': 0}


class ModeError(RuntimeError):
    """Asking for the GPU where CuPy or a CUDA device is missing."""


def _cupy():
    try:
        import cupy
    except ImportError as exc:
        raise ModeError('GPU mode needs CuPy (pip install caffe-py[gpu]): %s' % exc) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        raise ModeError('GPU mode needs a CUDA device: %s' % exc) from None
    if count == 0:
        raise ModeError('GPU mode needs a CUDA device: none found')
    return cupy


def set_mode_cpu():
    _state['mode'] = 'cpu'


def set_mode_gpu():
    cupy = _cupy()
    cupy.cuda.Device(_state['device']).use()
    _state['mode'] = 'gpu'


def set_device(device_id):
    device_id = int(device_id)
    if _state['mode'] == 'gpu' or device_id != 0:
        cupy = _cupy()
        count = cupy.cuda.runtime.getDeviceCount()
        if not 0 <= device_id < count:
            raise ModeError('GPU %d does not exist (found %d device(s))' % (device_id, count))
        cupy.cuda.Device(device_id).use()
    _state['device'] = device_id


def mode():
    return _state['mode']


def device():
    return _state['device']


def xp():
    """The array module for arrays created now."""
    if _state['mode'] == 'gpu':
        import cupy
        return cupy
    return np


def get_array_module(array):
    """numpy or cupy, whichever owns `array`."""
    if isinstance(array, np.ndarray):
        return np
    import cupy
    return cupy.get_array_module(array)


def to_numpy(array):
    """A host (NumPy) copy or view of a NumPy or CuPy array."""
    if isinstance(array, np.ndarray):
        return array
    return array.get()


_rng = {'gen': np.random.default_rng()}


def set_random_seed(seed):
    """Seed caffe-py's generator (fillers, dropout, shuffling), as Caffe::set_random_seed."""
    _rng['gen'] = np.random.default_rng(int(seed))


def rng():
    """The process-wide NumPy Generator."""
    return _rng['gen']
