"""A stand-in for CuPy on the CPU, for tests: caffe_py's GPU code paths run here without a GPU.

- Device arrays are `FakeArray`s wrapping NumPy arrays. Like CuPy's they refuse to mix with host
  arrays (a NumPy array in an operation, assignment or xp.* call raises TypeError), refuse implicit
  conversion (np.asarray(device array)) and NumPy functions called on them (np.sum(device array)):
  host code must go through .get()/.set() or xp.asarray. Reductions give 0-d arrays, as CuPy's.
- The module refuses what CuPy lacks: NumPy functions CuPy does not have, `where=` in ufunc calls,
  `initial=`/`where=` in reductions, ndarray attributes CuPy's ndarray does not have.
- `RawModule` compiles kernels/*.cu with g++ (with a small CUDA shim: one thread walks every work
  item of the grid-stride loops) and runs them on the arrays' memory; without g++ it raises.
- TRANSFERS counts host<->device copies (h2d, d2h), for the SyncedMemory tests.
- `cuda.nccl` is a small NCCL for processes on this machine (one fake device each): rank 0
  gathers, sums and sends back over loopback sockets; the unique id names its port. Streams
  and events exist and do nothing (the fake device runs everything at once).
"""
import contextlib
import ctypes
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
from multiprocessing.connection import Client, Listener

import numpy as np

from caffe_py import backend, gpu

TRANSFERS = {'h2d': 0, 'd2h': 0}

# numpy callables that CuPy 14 does not provide
_MISSING = set('''
asmatrix block bmat busday_count busday_offset busdaycalendar einsum_path errstate frompyfunc
fromregex geomspace get_include getbufsize geterr geterrcall histogram_bin_edges info insert
is_busday isnat matrix matvec memmap nanpercentile nanquantile ndenumerate nditer nested_iters
polyder polydiv polyint recarray record setbufsize seterr seterrcall show_runtime spacing test
unstack vecdot vecmat'''.split())
# the public attributes of cupy.ndarray (CuPy 14)
_NDARRAY_ATTRIBUTES = set('''
T all any argmax argmin argpartition argsort astype base byteswap choose clip compress conj
conjugate copy cumprod cumsum data device diagonal dot dtype fill flags flat flatten get imag item
itemsize mT max mean min nbytes ndim nonzero partition prod ptp put ravel real repeat reshape round
searchsorted set shape size sort squeeze std strides sum swapaxes take tobytes tolist trace
transpose var view'''.split())
_HOST_INPUT_OK = {'asarray', 'array', 'asnumpy', 'ascontiguousarray'}


class FakeArray(np.lib.mixins.NDArrayOperatorsMixin):
    """A device array: a NumPy array that host code cannot touch directly."""

    __slots__ = ('_a',)

    def __init__(self, array):
        self._a = array

    # -- what CuPy refuses ---------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError('Implicit conversion to a NumPy array is not allowed (device array); '
                        'use .get() or cupy.asnumpy()')

    def __array_function__(self, func, types_, args, kwargs):
        raise TypeError('numpy.%s called on a device array: use the array module (xp.%s)'
                        % (func.__name__, func.__name__))

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _ufunc(ufunc, method, inputs, kwargs)

    # -- array protocol --------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: FakeArray(self._a.T))
    data = property(lambda self: _Pointer(self._a.ctypes.data))
    device = property(lambda self: _Device(0))

    def __getattr__(self, name):
        if name not in _NDARRAY_ATTRIBUTES:
            raise AttributeError('cupy.ndarray has no attribute %r' % name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args, **kwargs):
            return _wrap(attr(*_unwrap_all(args, name), **_unwrap_kwargs(kwargs, name)))
        return method

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap_index(key)])

    def __setitem__(self, key, value):
        if not isinstance(value, (FakeArray, int, float, bool, np.generic)):
            # CuPy takes a device array or a scalar here (anything else goes to fill())
            raise TypeError('cannot assign a %s into a device array' % type(value).__name__)
        self._a[_unwrap_index(key)] = _unwrap(value, 'assignment into a device array')

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(x) for x in self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def __repr__(self):
        return 'fakecupy.array(%r)' % (self._a,)

    # -- transfers -------------------------------------------------------------
    def get(self, stream=None, order='C', out=None, blocking=True):
        TRANSFERS['d2h'] += 1
        if out is None:
            return self._a.copy()
        if out.shape != self.shape or out.dtype != self.dtype:
            raise ValueError('get(out=): shape or dtype differs')
        out[...] = self._a
        return out

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray) or arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError('set() takes a NumPy array of the same shape and dtype')
        TRANSFERS['h2d'] += 1
        self._a[...] = arr


