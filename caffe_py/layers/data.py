"""Data layers (Input, HDF5Data, MemoryData, DummyData, Data, ImageData, WindowData, HDF5Output);
the database, image and HDF5 readers and the prefetching live in caffe_py.data."""
import os
import threading
import weakref

import numpy as np

from .. import log, parallel, rng as caffe_rng
from ..fillers import fill
from ..layer import Layer, LayerError, register
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
    wrapping around at the end of the list. Files are kept once read while they
    total at most CACHE_BYTES (a batch larger than small files would otherwise
    re-read them thousands of times per pass); a file changed on disk is re-read.
    """
    exact_num_bottom = 0
    min_top = 1
    CACHE_BYTES = 64 << 20

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
        self.file_order = list(range(len(self.filenames)))
        if self.shuffle:
            caffe_rng.c_rand().random_shuffle(self.file_order)
        self.current_file = 0
        self.row_shapes = None
        self._cache, self._cached_bytes = {}, 0
        self._load(self.filenames[self.file_order[0]])
        self.current_row = 0
        self.offset = 0     # rows visited, kept or dealt to other ranks (Caffe 1.0's offset_)
        self.rank, self.count = parallel.deal(self.phase)
        for blob, array in zip(top, self.arrays):
            blob.reshape((self.batch_size,) + array.shape[1:])

    def _load(self, path):
        from ..data.hdf5 import DataSourceError, load_hdf5_datasets
        try:
            stat = os.stat(path)
            key = (path, stat.st_mtime_ns, stat.st_size)
        except (OSError, ValueError):
            key = None                        # missing: load_hdf5_datasets says why
        try:
            self.arrays = self._cache.get(key) or load_hdf5_datasets(path, self.names, self.dtype)
        except DataSourceError as exc:
            raise self.error(str(exc)) from None
        size = sum(array.nbytes for array in self.arrays)
        if key is not None and key not in self._cache and self._cached_bytes + size <= self.CACHE_BYTES:
            self._cache[key] = self.arrays
            self._cached_bytes += size
        rows = self.arrays[0].shape[0]
        if rows == 0:
            raise self.error('HDF5 file %s holds no rows' % path)
        shapes = [array.shape[1:] for array in self.arrays]
        if self.row_shapes is None:
            self.row_shapes = shapes
        for name, shape, first in zip(self.names, shapes, self.row_shapes):
            if shape != first:
                raise self.error('HDF5 file %s: rows of dataset %s have shape %s, those of the first file %s'
                                 % (path, name, list(shape), list(first)))
        self.row_order = np.arange(rows)
        if self.shuffle:
            self._shuffle_rows()

    def _end_of_file(self):
        """Caffe's Next() at the last row: the next file (or the same one again), reshuffled."""
        if len(self.filenames) > 1:
            self.current_file += 1
            if self.current_file == len(self.filenames):
                self.current_file = 0
                if self.shuffle:
                    caffe_rng.c_rand().random_shuffle(self.file_order)
            self._load(self.filenames[self.file_order[self.current_file]])
        self.current_row = 0
        if self.shuffle:
            self._shuffle_rows()

    def _shuffle_rows(self):
        """Caffe's std::random_shuffle of the row order, over glibc's rand() (shared by all HDF5Data layers)."""
        order = self.row_order.tolist()
        caffe_rng.c_rand().random_shuffle(order)
        self.row_order = np.array(order)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        """The next batch_size rows this rank keeps: those at offsets k with k % count == rank."""
        done = 0
        while done < self.batch_size:
            left = len(self.row_order) - self.current_row
            kept = np.arange((self.rank - self.offset) % self.count, left, self.count)[:self.batch_size - done]
            rows = self.row_order[self.current_row + kept]
            for blob, array in zip(top, self.arrays):
                blob.data[done:done + len(rows)] = blob.xp.asarray(array[rows])
            done += len(rows)
            step = int(kept[-1]) + 1 if done == self.batch_size else left
            self.current_row += step
            self.offset += step
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
                try:
                    fill(blob, filler)
                except ValueError as exc:     # an unknown filler type, an empty top
                    raise self.error('data_filler of top %d: %s' % (i, exc)) from None


