"""SSD's box arithmetic on relative (xmin, ymin, xmax, ymax) boxes, in float32 as weiliu89/caffe's
bbox_util.cpp and sampler.cpp compute it: overlap measures, the emit constraint, projection into a
window, the resize policies' box updates, and the batch samplers' windows.

An annotation set is a dict of arrays: `label` (K,), `instance` (K,), `box` (K, 4) float32 and
`difficult` (K,), in the record's group and annotation order.
"""
import numpy as np

from ..proto import caffe_pb2

F32 = np.float32
_RESIZE = caffe_pb2.ResizeParameter


def select(anno, keep):
    return {k: v[keep] for k, v in anno.items()}


def area(box):
    """BBoxSize: 0 for an inverted box."""
    w, h = box[..., 2] - box[..., 0], box[..., 3] - box[..., 1]
    return np.where((w < 0) | (h < 0), F32(0), w * h)


def _intersection(a, b):
    w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    return np.where((w > 0) & (h > 0), w * h, F32(0))


def jaccard(a, b):
    """JaccardOverlap of boxes `a` and `b` (broadcast)."""
    inter = _intersection(a, b)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(inter > 0, inter / (area(a) + area(b) - inter), F32(0))


def coverage(a, b):
    """BBoxCoverage: the share of box(es) `a` covered by `b`."""
    inter = _intersection(a, b)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(inter > 0, inter / area(a), F32(0))


def project(window, anno, emit=None, mirror=False):
    """TransformAnnotation's projection: the boxes meeting the emit constraint and overlapping
    `window`, re-expressed in it and clipped to [0, 1] (then mirrored)."""
    box, window = anno['box'], np.asarray(window, F32)
    keep = np.ones(len(box), bool)
    if emit is not None:
        if emit.emit_type == caffe_pb2.EmitConstraint.CENTER:
            cx, cy = (box[:, 0] + box[:, 2]) / F32(2), (box[:, 1] + box[:, 3]) / F32(2)
            keep &= (cx >= window[0]) & (cx <= window[2]) & (cy >= window[1]) & (cy <= window[3])
        else:
            keep &= coverage(box, window) > F32(emit.emit_overlap)
    keep &= ~((box[:, 0] >= window[2]) | (box[:, 2] <= window[0]) | (box[:, 1] >= window[3])
              | (box[:, 3] <= window[1]))
    size = np.array([window[2] - window[0], window[3] - window[1]] * 2, F32)
    moved = np.clip((box - window[[0, 1, 0, 1]]) / size, F32(0), F32(1))
    keep &= area(moved) > 0
    out = select(anno, keep)
    moved = moved[keep]
    if mirror:
        moved = np.stack([F32(1) - moved[:, 2], moved[:, 1], F32(1) - moved[:, 0], moved[:, 3]], 1)
    out['box'] = moved.astype(F32)
    return out


def small_side_size(param, height, width):
    """FIT_SMALL_SIZE's output size (InferNewSize): the aspect kept, the smaller side fitted."""
    aspect = F32(width) / F32(height)
    if aspect < F32(param.width) / F32(param.height):
        return int(F32(param.width) / aspect), param.width
    return param.height, int(aspect * F32(param.height))


def resized_boxes(box, param, height, width):
    """UpdateBBoxByResizePolicy: `box` of a height x width image after resize_param's resize."""
    new_h, new_w = F32(param.height), F32(param.width)
    aspect = F32(width) / F32(height)
    box = box * np.array([width, height, width, height], F32)
    x_band = y_band = F32(0)          # the padding bands of FIT_LARGE_SIZE_AND_PAD
    x_span, y_span = new_w, new_h
    if param.resize_mode == _RESIZE.FIT_LARGE_SIZE_AND_PAD:
        if aspect > new_w / new_h:
            y_band = (new_h - new_w / aspect) / F32(2)
            y_span = new_h - F32(2) * y_band
        else:
            x_band = (new_w - aspect * new_h) / F32(2)
            x_span = new_w - F32(2) * x_band
    elif param.resize_mode == _RESIZE.FIT_SMALL_SIZE:
        if aspect < new_w / new_h:
            new_h = y_span = new_w / aspect
        else:
            new_w = x_span = aspect * new_h
    out = np.stack([x_band + np.maximum(F32(0), box[:, 0] * x_span / F32(width)),
                    y_band + np.maximum(F32(0), box[:, 1] * y_span / F32(height)),
                    x_band + np.minimum(new_w, box[:, 2] * x_span / F32(width)),
                    y_band + np.minimum(new_h, box[:, 3] * y_span / F32(height))], 1)
    return (out / np.array([new_w, new_h, new_w, new_h], F32)).astype(F32)


