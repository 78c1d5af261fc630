"""SSD's annotated-image pipeline (weiliu89/caffe: AnnotatedDataLayer::load_batch with the data
transformer's DistortImage, ExpandImage, CropImage, Transform and TransformAnnotation), on decoded
OpenCV images.

Random streams, as the fork's: the prefetch thread's own Caffe engine (seeded with a word of
Caffe's stream when the thread starts) gives every caffe_rng_uniform / caffe_rng_rand of an item, in
the fork's order: distortion (order, then each step's probability and value), expansion
(probability, ratio, top, left), the batch samplers (four uniforms a trial), the pick among the
sampled windows, the resize interpolation, salt-and-pepper pixels; the transformer's engine gives
Rand(n) for the mirror and the crop offsets; glibc's rand() shuffles the channels. An item's draws
depend only on the image sizes and boxes, so a batch is decoded on the item pool, its draws made in
item order, and its pixels transformed on the pool again.

What differs from the fork: intermediate images stay decoded (the fork re-encodes each distorted,
expanded or cropped image as JPEG, quality 95, before the next step), and where the fork aborts
(its CHECKs, an offset range below 0) this stops with a one-line error or takes the range as 0.
"""
import cv2
import numpy as np

from .. import log, rng as caffe_rng
from ..proto import caffe_pb2
from . import annotated_boxes as boxes
from . import annotated_image as image_ops
from .annotated_boxes import F32
from .image import DataSourceError, decode_image
from .prefetch import ItemPool
from .sources import RecordCursor

_RESIZE = caffe_pb2.ResizeParameter


def parse_annotated(value, flag, what):
    """(HWC uint8 image, annotations, record) of an AnnotatedDatum record."""
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
    if image.ndim == 2:
        image = image[..., None]
    rows = [(g.group_label, a.instance_id, a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax, a.bbox.difficult)
            for g in record.annotation_group for a in g.annotation]
    table = np.array(rows, np.float64).reshape(-1, 7)
    anno = {'label': table[:, 0].astype(np.int64), 'instance': table[:, 1].astype(np.int64),
            'box': table[:, 2:6].astype(F32), 'difficult': table[:, 6].astype(bool)}
    return image, anno, record


def _uniform(stream, low, high):
    """caffe_rng_uniform(1, low, high): one float."""
    return stream.uniform(1, low, high)[0]


def plan_distortion(param, stream, c_rand):
    """ApplyDistort's draws: the steps it takes, in its order ((kind, value) pairs)."""
    a_first = _uniform(stream, 0, 1) > 0.5
    order = ('brightness', 'contrast', 'saturation', 'hue') if a_first else \
        ('brightness', 'saturation', 'hue', 'contrast')
    ranges = {'brightness': (param.brightness_prob, -param.brightness_delta, param.brightness_delta),
              'contrast': (param.contrast_prob, param.contrast_lower, param.contrast_upper),
              'saturation': (param.saturation_prob, param.saturation_lower, param.saturation_upper),
              'hue': (param.hue_prob, -param.hue_delta, param.hue_delta)}
    steps = []
    for kind in order:
        prob, low, high = ranges[kind]
        if _uniform(stream, 0, 1) < F32(prob):
            value = _uniform(stream, low, high)
            if kind in ('brightness', 'hue') and not abs(value) > 0:
                continue
            if kind == 'contrast' and not abs(value - F32(1)) > 1e-3:
                continue
            steps.append((kind, value))
    if _uniform(stream, 0, 1) < F32(param.random_order_prob):
        channels = [0, 1, 2]
        c_rand.random_shuffle(channels)
        steps.append(('order', channels))
    return steps


def plan_expand(param, height, width, stream):
    """ExpandImage's draws: (canvas height, width, top, left), or None."""
    if _uniform(stream, 0, 1) > F32(param.prob) or abs(param.max_expand_ratio - 1) < 1e-2:
        return None
    ratio = _uniform(stream, 1, param.max_expand_ratio)
    new_h, new_w = int(F32(height) * ratio), int(F32(width) * ratio)
    top = np.floor(_uniform(stream, 0, F32(new_h - height)))
    left = np.floor(_uniform(stream, 0, F32(new_w - width)))
    return new_h, new_w, int(top), int(left)


def roll_weighted_die(count, stream):
    """roll_weighted_die over `count` equal probabilities: a uniform up to their float running sum."""
    cumulative = np.cumsum(np.full(count, F32(1) / F32(count), F32), dtype=F32)
    return int(np.searchsorted(cumulative, _uniform(stream, 0, cumulative[-1]), side='left'))