class PrefetchingDataLayer(Layer):
    """Base of Data, ImageData and WindowData: batches made ahead by a background thread.

    Subclasses implement `make_source()` -> (loader, data shape of one batch);
    the loader fills batches in the prefetch thread (caffe_py.data.sources).
    data_param.prefetch batches are kept ready, as in Caffe. On the CPU the data
    top shares the memory of the batch it shows until the next forward pass (no
    copy), as Caffe's set_cpu_data. `close()` stops the thread; it also stops
    when the layer is garbage collected or at exit.
    """
    exact_num_bottom = 0
    min_top = 1
    max_top = 2

    def setup(self, bottom, top):
        from ..data.prefetch import Prefetcher
        from ..data.transformer import DataTransformer
        self.output_labels = len(top) > 1
        self._current = None
        try:        # Caffe's order of draws: InitRand, the layer's own setup, InitRand again, the thread
            self.transformer = DataTransformer(self.layer_param.transform_param, self.phase, self.dtype)
            self.transformer.init_rand()
            self.source, shape = self.make_source()
        except ValueError as exc:
            raise self.error(str(exc)) from None
        self.transformer.init_rand()
        seed = _draw_word()     # the prefetch thread's own engine; only AnnotatedData's source draws from it
        if hasattr(self.source, 'seed_thread'):
            self.source.seed_thread(seed)
        top[0].reshape(shape)
        log.info('output data size: %s', ','.join(str(d) for d in shape))
        if self.output_labels:
            top[1].reshape(shape[0])
        try:
            self.prefetcher = Prefetcher(self.source, self.layer_param.data_param.prefetch, self.dtype,
                                         name='caffe_py-prefetch-%s' % self.name)
        except RuntimeError as exc:      # "can't start new thread": too many threads or too little memory
            self.source.close()
            raise self.error('cannot start its prefetching thread (%s; %d threads running)'
                             % (exc, threading.active_count())) from None
        weakref.finalize(self, self.prefetcher.close)

    def make_source(self):
        raise NotImplementedError

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        if self._current is not None:            # the top no longer needs it
            self.prefetcher.release(self._current)
            self._current = None
        try:
            batch = self.prefetcher.get()
        except (ValueError, OSError) as exc:
            raise self.error(str(exc)) from None
        self._current = batch                    # held until the next forward, even if this one fails
        top[0].reshape(batch.data.shape)
        if top[0].xp is np:                      # CPU: the top uses the batch's memory, as Caffe's set_cpu_data
            top[0].share_data(batch.blob)
        else:
            top[0].data[...] = top[0].xp.asarray(batch.data)
        if self.output_labels:
            top[1].reshape(batch.label.shape)
            top[1].data[...] = top[1].xp.asarray(batch.label)

    def close(self):
        """Stop prefetching and release the source (database, threads)."""
        self.prefetcher.close()


def _draw_word():
    """caffe_rng_rand(): one word of Caffe's stream (seeds of the layers' own engines, rand_skip)."""
    return int(caffe_rng.stream().words(1)[0])


def layer_stream():
    """A data layer's own engine, seeded with one word of Caffe's stream (Caffe's InitRand)."""
    return caffe_rng.new_stream(_draw_word())


@register('Data')
class DataLayer(PrefetchingDataLayer):
    """Datum records of an LMDB or LevelDB (data_param), in key order, wrapping around at the end.

    rand_skip skips rand() % rand_skip records at the start, as Caffe before 1.0
    (1.0 ignores it); force_encoded_color decodes encoded records in color.
    """

    def make_source(self):
        from ..data.sources import DatumSource
        param = self.layer_param.data_param

        def build(reader):
            source = DatumSource(reader, self.transformer, param.batch_size, param.force_encoded_color,
                                 deal=parallel.deal(self.phase))
            if param.rand_skip:
                skip = _draw_word() % param.rand_skip
                log.info('Skipping first %d data points.', skip)
                source.skip(skip)
            return source, source.first_shape()
        return _database_source(self, build)


def _database_source(layer, build):
    """(source, top shape) of a layer reading data_param's database: build(reader) gives the source
    and its item shape; the reader is closed when that fails."""
    from ..data.db import Reader
    param = layer.layer_param.data_param
    if param.batch_size <= 0:
        raise layer.error('data_param.batch_size must be positive')
    reader = Reader(param.source, param.backend)
    try:
        source, shape = build(reader)
    except BaseException:
        reader.close()
        raise
    return source, (param.batch_size,) + tuple(shape)