def _wrap(value):
    if isinstance(value, np.ndarray):
        return FakeArray(value)
    if isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_)):
        return FakeArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _unwrap(value, what):
    if isinstance(value, FakeArray):
        return value._a
    if isinstance(value, np.ndarray):
        raise TypeError('host (NumPy) array used in %s: copy it to the device first' % what)
    if isinstance(value, (list, tuple)) and any(isinstance(v, (np.ndarray, FakeArray)) for v in value):
        return type(value)(_unwrap(v, what) for v in value)
    return value


def _unwrap_all(args, what):
    return [_unwrap(a, what) for a in args]


def _unwrap_kwargs(kwargs, what):
    return {k: _unwrap(v, what) for k, v in kwargs.items()}


def _unwrap_index(key):
    if isinstance(key, tuple):
        return tuple(_unwrap(k, 'an index') for k in key)
    return _unwrap(key, 'an index')


def _ufunc(ufunc, method, inputs, kwargs):
    if method == '__call__' and 'where' in kwargs:
        raise TypeError('cupy ufuncs take no where= argument (%s)' % ufunc.__name__)
    if method == 'reduce' and ({'initial', 'where'} & set(kwargs)):
        raise TypeError('cupy %s.reduce takes no initial=/where= argument' % ufunc.__name__)
    what = 'numpy.%s' % ufunc.__name__
    kwargs = dict(kwargs)
    out = kwargs.pop('out', None)
    outs = None if out is None else (out if isinstance(out, tuple) else (out,))
    kwargs = _unwrap_kwargs(kwargs, what)
    if outs is not None:
        kwargs['out'] = tuple(_unwrap(o, what) for o in outs)
    result = getattr(ufunc, method)(*_unwrap_all(inputs, what), **kwargs)
    if outs is not None:
        return outs[0] if len(outs) == 1 else outs
    return _wrap(result)


class _Ufunc:
    """A NumPy ufunc as xp.<name>: calls and methods go through FakeArray's rules."""

    def __init__(self, ufunc):
        self._u = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return _call_ufunc(self._u, '__call__', args, kwargs)

    def __getattr__(self, method):
        if method in ('reduce', 'accumulate', 'at', 'outer'):
            return lambda *args, **kwargs: _call_ufunc(self._u, method, args, kwargs)
        return getattr(self._u, method)


def _call_ufunc(ufunc, method, args, kwargs):
    _check_no_host(args, kwargs, ufunc.__name__)
    return _ufunc(ufunc, method, args, kwargs)


def _check_no_host(args, kwargs, name):
    for value in list(args) + list(kwargs.values()):
        items = value if isinstance(value, (list, tuple)) else (value,)
        for item in items:
            if isinstance(item, np.ndarray):
                raise TypeError('host (NumPy) array passed to cupy.%s' % name)


def _function(name, function):
    def call(*args, **kwargs):
        if name in _HOST_INPUT_OK:
            if args and isinstance(args[0], np.ndarray):
                TRANSFERS['h2d'] += 1
                dtype = kwargs.get('dtype', args[1] if len(args) > 1 else None)
                return FakeArray(np.array(args[0], dtype=dtype, copy=True))
            if name == 'asnumpy':
                return args[0].get() if isinstance(args[0], FakeArray) else np.asarray(args[0])
        else:
            _check_no_host(args, kwargs, name)
        return _wrap(function(*_unwrap_all(args, name), **_unwrap_kwargs(kwargs, name)))
    call.__name__ = name
    return call


class _Namespace(types.ModuleType):
    """numpy (or one of its submodules) seen through FakeArray's rules."""

    def __init__(self, name, source):
        super().__init__(name)
        self._source = source

    def __getattr__(self, name):
        if name.startswith('_') or name in _MISSING:
            raise AttributeError('cupy has no %s' % name)
        attr = getattr(self._source, name)
        if isinstance(attr, np.ufunc):
            value = _Ufunc(attr)
        elif isinstance(attr, types.ModuleType):
            value = _Namespace(self.__name__ + '.' + name, attr)
        elif isinstance(attr, type) or not callable(attr):
            value = attr                          # dtypes, constants
        else:
            value = _function(name, attr)
        setattr(self, name, value)
        return value


# -- the CUDA side ----------------------------------------------------------------
class _Pointer:
    """cupy's MemoryPointer, as far as `.ptr` (the address NCCL takes)."""

    def __init__(self, ptr):
        self.ptr = ptr


