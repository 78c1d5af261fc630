"""SSD's annotated-image pipeline (weiliu89/caffe: AnnotatedDataLayer::load_batch, the data
transformer's DistortImage / ExpandImage / CropImage / TransformAnnotation, sampler.cpp,
im_transforms.cpp), on decoded OpenCV images.

An annotation set is a dict of arrays: `label` (K,), `instance` (K,), `box` (K, 4) relative
(xmin, ymin, xmax, ymax) and `difficult` (K,), in the record's group and annotation order.
Differences from the fork: intermediate images stay decoded (the fork re-encodes each distorted,
expanded or cropped image as JPEG), and the random streams are NumPy's.
"""
import cv2
import numpy as np

from ..proto import caffe_pb2
from .image import DataSourceError, decode_image
from .sources import RecordCursor

_RESIZE = caffe_pb2.ResizeParameter
_INTERP = {_RESIZE.LINEAR: cv2.INTER_LINEAR, _RESIZE.AREA: cv2.INTER_AREA, _RESIZE.NEAREST: cv2.INTER_NEAREST,
           _RESIZE.CUBIC: cv2.INTER_CUBIC, _RESIZE.LANCZOS4: cv2.INTER_LANCZOS4}


def parse_annotated(value, flag, what):
    """(HWC uint8 image, annotations) of an AnnotatedDatum record."""
    record = caffe_pb2.AnnotatedDatum()
    try:
        record.ParseFromString(value)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise DataSourceError('corrupt AnnotatedDatum record %s: %s' % (what, exc)) from None
    datum = record.datum
    if datum.encoded:
        image = decode_image(datum.data, flag, what)
    else:
        size = datum.channels * datum.height * datum.width
        if len(datum.data) != size or not size:
            raise DataSourceError('AnnotatedDatum %s holds %d bytes, its shape %dx%dx%d needs %d'
                                  % (what, len(datum.data), datum.channels, datum.height, datum.width, size))
        image = np.frombuffer(datum.data, np.uint8).reshape(datum.channels, datum.height, datum.width)
        image = np.ascontiguousarray(image.transpose(1, 2, 0))
    rows = [(g.group_label, a.instance_id, a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax, a.bbox.difficult)
            for g in record.annotation_group for a in g.annotation]
    table = np.array(rows, np.float64).reshape(-1, 7)
    return image, {'label': table[:, 0].astype(np.int64), 'instance': table[:, 1].astype(np.int64),
                   'box': table[:, 2:6].astype(np.float32), 'difficult': table[:, 6].astype(bool)}


def _select(anno, keep):
    return {k: v[keep] for k, v in anno.items()}


# -- boxes ---------------------------------------------------------------------------------------
def _area(box):
    w, h = box[..., 2] - box[..., 0], box[..., 3] - box[..., 1]
    return np.where((w < 0) | (h < 0), 0, w * h)


def _intersection(a, b):
    w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    return np.where((w > 0) & (h > 0), w * h, 0)


def _jaccard(a, b):
    inter = _intersection(a, b)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(inter > 0, inter / (_area(a) + _area(b) - inter), 0)


def _coverage(a, b):
    """Share of box(es) `a` covered by `b` (BBoxCoverage)."""
    inter = _intersection(a, b)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(inter > 0, inter / _area(a), 0)


def project(crop, anno, emit=None, mirror=False):
    """The annotations seen through the window `crop` (relative coordinates): those meeting the
    emit constraint and overlapping the window, re-expressed in it and clipped (TransformAnnotation)."""
    box = anno['box']
    keep = np.ones(len(box), bool)
    if emit is not None:
        if emit.emit_type == caffe_pb2.EmitConstraint.CENTER:
            cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
            keep &= (cx >= crop[0]) & (cx <= crop[2]) & (cy >= crop[1]) & (cy <= crop[3])
        else:
            keep &= _coverage(box, crop) > emit.emit_overlap
    keep &= ~((box[:, 0] >= crop[2]) | (box[:, 2] <= crop[0]) | (box[:, 1] >= crop[3]) | (box[:, 3] <= crop[1]))
    size = np.array([crop[2] - crop[0], crop[3] - crop[1]] * 2, np.float32)
    moved = np.clip((box - np.array([crop[0], crop[1]] * 2, np.float32)) / size, 0, 1)
    keep &= _area(moved) > 0
    out = _select(anno, keep)
    out['box'] = moved[keep].astype(np.float32)
    if mirror:
        out['box'] = np.stack([1 - out['box'][:, 2], out['box'][:, 1], 1 - out['box'][:, 0], out['box'][:, 3]], 1)
    return out


