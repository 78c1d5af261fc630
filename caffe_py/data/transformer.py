"""Caffe's DataTransformer: crop, mirror, mean subtraction and scale, with Caffe's order and rounding.

An input is an OpenCV image (H x W x C or H x W, uint8) or, with chw=True, a
C x H x W array (a raw Datum: uint8 pixels or float values). Per item Caffe
computes `(x - mean) * scale` (or `x * scale` without a mean) in the net's
dtype; the crop is random in TRAIN and centred in TEST; `mirror: true` flips
at random in either phase, as Caffe does. The transformer has its own engine,
seeded with a word of Caffe's stream by `init_rand` (Caffe's InitRand); the
words are drawn up front (`draw`), in Caffe's order (mirror, then crop row,
then crop column), and reduced modulo the extent once the image size is
known, as Caffe's Rand(n) = rng() % n; the draws of a batch therefore do not
depend on which thread decodes which image.
"""
import cv2
import numpy as np

from .. import formats, log, rng as caffe_rng
from ..proto import caffe_pb2
from .hdf5 import DataSourceError


class TransformError(ValueError):
    """An image does not fit the transformation (size, channels, mean)."""


def chw_shape(image, chw=False):
    """(channels, height, width) of an OpenCV image, or of a CHW array with chw=True."""
    if chw:
        return image.shape
    if image.ndim == 2:
        return (1,) + image.shape
    return (image.shape[2],) + image.shape[:2]


def _planes(image, chw, rows, cols, mirror):
    """The cropped (and mirrored) channel planes. An OpenCV image is cropped into a contiguous copy
    (flipped by cv2.flip) and split into contiguous planes: this is much faster than converting
    from the strided HWC view."""
    if chw:
        return [plane[rows, cols][:, ::-1] if mirror else plane[rows, cols] for plane in image]
    crop = image[rows, cols]
    crop = cv2.flip(crop, 1) if mirror else np.ascontiguousarray(crop)
    return [crop] if crop.ndim == 2 else cv2.split(crop)


