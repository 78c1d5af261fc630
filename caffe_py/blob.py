"""Blob: an N-d array of data with a diff of the same shape, as Caffe's Blob.

Data and diff are each a SyncedMemory, as in Caffe: a flat host (NumPy) buffer
and, for a blob made in GPU mode, a flat device buffer, with a head telling
which copy is current. The buffers only grow: reshaping to a count within the
capacity keeps the memory (and its contents), as Caffe's Blob::Reshape does.
The data is allocated (and its size checked against the machine's memory) at
reshape; the diff, as in Caffe, on its first use (backward, a solver, a read of
`.diff`), so a net only run forward takes no memory for diffs.

A blob made in GPU mode faces the device: its `.data`/`.diff` are device
arrays, which layers and solvers compute on. `host_view()` is its pycaffe
surface, the same blob with NumPy `.data`/`.diff` (Net.blobs, Net.params and
Python layers hand these out). Taking either side's array syncs it from the
other side only when that side is ahead, and makes its side the head (the
array may be written, as with pycaffe's mutable_cpu_data); `read_data()` and
`read_diff()` give read-only host copies that leave the device the head.
"""
import numpy as np

from . import backend, memory

MAX_BLOB_AXES = 32
HOST, DEVICE, SYNCED, UNINITIALIZED = 'host', 'device', 'synced', 'uninitialized'


def _count(shape):
    """The number of values of `shape`, exact (no int64 overflow)."""
    count = 1
    for s in shape:
        count *= s
    return count


class SyncedMemory:
    """`size` values of `dtype` on the host and, once needed, on the device of `module`."""

    __slots__ = ('size', 'dtype', 'module', 'host', 'device', 'head')

    def __init__(self, size, dtype, module=None, lazy=False):
        """Zeros on the host, or on the device when `module` (CuPy or a stand-in) is given; with
        `lazy`, nothing until the first `get` (Caffe's UNINITIALIZED head), zeros on its side."""
        self.size, self.dtype, self.module = size, dtype, module
        self.host = self.device = None
        self.head = UNINITIALIZED
        if not lazy:
            self.get(HOST if module is None else DEVICE)

    def buffer(self, side):
        """The flat buffer of `side`, allocated if missing; its values may be stale (see `get`)."""
        if side is HOST:
            if self.host is None:
                self.host = np.empty(self.size, self.dtype)
            return self.host
        if self.device is None:
            self.module = self.module or backend.device_module()
            self.device = self.module.empty(self.size, self.dtype)
        return self.device

    def get(self, side, write=True):
        """The current flat buffer of `side`: copied from the other side only if that one is
        ahead; `write` makes `side` the head (the other copy is stale from then on)."""
        if self.head is UNINITIALIZED:
            if side is HOST:
                self.host = np.zeros(self.size, self.dtype)
            else:
                self.module = self.module or backend.device_module()
                self.device = self.module.zeros(self.size, self.dtype)
            self.head = side
            return self.host if side is HOST else self.device
        buffer = self.buffer(side)
        if self.head is not side and self.head is not SYNCED:
            if side is HOST:
                self.device.get(out=buffer)
            else:
                buffer.set(self.host)
            self.head = SYNCED
        if write:
            self.head = side
        return buffer


