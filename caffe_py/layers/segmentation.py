"""Layers of the segmentation forks: BN (SegNet/ENet and PSPNet), Interp (DeepLab/PSPNet),
Upsample (SegNet's unpooling with the pooling mask; the YOLOv3 ports' nearest-neighbour
upsampling, which shares the type name and is told apart by its single bottom) and SegNet's
DenseImageData (images with per-pixel label images).
"""
import numpy as np

from ..fillers import fill
from .. import rng as caffe_rng
from ..layer import Layer, register
from ..proto import caffe_pb2
from ..rng import rand
from .data import layer_stream


def _per_channel(blob):
    """A (1, C, 1, 1) parameter as (C, 1), broadcasting over (N, C, H*W) arrays."""
    return blob.reshape(-1, 1)


@register('BN')
class BNLayer(Layer):
    """BN in two forks' meanings, picked by the parameters given.

    SegNet/ENet (scale_filler, shift_filler, bn_mode): blobs scale and shift (1, C, 1, 1).
    LEARN normalises with the batch's mean and biased variance (eps 1e-9), whatever the phase,
    and may give them as tops 1 and 2; INFERENCE is y = scale * x + shift (statistics folded in).

    PSPNet (slope_filler, bias_filler, momentum, eps, frozen): blobs slope, bias, running mean
    and running variance. TRAIN normalises with the batch statistics and moves the running ones
    (r = (1 - momentum) * batch + momentum * r); TEST or frozen uses the running ones. The
    statistics, and with frozen slope and bias too, are never learned (lr_mult forced to 0).
    """
    PSPNET_FIELDS = ('slope_filler', 'bias_filler', 'momentum', 'eps', 'frozen', 'engine')
    exact_num_bottom = 1
    min_top = 1
    max_top = 3

    def setup(self, bottom, top):
        param = self.layer_param.bn_param
        self.pspnet = (any(param.HasField(f) for f in self.PSPNET_FIELDS)
                       or len(self.layer_param.blobs) == 4)
        channels = bottom[0].shape[1]
        if self.pspnet:
            self.frozen = param.frozen
            self.momentum = self.dtype.type(param.momentum)
            self.eps = self.dtype.type(param.eps)
            self.batch_stats = not self.frozen and self.phase == caffe_pb2.TRAIN
            if not self.blobs:
                self.blobs = [self.make_blob((1, channels, 1, 1)) for _ in range(4)]
                fill(self.blobs[0], param.slope_filler)
                fill(self.blobs[1], param.bias_filler)
                self.blobs[3].data[...] = 1 if self.frozen else 0
            fixed = (0, 1, 2, 3) if self.frozen else (2, 3)
            specs = self.layer_param.param
            while len(specs) < 4:
                specs.add()
            for i in fixed:
                specs[i].lr_mult = 0
                specs[i].decay_mult = 0
        else:
            self.batch_stats = param.bn_mode == param.LEARN
            self.eps = self.dtype.type(1e-9)
            if not self.blobs:
                self.blobs = [self.make_blob((1, channels, 1, 1)) for _ in range(2)]
                fill(self.blobs[0], param.scale_filler)
                fill(self.blobs[1], param.shift_filler)
        want = 4 if self.pspnet else 2
        if len(self.blobs) != want:
            raise self.error('has %d blobs, %s BN takes %d' % (len(self.blobs), 'PSPNet' if self.pspnet
                                                              else 'SegNet', want))
        if len(top) > 1 and (self.pspnet or not self.batch_stats):
            raise self.error('only SegNet BN in LEARN mode has mean and variance tops')

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error('bottom must be (N, C, H, W), got %s' % bottom[0].shape_string())
        if bottom[0].shape[1] != self.blobs[0].count:
            raise self.error('bottom has %d channels, the parameters %d'
                             % (bottom[0].shape[1], self.blobs[0].count))
        top[0].reshape(bottom[0].shape)
        for blob in top[1:]:
            blob.reshape((1, bottom[0].shape[1], 1, 1))
        self.shape3 = bottom[0].shape[:2] + (-1,)

    def _statistics(self, x):
        """(mean, variance) per channel as (C, 1): of the batch, or the stored ones."""
        if self.batch_stats:
            mean = x.mean(axis=(0, 2)).reshape(-1, 1)
            var = ((x - mean) ** 2).mean(axis=(0, 2)).reshape(-1, 1)
            if self.pspnet:
                for blob, value in ((self.blobs[2], mean), (self.blobs[3], var)):
                    blob.data[...] = ((1 - self.momentum) * value.reshape(blob.shape)
                                      + self.momentum * blob.data)
            return mean, var
        return _per_channel(self.blobs[2].data), _per_channel(self.blobs[3].data)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].data.reshape(self.shape3)
        y = top[0].data.reshape(self.shape3)
        scale, shift = _per_channel(self.blobs[0].data), _per_channel(self.blobs[1].data)
        if not self.pspnet and not self.batch_stats:
            self.x_norm = x.copy()
            xp.multiply(x, scale, out=y)
            y += shift
            return
        mean, var = self._statistics(x)
        self.inv_std = 1 / xp.sqrt(var + self.eps)
        self.x_norm = (x - mean) * self.inv_std
        xp.multiply(self.x_norm, scale, out=y)
        y += shift
        for blob, value in zip(top[1:], (mean, var)):
            blob.data[...] = value.reshape(blob.shape)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.shape3)
        scale = _per_channel(self.blobs[0].data)
        for i in (0, 1):
            if self.param_needs_backward(i):
                term = dy * self.x_norm if i == 0 else dy
                self.blobs[i].diff.reshape(-1)[...] += term.sum(axis=(0, 2))
        if not propagate_down[0]:
            return
        dx = bottom[0].diff.reshape(self.shape3)
        if not self.pspnet and not self.batch_stats:
            dx[...] = dy * scale
        elif not self.batch_stats:
            dx[...] = dy * (scale * self.inv_std)
        else:
            d_norm = dy * scale
            mean_d = d_norm.mean(axis=(0, 2)).reshape(-1, 1)
            mean_dn = (d_norm * self.x_norm).mean(axis=(0, 2)).reshape(-1, 1)
            dx[...] = (d_norm - mean_d - self.x_norm * mean_dn) * self.inv_std


