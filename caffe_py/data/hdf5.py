"""HDF5 sources as Caffe's HDF5Data layer reads them: a list file of .h5 paths, one dataset per top."""
import os

import numpy as np


class DataSourceError(ValueError):
    """A data source (list file, database, image, HDF5 file) is missing or unreadable; names the path."""


def read_list_file(source, what='source file'):
    """Whitespace-separated tokens of a list file (Caffe reads it with `>>`), relative to the cwd."""
    try:
        with open(source) as f:
            return f.read().split()
    except OSError as exc:
        raise DataSourceError('Failed to open %s: %s (%s; working directory %s)'
                              % (what, source, exc.strerror or exc, os.getcwd())) from None


def load_hdf5_datasets(path, names, dtype):
    """The datasets `names` of HDF5 file `path` as arrays of `dtype`, checked as Caffe checks them."""
    import h5py
    try:
        handle = h5py.File(path, 'r')
    except OSError as exc:
        raise DataSourceError('Failed opening HDF5 file: %s (%s)' % (path, exc)) from None
    arrays = []
    with handle:
        for name in names:
            if name not in handle or not isinstance(handle[name], h5py.Dataset):
                raise DataSourceError('Failed to find HDF5 dataset %s in %s' % (name, path))
            dataset = handle[name]
            if dataset.dtype.kind not in 'fiu' or dataset.ndim < 1:
                raise DataSourceError('HDF5 dataset %s in %s: unsupported type %s or shape %s '
                                      '(need a numeric array of at least 1 axis)'
                                      % (name, path, dataset.dtype, dataset.shape))
            arrays.append(np.ascontiguousarray(dataset[()], dtype=dtype))
    num = arrays[0].shape[0]
    for name, array in zip(names, arrays):
        if array.shape[0] != num:
            raise DataSourceError('HDF5 file %s: dataset %s has %d rows, %s has %d'
                                  % (path, name, array.shape[0], names[0], num))
    return arrays
