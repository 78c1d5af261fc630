"""Blob: an N-d array of data with a diff of the same shape, as Caffe's Blob.

The storage is a flat buffer that only grows: reshaping to a count within the
capacity keeps the memory (and its contents), as Caffe's Blob::Reshape does.
"""
import numpy as np

from . import backend

MAX_BLOB_AXES = 32


class Blob:
    """Data and diff arrays of one shape; `.data`/`.diff` are views a user may write into."""

    def __init__(self, shape=None, dtype=np.float32, xp=None):
        self.dtype = np.dtype(dtype)
        self._xp = xp or backend.xp()
        self._shape = ()
        self._data_buf = self._xp.zeros(0, self.dtype)
        self._diff_buf = self._xp.zeros(0, self.dtype)
        self._data = self._data_buf
        self._diff = self._diff_buf
        self._count = 0
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
        count = int(np.prod(shape, dtype=np.int64))
        if count > self._data_buf.size:
            self._data_buf = self._xp.zeros(count, self.dtype)
        if count > self._diff_buf.size:
            self._diff_buf = self._xp.zeros(count, self.dtype)
        self._shape = shape
        self._count = count
        self._data = self._data_buf[:count].reshape(shape)
        self._diff = self._diff_buf[:count].reshape(shape)

    def reshape_like(self, other):
        self.reshape(other.shape)

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
        return self._data

    @data.setter
    def data(self, value):
        self._data[...] = value

    @property
    def diff(self):
        return self._diff

    @diff.setter
    def diff(self, value):
        self._diff[...] = value

    @property
    def xp(self):
        return self._xp

    def share_data(self, other):
        """Use `other`'s data memory (same count), as Caffe's ShareData."""
        self._check_share(other)
        self._data_buf = other._data_buf
        self._data = other._data_buf[:self._count].reshape(self._shape)

    def share_diff(self, other):
        """Use `other`'s diff memory (same count), as Caffe's ShareDiff."""
        self._check_share(other)
        self._diff_buf = other._diff_buf
        self._diff = other._diff_buf[:self._count].reshape(self._shape)

    def _check_share(self, other):
        if other.count != self._count:
            raise ValueError('cannot share memory of a blob of count %d with one of count %d'
                             % (other.count, self._count))

    def asum_data(self):
        return float(self._xp.abs(self._data).sum())

    def sumsq_data(self):
        return float((self._data.astype(np.float64) ** 2).sum())

    def sumsq_diff(self):
        return float((self._diff.astype(np.float64) ** 2).sum())

    def __repr__(self):
        return 'Blob(%s)' % (self._shape,)
