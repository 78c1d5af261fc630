"""Data layers: Input here; the database, image and HDF5 readers live in caffe_py.data."""
import numpy as np

from .. import backend, log
from ..fillers import fill
from ..layer import Layer, register
from ..proto import caffe_pb2


@register('Input')
class InputLayer(Layer):
    """Tops shaped by input_param.shape (one shape for all tops, or one per top); filled by the user."""
    exact_num_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        shapes = self.layer_param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise self.error('input_param must give 0, 1 or %d shapes, got %d' % (len(top), len(shapes)))
        for i, blob in enumerate(top):
            if shapes:
                blob.reshape(tuple(shapes[0 if len(shapes) == 1 else i].dim))

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass


@register('HDF5Data')
class HDF5DataLayer(Layer):
    """Rows of HDF5 datasets named as the tops, from the files listed in hdf5_data_param.source.

    Reads as Caffe's HDF5DataLayer: files in list order (shuffled with shuffle),
    rows in file order (or a permutation per pass), one file loaded at a time,
    wrapping around at the end of the list.
    """
    exact_num_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        from ..data.hdf5 import read_list_file
        if self.layer_param.HasField('transform_param'):
            raise self.error('HDF5Data does not transform data (remove transform_param)')
        param = self.layer_param.hdf5_data_param
        self.batch_size = param.batch_size
        if self.batch_size <= 0:
            raise self.error('hdf5_data_param.batch_size must be positive')
        self.shuffle = param.shuffle
        self.names = list(self.layer_param.top)
        log.info('Loading list of HDF5 filenames from: %s', param.source)
        self.filenames = read_list_file(param.source, 'HDF5 source file')
        log.info('Number of HDF5 files: %d', len(self.filenames))
        if not self.filenames:
            raise self.error('Must have at least 1 HDF5 filename listed in %s' % param.source)
        self.file_order = np.arange(len(self.filenames))
        if self.shuffle:
            backend.rng().shuffle(self.file_order)
        self.current_file = 0
        self._load(self.filenames[self.file_order[0]])
        self.current_row = 0
        for blob, array in zip(top, self.arrays):
            blob.reshape((self.batch_size,) + array.shape[1:])

    def _load(self, path):
        from ..data.hdf5 import load_hdf5_datasets
        self.arrays = load_hdf5_datasets(path, self.names, self.dtype)
        rows = self.arrays[0].shape[0]
        if rows == 0:
            raise self.error('HDF5 file %s holds no rows' % path)
        self.row_order = np.arange(rows)
        if self.shuffle:
            backend.rng().shuffle(self.row_order)

    def _end_of_file(self):
        """Caffe's Next() at the last row: the next file (or the same one again), reshuffled."""
        if len(self.filenames) > 1:
            self.current_file += 1
            if self.current_file == len(self.filenames):
                self.current_file = 0
                if self.shuffle:
                    backend.rng().shuffle(self.file_order)
            self._load(self.filenames[self.file_order[self.current_file]])
        self.current_row = 0
        if self.shuffle:
            backend.rng().shuffle(self.row_order)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        done = 0
        while done < self.batch_size:
            rows = self.row_order[self.current_row:self.current_row + self.batch_size - done]
            for blob, array in zip(top, self.arrays):
                blob.data[done:done + len(rows)] = blob.xp.asarray(array[rows])
            done += len(rows)
            self.current_row += len(rows)
            if self.current_row == len(self.row_order):
                self._end_of_file()


