"""DeepLab v2's MatWrite and MatRead: blobs to and from MATLAB files (MAT v5, uncompressed), one
file per blob as the fork's matio calls write them: a variable "data" of the net's class (single
for float32 nets, double for float64) whose MATLAB size is W x H x C x N, the blob's memory read
column-major (data(w+1, h+1, c+1, n+1) is the blob's [n, c, h, w]). DeepLab's test nets write each
image's fc8 scores so for its MATLAB CRF post-processing. Needs scipy (caffe-py[deeplab])."""
import os

import numpy as np

from .. import backend
from ..layer import Layer, register

_CLASS = {np.dtype(np.float32): 'single', np.dtype(np.float64): 'double'}


def _scipy_io(layer):
    try:
        import scipy.io
    except ImportError:
        raise layer.error('reading and writing MAT files needs scipy: pip install caffe-py[deeplab]') from None
    return scipy.io


def _names(layer, param, what):
    """The first word of each line of param.source less `strip` trailing characters, or None
    without a source (files are then named iter_<n>)."""
    if not param.HasField('source'):
        return None
    if param.strip < 0:
        raise layer.error('%s.strip cannot be negative (got %d)' % (what, param.strip))
    try:
        with open(param.source) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise layer.error('Failed to open source file %s (%s.source): %s'
                          % (param.source, what, exc.strerror or exc)) from None
    names = []
    for number, line in enumerate(lines, 1):
        words = line.split()
        word = words[0] if words else ''
        if len(word) <= param.strip:
            raise layer.error('Too much stripping: %s line %d %r is not longer than %s.strip %d'
                              % (param.source, number, word, what, param.strip))
        names.append(word[:len(word) - param.strip])
    return names


def _prefix(layer, param, what):
    if not param.HasField('prefix'):
        raise layer.error('%s.prefix is required' % what)
    return param.prefix


@register('MatWrite')
class MatWriteLayer(Layer):
    """Every `period`-th forward (counting from the first), each bottom i goes to
    prefix + name + "_blob_<i>.mat", name being line <forward count> of the source list (a
    forward past its end fails) or "iter_<forward count>" without one. No tops, no backward."""
    exact_num_top = 0

    def setup(self, bottom, top):
        param = self.layer_param.mat_write_param
        self.prefix = _prefix(self, param, 'mat_write_param')
        if param.period <= 0:
            raise self.error('mat_write_param.period must be positive (got %d)' % param.period)
        self.names = _names(self, param, 'mat_write_param')
        self.iter = 0

    def reshape(self, bottom, top):
        for i, blob in enumerate(bottom):
            if blob.num_axes > 4:
                raise self.error('bottom %d is %s: MAT files hold up to 4 axes (N, C, H, W)' % (i, blob.shape_string()))

    def forward(self, bottom, top):
        param = self.layer_param.mat_write_param
        if self.iter % param.period == 0:
            if self.names is not None and self.iter >= len(self.names):
                raise self.error('Test has run for more iterations than it was supposed to: forward %d, '
                                 'mat_write_param.source %s lists %d files'
                                 % (self.iter, param.source, len(self.names)))
            name = self.names[self.iter] if self.names is not None else 'iter_%d' % self.iter
            for i, blob in enumerate(bottom):
                write_blob_mat('%s%s_blob_%d.mat' % (self.prefix, name, i), backend.to_numpy(blob.data), self)
        self.iter += 1


def write_blob_mat(path, data, layer):
    """`data` (up to 4 axes, N C H W) as MATLAB's W x H x C x N variable "data" in `path`."""
    scipy_io = _scipy_io(layer)
    if data.dtype not in _CLASS:
        raise layer.error('cannot write a %s blob to %s: MAT files here hold single or double' % (data.dtype, path))
    array = data.reshape(data.shape + (1,) * (4 - data.ndim)).transpose(3, 2, 1, 0)
    try:
        scipy_io.savemat(path, {'data': array}, format='5', do_compression=False)
    except OSError as exc:
        raise layer.error('Error creating MAT file %s: %s' % (path, exc.strerror or exc)) from None


def read_blob_mat(path, dtype, layer):
    """The variable "data" of the MAT file `path` as an (N, C, H, W) array; its class must be the
    net's (single for float32, double for float64), as the fork's check."""
    scipy_io = _scipy_io(layer)
    try:
        variables = scipy_io.loadmat(path, variable_names=['data'], mat_dtype=True)
    except (OSError, ValueError, NotImplementedError) as exc:   # missing, not MAT, or v7.3 (HDF5)
        raise layer.error('Error opening MAT file %s: %s' % (path, getattr(exc, 'strerror', None) or exc)) from None
    if 'data' not in variables:
        raise layer.error("Field 'data' not present in MAT file %s" % path)
    array = variables['data']
    if array.dtype != dtype:
        raise layer.error("Field 'data' must be of the right class (%s for this %s net) in MAT file %s, got %s"
                          % (_CLASS.get(np.dtype(dtype), dtype), np.dtype(dtype).name, path, array.dtype))
    if array.ndim > 4:
        raise layer.error("Field 'data' cannot have ndims > 4 in MAT file %s (got %d)" % (path, array.ndim))
    return array.reshape(array.shape + (1,) * (4 - array.ndim)).transpose(3, 2, 1, 0)


@register('MatRead')
class MatReadLayer(Layer):
    """Reads batch_size blobs per forward, each from prefix + name + "_blob_0.mat" (name: the
    source list's next line, starting over at its end, or "iter_<n>" without a list), each
    holding one (1, C, H, W) blob; the top (batch_size, C, H, W) takes its shape from the first
    file (the fork reads its first list entry; without a list, where it has none, iter_0)."""
    exact_num_bottom = 0
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.mat_read_param
        self.prefix = _prefix(self, param, 'mat_read_param')
        if param.batch_size <= 0:
            raise self.error('mat_read_param.batch_size must be positive (got %d)' % param.batch_size)
        self.names = _names(self, param, 'mat_read_param')
        if self.names is not None and not self.names:
            raise self.error('mat_read_param.source %s lists no files' % param.source)
        self.iter = 0
        path, first = self._read(self.names[0] if self.names else 'iter_0')
        top[0].reshape((param.batch_size,) + first.shape[1:])

    def _read(self, name):
        path = '%s%s_blob_0.mat' % (self.prefix, name)
        blob = read_blob_mat(path, self.dtype, self)
        if blob.shape[0] != 1:
            raise self.error('MAT file %s holds %d blobs (its 4th dimension); MatRead reads one per file'
                             % (path, blob.shape[0]))
        return path, blob

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        for n in range(self.layer_param.mat_read_param.batch_size):
            if self.names is not None:
                self.iter %= len(self.names)
            path, blob = self._read(self.names[self.iter] if self.names is not None else 'iter_%d' % self.iter)
            if blob.shape[1:] != top[0].shape[1:]:
                raise self.error('MAT file %s holds a %s blob, the top takes %s' % (
                    path, 'x'.join(map(str, blob.shape[1:])), 'x'.join(map(str, top[0].shape[1:]))))
            top[0].data[n] = top[0].xp.asarray(blob[0])
            self.iter += 1