def _check_params(p, phase):
    """The fork's CHECKs on the transformation parameters, as one-line errors."""
    if p.force_color and p.force_gray:
        raise DataSourceError('cannot set both force_color and force_gray')
    if p.HasField('resize_param') and not (p.resize_param.height > 0 and p.resize_param.width > 0):
        raise DataSourceError('resize_param needs height > 0 and width > 0')
    if p.HasField('expand_param') and not p.expand_param.max_expand_ratio > 1:
        raise DataSourceError('expand_param.max_expand_ratio must be > 1')
    d = p.distort_param
    for name, prob, low, high in (('brightness_delta', d.brightness_prob, -d.brightness_delta, d.brightness_delta),
                                  ('contrast_lower/upper', d.contrast_prob, d.contrast_lower, d.contrast_upper),
                                  ('saturation_lower/upper', d.saturation_prob, d.saturation_lower,
                                   d.saturation_upper),
                                  ('hue_delta', d.hue_prob, -d.hue_delta, d.hue_delta)):
        if p.HasField('distort_param') and prob > 0 and (low > high or name.endswith('upper') and low < 0):
            raise DataSourceError('distort_param.%s: need 0 <= lower <= upper (a delta >= 0)' % name)
    if p.crop_h and p.crop_w and phase == caffe_pb2.TRAIN and not (p.crop_size or p.mirror):
        raise DataSourceError('crop_h / crop_w in TRAIN need crop_size or mirror: the fork draws the random '
                              'crop from a transformer engine it only makes for those')


