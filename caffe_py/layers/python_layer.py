"""The Python layer: a user's layer class named by python_param, with pycaffe's interface.

`python_param.module` is imported by name from sys.path (the script's folder and
PYTHONPATH, as in pycaffe; the current directory is tried last) and
`python_param.layer` names the class, usually a subclass of caffe_py.Layer
(`import caffe_py as caffe; class MyLayer(caffe.Layer)`) that defines no
__init__. The object sees what pycaffe gives it: `param_str`, `phase`
(caffe_py.TRAIN / caffe_py.TEST) and `blobs`, its learnable Blobs (a list with
`add_blob(*shape)`), and is called as setup(bottom, top), reshape(bottom, top),
forward(bottom, top) and backward(top, propagate_down, bottom) with lists of
Blobs whose .data/.diff are NumPy arrays (in GPU mode the host views of the
device blobs, as pycaffe's: copies happen only when one side is stale).
`loss_weight` in the layer definition makes its tops losses, as in Caffe.
share_in_parallel has no effect (one process).

An exception raised by the user's code comes back with the same type where it
can, its message naming the layer, module and class, chained to the original.
"""
import importlib
import os
import sys

import numpy as np

from .. import backend
from ..blob import Blob, host_views
from ..layer import Layer, LayerError, register


class PythonLayerError(LayerError):
    """An error in a user's layer whose exception type cannot carry the layer's name."""


class BlobVec(list):
    """A layer's parameter Blobs, as pycaffe's BlobVec: a list with add_blob(*shape)."""

    def __init__(self, blobs=(), dtype=np.float32):
        super().__init__(blobs)
        self.dtype = np.dtype(dtype)

    def add_blob(self, *shape):
        """Append a new zero-filled Blob of `shape`."""
        self.append(Blob(shape, dtype=self.dtype))


class HostBlobVec:
    """What the user's layer sees of a BlobVec of device blobs: their host views (pycaffe's Blobs)."""

    def __init__(self, blobs):
        self._blobs = blobs

    def add_blob(self, *shape):
        self._blobs.add_blob(*shape)

    def __len__(self):
        return len(self._blobs)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [blob.host_view() for blob in self._blobs[index]]
        return self._blobs[index].host_view()

    def __iter__(self):
        return (blob.host_view() for blob in self._blobs)


@register('Python')
class PythonLayer(Layer):
    """Runs the user's layer object; attributes it has and this layer lacks read through to it."""

    def __init__(self, layer_param, dtype=np.float32):
        super().__init__(layer_param, dtype)
        param = layer_param.python_param
        self.module_name, self.class_name = param.module, param.layer
        if not param.module or not param.layer:
            raise self.error('python_param must name a module and a layer class')
        self.blobs = BlobVec(self.blobs, self.dtype)
        cls = self._call('loading', _find_class, param.module, param.layer)
        impl = self._call('creating the layer', _instantiate, cls, layer_param)
        impl.blobs = self.blobs if backend.mode() == 'cpu' else HostBlobVec(self.blobs)
        impl.param_str = param.param_str
        impl.phase = self.phase
        self.impl = impl

    def setup(self, bottom, top):
        self._call('setup', self.impl.setup, host_views(bottom), host_views(top))

    def reshape(self, bottom, top):
        self._call('reshape', self.impl.reshape, host_views(bottom), host_views(top))

    def forward(self, bottom, top):
        self._call('forward', self.impl.forward, host_views(bottom), host_views(top))

    def backward(self, top, propagate_down, bottom):
        self._call('backward', self.impl.backward, host_views(top), list(propagate_down), host_views(bottom))

    def __getattr__(self, name):
        # only reached for names this layer lacks: the user's methods and attributes
        impl = self.__dict__.get('impl')
        if impl is None:
            raise AttributeError(name)
        return getattr(impl, name)

    def _call(self, what, function, *args):
        try:
            return function(*args)
        except Exception as exc:
            message = 'Python layer "%s" (module %s, class %s): %s failed: %s: %s' % (
                self.name, self.module_name, self.class_name, what, type(exc).__name__, exc)
            raise _with_message(exc, message) from exc


def _find_class(module_name, class_name):
    module = _import(module_name)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise AttributeError('module %s (%s) has no class %s'
                             % (module_name, getattr(module, '__file__', 'no file'), class_name))
    return cls


def _import(module_name):
    """Import `module_name` from sys.path, then from the current directory."""
    top, here = module_name.split('.')[0], os.getcwd()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != top or any(os.path.abspath(p or '.') == here for p in sys.path):
            raise _hinted(exc, top)
    sys.path.append(here)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        sys.path.remove(here)
        if exc.name != top:
            raise _hinted(exc, top)
        raise ModuleNotFoundError('No module named %r on sys.path or in the current directory %s'
                                  % (module_name, here), name=top) from None


def _hinted(exc, top):
    """`exc`, with a hint when the user's module imports pycaffe's name `caffe`."""
    if exc.name == 'caffe' and top != 'caffe':
        return ModuleNotFoundError("%s (the module imports 'caffe': with caffe-py write "
                                   "'import caffe_py as caffe')" % exc, name=exc.name)
    return exc


def _instantiate(cls, layer_param):
    """The user's object without caffe_py.Layer.__init__; a user-defined __init__ gets the LayerParameter."""
    obj = cls.__new__(cls)
    if cls.__init__ not in (Layer.__init__, object.__init__):
        obj.__init__(layer_param)
    return obj


def _with_message(exc, message):
    """An exception of exc's type carrying `message`, or a PythonLayerError where the type refuses one."""
    try:
        new = type(exc)(message)
    except Exception:
        return PythonLayerError(message)
    return new if str(new) == message else PythonLayerError(message)