def extrapolated_boxes(box, param, height, width, window):
    """ExtrapolateBBox: with FIT_SMALL_SIZE and height_scale / width_scale, the final boxes in units
    of width_scale x height_scale of the resized crop."""
    if not (param.height_scale > 0 and param.width_scale > 0 and param.resize_mode == _RESIZE.FIT_SMALL_SIZE):
        return box
    aspect = F32(width) / F32(height)
    new_h, new_w = F32(param.height), F32(param.width)
    if aspect < new_w / new_h:
        new_h = new_w / aspect
    else:
        new_w = new_h * aspect
    crop_h, crop_w = new_h * (window[3] - window[1]), new_w * (window[2] - window[0])
    if crop_w < param.width_scale or crop_h < param.height_scale:
        raise ValueError('resize_param: the crop (%gx%g after resizing) is smaller than height_scale x '
                         'width_scale (%dx%d)' % (crop_h, crop_w, param.height_scale, param.width_scale))
    scale = np.array([crop_w, crop_h, crop_w, crop_h], F32)
    return (box * scale / np.array([param.width_scale, param.height_scale] * 2, F32)).astype(F32)


# -- batch samplers ---------------------------------------------------------------------------------
def uniform_from(words, low, high):
    """boost::uniform_real(low, nextafter(high)) in float32 on given 32-bit words, element-wise
    (caffe_rng_uniform's arithmetic): (values, accepted); a value that rounds up to nextafter(high)
    is one boost redraws."""
    low, top = F32(low) + np.zeros(len(words), F32), np.nextafter(np.asarray(high, F32), F32(np.inf))
    values = words.astype(F32) / F32(2.0 ** 32) * (top - low) + low
    return values, values < top


def _window_shape(scale, ratio):
    """SampleBBox's width and height: the aspect ratio clamped to [scale^2, 1 / scale^2] (in double,
    as std::pow), then float arithmetic (sqrt of a float in float, as C++ builds since GCC 6 take it)."""
    square = scale.astype(np.float64) ** 2
    ratio = np.minimum(np.maximum(ratio, square.astype(F32)), (1 / square).astype(F32))
    root = np.sqrt(ratio)
    return scale * root, scale / root


def _offset_range(extent):
    """The range 1 - extent of an offset draw; where it rounds below 0 it is taken as 0 (the fork's
    uniform draw would fail its a <= b check there)."""
    return np.maximum(F32(1) - extent, F32(0))


def _next_accepted(ok):
    """For each position, the first position at or after it whose word is accepted (len(ok): none)."""
    if ok.all():
        return np.arange(len(ok) + 1)
    index = np.where(ok, np.arange(len(ok)), len(ok))
    return np.append(np.minimum.accumulate(index[::-1])[::-1], len(ok))


def _trial_chain(sampler, words, trials):
    """SampleBBox's draws for `trials` trials from the start of `words`: (trial start positions plus the
    end, windows (trials, 4)); None when the words run out, 'redraw' on a rare redraw it does not
    follow. Every position is tried as a trial's start: the scale and aspect-ratio draws take the
    first accepted word from there (their ranges are fixed); an offset whose range is 0 takes the first
    word U(0, 0) accepts (boost redraws about half of them), any other offset one word. Chaining the
    starts then gives the trials Caffe made."""
    n = len(words)
    scale, scale_ok = uniform_from(words, sampler.min_scale, sampler.max_scale)
    ratio, ratio_ok = uniform_from(words, sampler.min_aspect_ratio, sampler.max_aspect_ratio)
    next_scale, next_ratio = _next_accepted(scale_ok), _next_accepted(ratio_ok)
    next_zero = _next_accepted(uniform_from(words, 0, 0)[1])
    at_scale = next_scale[:n]
    at_ratio = next_ratio[np.minimum(at_scale + 1, n)]
    width, height = _window_shape(scale[np.minimum(at_scale, n - 1)], ratio[np.minimum(at_ratio, n - 1)])
    offsets, ends, fine = [], at_ratio, np.ones(n, bool)
    for extent in (width, height):
        span = _offset_range(extent)
        start = np.minimum(ends + 1, n)
        ends = np.where(span > 0, start, next_zero[start])
        value, ok = uniform_from(words[np.minimum(ends, n - 1)], 0, span)
        offsets.append(np.where(span > 0, value, F32(0)))
        fine &= ok | (span == 0)
    follow = (ends + 1).tolist()
    starts, position = [], 0
    for _ in range(trials):
        if position >= n or follow[position] > n:
            return None
        starts.append(position)
        position = follow[position]
    starts = np.array(starts)
    if not fine[starts].all():
        return 'redraw'
    x, y, width, height = offsets[0][starts], offsets[1][starts], width[starts], height[starts]
    return np.append(starts, position), np.stack([x, y, x + width, y + height], 1).astype(F32)