# -- batch samplers --------------------------------------------------------------------------------
def sample_box(sampler, rng):
    """A window of random scale and aspect ratio inside the unit square (SampleBBox)."""
    scale = np.float32(rng.uniform(sampler.min_scale, sampler.max_scale))
    ratio = np.float32(rng.uniform(sampler.min_aspect_ratio, sampler.max_aspect_ratio))
    ratio = min(max(ratio, scale ** 2), 1 / scale ** 2)
    width, height = scale * np.sqrt(ratio), scale / np.sqrt(ratio)
    x, y = rng.uniform(0, max(0, 1 - width)), rng.uniform(0, max(0, 1 - height))   # ulps past 1
    return np.array([x, y, x + width, y + height], np.float32)


def satisfies(window, objects, constraint):
    """SatisfySampleConstraint, object by object, as the fork decides it."""
    c = constraint
    checks = [(c.HasField('min_jaccard_overlap') or c.HasField('max_jaccard_overlap'), _jaccard(objects, window),
               'min_jaccard_overlap', 'max_jaccard_overlap'),
              (c.HasField('min_sample_coverage') or c.HasField('max_sample_coverage'), _coverage(window, objects),
               'min_sample_coverage', 'max_sample_coverage'),
              (c.HasField('min_object_coverage') or c.HasField('max_object_coverage'), _coverage(objects, window),
               'min_object_coverage', 'max_object_coverage')]
    if not any(active for active, *_ in checks):
        return True
    found = False
    for i in range(len(objects)):
        for active, values, low, high in checks:
            if not active:
                continue
            value = np.float32(values[i])
            if (c.HasField(low) and value < getattr(c, low)) or (c.HasField(high) and value > getattr(c, high)):
                break
            found = True
        else:
            if found:
                return True
    return found


def generate_samples(anno, samplers, rng):
    """Every window the batch samplers accept (GenerateBatchSamples)."""
    windows = []
    for sampler in samplers:
        if not sampler.use_original_image:
            continue
        s = sampler.sampler
        if not 0 < s.min_scale <= s.max_scale <= 1 or not 0 < s.min_aspect_ratio <= s.max_aspect_ratio:
            raise DataSourceError('batch_sampler: need 0 < min_scale <= max_scale <= 1 and '
                                  '0 < min_aspect_ratio <= max_aspect_ratio')
        found = 0
        for _ in range(sampler.max_trials):
            if sampler.HasField('max_sample') and found >= sampler.max_sample:
                break
            window = sample_box(s, rng)
            if satisfies(window, anno['box'], sampler.sample_constraint):
                found += 1
                windows.append(window)
    return windows


# -- image operations --------------------------------------------------------------------------------
def _saturate(values):
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def distort(image, param, rng):
    """Brightness, contrast, saturation, hue and channel order, each with its probability, in one of
    the fork's two orders (ApplyDistort)."""
    def brightness(img):
        if rng.uniform() < param.brightness_prob:
            delta = rng.uniform(-param.brightness_delta, param.brightness_delta)
            if abs(delta) > 0:
                return _saturate(img.astype(np.float32) + np.float32(delta))
        return img

    def contrast(img):
        if rng.uniform() < param.contrast_prob:
            alpha = rng.uniform(param.contrast_lower, param.contrast_upper)
            if abs(alpha - 1) > 1e-3:
                return _saturate(img.astype(np.float32) * np.float32(alpha))
        return img

    def hsv(img, channel, prob, draw):
        if rng.uniform() < prob:
            alpha, beta = draw()
            hsv_img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            hsv_img[..., channel] = _saturate(hsv_img[..., channel].astype(np.float32) * np.float32(alpha)
                                              + np.float32(beta))
            return cv2.cvtColor(hsv_img, cv2.COLOR_HSV2BGR)
        return img

    def saturation(img):
        return hsv(img, 1, param.saturation_prob,
                   lambda: (rng.uniform(param.saturation_lower, param.saturation_upper), 0))

    def hue(img):
        return hsv(img, 0, param.hue_prob, lambda: (1, rng.uniform(-param.hue_delta, param.hue_delta)))

    def order(img):
        if rng.uniform() < param.random_order_prob:
            return np.ascontiguousarray(img[..., rng.permutation(img.shape[2])])
        return img

    if image.ndim != 3 or image.shape[2] != 3:
        raise DataSourceError('distort_param needs color (3-channel) images')
    steps = (brightness, contrast, saturation, hue, order) if rng.uniform() > 0.5 else \
        (brightness, saturation, hue, contrast, order)
    for step in steps:
        image = step(image)
    return image