@register('MemoryData')
class MemoryDataLayer(Layer):
    """Batches cut from arrays given in Python with set_input_arrays(data, labels), as pycaffe's."""
    exact_num_bottom = 0
    exact_num_top = 2

    def setup(self, bottom, top):
        param = self.layer_param.memory_data_param
        self.batch_size = param.batch_size
        self.channels, self.height, self.width = param.channels, param.height, param.width
        if self.batch_size * self.channels * self.height * self.width <= 0:
            raise self.error('batch_size, channels, height, and width must be specified and '
                             'positive in memory_data_param')
        self._data = self._labels = None
        self.pos = 0
        top[0].reshape(self.batch_size, self.channels, self.height, self.width)
        top[1].reshape(self.batch_size)

    def set_input_arrays(self, data, labels):
        """Use `data` (N, C, H, W) and `labels` (N or N x 1 x 1 x 1); N a multiple of batch_size."""
        data = np.asarray(data)
        labels = np.asarray(labels)
        if data.ndim != 4 or data.shape[1:] != (self.channels, self.height, self.width):
            raise self.error('data array must be N x %d x %d x %d, got shape %s'
                             % (self.channels, self.height, self.width, data.shape))
        if labels.ndim not in (1, 4) or labels.shape[1:] not in ((), (1, 1, 1)):
            raise self.error('labels array must be N or N x 1 x 1 x 1, got shape %s' % (labels.shape,))
        if data.shape[0] != labels.shape[0]:
            raise self.error('data and labels must have the same first dimension (%d, %d)'
                             % (data.shape[0], labels.shape[0]))
        self.reset(data, labels.reshape(-1), data.shape[0])

    def reset(self, data, labels, n):
        """Caffe's Reset: serve batches from the first n rows of data and labels, from the start."""
        if n <= 0 or n % self.batch_size:
            raise self.error('n must be a positive multiple of batch size %d, got %d' % (self.batch_size, n))
        if self.layer_param.HasField('transform_param'):
            log.warning('MemoryData does not transform array data on Reset()')
        self._data = np.asarray(data, dtype=self.dtype)[:n]
        self._labels = np.asarray(labels, dtype=self.dtype).reshape(-1)[:n]
        self.n = n
        self.pos = 0

    def set_batch_size(self, batch_size):
        self.batch_size = int(batch_size)
        if self._data is not None and self.n % self.batch_size:
            raise self.error('batch_size %d does not divide the %d rows set' % (self.batch_size, self.n))

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        if self._data is None:
            raise self.error('MemoryDataLayer needs to be initialized by calling set_input_arrays (Reset)')
        top[0].reshape(self.batch_size, self.channels, self.height, self.width)
        top[1].reshape(self.batch_size, 1, 1, 1)
        end = self.pos + self.batch_size
        top[0].data[...] = top[0].xp.asarray(self._data[self.pos:end])
        top[1].data[...] = top[1].xp.asarray(self._labels[self.pos:end].reshape(-1, 1, 1, 1))
        self.pos = end % self.n


@register('DummyData')
class DummyDataLayer(Layer):
    """Tops of fixed shapes filled by data_filler (constant 0 by default); constant tops are filled once."""
    exact_num_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.dummy_data_param
        num_top = len(top)
        if len(param.data_filler) not in (0, 1, num_top):
            raise self.error('Number of data fillers must be 0, 1 or equal to the number of tops: '
                             '%d; you specified %d data fillers.' % (num_top, len(param.data_filler)))
        legacy = [param.num, param.channels, param.height, param.width]
        if any(len(field) for field in legacy):
            if param.shape:
                raise self.error('Both shape and legacy fields were specified')
            for name, field in zip(('num', 'channels', 'height', 'width'), legacy):
                if len(field) not in (1, num_top):
                    raise self.error("Must specify '%s' once, or once per top blob (%d); specified %d."
                                     % (name, num_top, len(field)))
            shapes = [tuple(f[0 if len(f) == 1 else i] for f in legacy) for i in range(num_top)]
        else:
            if len(param.shape) not in (1, num_top):
                raise self.error("Must specify 'shape' once, or once per top blob (%d); specified %d."
                                 % (num_top, len(param.shape)))
            shapes = [tuple(param.shape[0 if len(param.shape) == 1 else i].dim) for i in range(num_top)]
        if param.data_filler:
            self.fillers = list(param.data_filler)
        else:
            self.fillers = [caffe_pb2.FillerParameter(type='constant', value=0)]
        for blob, shape in zip(top, shapes):
            blob.reshape(shape)
        for i, blob in enumerate(top):       # constant tops now, once; the others at each forward
            if self._filler(i).type == 'constant':
                fill(blob, self._filler(i))

    def _filler(self, top_index):
        return self.fillers[top_index if len(self.fillers) > 1 else 0]

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        for i, blob in enumerate(top):
            filler = self._filler(i)
            if filler.type != 'constant':
                fill(blob, filler)
