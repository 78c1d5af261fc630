"""Batch loaders of the prefetching data layers (they run in the prefetch thread).

Each has `load_batch(batch)` and `close()`. The sequential part of a batch
(which records, in which order, the random draws) runs in the prefetch thread
in Caffe's order; decoding and transforming the items runs on an ItemPool,
each item written into its slot of the preallocated batch.
"""
import math

import cv2
import numpy as np

from .. import log
from ..formats.errors import shown
from .hdf5 import DataSourceError
from .image import IMREAD_NATIVE, datum_image, decode_image, hwc_to_chw, parse_datum, read_image
from .prefetch import ItemPool
from .transformer import chw_shape


class RecordCursor:
    """The records of an LMDB/LevelDB reader in key order, wrapping around at the end.

    deal=(rank, count): keep only the records read at an offset k with k % count == rank
    (Caffe 1.0's Skip(): the ranks of a data-parallel run share the database round-robin).
    """

    def __init__(self, reader, deal=(0, 1)):
        self.reader = reader
        self.rank, self.count = deal
        self.offset = 0

    def skip(self, count):
        for _ in range(count):
            self._next()

    def _next(self):
        self.reader.next()
        if not self.reader.valid:
            log.info('Restarting data prefetching from start.')
            self.reader.seek_to_first()
        self.offset += 1

    def take(self, n):
        """The next n (key, value) records dealt to this rank."""
        records = []
        for _ in range(n):
            while self.offset % self.count != self.rank:
                self._next()
            records.append((self.reader.key(), self.reader.value()))
            self._next()
        return records


class DatumSource:
    """Datum records of an LMDB/LevelDB, in key order, wrapping around (Caffe's DataLayer);
    deal as RecordCursor's."""

    def __init__(self, reader, transformer, batch_size, force_encoded_color=False, workers=None,
                 deal=(0, 1)):
        self.reader = reader
        self.cursor = RecordCursor(reader, deal)
        self.transformer = transformer
        self.batch_size = batch_size
        param = transformer.param
        if param.force_color and param.force_gray:
            raise DataSourceError('cannot set both force_color and force_gray')
        if param.force_color or force_encoded_color:
            self.flag = cv2.IMREAD_COLOR
        elif param.force_gray:
            self.flag = cv2.IMREAD_GRAYSCALE
        else:
            self.flag = IMREAD_NATIVE
        self._warned_force = False
        self.pool = ItemPool(workers)

    def _what(self, key):
        return 'record %s of %s' % (shown(key), self.reader.source)

    def _image(self, key, value):
        datum = parse_datum(value, self._what(key))
        if not datum.encoded and (self.transformer.param.force_color or self.transformer.param.force_gray) \
                and not self._warned_force:
            log.error('force_color and force_gray only for encoded datum')
            self._warned_force = True
        return datum_image(datum, self.flag, self._what(key)) + (datum.label,)

    def first_shape(self):
        """The (C, H, W) of the current record after transformation (Caffe's InferBlobShape)."""
        if not self.reader.valid:
            raise DataSourceError('database %s is empty' % self.reader.source)
        image, chw, _ = self._image(self.reader.key(), self.reader.value())
        return self.transformer.output_shape(chw_shape(image, chw))

    def skip(self, count):
        self.cursor.skip(count)

    def load_batch(self, batch):
        records = self.cursor.take(self.batch_size)
        draws = self.transformer.draw(self.batch_size)
        first = self._image(*records[0])
        shape = self.transformer.output_shape(chw_shape(first[0], first[1]))
        batch.reshape((self.batch_size,) + shape, (self.batch_size,))

        def item(i):
            image, chw, label = first if i == 0 else self._image(*records[i])
            self.transformer.transform(image, batch.data[i], None if draws is None else draws[i],
                                       self._what(records[i][0]), chw)
            batch.label[i] = label

        self.pool.run(self.batch_size, item)

    def close(self):
        self.pool.close()
        self.reader.close()


class ImageListSource:
    """Images named by a list file (Caffe's ImageDataLayer): read, optionally resized, transformed."""

    def __init__(self, lines, param, transformer, shuffle_rng, workers=None):
        self.lines = lines
        self.root = param.root_folder
        self.new_height, self.new_width = param.new_height, param.new_width
        self.is_color = param.is_color
        self.batch_size = param.batch_size
        self.shuffle_rng = shuffle_rng
        self.transformer = transformer
        self.pos = 0
        self.pool = ItemPool(workers)

    def shuffle(self):
        """caffe::shuffle of the list on the layer's shuffling engine."""
        self.lines = list(self.lines)
        self.shuffle_rng.shuffle(self.lines)

    def read(self, name):
        return read_image(self.root + name, self.new_height, self.new_width, self.is_color)

    def first_shape(self):
        return self.transformer.output_shape(chw_shape(self.read(self.lines[self.pos][0])))

    def load_batch(self, batch):
        picks = []
        for _ in range(self.batch_size):
            picks.append(self.lines[self.pos])
            self.pos += 1
            if self.pos >= len(self.lines):
                self.pos = 0
                if self.shuffle_rng is not None:
                    self.shuffle()
        draws = self.transformer.draw(self.batch_size)
        first = self.read(picks[0][0])
        batch.reshape((self.batch_size,) + self.transformer.output_shape(chw_shape(first)), (self.batch_size,))

        def item(i):
            name, label = picks[i]
            image = first if i == 0 else self.read(name)
            self.transformer.transform(image, batch.data[i], None if draws is None else draws[i],
                                       self.root + name)
            batch.label[i] = label

        self.pool.run(self.batch_size, item)

    def close(self):
        self.pool.close()