class _Device:
    count = 1

    def __init__(self, device_id=None):
        self.id = 0 if device_id is None else int(device_id)
        self.compute_capability = '90'

    def use(self):
        if not 0 <= self.id < self.count:
            raise RuntimeError('fake device %d does not exist' % self.id)

    def __repr__(self):
        return '<fake CUDA Device %d>' % self.id


def _properties(device_id):
    return {'name': b'caffe-py fake device (NumPy)', 'major': 9, 'minor': 0, 'totalGlobalMem': 1 << 30,
            'sharedMemPerBlock': 49152, 'regsPerBlock': 65536, 'warpSize': 32,
            'maxThreadsPerBlock': 1024, 'maxThreadsDim': (1024, 1024, 64),
            'maxGridSize': (2147483647, 65535, 65535), 'totalConstMem': 65536,
            'textureAlignment': 512, 'multiProcessorCount': 1}


# as CUDA 13: memory pitch, clock rate, overlap and timeout only through cudaDeviceGetAttribute
_ATTRIBUTES = {11: 1 << 31, 13: 1, 15: 1, 17: 0}


def _attribute(attribute, device_id):
    return _ATTRIBUTES[attribute]


_SHIM = r'''
#include <cmath>
using std::exp; using std::log; using std::pow; using std::sqrt;
struct caffe_fake_dim3 { unsigned int x, y, z; };
static const caffe_fake_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0};
static const caffe_fake_dim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
'''
_CTYPES = {'float': ctypes.c_float, 'double': ctypes.c_double, 'int': ctypes.c_int}


def compiler():
    """The C++ compiler the emulation uses, or None."""
    return shutil.which(os.environ.get('CXX', 'g++'))


class RawModule:
    """CuPy's RawModule, compiled with g++ for the CPU; functions run one thread over the whole grid."""

    def __init__(self, code, options=(), name_expressions=()):
        self.kernels = gpu.parse_kernels(code)
        wrappers = []
        for expression in name_expressions:
            name, ctype = expression[:-1].split('<')
            params = self.kernels[name]
            decl = ', '.join('%s %s' % (p.ctype(ctype), p.name) for p in params)
            wrappers.append('extern "C" void launch_%s_%s(%s) { %s<%s>(%s); }'
                            % (name, ctype, decl, name, ctype, ', '.join(p.name for p in params)))
        source = _SHIM + code + '\n' + '\n'.join(wrappers) + '\n'
        self.library = ctypes.CDLL(_build(source))

    def get_function(self, expression):
        name, ctype = expression[:-1].split('<')
        function = getattr(self.library, 'launch_%s_%s' % (name, ctype))
        params = self.kernels[name]
        function.argtypes = [ctypes.c_void_p if p.pointer else _CTYPES[p.ctype(ctype)] for p in params]
        function.restype = None

        def launch(grid, block, args):
            values = [ctypes.c_void_p(a._a.ctypes.data) if isinstance(a, FakeArray) else a.item()
                      for a in args]
            function(*values)
        return launch


def _build(source):
    cxx = compiler()
    if cxx is None:
        raise RuntimeError('the fake device compiles kernels with g++, which is not installed')
    flags = ['-O1', '-fPIC', '-shared', '-ffp-contract=off', '-fno-fast-math', '-w']
    digest = hashlib.sha256((source + ' '.join(flags)).encode()).hexdigest()[:20]
    folder = os.path.join(tempfile.gettempdir(), 'caffe_py_fakecuda')
    os.makedirs(folder, exist_ok=True)
    library = os.path.join(folder, digest + '.so')
    if not os.path.exists(library):
        cpp = os.path.join(folder, digest + '.%d.cpp' % os.getpid())
        with open(cpp, 'w') as f:
            f.write(source)
        partial = library + '.%d' % os.getpid()
        result = subprocess.run([cxx, '-x', 'c++', '-std=c++14'] + flags + [cpp, '-o', partial],
                                capture_output=True, text=True)
        os.remove(cpp)
        if result.returncode:
            raise RuntimeError('g++ could not compile the kernels:\n' + result.stderr[-4000:])
        os.replace(partial, library)
    return library


class _Stream:
    """A CUDA stream of the fake device: work is already done when it is queued."""
    ptr = 0

    def __init__(self, null=False, non_blocking=False):
        pass

    def synchronize(self):
        pass

    def wait_event(self, event):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class _Event:
    def record(self, stream=None):
        pass

    def synchronize(self):
        pass


# -- a small NCCL between processes ---------------------------------------------------
_NCCL_TYPES = {0: np.int8, 2: np.int32, 4: np.int64, 6: np.float16, 7: np.float32, 8: np.float64}


