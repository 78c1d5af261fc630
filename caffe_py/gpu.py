"""CUDA kernels for GPU mode: kernels/*.cu compiled with CuPy's RawModule once per process and device.

Every kernel is a template over the float type T (float or double) whose first
argument is the number of work items `n`, walked by a grid-stride loop
(CAFFE_KERNEL_LOOP, kernels/common.cu): no shared memory and no atomics, so
a kernel gives the same bits on every run. `kernel(file, name, dtype)`
returns a launcher that checks each argument against the kernel's own
signature (pointers take C-contiguous device arrays of the declared element
type, `int` takes Python ints, `T` takes floats) and launches it.

The .cu files ship as the package data `caffe_py.kernels`; run from a
checkout, the repository's kernels/ folder is read instead.
"""
import os
import re

import numpy as np

from . import backend

THREADS = 256
MAX_BLOCKS = 1 << 15
# no contraction of a*b+c into fused multiply-adds: the element-wise kernels then round as NumPy does
OPTIONS = ('--std=c++14', '--fmad=false')
CTYPES = {np.dtype(np.float32): 'float', np.dtype(np.float64): 'double'}
_INT_MAX = (1 << 31) - 1

_KERNEL = re.compile(r'template\s*<\s*typename\s+T\s*>\s*__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_COMMENT = re.compile(r'//[^\n]*|/\*.*?\*/', re.S)
_modules = {}     # (device module, file, device id) -> (RawModule, {kernel name: [Param]})
_launchers = {}   # (device module, file, device id, kernel name, dtype) -> Launcher


class KernelError(RuntimeError):
    """A kernel file that cannot be found or compiled, or a launch with wrong arguments."""


class Param:
    """One kernel parameter: `base` is 'T' or 'int'; `pointer` says whether it is an array."""

    def __init__(self, text):
        tokens = text.replace('*', ' * ').split()
        if len(tokens) < 2:
            raise KernelError('cannot read the kernel parameter "%s"' % text)
        self.name = tokens[-1]
        self.pointer = '*' in tokens
        base = [t for t in tokens[:-1] if t not in ('const', '*', '__restrict__')]
        if base not in (['T'], ['int']):
            raise KernelError('kernel parameter "%s": only T, int and pointers to them are supported' % text)
        self.base = base[0]

    def ctype(self, ctype_of_t):
        """The C type with T spelled out ('float*', 'int', ...)."""
        return (ctype_of_t if self.base == 'T' else 'int') + ('*' if self.pointer else '')


def parse_kernels(source):
    """{kernel name: [Param]} of the templated __global__ kernels in `source`."""
    code = _COMMENT.sub(' ', source)
    return {name: [Param(p) for p in params.split(',')] for name, params in _KERNEL.findall(code)}


def kernel_source(filename):
    """kernels/common.cu followed by kernels/`filename`: the text every compiler sees."""
    return _read('common.cu') + '\n' + _read(filename)


def _read(filename):
    try:
        from importlib import resources
        return resources.files('caffe_py.kernels').joinpath(filename).read_text(encoding='utf-8')
    except (ImportError, OSError):
        pass
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'kernels', filename)
    try:
        with open(path, encoding='utf-8') as f:
            return f.read()
    except OSError:
        raise KernelError('CUDA kernel file %s not found (neither package data caffe_py.kernels nor %s)'
                          % (filename, path)) from None


def kernel(filename, name, dtype):
    """The launcher of kernel `name<T>` of kernels/`filename` for T = `dtype`, on the current device."""
    module = backend.device_module()
    device_id = module.cuda.Device().id
    dtype = np.dtype(dtype)
    key = (module, filename, device_id, name, dtype)
    launcher = _launchers.get(key)
    if launcher is None:
        raw, kernels = _module(module, filename, device_id)
        if name not in kernels:
            raise KernelError('kernels/%s has no kernel %s (it has %s)'
                              % (filename, name, ', '.join(kernels)))
        if dtype not in CTYPES:
            raise KernelError('kernel %s runs on float32 or float64, not %s' % (name, dtype))
        function = raw.get_function('%s<%s>' % (name, CTYPES[dtype]))
        launcher = _launchers[key] = Launcher(function, name, kernels[name], dtype)
    return launcher


def _module(module, filename, device_id):
    key = (module, filename, device_id)
    if key not in _modules:
        source = kernel_source(filename)
        kernels = parse_kernels(source)           # common.cu holds device helpers only
        expressions = ['%s<%s>' % (name, ctype) for name in kernels for ctype in CTYPES.values()]
        try:
            raw = module.RawModule(code=source, options=OPTIONS, name_expressions=expressions)
            raw.get_function(expressions[0])      # compiles now, so that errors name the file
        except Exception as exc:
            raise KernelError('compiling kernels/%s failed: %s' % (filename, exc)) from exc
        _modules[key] = (raw, kernels)
    return _modules[key]


class Launcher:
    """Calls one compiled kernel: launcher(n, *args) over n work items."""

    def __init__(self, function, name, params, dtype):
        self.function, self.name, self.params, self.dtype = function, name, params, dtype
        if not params or params[0].pointer or params[0].base != 'int':
            raise KernelError('kernel %s must take the work-item count (int) first' % name)

    def __call__(self, n, *args):
        if len(args) + 1 != len(self.params):
            raise KernelError('kernel %s takes %d arguments, got %d'
                              % (self.name, len(self.params), len(args) + 1))
        n = int(n)
        if n <= 0:
            return
        blocks = min((n + THREADS - 1) // THREADS, MAX_BLOCKS)
        if n > _INT_MAX - blocks * THREADS:
            raise KernelError('kernel %s: %d work items is too many for int indices' % (self.name, n))
        values = [np.int32(n)] + [self._convert(p, a) for p, a in zip(self.params[1:], args)]
        self.function((blocks,), (THREADS,), tuple(values))

    def _convert(self, param, value):
        if param.pointer:
            want = self.dtype if param.base == 'T' else np.dtype(np.int32)
            if not backend.is_device_array(value):
                raise KernelError('kernel %s: %s must be a device array, got %s'
                                  % (self.name, param.name, type(value).__name__))
            if value.dtype != want or not value.flags.c_contiguous:
                raise KernelError('kernel %s: %s must be a C-contiguous %s array, got %s%s'
                                  % (self.name, param.name, want, value.dtype,
                                     '' if value.flags.c_contiguous else ' (not contiguous)'))
            return value
        if param.base == 'int':
            value = int(value)
            if not -_INT_MAX - 1 <= value <= _INT_MAX:
                raise KernelError('kernel %s: %s = %d does not fit an int' % (self.name, param.name, value))
            return np.int32(value)
        return self.dtype.type(value)
