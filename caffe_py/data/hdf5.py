"""HDF5 sources as Caffe's HDF5Data layer reads them: a list file of .h5 paths, one dataset per top."""
import os

import numpy as np

from .. import memory


class DataSourceError(ValueError):
    """A data source (list file, database, image, HDF5 file) is missing or unreadable; names the path."""


def read_list_file(source, what='source file'):
    """Whitespace-separated tokens of a list file (Caffe reads it with `>>`), relative to the cwd."""
    return read_text(source, what).split()


def read_text(source, what):
    """The text of a list file; bytes that are not UTF-8 stay as the file system would name them."""
    try:
        with open(source, 'rb') as f:
            return f.read().decode('utf-8', 'surrogateescape')
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        raise DataSourceError('Failed to open %s: %s (%s; working directory %s)'
                              % (what, source, getattr(exc, 'strerror', None) or exc, os.getcwd())) from None


def _one_line(exc):
    return ' '.join(str(exc).split()) or type(exc).__name__


def load_hdf5_datasets(path, names, dtype):
    """The datasets `names` of HDF5 file `path` as arrays of `dtype`, checked as Caffe checks them.

    Every failure (h5py's OSError, KeyError, RuntimeError on a damaged file, a dataset
    too large for memory) is a one-line DataSourceError naming the file and the dataset.
    """
    import h5py
    if '\0' in path:
        raise DataSourceError('Failed opening HDF5 file %r: the name holds a NUL byte' % path)
    try:
        handle = h5py.File(path, 'r')
    except Exception as exc:  # OSError, or anything h5py raises on a damaged file
        raise DataSourceError('Failed opening HDF5 file: %s (%s)' % (path, _one_line(exc))) from None
    arrays = []
    with handle:
        for name in names:
            try:
                arrays.append(_dataset(handle, path, name, dtype))
            except DataSourceError:
                raise
            except Exception as exc:  # h5py on a damaged file: OSError, KeyError, RuntimeError, ...
                raise DataSourceError('HDF5 file %s: cannot read dataset %s (%s)'
                                      % (path, name, _one_line(exc))) from None
    num = arrays[0].shape[0]
    for name, array in zip(names, arrays):
        if array.shape[0] != num:
            raise DataSourceError('HDF5 file %s: dataset %s has %d rows, %s has %d'
                                  % (path, name, array.shape[0], names[0], num))
    return arrays


def _dataset(handle, path, name, dtype):
    import h5py
    if name not in handle or not isinstance(handle[name], h5py.Dataset):
        raise DataSourceError('Failed to find HDF5 dataset %s in %s' % (name, path))
    dataset = handle[name]
    if dataset.dtype.kind not in 'fiu' or dataset.ndim < 1:
        raise DataSourceError('HDF5 dataset %s in %s: unsupported type %s or shape %s '
                              '(need a numeric array of at least 1 axis)'
                              % (name, path, dataset.dtype, dataset.shape))
    nbytes = int(np.prod(dataset.shape, dtype=object)) * np.dtype(dtype).itemsize
    try:
        memory.check(nbytes, 'HDF5 dataset %s %s in %s' % (name, dataset.shape, path))
    except memory.OutOfMemoryError as exc:
        raise DataSourceError(str(exc)) from None
    return np.ascontiguousarray(dataset[()], dtype=dtype)