@register('ImageData')
class ImageDataLayer(PrefetchingDataLayer):
    """Images listed in image_data_param.source ("path label" lines), read with OpenCV (BGR)."""
    min_top = max_top = None
    exact_num_top = 2

    def make_source(self):
        from ..data.image import read_image_list
        from ..data.sources import ImageListSource
        param = self.layer_param.image_data_param
        if (param.new_height == 0) != (param.new_width == 0):
            raise self.error('Current implementation requires new_height and new_width to be set '
                             'at the same time.')
        if param.batch_size <= 0:
            raise self.error('Positive batch size required')
        log.info('Opening file %s', param.source)
        lines = read_image_list(param.source, 'image_data_param.source')
        if not lines:
            raise self.error('File is empty: %s' % param.source)
        shuffle_rng = None
        if param.shuffle:
            log.info('Shuffling data')
            shuffle_rng = layer_stream()
        source = ImageListSource(lines, param, self.transformer, shuffle_rng)
        if shuffle_rng is not None:
            source.shuffle()
        elif self.phase == caffe_pb2.TRAIN and parallel.solver_rank() > 0 and not param.rand_skip:
            log.warning('Shuffling or skipping recommended for multi-GPU')
        log.info('A total of %d images.', len(lines))
        if param.rand_skip:
            skip = _draw_word() % param.rand_skip
            log.info('Skipping first %d data points.', skip)
            if skip >= len(lines):
                raise self.error('Not enough points to skip')
            source.pos = skip
        return source, (param.batch_size,) + source.first_shape()


@register('WindowData')
class WindowDataLayer(PrefetchingDataLayer):
    """Foreground/background windows of a window file (R-CNN), warped to transform_param.crop_size.

    As in Caffe: window_data_param.scale (not transform_param.scale) scales the
    pixels; mean_file, mean_value, crop_size and mirror come from transform_param;
    sampling is random in both phases.
    """
    min_top = max_top = None
    exact_num_top = 2

    def make_source(self):
        from ..data.sources import WindowSource
        param = self.layer_param.window_data_param
        tparam = self.layer_param.transform_param
        log.info('Window data layer:\n  foreground (object) overlap threshold: %s\n'
                 '  background (non-object) overlap threshold: %s\n  foreground sampling fraction: %s\n'
                 '  cache_images: %d\n  root_folder: %s', log.fmt(param.fg_threshold),
                 log.fmt(param.bg_threshold), log.fmt(param.fg_fraction), param.cache_images,
                 param.root_folder)
        rng = layer_stream() if tparam.mirror or tparam.crop_size else None
        images, fg, bg, channels, cached = self._read_window_file(param)
        if tparam.crop_size <= 0:
            raise self.error('transform_param.crop_size must be positive')
        if 2 * param.context_pad >= tparam.crop_size:
            raise self.error('context_pad %d leaves nothing of crop_size %d' % (param.context_pad, tparam.crop_size))
        mean = mean_values = None
        if tparam.HasField('mean_file'):
            mean = self.transformer.mean
            off = (mean.shape[2] - tparam.crop_size) // 2
            if mean.shape[0] != channels or min(mean.shape[1:]) < tparam.crop_size + off:
                raise self.error('mean file %s (%s) does not cover %d channels of crop_size %d'
                                 % (tparam.mean_file, 'x'.join(map(str, mean.shape)), channels,
                                    tparam.crop_size))
        elif tparam.mean_value:
            mean_values = self.transformer.mean_for(channels, 'window data')
        shape = (param.batch_size, channels, tparam.crop_size, tparam.crop_size)
        return WindowSource(images, fg, bg, channels, param, tparam, mean, mean_values, self.dtype, rng,
                            cached), shape

    def _read_window_file(self, param):
        from ..data.hdf5 import read_list_file
        tokens = read_list_file(param.source, 'window file')
        if len(tokens) < 2:
            raise self.error('Window file is empty: %s' % param.source)
        images, fg, bg, cached = [], [], [], [] if param.cache_images else None
        histogram = {0: 0}
        fg_threshold, bg_threshold = np.float32(param.fg_threshold), np.float32(param.bg_threshold)
        pos = 0
        channels = image_index = 0

        def take(count):
            nonlocal pos
            if pos + count > len(tokens):
                raise self.error('window file %s ends in the middle of an entry' % param.source)
            pos += count
            return tokens[pos - count:pos]

        try:
            while pos + 1 < len(tokens):
                hashtag, index = take(2)
                if hashtag != '#':
                    raise self.error('window file %s: expected "#" before image %s, got "%s"'
                                     % (param.source, index, hashtag))
                image_index = int(index)
                path = param.root_folder + take(1)[0]
                size = tuple(int(v) for v in take(3))
                channels = size[0]
                images.append((path, size))
                if cached is not None:
                    try:
                        with open(path, 'rb') as f:
                            cached.append(f.read())
                    except OSError as exc:
                        raise self.error('Could not open or find file %s (%s)' % (path, exc.strerror)) from None
                num_windows = int(take(1)[0])
                for _ in range(num_windows):
                    label, overlap, x1, y1, x2, y2 = take(6)
                    window = [image_index, int(label), np.float32(overlap), int(x1), int(y1), int(x2), int(y2)]
                    if window[2] >= fg_threshold:
                        if window[1] <= 0:
                            raise self.error('foreground window of image %s has label %d; must be > 0'
                                             % (path, window[1]))
                        fg.append(window)
                        histogram[window[1]] = histogram.get(window[1], 0) + 1
                    elif window[2] < bg_threshold:
                        window[1], window[2] = 0, 0
                        bg.append(window)
                        histogram[0] += 1
                if image_index % 100 == 0:
                    log.info('num: %d %s %d %d %d windows to process: %d', image_index, path,
                             size[0], size[1], size[2], num_windows)
        except ValueError as exc:
            if isinstance(exc, LayerError):
                raise
            raise self.error('window file %s: %s' % (param.source, exc)) from None
        if any(w[0] >= len(images) or w[0] < 0 for w in fg + bg):
            raise self.error('window file %s: image indices must count 0, 1, 2, ... in order' % param.source)
        log.info('Number of images: %d', image_index + 1)
        for label in sorted(histogram):
            log.info('class %d has %d samples', label, histogram[label])
        log.info('Amount of context padding: %d', param.context_pad)
        log.info('Crop mode: %s', param.crop_mode)
        return images, fg, bg, channels, cached


