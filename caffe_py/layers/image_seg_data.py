"""DeepLab v2's ImageSegData: images with per-pixel segmentation labels, transformed together
(DeepLab's DataTransformer::TransformImgAndSeg).

Each line of image_data_param.source names an image and, unless label_type is NONE, its label:
a label image (PIXEL) or one class id for the whole image (IMAGE). Per image, as the fork:
a random scale_factors entry resizes image (bilinear) and label (nearest); image and label are
padded at the bottom and right up to the crop size, the image with the mean values and the
label with ignore_label; a crop_size (or crop_height x crop_width) window is cut at a random
place in TRAIN, at the centre otherwise; both are mirrored together (mirror). The data top is
(pixel - mean_value) * scale. An optional third top holds each image's (height, width) after
new_height/new_width, clipped to the output size.
"""

import numpy as np

from .. import rng as caffe_rng
from ..data.image import atoi
from ..layer import Layer, register
from ..proto import caffe_pb2
from ..rng import rand
from .data import layer_stream

_LABEL = caffe_pb2.ImageDataParameter


def _as_uint8(value):
    """cv::Scalar written into an 8-bit image: saturated to [0, 255]."""
    return np.uint8(min(max(int(value), 0), 255))


@register('ImageSegData')
class ImageSegDataLayer(Layer):
    """Tops: data (N, C, H, W), label (N, 1, H, W) and optionally data_dim (N, 1, 1, 2)."""
    exact_num_bottom = 0
    min_top = 2
    max_top = 3

    def setup(self, bottom, top):
        from ..data.image import read_image
        p = self.layer_param.image_data_param
        t = self.layer_param.transform_param
        if t.HasField('mean_file'):
            raise self.error('ImageSegDataLayer does not support mean file (transform_param.mean_file)')
        if (p.new_height > 0) != (p.new_width > 0):
            raise self.error('Current implementation requires new_height and new_width to be set at the same time.')
        if t.HasField('crop_height') != t.HasField('crop_width') or (
                t.HasField('crop_size') and t.HasField('crop_height')):
            raise self.error('Must either specify crop_size or both crop_height and crop_width.')
        if p.batch_size <= 0:
            raise self.error('image_data_param.batch_size must be positive')
        self.crop = (t.crop_size, t.crop_size) if t.HasField('crop_size') else (t.crop_height, t.crop_width)
        try:
            with open(p.source) as f:
                rows = [line.split() for line in f]
        except OSError as exc:
            raise self.error('Failed to open image_data_param.source %s: %s' % (p.source, exc.strerror or exc))
        with_label = p.label_type != _LABEL.NONE
        self.lines = [(row[0], row[1] if with_label and len(row) > 1 else '') for row in rows if row]
        if not self.lines:
            raise self.error('File is empty: %s' % p.source)
        self.rng = layer_stream()
        if p.shuffle:
            self.rng.shuffle(self.lines)
        self.pos = 0
        if p.rand_skip:
            self.pos = rand(caffe_rng.stream(), p.rand_skip)
            if self.pos >= len(self.lines):
                raise self.error('Not enough points to skip (%d of %d)' % (self.pos, len(self.lines)))
        first = read_image(p.root_folder + self.lines[self.pos][0], p.new_height, p.new_width, p.is_color)
        channels = first.shape[2] if first.ndim == 3 else 1
        self.size = self.crop if self.crop[0] > 0 and self.crop[1] > 0 else first.shape[:2]
        mean = list(t.mean_value)
        if mean and len(mean) not in (1, channels):
            raise self.error('Specify either 1 mean_value or as many as channels: %d' % channels)
        # the fork pads with mean values (undefined without them: zeros here)
        self.mean = np.resize(np.asarray(mean or [0.0], np.float64), channels)
        self.scale = t.scale
        self.factors = list(t.scale_factors)
        top[0].reshape(p.batch_size, channels, *self.size)
        top[1].reshape(p.batch_size, 1, *self.size)
        if len(top) > 2:
            top[2].reshape(p.batch_size, 1, 1, 2)

    def reshape(self, bottom, top):
        pass

    def _read(self, name, label_name):
        """The image (H, W, C) and its label image (H, W) as uint8, as the fork reads them."""
        from ..data.image import read_image
        p = self.layer_param.image_data_param
        image = read_image(p.root_folder + name, p.new_height, p.new_width, p.is_color)
        if image.ndim == 2:
            image = image[:, :, None]
        if p.label_type == _LABEL.PIXEL:     # resized as the image (bilinear), as the fork does
            label = read_image(p.root_folder + label_name, p.new_height, p.new_width, False)
            if label.shape != image.shape[:2]:
                raise self.error('image %s is %dx%d but its label %s is %dx%d'
                                 % (name, image.shape[0], image.shape[1], label_name, *label.shape))
        else:
            value = atoi(label_name) if p.label_type == _LABEL.IMAGE else p.ignore_label
            label = np.full(image.shape[:2], _as_uint8(value), np.uint8)
        return image, label

    def _transform(self, image, label):
        """TransformImgAndSeg: scale, pad, crop, mean and scale, mirror; (data CHW, label HW)."""
        import cv2
        p = self.layer_param.image_data_param
        mirror = self.layer_param.transform_param.mirror and bool(rand(self.rng, 2))
        if self.factors:
            factor = self.factors[rand(self.rng, len(self.factors))]
            if factor != 1:
                size = (int(image.shape[1] * factor), int(image.shape[0] * factor))
                image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR).reshape(size[::-1] + (-1,))
                label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        image = image.astype(np.float64)
        crop_h, crop_w = self.crop
        pad_h, pad_w = max(crop_h - image.shape[0], 0), max(crop_w - image.shape[1], 0)
        if pad_h or pad_w:
            padded = np.empty((image.shape[0] + pad_h, image.shape[1] + pad_w, image.shape[2]))
            padded[...] = self.mean
            padded[:image.shape[0], :image.shape[1]] = image
            image = padded
            label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=_as_uint8(p.ignore_label))
        if crop_h and crop_w:
            if self.phase == caffe_pb2.TRAIN:
                h0 = rand(self.rng, image.shape[0] - crop_h + 1)
                w0 = rand(self.rng, image.shape[1] - crop_w + 1)
            else:
                h0, w0 = (image.shape[0] - crop_h) // 2, (image.shape[1] - crop_w) // 2
            image, label = image[h0:h0 + crop_h, w0:w0 + crop_w], label[h0:h0 + crop_h, w0:w0 + crop_w]
        if image.shape[:2] != tuple(self.size):
            raise self.error('image is %dx%d, the batch %dx%d: without a crop every image must have the '
                             'first one\'s size' % (image.shape[0], image.shape[1], *self.size))
        data = ((image - self.mean) * self.scale).transpose(2, 0, 1)
        if mirror:
            data, label = data[:, :, ::-1], label[:, ::-1]
        return data, label

    def forward(self, bottom, top):
        p = self.layer_param.image_data_param
        data = np.empty(top[0].shape, np.float64)
        labels = np.empty(top[1].shape, np.float64)
        dims = np.empty((p.batch_size, 1, 1, 2), np.float64)
        for i in range(p.batch_size):
            image, label = self._read(*self.lines[self.pos])
            dims[i, 0, 0] = np.minimum(self.size, image.shape[:2])
            data[i], labels[i, 0] = self._transform(image, label)
            self.pos += 1
            if self.pos >= len(self.lines):
                self.pos = 0
                if p.shuffle:
                    self.rng.shuffle(self.lines)
        for blob, value in zip(top, (data, labels, dims)):
            blob.data[...] = blob.xp.asarray(value.astype(self.dtype))