def expand(image, anno, param, mean, rng, emit=None):
    """Zoom out: the image at a random place on a canvas up to max_expand_ratio times larger, filled
    with the mean (ExpandImage)."""
    if rng.uniform() > param.prob or abs(param.max_expand_ratio - 1) < 1e-2:
        return image, anno
    ratio = np.float32(rng.uniform(1, param.max_expand_ratio))
    h, w = image.shape[:2]
    height, width = int(h * ratio), int(w * ratio)
    top, left = np.floor(rng.uniform(0, height - h)), np.floor(rng.uniform(0, width - w))
    canvas = np.empty((height, width) + image.shape[2:], np.uint8)
    canvas[...] = np.asarray(mean, np.float32).astype(np.uint8) if mean is not None else 0
    canvas[int(top):int(top) + h, int(left):int(left) + w] = image
    window = np.array([-left / w, -top / h, (width - left) / w, (height - top) / h], np.float32)
    return canvas, project(window, anno, emit)


def crop(image, anno, window, emit):
    """The part of the image under `window` (clipped to the image) and its annotations (CropImage)."""
    window = np.clip(window, 0, 1)
    h, w = image.shape[:2]
    x0, y0 = int(window[0] * w), int(window[1] * h)
    width, height = int(window[2] * w - window[0] * w), int(window[3] * h - window[1] * h)
    return image[y0:y0 + height, x0:x0 + width], project(window, anno, emit)


def _on_luma(image, apply):
    """`apply` to the Y plane of a BGR image (YCrCb), or to a gray image itself."""
    if image.shape[2] == 1:
        return apply(image[..., 0])[..., None]
    ycrcb = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
    ycrcb[..., 0] = apply(ycrcb[..., 0])
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)