def satisfied(windows, objects, constraint):
    """SatisfySampleConstraint for each window (T, 4) against the objects (K, 4): as the fork decides it,
    a window passes when some object passes the first constraint given (jaccard, sample coverage,
    object coverage), or when no constraint is given."""
    c = constraint
    tests = (('min_jaccard_overlap', 'max_jaccard_overlap', lambda w, o: jaccard(w, o)),
             ('min_sample_coverage', 'max_sample_coverage', lambda w, o: coverage(w, o)),
             ('min_object_coverage', 'max_object_coverage', lambda w, o: coverage(o, w)))
    for low, high, measure in tests:
        if c.HasField(low) or c.HasField(high):
            value = measure(windows[:, None, :], objects[None, :, :])
            ok = np.ones(value.shape, bool)
            if c.HasField(low):
                ok &= ~(value < F32(getattr(c, low)))
            if c.HasField(high):
                ok &= ~(value > F32(getattr(c, high)))
            return ok.any(axis=1)
    return np.ones(len(windows), bool)


def check_sampler(sampler):
    s = sampler.sampler
    if not (0 < s.min_scale <= s.max_scale <= 1 and 0 < s.min_aspect_ratio <= s.max_aspect_ratio):
        raise ValueError('batch_sampler: need 0 < min_scale <= max_scale <= 1 and '
                         '0 < min_aspect_ratio <= max_aspect_ratio')


def generate_samples(objects, samplers, stream):
    """GenerateBatchSamples: for each sampler (use_original_image) up to max_trials windows, stopping
    at max_sample accepted ones, four uniforms of `stream` a trial (and boost's redraws); the accepted
    windows in order. A sampler's trials are drawn and tested as arrays (_trial_chain); the words past
    its last trial go back to the stream."""
    windows = []
    for sampler in samplers:
        trials = sampler.max_trials
        if not sampler.use_original_image or (sampler.HasField('max_sample') and sampler.max_sample <= 0):
            trials = 0
        extra = 16
        while trials:
            words = stream.words(4 * trials + extra)
            chain = _trial_chain(sampler.sampler, words, trials)
            if chain is not None:
                break
            stream.unread(words)
            extra *= 4
        if not trials:
            continue
        if isinstance(chain, str):               # about 1 draw in 2^25: one trial at a time
            stream.unread(words)
            windows.extend(_sequential_trials(sampler, objects, stream))
            continue
        bounds, found = chain
        passed = satisfied(found, objects, sampler.sample_constraint)
        used = trials
        if sampler.HasField('max_sample'):
            count = np.cumsum(passed)
            if count[-1] >= sampler.max_sample:
                used = int(np.argmax(count >= sampler.max_sample)) + 1
        stream.unread(words[bounds[used]:])
        windows.extend(found[:used][passed[:used]])
    return windows


def _sequential_trials(sampler, objects, stream):
    """generate_samples for one sampler, trial by trial through stream.uniform."""
    found, s = [], sampler.sampler
    for _ in range(sampler.max_trials):
        if sampler.HasField('max_sample') and len(found) >= sampler.max_sample:
            break
        scale = stream.uniform(1, s.min_scale, s.max_scale)
        width, height = _window_shape(scale, stream.uniform(1, s.min_aspect_ratio, s.max_aspect_ratio))
        x = stream.uniform(1, 0, _offset_range(width)[0])
        y = stream.uniform(1, 0, _offset_range(height)[0])
        window = np.stack([x, y, x + width, y + height], 1).astype(F32)
        if satisfied(window, objects, sampler.sample_constraint)[0]:
            found.append(window[0])
    return found


def crop_rect(window, height, width):
    """CropImage's pixel rectangle (x, y, width, height) of `window` clipped to [0, 1], and the clipped
    window."""
    window = np.clip(np.asarray(window, F32), F32(0), F32(1))
    x0, y0, x1, y1 = window * np.array([width, height, width, height], F32)
    return (int(x0), int(y0), int(x1 - x0), int(y1 - y0)), window