@register('HDF5Output')
class HDF5OutputLayer(Layer):
    """Writes its two bottoms to hdf5_output_param.file_name as datasets "data" and "label".

    The file is created (truncated) at setup, as Caffe does. Caffe can write only
    one batch (a second forward fails on the existing datasets); here every
    forward appends its rows, so a `caffe-py test` run collects all its batches.
    Shapes are stored as Caffe's legacy 4-d (num, channels, height, width).
    """
    exact_num_bottom = 2
    exact_num_top = 0

    def setup(self, bottom, top):
        import h5py
        self.file_name = self.layer_param.hdf5_output_param.file_name
        try:
            self._file = h5py.File(self.file_name, 'w')
        except OSError as exc:
            raise self.error('Failed to open HDF5 file %s: %s' % (self.file_name, exc)) from None

    def reshape(self, bottom, top):
        if bottom[0].num != bottom[1].num:
            raise self.error('data and label must have the same batch size (%d vs %d)'
                             % (bottom[0].num, bottom[1].num))

    def forward(self, bottom, top):
        log.info('Saving HDF5 file %s', self.file_name)
        for name, blob in (('data', bottom[0]), ('label', bottom[1])):
            rows = blob.read_data().reshape(
                (blob.num, blob.channels, blob.height, blob.width)).astype(np.float32)
            if name not in self._file:
                self._file.create_dataset(name, data=rows, maxshape=(None,) + rows.shape[1:])
            else:
                dataset = self._file[name]
                if dataset.shape[1:] != rows.shape[1:]:
                    raise self.error('%s rows of shape %s cannot join rows of shape %s in %s'
                                     % (name, rows.shape[1:], dataset.shape[1:], self.file_name))
                start = dataset.shape[0]
                dataset.resize(start + rows.shape[0], axis=0)
                dataset[start:] = rows
        self._file.flush()
        log.info('Successfully saved %d rows', bottom[0].num)

    def close(self):
        if getattr(self, '_file', None) is not None:
            self._file.close()
            self._file = None


_ANNOTATED_READERS = weakref.WeakValueDictionary()


@register('AnnotatedData')
class AnnotatedDataLayer(PrefetchingDataLayer):
    """SSD's data layer (weiliu89/caffe): AnnotatedDatum records of an LMDB/LevelDB with the
    fork's augmentations (distort_param, expand_param, batch_sampler, resize_param,
    emit_constraint); the label top is (1, 1, boxes, 8). See caffe_py/data/annotated.py."""

    def make_source(self):
        from ..data.annotated import AnnotatedSource

        def build(reader):
            source = AnnotatedSource(reader, self.layer_param, self.phase, self.layer_param.data_param.batch_size,
                                     self.transformer, deal=parallel.deal(self.phase))
            return source, source.shape
        return _database_source(self, build)

    def setup(self, bottom, top):
        # the fork's DataReader starts a thread (one word of Caffe's stream) when no live layer of the
        # same name reads the same source
        key = '%s:%s' % (self.name, self.layer_param.data_param.source)
        if _ANNOTATED_READERS.get(key) is None:
            _draw_word()
        _ANNOTATED_READERS[key] = self
        super().setup(bottom, top)
        if self.output_labels and self.source.typed:
            top[1].reshape((1, 1, 1, 8))