def noise(image, param, rng):
    """The fork's ApplyNoise, each enabled effect in its order (its `prob` is not consulted there
    either): decolorize, gauss_blur, hist_eq, clahe, jpeg, erode, posterize, inverse, saltpepper,
    convert_to_hsv."""
    if param.convert_to_lab:
        raise DataSourceError('noise_param.convert_to_lab is not supported by caffe-py')
    color = image.shape[2] == 3
    if param.decolorize and color:
        image = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    if param.gauss_blur:
        image = cv2.GaussianBlur(image, (7, 7), 1.5).reshape(image.shape)
    if param.hist_eq:
        image = _on_luma(image, cv2.equalizeHist)
    if param.clahe:
        image = _on_luma(image, cv2.createCLAHE(clipLimit=4).apply)
    if param.jpeg > 0:
        encoded = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, int(param.jpeg)])[1]
        image = cv2.imdecode(encoded, cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE).reshape(image.shape)
    if param.erode:
        image = cv2.erode(image, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3), (1, 1))).reshape(image.shape)
    if param.posterize:
        image = (image // 64 * 64 + 32).astype(np.uint8)
    if param.inverse:
        image = 255 - image
    if param.saltpepper:
        values = list(param.saltpepper_param.value) or [0]
        values = values * image.shape[2] if len(values) == 1 else values
        count = int(np.floor(np.float32(param.saltpepper_param.fraction) * image.shape[0] * image.shape[1]))
        image = image.copy()
        image[rng.integers(0, image.shape[0], count), rng.integers(0, image.shape[1], count)] = \
            np.asarray(values, np.uint8)
    if param.convert_to_hsv and color:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    return image


_PAD = {_RESIZE.CONSTANT: cv2.BORDER_CONSTANT, _RESIZE.MIRRORED: cv2.BORDER_REFLECT_101,
        _RESIZE.REPEAT_NEAREST: cv2.BORDER_REPLICATE}


def resize(image, anno, param, rng):
    """Resize to height x width (ApplyResize) with one of interp_mode drawn at random: WARP, or
    FIT_LARGE_SIZE_AND_PAD (aspect kept, centred, padded with pad_mode / pad_value); the boxes follow
    (UpdateBBoxByResizePolicy)."""
    mode = param.resize_mode
    if mode not in (_RESIZE.WARP, _RESIZE.FIT_LARGE_SIZE_AND_PAD):
        raise DataSourceError('resize_param.resize_mode %s is not supported by caffe-py (WARP and '
                              'FIT_LARGE_SIZE_AND_PAD are)' % _RESIZE.Resize_mode.Name(mode))
    modes = list(param.interp_mode)
    interp = _INTERP[modes[rng.integers(len(modes))]] if modes else cv2.INTER_LINEAR
    h, w = image.shape[:2]
    new_h, new_w = param.height, param.width
    f32 = np.float32
    box = anno['box'] * np.array([w, h, w, h], f32)
    x_band = y_band = f32(0)                     # the padding bands, as the fork's box update sees them
    x_span, y_span = f32(new_w), f32(new_h)
    if mode == _RESIZE.WARP:
        out = cv2.resize(image, (new_w, new_h), interpolation=interp)
    else:
        channels = image.shape[2] if image.ndim == 3 else 1
        pad = list(param.pad_value) or [0.0]
        pad = (pad * channels if len(pad) == 1 else pad) + [0] * (4 - channels)
        aspect, new_aspect = f32(w) / f32(h), f32(new_w) / f32(new_h)
        if aspect > new_aspect:                                  # full width, bands above and below
            rows = int(np.floor(f32(new_w) / aspect))
            out = cv2.resize(image, (new_w, rows), interpolation=interp)
            top = int(np.floor((new_h - rows) / 2.0))
            out = cv2.copyMakeBorder(out, top, new_h - rows - top, 0, 0, _PAD[param.pad_mode], value=pad[:4])
            y_band = (f32(new_h) - f32(new_w) / aspect) / 2
            y_span = f32(new_h) - 2 * y_band
        else:
            cols = int(np.floor(aspect * f32(new_h)))
            out = cv2.resize(image, (cols, new_h), interpolation=interp)
            left = int(np.floor((new_w - cols) / 2.0))
            out = cv2.copyMakeBorder(out, 0, 0, left, new_w - cols - left, _PAD[param.pad_mode], value=pad[:4])
            x_band = (f32(new_w) - aspect * f32(new_h)) / 2
            x_span = f32(new_w) - 2 * x_band
    box = np.stack([x_band + np.maximum(f32(0), box[:, 0] * x_span / w),
                    y_band + np.maximum(f32(0), box[:, 1] * y_span / h),
                    x_band + np.minimum(f32(new_w), box[:, 2] * x_span / w),
                    y_band + np.minimum(f32(new_h), box[:, 3] * y_span / h)], 1)
    box = box / np.array([new_w, new_h] * 2, f32)
    return (out if out.ndim == image.ndim else out[..., None]), dict(anno, box=box.astype(f32))


class AnnotatedSource:
    """AnnotatedDatum records of an LMDB/LevelDB in key order, wrapping around: each item distorted,
    expanded, cropped by a batch sampler's window, resized, cropped / mirrored and normalized as the
    fork's AnnotatedDataLayer does. Labels: (1, 1, boxes, 8) rows (item, label, instance, xmin,
    ymin, xmax, ymax, difficult); one row of -1 when the batch has none."""

    def __init__(self, reader, layer_param, phase, batch_size, seed, deal=(0, 1)):
        self.reader = reader
        self.cursor = RecordCursor(reader, deal)
        self.param = layer_param.transform_param
        self.samplers = list(layer_param.annotated_data_param.batch_sampler)
        self.batch_size = batch_size
        self.phase = phase
        self.rng = np.random.default_rng(seed)
        p = self.param
        if p.mean_file:
            raise DataSourceError('transform_param.mean_file is not supported with AnnotatedData; '
                                  'use mean_value')
        if p.force_color and p.force_gray:
            raise DataSourceError('cannot set both force_color and force_gray')
        self.flag = cv2.IMREAD_COLOR if p.force_color else cv2.IMREAD_GRAYSCALE if p.force_gray \
            else cv2.IMREAD_UNCHANGED
        self.emit = p.emit_constraint if p.HasField('emit_constraint') else None
        self.crop_h = p.crop_size or p.crop_h
        self.crop_w = p.crop_size or p.crop_w
        if not self.reader.valid:
            raise DataSourceError('database %s is empty' % reader.source)
        image, _ = self._read(self.reader.key(), self.reader.value())
        self.shape = self._output_shape(image)

    def _read(self, key, value):
        return parse_annotated(value, self.flag, 'record %s of %s' % (key.decode(errors='replace'),
                                                                      self.reader.source))

    def _output_shape(self, image):
        channels = image.shape[2] if image.ndim == 3 else 1
        height, width = image.shape[:2]
        if self.param.HasField('resize_param'):
            height, width = self.param.resize_param.height, self.param.resize_param.width
        if self.crop_h and self.crop_w:
            height, width = self.crop_h, self.crop_w
        return channels, height, width

    def _mean(self, channels):
        values = list(self.param.mean_value)
        if not values:
            return None
        if len(values) == 1:
            values *= channels
        if len(values) != channels:
            raise DataSourceError('Specify either 1 mean_value or as many as channels: %d' % channels)
        return values

    def item(self, image, anno, out):
        """Transform one record into `out` (C, H, W); returns its annotations."""
        p, rng = self.param, self.rng
        if image.ndim == 2:
            image = image[..., None]
        mean = self._mean(image.shape[2])
        if p.HasField('distort_param'):
            image = distort(image, p.distort_param, rng)
        if p.HasField('expand_param'):
            image, anno = expand(image, anno, p.expand_param, mean, rng, self.emit)
        if self.samplers:
            windows = generate_samples(anno, self.samplers, rng)
            if windows:
                image, anno = crop(image, anno, windows[rng.integers(len(windows))], self.emit)
        if p.HasField('resize_param'):
            image, anno = resize(image, anno, p.resize_param, rng)
        if p.HasField('noise_param'):
            image = noise(image, p.noise_param, rng)
        height, width = image.shape[:2]
        mirror = bool(p.mirror and rng.integers(2))
        top = left = 0
        if self.crop_h and self.crop_w:
            if self.phase == caffe_pb2.TRAIN:
                top, left = rng.integers(height - self.crop_h + 1), rng.integers(width - self.crop_w + 1)
            else:
                top, left = (height - self.crop_h) // 2, (width - self.crop_w) // 2
            image = image[top:top + self.crop_h, left:left + self.crop_w]
        if image.shape[:2] != out.shape[1:]:
            raise DataSourceError('transformed image is %dx%d, the batch is %dx%d: give resize_param '
                                  'for images of different sizes' % (image.shape[:2] + out.shape[1:]))
        window = np.array([left / width, top / height, (left + out.shape[2]) / width,
                           (top + out.shape[1]) / height], np.float32)
        anno = project(window, anno, self.emit, mirror)
        pixels = image[:, ::-1] if mirror else image
        chw = pixels.transpose(2, 0, 1).astype(np.float32)
        if mean is not None:
            chw -= np.asarray(mean, np.float32)[:, None, None]
        np.multiply(chw, np.float32(p.scale), out=out)
        return anno

    def load_batch(self, batch):
        records = self.cursor.take(self.batch_size)
        batch.reshape((self.batch_size,) + self.shape)
        rows = []
        for i, record in enumerate(records):
            anno = self.item(*self._read(*record), batch.data[i])
            rows.append(np.column_stack([np.full(len(anno['label']), i), anno['label'], anno['instance'],
                                         anno['box'], anno['difficult']]))
        table = np.concatenate(rows) if rows else np.zeros((0, 8))
        if not len(table):
            table = np.full((1, 8), -1.0)
        batch.reshape((self.batch_size,) + self.shape, (1, 1, len(table), 8))
        batch.label[...] = table.reshape(1, 1, -1, 8)

    def close(self):
        self.reader.close()