def c_round(x):
    """C's round(): halves away from zero (`x` is exact in a double)."""
    x = float(x)
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


class WindowSource:
    """Windows of a window file warped to crop_size (Caffe's WindowDataLayer), fg/bg sampled."""

    def __init__(self, images, fg, bg, channels, param, transform_param, mean, mean_values, dtype,
                 rng, cached=None, workers=None):
        self.images = images              # [(path, (channels, height, width))]
        self.fg, self.bg = fg, bg          # arrays of windows: image, label, overlap, x1, y1, x2, y2
        self.channels = channels
        self.dtype = np.dtype(dtype)
        self.f = self.dtype.type          # Caffe's Dtype arithmetic
        self.scale = self.f(param.scale)
        self.batch_size = param.batch_size
        self.context_pad = param.context_pad
        self.square = param.crop_mode == 'square'
        self.fg_fraction = np.float32(param.fg_fraction)
        self.crop_size = transform_param.crop_size
        self.mirror = transform_param.mirror
        self.mean = mean
        self.mean_values = mean_values
        self.rng = rng
        self.cached = cached
        self.pool = ItemPool(workers)

    def _rand(self):
        return int(self.rng.words(1)[0])

    def load_batch(self, batch):
        crop = self.crop_size
        batch.reshape((self.batch_size, self.channels, crop, crop), (self.batch_size,))
        batch.data[...] = 0
        num_fg = int(np.float32(self.batch_size) * self.fg_fraction)
        picks = []
        for is_fg, count in ((0, self.batch_size - num_fg), (1, num_fg)):
            windows = self.fg if is_fg else self.bg
            for _ in range(count):
                if not len(windows):
                    raise DataSourceError('no %s windows to sample from' % ('foreground' if is_fg else 'background'))
                window = windows[self._rand() % len(windows)]
                do_mirror = bool(self.mirror and self._rand() % 2)
                picks.append((window, do_mirror))

        def item(i):
            window, do_mirror = picks[i]
            self._warp(window, do_mirror, batch.data[i])
            batch.label[i] = window[1]

        self.pool.run(len(picks), item)

    def _load(self, index):
        path = self.images[index][0]
        if self.cached is not None:
            return decode_image(self.cached[index], cv2.IMREAD_COLOR, 'cached image %s' % path)
        return read_image(path)

    def _warp(self, window, do_mirror, out):
        f, crop = self.f, self.crop_size
        image = self._load(int(window[0]))
        rows, cols = image.shape[:2]
        if image.shape[2] != self.channels:
            raise DataSourceError('image %s has %d channels, the window file says %d'
                                  % (self.images[int(window[0])][0], image.shape[2], self.channels))
        x1, y1, x2, y2 = (int(v) for v in window[3:7])
        pad_w = pad_h = 0
        size_w = size_h = crop
        if self.context_pad > 0 or self.square:
            context_scale = f(crop) / f(crop - 2 * self.context_pad)
            half_height = f((y2 - y1 + 1) / 2.0)
            half_width = f((x2 - x1 + 1) / 2.0)
            center_x = f(x1) + half_width
            center_y = f(y1) + half_height
            if self.square:
                half_width = half_height = max(half_height, half_width)
            x1 = c_round(center_x - half_width * context_scale)
            x2 = c_round(center_x + half_width * context_scale)
            y1 = c_round(center_y - half_height * context_scale)
            y2 = c_round(center_y + half_height * context_scale)
            unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
            pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
            pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
            x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
            if not (x1 > -1 and y1 > -1 and x2 < cols and y2 < rows):
                raise DataSourceError('window %s falls outside image %s' % (window[3:7], self.images[int(window[0])][0]))
            scale_x = f(crop) / f(unclipped_w)
            scale_y = f(crop) / f(unclipped_h)
            size_w = c_round(f(x2 - x1 + 1) * scale_x)
            size_h = c_round(f(y2 - y1 + 1) * scale_y)
            pad_x1 = c_round(f(pad_x1) * scale_x)
            pad_x2 = c_round(f(pad_x2) * scale_x)
            pad_y1 = c_round(f(pad_y1) * scale_y)
            pad_h = pad_y1
            pad_w = pad_x2 if do_mirror else pad_x1
            size_h = min(size_h, crop - pad_h)
            size_w = min(size_w, crop - pad_w)
        if not (0 <= x1 <= x2 < cols and 0 <= y1 <= y2 < rows) or size_w < 1 or size_h < 1:
            raise DataSourceError('window %s (x1 y1 x2 y2) of image %s (%dx%d) is empty or outside it'
                                  % (window[3:7], self.images[int(window[0])][0], cols, rows))
        warped = cv2.resize(image[y1:y2 + 1, x1:x2 + 1], (size_w, size_h), interpolation=cv2.INTER_LINEAR)
        chw = hwc_to_chw(warped)
        if do_mirror:
            chw = chw[:, :, ::-1]
        height, width = chw.shape[1:]
        dest = out[:, pad_h:pad_h + height, pad_w:pad_w + width]
        if self.mean is not None:
            off = (self.mean.shape[2] - crop) // 2
            mean = self.mean[:, off + pad_h:off + pad_h + height, off + pad_w:off + pad_w + width]
            np.subtract(chw, mean, out=dest, dtype=self.dtype, casting='unsafe')
        elif self.mean_values is not None:
            np.subtract(chw, self.mean_values, out=dest, dtype=self.dtype, casting='unsafe')
        else:
            dest[...] = chw
        if self.scale != 1:
            np.multiply(dest, self.scale, out=dest)

    def close(self):
        self.pool.close()