class AnnotatedSource:
    """AnnotatedDatum records of an LMDB/LevelDB in key order, wrapping around: each item distorted,
    expanded, cropped by a batch sampler's window, resized, noised, cropped / mirrored and normalized
    as the fork's AnnotatedDataLayer does. Labels: (1, 1, boxes, 8) rows (item, label, instance,
    xmin, ymin, xmax, ymax, difficult), one row of -1 when the batch has none; records without an
    annotation type (and no anno_type) give their datum labels instead, as in the fork.

    `transformer` (caffe_py.data.transformer.DataTransformer) holds the engine of Rand(n);
    `seed_thread(seed)` gives the prefetch thread's engine before the first batch."""

    def __init__(self, reader, layer_param, phase, batch_size, transformer, deal=(0, 1), workers=None):
        self.reader = reader
        self.cursor = RecordCursor(reader, deal)
        self.param = p = layer_param.transform_param
        anno_param = layer_param.annotated_data_param
        self.samplers = list(anno_param.batch_sampler)
        for sampler in self.samplers:
            boxes.check_sampler(sampler)
        self.batch_size = batch_size
        self.phase = phase
        self.transformer = transformer
        self.mean_file = transformer.mean if p.mean_file else None     # C x H x W
        # an expansion canvas under a mean file: static_cast<char> of each value, H x W x C
        self.mean_file_fill = None if self.mean_file is None else \
            (self.mean_file.transpose(1, 2, 0).astype(np.int64) & 0xff).astype(np.uint8)
        self.stream = None
        _check_params(p, phase)
        self.fit_small = p.HasField('resize_param') and p.resize_param.resize_mode == _RESIZE.FIT_SMALL_SIZE
        if self.fit_small and batch_size != 1:
            raise DataSourceError('resize_param FIT_SMALL_SIZE needs batch_size 1 (images differ in size)')
        self.flag = cv2.IMREAD_COLOR if p.force_color else cv2.IMREAD_GRAYSCALE if p.force_gray \
            else cv2.IMREAD_UNCHANGED
        self.emit = p.emit_constraint if p.HasField('emit_constraint') else None
        self.crop_h = p.crop_size or p.crop_h
        self.crop_w = p.crop_size or p.crop_w
        self.pool = ItemPool(workers)
        self._warned_raw = False
        if not self.reader.valid:
            raise DataSourceError('database %s is empty' % reader.source)
        image, _, record = self._read(self.reader.key(), self.reader.value())
        self.typed = record.HasField('type') or anno_param.HasField('anno_type')
        self.shape = self._output_shape(image)

    def seed_thread(self, seed):
        """The prefetch thread's engine (Caffe::set_random_seed in the new thread)."""
        self.stream = caffe_rng.new_stream(seed)

    def _read(self, key, value):
        return parse_annotated(value, self.flag, 'record %s of %s' % (key.decode(errors='replace'),
                                                                      self.reader.source))

    def _output_shape(self, image):
        """InferBlobShape: (C, H, W) after resizing and cropping."""
        height, width, channels = image.shape
        if self.param.HasField('resize_param'):
            r = self.param.resize_param
            height, width = boxes.small_side_size(r, height, width) if self.fit_small else (r.height, r.width)
        if self.crop_h and self.crop_w:
            if height < self.crop_h or width < self.crop_w:
                raise DataSourceError('image of %dx%d is smaller than the crop %dx%d'
                                      % (height, width, self.crop_h, self.crop_w))
            height, width = self.crop_h, self.crop_w
        return channels, height, width

    def _mean(self, channels, what):
        """The per-channel mean values (C,), checked and cached by the transformer; None without."""
        mean = None if self.mean_file is not None else self.transformer.mean_for(channels, what)
        return None if mean is None else mean.reshape(channels)

    # -- the draws of one item, in the fork's order -------------------------------------------------
    def plan(self, image, anno, record, what):
        """Every random choice for one item and its final annotations. Raw (non-encoded) records take
        the fork's raw path: not distorted, expanded onto bytes of 32 (its buffer of spaces), neither
        resized (their boxes are) nor noised, cropped by crop_size only."""
        height, width, channels = image.shape
        raw = not record.datum.encoded
        plan = {'mean': self._mean(channels, what), 'raw': raw, 'distort': [], 'expand': None, 'window': None}
        if self.param.HasField('distort_param'):
            if not raw:
                plan['distort'] = plan_distortion(self.param.distort_param, self.stream, caffe_rng.c_rand())
            elif not self._warned_raw:
                log.error('AnnotatedData: only encoded records are distorted (as in the fork)')
                self._warned_raw = True
        if self.param.HasField('expand_param'):
            plan['expand'] = plan_expand(self.param.expand_param, height, width, self.stream)
            if plan['expand'] is not None:
                new_h, new_w, top, left = plan['expand']
                if self.mean_file is not None and not raw and self.mean_file.shape[1:] != (new_h, new_w):
                    raise DataSourceError('%s: expanded to %dx%d, which the mean file (%dx%d) must match, as the '
                                          "fork's check" % ((what, new_h, new_w) + self.mean_file.shape[1:]))
                window = np.array([-left / F32(width), -top / F32(height), (new_w - left) / F32(width),
                                   (new_h - top) / F32(height)], F32)
                anno = boxes.project(window, anno, self.emit)
                height, width = new_h, new_w
        if self.samplers:
            windows = boxes.generate_samples(anno['box'], self.samplers, self.stream)
            if windows:
                window = windows[caffe_rng.rand(self.stream, len(windows))]
                rect, window = boxes.crop_rect(window, height, width)
                if rect[2] <= 0 or rect[3] <= 0:
                    raise DataSourceError('%s: the sampled window is empty at %dx%d' % (what, height, width))
                plan['window'] = rect
                anno = boxes.project(window, anno, self.emit)
                width, height = rect[2:]
        return plan, self._plan_transform(plan, anno, height, width, channels, what)

    def _plan_transform(self, plan, anno, height, width, channels, what):
        """The draws of the fork's Transform (mirror, interpolation, salt and pepper, crop) into `plan`;
        the final annotations (TransformAnnotation)."""
        p, stream, raw = self.param, self.stream, plan['raw']
        plan['mirror'] = bool(p.mirror and caffe_rng.rand(self.transformer.rng, 2))
        box = anno['box']
        before = height, width
        if p.HasField('resize_param'):
            r = p.resize_param
            box = boxes.resized_boxes(box, r, *before)
            if not raw:
                modes = list(r.interp_mode)
                plan['interp'] = image_ops.INTERP[modes[roll_weighted_die(len(modes), stream)]] if modes \
                    else cv2.INTER_LINEAR
                height, width = boxes.small_side_size(r, height, width) if self.fit_small else (r.height, r.width)
        if p.HasField('noise_param') and p.noise_param.saltpepper and not raw:
            count = int(np.floor(F32(p.noise_param.saltpepper_param.fraction) * F32(width) * F32(height)))
            words = stream.words(2 * count).reshape(count, 2)
            plan['salt'] = (words[:, 1] % height, words[:, 0] % width)
        top = left = 0
        out_h, out_w = (p.crop_size, p.crop_size) if raw else (self.crop_h, self.crop_w)
        if out_h and out_w:
            if height < out_h or width < out_w:
                raise DataSourceError('%s: image of %dx%d is smaller than the crop %dx%d'
                                      % (what, height, width, out_h, out_w))
            if self.phase == caffe_pb2.TRAIN:
                row, column = self.transformer.rng.words(2).tolist()
                top, left = row % (height - out_h + 1), column % (width - out_w + 1)
            else:
                top, left = (height - out_h) // 2, (width - out_w) // 2
        else:
            out_h, out_w = height, width
        plan['crop'] = (slice(top, top + out_h), slice(left, left + out_w))
        plan['shape'] = (channels, out_h, out_w)
        self._check_mean_file(plan, (channels, height, width), what)
        window = np.array([left / F32(width), top / F32(height), (left + out_w) / F32(width),
                           (top + out_h) / F32(height)], F32)
        anno = boxes.project(window, dict(anno, box=box), self.emit, plan['mirror'])
        if p.HasField('resize_param'):
            anno['box'] = boxes.extrapolated_boxes(anno['box'], p.resize_param, *before, window)
        return anno

    def _check_mean_file(self, plan, before_crop, what):
        """The fork's checks on the mean file: the image's shape (raw records, before the crop), or the
        cropped image's with no crop offset (encoded records: the fork indexes the mean with the uncropped
        image's strides, past its end otherwise)."""
        if self.mean_file is None:
            return
        mean = self.mean_file.shape
        if plan['raw'] and mean != before_crop:
            raise DataSourceError('%s: a raw image of %dx%dx%d, the mean file is %dx%dx%d'
                                  % ((what,) + before_crop + mean))
        if not plan['raw'] and (mean != plan['shape'] or before_crop != plan['shape']):
            raise DataSourceError('%s: the mean file (%dx%dx%d) must match the image (%dx%dx%d) uncropped, as in '
                                  "the fork's Transform" % ((what,) + mean + before_crop))

    # -- the pixels of one item ------------------------------------------------------------------
    def render(self, image, plan, out):
        """Apply a plan's image steps and write the normalized item into `out` (C, H, W)."""
        p = self.param
        channels = image.shape[2]
        image = image_ops.distort(image, plan['distort'])
        if plan['expand'] is not None:
            mean = plan['mean']
            if plan['raw']:
                fill = 32
            elif self.mean_file_fill is not None:
                fill = self.mean_file_fill
            else:
                fill = 0 if mean is None else np.clip(np.rint(mean), 0, 255).astype(np.uint8)
            image = image_ops.expand(image, *plan['expand'], fill)
        if plan['window'] is not None:
            x, y, w, h = plan['window']
            image = image[y:y + h, x:x + w]
        if p.HasField('resize_param') and not plan['raw']:
            image = image_ops.resize(image, p.resize_param, plan['interp'])
        if p.HasField('noise_param') and not plan['raw']:
            image = image_ops.noise(image, p.noise_param, plan.get('salt'))
        pixels = image_ops.read_as_fork(image, channels, *plan['crop'], plan['mirror'])
        out[...] = pixels.transpose(2, 0, 1)
        if plan['mean'] is not None:
            out -= plan['mean'].astype(out.dtype)[:, None, None]
        elif self.mean_file is not None:        # raw records: the mean under the source pixels
            mean = self.mean_file[(slice(None),) + plan['crop']] if plan['raw'] else self.mean_file
            out -= mean[:, :, ::-1] if plan['raw'] and plan['mirror'] else mean
        out *= out.dtype.type(p.scale)

    def load_batch(self, batch):
        if self.stream is None:
            raise RuntimeError('AnnotatedSource.seed_thread was not called')
        records = self.cursor.take(self.batch_size)
        items = [None] * len(records)

        def decode(i):
            items[i] = self._read(*records[i])
        self.pool.run(len(records), decode)
        shape = self._output_shape(items[0][0])     # the fork: the shape of the batch's first record
        plans, annos = [], []
        for i, (image, anno, record) in enumerate(items):
            plan, anno = self.plan(image, anno, record, 'record %s' % records[i][0].decode(errors='replace'))
            if self.fit_small:
                shape = plan['shape']
            elif plan['shape'] != shape:
                raise DataSourceError('transformed image is %dx%dx%d, the batch is %dx%dx%d: give resize_param '
                                      'for images of different sizes' % (plan['shape'] + shape))
            plans.append(plan)
            annos.append(anno)
        rows = [np.column_stack([np.full(len(a['label']), i), a['label'], a['instance'], a['box'], a['difficult']])
                for i, a in enumerate(annos)]
        table = np.concatenate(rows)
        if not self.typed:
            label_shape = (self.batch_size,)
        else:
            label_shape = (1, 1, max(len(table), 1), 8)
        batch.reshape((self.batch_size,) + shape, label_shape)
        self.pool.run(len(records), lambda i: self.render(items[i][0], plans[i], batch.data[i]))
        if not self.typed:
            batch.label[...] = [record.datum.label for _, _, record in items]
        elif len(table):
            batch.label[...] = table.reshape(label_shape)
        else:
            batch.label[...] = -1

    def close(self):
        self.pool.close()
        self.reader.close()