def _interp_matrix(size_in, size_out, dtype):
    """(size_out, size_in) weights of the forks' align-corners bilinear interpolation: source
    position r * i with r = (in - 1) / (out - 1) in float, the lower pixel and the next one
    (the last pixel stands for both at the border)."""
    matrix = np.zeros((size_out, size_in), dtype)
    if size_in == size_out:
        np.fill_diagonal(matrix, 1)
        return matrix
    ratio = np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.float32(0)
    pos = ratio * np.arange(size_out, dtype=np.float32)
    low = pos.astype(np.int64)
    step = (low < size_in - 1).astype(np.int64)
    upper = (pos - low).astype(dtype)
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, low), 1 - upper)
    np.add.at(matrix, (rows, low + step), upper)
    return matrix


@register('Interp')
class InterpLayer(Layer):
    """DeepLab/PSPNet's Interp: bilinear resizing with aligned corners, to height/width, by
    zoom_factor (out = in + (in - 1) * (zoom - 1)) and/or shrink_factor (out = (in - 1) / shrink + 1),
    after cropping -pad_beg / -pad_end pixels (pads must be <= 0)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.interp_param
        self.pad_beg, self.pad_end = param.pad_beg, param.pad_end
        if self.pad_beg > 0 or self.pad_end > 0:
            raise self.error('Only supports non-pos padding (cropping) for now (pad_beg %d, pad_end %d)'
                             % (self.pad_beg, self.pad_end))
        self._key = None

    def output_size(self, size_in):
        p = self.layer_param.interp_param
        shrink, zoom = p.HasField('shrink_factor'), p.HasField('zoom_factor')
        if shrink and p.shrink_factor < 1:
            raise self.error('Shrink factor must be positive (got %d)' % p.shrink_factor)
        if zoom and p.zoom_factor < 1:
            raise self.error('Zoom factor must be positive (got %d)' % p.zoom_factor)
        if shrink and not zoom:
            return tuple((s - 1) // p.shrink_factor + 1 for s in size_in)
        if zoom and not shrink:
            return tuple(s + (s - 1) * (p.zoom_factor - 1) for s in size_in)
        if p.HasField('height') and p.HasField('width'):
            return p.height, p.width
        if shrink and zoom:
            out = [(s - 1) // p.shrink_factor + 1 for s in size_in]
            return tuple(o + (o - 1) * (p.zoom_factor - 1) for o in out)
        raise self.error('interp_param needs zoom_factor, shrink_factor or height and width')

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error('bottom must be (N, C, H, W), got %s' % bottom[0].shape_string())
        size_in = tuple(s + self.pad_beg + self.pad_end for s in bottom[0].shape[2:])
        if min(size_in) <= 0:
            raise self.error('height and width after padding must be positive, got %s' % (size_in,))
        size_out = self.output_size(size_in)
        if min(size_out) <= 0:
            raise self.error('output height and width must be positive, got %s' % (size_out,))
        top[0].reshape(bottom[0].shape[:2] + tuple(size_out))
        key = (size_in, size_out, bottom[0].xp)
        if key != self._key:
            xp = bottom[0].xp
            self.rows = xp.asarray(_interp_matrix(size_in[0], size_out[0], self.dtype))
            self.cols_t = xp.asarray(_interp_matrix(size_in[1], size_out[1], self.dtype).T.copy())
            self._key = key
        b = -self.pad_beg
        self.crop = (Ellipsis, slice(b, b + size_in[0]), slice(b, b + size_in[1]))

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].data[self.crop]
        top[0].data[...] = xp.matmul(self.rows, xp.matmul(x, self.cols_t))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        grad = xp.matmul(self.rows.T, xp.matmul(top[0].diff, self.cols_t.T))
        if self.pad_beg or self.pad_end:
            bottom[0].diff[...] = 0
        bottom[0].diff[self.crop] = grad


@register('Upsample')
class UpsampleLayer(Layer):
    """Two forks' Upsample.

    SegNet (bottoms: data and the mask of a MAX Pooling's second top): every value goes to the
    position its mask names in its plane of the top (upsample_h x upsample_w, or H * scale_h
    - pad_out_h by W * scale_w - pad_out_w), zeros elsewhere; backward gathers from there.
    YOLOv3 ports (one bottom): nearest-neighbour upsampling by the integer `scale` (default 1).
    """
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.upsample_param
        self.unpool = len(bottom) == 2
        if not self.unpool:
            self.scale = p.scale if p.HasField('scale') else 1
            if self.scale < 1:
                raise self.error('scale must be >= 1 (got %d)' % self.scale)
            return
        if p.HasField('upsample_h') and p.HasField('upsample_w'):
            self.size = (p.upsample_h, p.upsample_w)
            if min(self.size) <= 1:
                raise self.error('upsample_h and upsample_w must be > 1 (got %d, %d)' % self.size)
            return
        if p.HasField('scale_h') != p.HasField('scale_w') or (p.HasField('scale_h') and p.HasField('scale')):
            raise self.error('upsample_h & upsample_w are required, else (DEPRECATED) '
                             'scale OR scale_h & scale_w are required.')
        self.size = None
        self.scales = (p.scale_h, p.scale_w) if p.HasField('scale_h') else (p.scale, p.scale)
        if min(self.scales) <= 1:
            raise self.error('scales must be > 1 (got %d, %d)' % self.scales)
        self.pad_out = (int(p.pad_out_h), int(p.pad_out_w))
        for axis, (pad, scale) in enumerate(zip(self.pad_out, self.scales)):
            if pad and scale != 2:
                raise self.error('Output %s padding compensation requires scale_%s == 2'
                                 % (('height', 'width')[axis], 'hw'[axis]))

    def reshape(self, bottom, top):
        x = bottom[0]
        if x.num_axes != 4:
            raise self.error('Input must have 4 axes (num, channels, height, width), got %s' % x.shape_string())
        height, width = x.shape[2:]
        if not self.unpool:
            top[0].reshape(x.shape[:2] + (height * self.scale, width * self.scale))
            return
        if bottom[1].shape != x.shape:
            raise self.error('the mask %s must have the shape of the data %s'
                             % (bottom[1].shape_string(), x.shape_string()))
        size = self.size or (height * self.scales[0] - self.pad_out[0], width * self.scales[1] - self.pad_out[1])
        top[0].reshape(x.shape[:2] + tuple(size))

    def _targets(self, bottom, top):
        """Flat top indices of every bottom value (SegNet)."""
        xp = bottom[0].xp
        num, channels = bottom[0].shape[:2]
        plane = top[0].count_range(2)
        mask = bottom[1].data.reshape(num * channels, -1).astype(np.int64)
        if mask.size and (int(mask.min()) < 0 or int(mask.max()) >= plane):
            raise self.error('upsample top index %d out of range [0, %d) - check scale settings match '
                             "input pooling layer's downsample setup" % (int(mask.max()), plane))
        return mask + xp.arange(num * channels)[:, None] * plane

    def forward(self, bottom, top):
        if not self.unpool:
            s = self.scale
            n, c, h, w = bottom[0].shape
            top[0].data.reshape(n, c, h, s, w, s)[...] = bottom[0].data[:, :, :, None, :, None]
            return
        out = top[0].data.reshape(-1)
        out[...] = 0
        out[self._targets(bottom, top).reshape(-1)] = bottom[0].data.reshape(-1)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if not self.unpool:
            s = self.scale
            n, c, h, w = bottom[0].shape
            bottom[0].diff[...] = top[0].diff.reshape(n, c, h, s, w, s).sum(axis=(3, 5))
            return
        index = self._targets(bottom, top).reshape(-1)
        bottom[0].diff.reshape(-1)[...] = top[0].diff.reshape(-1)[index]

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0


@register('DenseImageData')
class DenseImageDataLayer(Layer):
    """SegNet's DenseImageData: "image label_image" lines of dense_image_data_param.source (under
    root_folder); images read with OpenCV (BGR, or gray without is_color), label images as gray
    class ids; both resized to new_height x new_width (labels nearest-neighbour), flipped together
    (mirror) and cropped at one random place (crop_height x crop_width). Tops: data (N, C, H, W),
    after transform_param's mean (mean_value or mean_file) and scale; label (N, 1, H, W).
    ENet's label_divide_factor f reads the label at (new_height/f, new_width/f) (nearest), or
    expects label images of (H/f, W/f) without new_height; the label top is (N, 1, H/f, W/f)."""
    exact_num_bottom = 0
    exact_num_top = 2

    def setup(self, bottom, top):
        from ..data.image import read_image
        p = self.layer_param.dense_image_data_param
        t = self.layer_param.transform_param
        if p.batch_size <= 0:
            raise self.error('dense_image_data_param.batch_size must be positive')
        if (p.crop_height > 0) != (p.crop_width > 0):
            raise self.error('Current implementation requires crop_height and crop_width to be set at the same time.')
        if (p.new_height > 0) != (p.new_width > 0):
            raise self.error('Current implementation requires new_height and new_width to be set at the same time.')
        if p.label_divide_factor < 1:
            raise self.error('dense_image_data_param.label_divide_factor must be at least 1, got %d'
                             % p.label_divide_factor)
        if p.label_divide_factor > 1 and p.crop_height:
            raise self.error('dense_image_data_param.label_divide_factor %d with crop_height/crop_width: ENet crops '
                             'the divided label at the image\'s place, which does not fit' % p.label_divide_factor)
        if t.mirror or t.crop_size:
            raise self.error('transform_param mirror and crop_size would transform images and labels differently; '
                             'use dense_image_data_param mirror, crop_height and crop_width')
        try:
            with open(p.source) as f:
                words = f.read().split()
        except OSError as exc:
            raise self.error('Failed to open dense_image_data_param.source %s: %s' % (p.source, exc.strerror or exc))
        self.lines = list(zip(words[0::2], words[1::2]))
        if not self.lines:
            raise self.error('File is empty: %s' % p.source)
        self.rng = layer_stream()
        if p.shuffle:
            self.rng.shuffle(self.lines)
        self.pos = p.rand_skip and rand(caffe_rng.stream(), p.rand_skip)
        first = read_image(p.root_folder + self.lines[0][0], p.new_height, p.new_width, p.is_color)
        height, width = (p.crop_height, p.crop_width) if p.crop_height else first.shape[:2]
        channels = first.shape[2] if first.ndim == 3 else 1
        self.mean = None
        if t.HasField('mean_file'):
            from ..formats import read_binaryproto
            self.mean = read_binaryproto(t.mean_file, named_by='transform_param.mean_file').reshape(channels, height, width)
        elif t.mean_value:
            if len(t.mean_value) not in (1, channels):
                raise self.error('Specify either 1 mean_value or as many as channels: %d' % channels)
            self.mean = np.asarray(t.mean_value, np.float64).reshape(-1, 1, 1)
        self.scale = t.scale
        top[0].reshape(p.batch_size, channels, height, width)
        f = p.label_divide_factor
        top[1].reshape(p.batch_size, 1, height // f, width // f)

    def reshape(self, bottom, top):
        pass

    def _item(self, name, label_name):
        import cv2
        from ..data.image import read_image
        p = self.layer_param.dense_image_data_param
        image = read_image(p.root_folder + name, p.new_height, p.new_width, p.is_color)
        label = read_image(p.root_folder + label_name, 0, 0, False)
        f = p.label_divide_factor
        if p.new_height > 0:
            label = cv2.resize(label, (p.new_width // f, p.new_height // f), interpolation=cv2.INTER_NEAREST)
        if label.shape[:2] != (image.shape[0] // f, image.shape[1] // f):
            raise self.error('Input and label image heights and widths must match%s: %s %s, %s %s'
                             % (' (label divided by label_divide_factor %d)' % f if f > 1 else '',
                                name, image.shape[:2], label_name, label.shape[:2]))
        if p.mirror and rand(self.rng, 2):
            image, label = image[:, ::-1], label[:, ::-1]
        if p.crop_height:
            h0 = rand(self.rng, image.shape[0] - p.crop_height + 1)
            w0 = rand(self.rng, image.shape[1] - p.crop_width + 1)
            image = image[h0:h0 + p.crop_height, w0:w0 + p.crop_width]
            label = label[h0:h0 + p.crop_height, w0:w0 + p.crop_width]
        chw = (image.transpose(2, 0, 1) if image.ndim == 3 else image[None]).astype(np.float64)
        if self.mean is not None:
            chw = chw - self.mean
        return chw * self.scale, label

    def forward(self, bottom, top):
        p = self.layer_param.dense_image_data_param
        items = []
        for _ in range(p.batch_size):
            items.append(self._item(*self.lines[self.pos]))
            self.pos += 1
            if self.pos >= len(self.lines):
                self.pos = 0
                if p.shuffle:
                    self.rng.shuffle(self.lines)
        data = np.stack([d for d, _ in items])
        top[0].reshape(data.shape)
        labels = np.stack([lab for _, lab in items])[:, None]
        top[1].reshape(labels.shape)
        top[0].data[...] = top[0].xp.asarray(data.astype(self.dtype))
        top[1].data[...] = top[1].xp.asarray(labels.astype(self.dtype))