def _host_view(ptr, count, datatype):
    dtype = np.dtype(_NCCL_TYPES[datatype])
    return np.frombuffer((ctypes.c_char * (count * dtype.itemsize)).from_address(ptr), dtype)


def get_unique_id():
    """128 chars naming a free loopback port and a key, as ncclGetUniqueId's 128 bytes."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    text = b'fakenccl:%d:%s' % (port, os.urandom(8).hex().encode())
    return tuple(text.ljust(128, b'\0'))


class NcclCommunicator:
    """Rank 0 accepts the others on the id's port; collectives go through rank 0."""

    def __init__(self, ndev, commId, rank):
        _, port, key = bytes(v & 0xff for v in commId).rstrip(b'\0').decode().split(':')
        address, authkey = ('127.0.0.1', int(port)), key.encode()
        self.rank, self.size = rank, ndev
        self.peers = []
        if rank == 0:
            with Listener(address, authkey=authkey) as listener:
                peers = {}
                for _ in range(ndev - 1):
                    conn = listener.accept()
                    peers[conn.recv()] = conn
            self.peers = [peers[r] for r in sorted(peers)]
        else:
            deadline = time.monotonic() + 60
            while True:
                try:
                    self.root = Client(address, authkey=authkey)
                    break
                except ConnectionRefusedError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            self.root.send(rank)

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
        mine = _host_view(sendbuf, count, datatype)
        if self.rank == 0:
            total = mine.copy()
            for conn in self.peers:
                total += np.frombuffer(conn.recv_bytes(), total.dtype)
            for conn in self.peers:
                conn.send_bytes(total.tobytes())
        else:
            self.root.send_bytes(mine.tobytes())
            total = np.frombuffer(self.root.recv_bytes(), mine.dtype)
        _host_view(recvbuf, count, datatype)[...] = total

    def broadcast(self, sendbuf, recvbuf, count, datatype, root, stream):
        if root != 0:
            raise NotImplementedError('the fake NCCL broadcasts from rank 0 only')
        if self.rank == 0:
            values = _host_view(sendbuf, count, datatype).copy()
            for conn in self.peers:
                conn.send_bytes(values.tobytes())
        else:
            values = np.frombuffer(self.root.recv_bytes(), np.dtype(_NCCL_TYPES[datatype]))
        _host_view(recvbuf, count, datatype)[...] = values

    def bcast(self, buff, count, datatype, root, stream):
        self.broadcast(buff, buff, count, datatype, root, stream)

    def destroy(self):
        for conn in self.peers + ([self.root] if self.rank else []):
            conn.close()

    abort = destroy


def _nccl_module():
    return types.SimpleNamespace(
        available=True, get_unique_id=get_unique_id, NcclCommunicator=NcclCommunicator,
        groupStart=lambda: None, groupEnd=lambda: None, NCCL_SUM=0,
        NCCL_INT8=0, NCCL_INT32=2, NCCL_INT64=4, NCCL_FLOAT16=6, NCCL_FLOAT32=7, NCCL_FLOAT64=8)


def make_module(devices=1):
    """A fresh stand-in for the `cupy` module, with `devices` fake devices."""
    module = _Namespace('fakecupy', np)
    module.__version__ = 'fakecupy (NumPy %s)' % np.__version__
    module.ndarray = FakeArray
    module.get_array_module = lambda *arrays: module if any(isinstance(a, FakeArray) for a in arrays) else np
    module.RawModule = RawModule
    device = type('_Device', (_Device,), {'count': devices})
    runtime = types.SimpleNamespace(getDeviceCount=lambda: devices, deviceSynchronize=lambda: None,
                                    getDeviceProperties=_properties, deviceGetAttribute=_attribute)
    module.cuda = types.SimpleNamespace(runtime=runtime, Device=device, Stream=_Stream, Event=_Event,
                                        get_current_stream=_Stream, nccl=_nccl_module())
    return module


@contextlib.contextmanager
def fake_gpu():
    """GPU mode on the fake device for the duration of the block; yields the fake module."""
    module = make_module()
    previous = backend.use_device_module(module)
    try:
        backend.set_mode_gpu()
        yield module
    finally:
        backend.set_mode_cpu()
        backend.use_device_module(previous)


if __name__ == '__main__':   # compile every kernel file once: python tests/fakecupy.py
    for filename in sorted(os.listdir(os.path.join(os.path.dirname(__file__), '..', 'kernels'))):
        if filename.endswith('.cu') and filename != 'common.cu':
            source = gpu.kernel_source(filename)
            names = ['%s<%s>' % (n, c) for n in gpu.parse_kernels(source) for c in ('float', 'double')]
            RawModule(source, name_expressions=names)
            print('compiled', filename, file=sys.stderr)