class Blob:
    """Data and diff arrays of one shape; `.data`/`.diff` are views a user may write into."""

    def __init__(self, shape=None, dtype=np.float32, xp=None):
        self.dtype = np.dtype(dtype)
        self._xp = xp or backend.xp()
        self._module = None if self._xp is np else self._xp
        self._side = HOST if self._module is None else DEVICE
        self._host_view = self if self._module is None else HostView(self)
        self._shape = ()
        self._count = 0
        self._data_mem = SyncedMemory(0, self.dtype, self._module)
        self._diff_mem = SyncedMemory(0, self.dtype, self._module, lazy=True)
        self._data = self._shaped(self._data_mem)
        self._diff = None             # a view of the diff once it is allocated
        if shape is not None:
            self.reshape(shape)

    # -- shape ------------------------------------------------------------
    def reshape(self, *shape):
        """Reshape to `shape` (ints or one sequence); grow the buffers only when needed."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = shape[0]
        shape = tuple(int(s) for s in shape)
        if len(shape) > MAX_BLOB_AXES:
            raise ValueError('blob has %d axes, more than %d' % (len(shape), MAX_BLOB_AXES))
        if any(s < 0 for s in shape):
            raise ValueError('blob shape %s has a negative dimension' % (shape,))
        count = _count(shape)
        if count > self._data_mem.size:
            self._check_memory(count, 'the data of a blob of shape %s' % ' '.join(map(str, shape)))
            self._data_mem = SyncedMemory(count, self.dtype, self._module)
        if count > self._diff_mem.size:
            self._diff_mem = SyncedMemory(count, self.dtype, self._module, lazy=True)
        self._shape = shape
        self._count = count
        self._data = self._shaped(self._data_mem)
        self._diff = self._shaped(self._diff_mem)

    def _check_memory(self, count, what):
        """memory.check for `count` values of a host blob, the error naming this blob for the net."""
        if self._module is None:
            try:
                memory.check(count * self.dtype.itemsize, what)
            except memory.OutOfMemoryError as exc:
                exc.blob = self
                raise

    def reshape_like(self, other):
        self.reshape(other.shape)

    def _shaped(self, mem):
        """A view of `mem` on this blob's side in its shape; None while `mem` is unallocated."""
        if mem.head is UNINITIALIZED:
            return None
        return _view(mem.buffer(self._side), self._count, self._shape)

    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return self._count

    @property
    def num_axes(self):
        return len(self._shape)

    def count_range(self, start, end=None):
        """Product of dimensions [start, end), Caffe's count(start, end)."""
        end = self.num_axes if end is None else end
        return int(np.prod(self._shape[start:end], dtype=np.int64))

    def canonical_axis_index(self, axis):
        """A non-negative axis index; negative counts from the end, as in Caffe."""
        n = self.num_axes
        if not -n <= axis < max(n, 1):
            raise IndexError('axis %d out of range for a %d-axis blob with shape %s'
                             % (axis, n, self.shape_string()))
        return axis + n if axis < 0 else axis

    def legacy_dim(self, index):
        """Caffe's LegacyShape: 1 beyond the axes of a blob of at most 4 axes."""
        if self.num_axes > 4:
            raise ValueError('legacy dimension of a %d-axis blob' % self.num_axes)
        if index >= self.num_axes or index < -self.num_axes:
            return 1
        return self._shape[index]

    num = property(lambda self: self.legacy_dim(0))
    channels = property(lambda self: self.legacy_dim(1))
    height = property(lambda self: self.legacy_dim(2))
    width = property(lambda self: self.legacy_dim(3))

    def shape_string(self):
        return ''.join('%d ' % d for d in self._shape) + '(%d)' % self._count

    # -- data -------------------------------------------------------------
    @property
    def data(self):
        mem = self._data_mem
        if mem.head is not self._side:
            mem.get(self._side)
        return self._data

    @data.setter
    def data(self, value):
        self.data[...] = self._xp.asarray(value)

    @property
    def diff(self):
        diff = self._diff
        if diff is None or self._diff_mem.head is not self._side:
            self._diff_memory().get(self._side)
            diff = self._diff = self._shaped(self._diff_mem)
        return diff

    @diff.setter
    def diff(self, value):
        self.diff[...] = self._xp.asarray(value)

    @property
    def xp(self):
        """The array module of `.data`/`.diff`: numpy, or cupy for a blob on the device."""
        return self._xp

    @property
    def on_device(self):
        return self._module is not None

    def host_view(self):
        """This blob with host (NumPy) `.data`/`.diff`: the blob itself unless it is on the device."""
        return self._host_view

    def read_data(self):
        """A read-only host array of the data, copied from the device only if it is ahead there."""
        return self._read(self._data_mem)

    def read_diff(self):
        """A read-only host array of the diff, copied from the device only if it is ahead there."""
        return self._read(self._diff_memory())

    def _diff_memory(self):
        """The diff's SyncedMemory, checked against the machine's memory before its first use."""
        mem = self._diff_mem
        if mem.head is UNINITIALIZED:
            self._check_memory(mem.size, 'the diff of a blob of shape %s' % ' '.join(map(str, self._shape)))
        return mem

    def _read(self, mem):
        view = _view(mem.get(HOST, write=False), self._count, self._shape)
        view.flags.writeable = False
        return view

    def share_data(self, other):
        """Use `other`'s data memory (same count), as Caffe's ShareData."""
        other = _blob(other)
        self._check_share(other)
        self._data_mem = other._data_mem
        self._data = self._shaped(self._data_mem)

    def share_diff(self, other):
        """Use `other`'s diff memory (same count), as Caffe's ShareDiff."""
        other = _blob(other)
        self._check_share(other)
        self._diff_mem = other._diff_mem
        self._diff = self._shaped(self._diff_mem)

    def _check_share(self, other):
        if other.count != self._count:
            raise ValueError('cannot share memory of a blob of count %d with one of count %d'
                             % (other.count, self._count))

    def asum_data(self):
        return float(self._xp.abs(self.data).sum())

    def sumsq_data(self):
        return float((self.data.astype(np.float64) ** 2).sum())

    def sumsq_diff(self):
        return float((self.diff.astype(np.float64) ** 2).sum())

    def __repr__(self):
        return 'Blob(%s%s)' % (self._shape, ', on the device' if self.on_device else '')


def host_views(blobs):
    """`blobs` as pycaffe shows them: the list itself on the CPU, host views of device blobs."""
    if any(blob.on_device for blob in blobs):
        return [blob.host_view() for blob in blobs]
    return blobs


class HostView:
    """The host side of a blob on the device: pycaffe's Blob, whose `.data`/`.diff` are NumPy
    arrays; shape and everything else are the blob's own."""

    __slots__ = ('blob',)
    xp = np
    on_device = False

    def __init__(self, blob):
        self.blob = blob

    @property
    def data(self):
        blob = self.blob
        return _view(blob._data_mem.get(HOST), blob.count, blob.shape)

    @data.setter
    def data(self, value):
        self.data[...] = value

    @property
    def diff(self):
        blob = self.blob
        return _view(blob._diff_memory().get(HOST), blob.count, blob.shape)

    @diff.setter
    def diff(self, value):
        self.diff[...] = value

    def host_view(self):
        return self

    def __getattr__(self, name):
        if name == 'blob':            # not yet set (copying, unpickling)
            raise AttributeError(name)
        return getattr(self.blob, name)

    def __repr__(self):
        return 'Blob(%s, host view)' % (self.blob.shape,)


def _view(buffer, count, shape):
    """The first `count` values of a flat buffer in `shape` (a blob never shaped: empty, 1-d)."""
    if not count and not shape:
        return buffer[:0]
    return buffer[:count].reshape(shape)


def _blob(blob):
    """The Blob behind a host view."""
    return blob.blob if isinstance(blob, HostView) else blob