class DataTransformer:
    def __init__(self, param, phase, dtype=np.float32):
        self.param = param
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.crop_size = param.crop_size
        self.scale = self.dtype.type(param.scale)
        self.mirror = param.mirror
        self.mean = None            # C x H x W (mean file) or C x 1 x 1 (mean values)
        self.mean_is_file = param.HasField('mean_file')
        if self.mean_is_file and param.mean_value:
            raise TransformError('Cannot specify mean_file and mean_value at the same time')
        if self.mean_is_file:
            log.info('Loading mean file from: %s', param.mean_file)
            try:
                mean = formats.read_binaryproto(param.mean_file, named_by='transform_param.mean_file')
            except FileNotFoundError:
                raise DataSourceError('mean file %s (transform_param.mean_file) does not exist'
                                      % param.mean_file) from None
            if mean.ndim > 4:
                raise TransformError('mean file %s has %d axes; expected at most 4' % (param.mean_file, mean.ndim))
            mean = mean.reshape((1,) * (4 - mean.ndim) + mean.shape)
            self.mean = np.ascontiguousarray(mean[0], dtype=self.dtype)
        elif param.mean_value:
            self.mean_values = np.array(param.mean_value, dtype=self.dtype)
            self._channel_means = {}        # channels -> C x 1 x 1 means
        self.needs_rand = self.mirror or (phase == caffe_pb2.TRAIN and self.crop_size > 0)
        self.rng = None
        self.draws_per_item = int(self.mirror) + 2 * int(phase == caffe_pb2.TRAIN and self.crop_size > 0)

    # -- shapes -------------------------------------------------------------
    def output_shape(self, shape):
        """Caffe's InferBlobShape for one CHW input shape: (C, H, W) after cropping."""
        channels, height, width = shape
        if channels <= 0:
            raise TransformError('image has no channels')
        if height < self.crop_size or width < self.crop_size:
            raise TransformError('image of %dx%d is smaller than crop_size %d' % (height, width, self.crop_size))
        self.mean_for(channels, 'image')
        if self.mean_is_file and self.mean.shape != tuple(shape):
            raise TransformError('image of shape %s does not match the mean file %s (%s)'
                                 % ('x'.join(map(str, shape)), self.param.mean_file,
                                    'x'.join(map(str, self.mean.shape))))
        if self.crop_size:
            return channels, self.crop_size, self.crop_size
        return channels, height, width

    def mean_for(self, channels, what):
        """Check the mean against the channel count (and size, for a mean file); None when there is none."""
        if self.mean_is_file:
            return self.mean
        if self.param.mean_value:
            mean = self._channel_means.get(channels)
            if mean is None:
                if len(self.mean_values) not in (1, channels):
                    raise TransformError('Specify either 1 mean_value or as many as channels: %d (%s)'
                                         % (channels, what))
                mean = np.broadcast_to(self.mean_values, (channels,)).reshape(channels, 1, 1).copy()
                self._channel_means[channels] = mean
            return mean
        return None

    # -- randomness -----------------------------------------------------------
    def init_rand(self):
        """Caffe's InitRand: when mirroring or cropping at random, a new engine seeded with one word of
        Caffe's stream."""
        self.rng = caffe_rng.new_stream(int(caffe_rng.stream().words(1)[0])) if self.needs_rand else None

    def draw(self, count):
        """Random words for `count` items (count x draws_per_item uint32), in Caffe's order."""
        if not self.draws_per_item:
            return None
        if self.rng is None:
            self.init_rand()
        return self.rng.words(count * self.draws_per_item).reshape(count, self.draws_per_item)

    # -- the transformation -----------------------------------------------------
    def transform(self, image, out, draws=None, what='image', chw=False):
        """Write the transformed `image` into `out` (C x crop x crop, or C x H x W); see the module doc."""
        channels, height, width = chw_shape(image, chw)
        if not chw and image.dtype != np.uint8:
            raise TransformError('%s: image data type must be unsigned byte, got %s' % (what, image.dtype))
        if out.shape[0] != channels or (not self.crop_size and out.shape[1:] != (height, width)):
            raise TransformError('%s has shape %dx%dx%d; the batch expects %s (every item of a batch '
                                 'must have the shape of its first)' % (what, channels, height, width,
                                                                        'x'.join(map(str, out.shape))))
        if height < self.crop_size or width < self.crop_size:
            raise TransformError('%s of %dx%d is smaller than crop_size %d'
                                 % (what, height, width, self.crop_size))
        k = 0
        do_mirror = False
        if self.mirror:
            do_mirror = bool(draws[0] % 2)
            k = 1
        h_off = w_off = 0
        out_h, out_w = height, width
        if self.crop_size:
            out_h = out_w = self.crop_size
            if self.phase == caffe_pb2.TRAIN:
                h_off = int(draws[k] % (height - self.crop_size + 1))
                w_off = int(draws[k + 1] % (width - self.crop_size + 1))
            else:
                h_off = (height - self.crop_size) // 2
                w_off = (width - self.crop_size) // 2
        rows, cols = slice(h_off, h_off + out_h), slice(w_off, w_off + out_w)
        planes = _planes(image, chw, rows, cols, do_mirror)
        mean = self.mean_for(channels, what)
        if self.mean_is_file:
            if self.mean.shape != (channels, height, width):
                raise TransformError('%s has shape %dx%dx%d but the mean file %s is %s'
                                     % (what, channels, height, width, self.param.mean_file,
                                        'x'.join(map(str, self.mean.shape))))
            mean = mean[:, rows, cols]
            if do_mirror:
                mean = mean[:, :, ::-1]
        for c, plane in enumerate(planes):
            if mean is not None:
                np.subtract(plane, mean[c], out=out[c], dtype=self.dtype, casting='unsafe')
            else:
                out[c] = plane
        if self.scale != 1:
            np.multiply(out, self.scale, out=out)
        return h_off, w_off, do_mirror
