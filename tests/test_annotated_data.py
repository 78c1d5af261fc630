"""SSD's AnnotatedData layer and its augmentations (weiliu89/caffe) on generated LMDBs."""
import cv2
import numpy as np
import pytest

import caffe_py as caffe
from caffe_py import rng
from caffe_py.data import annotated, annotated_boxes, annotated_image
from caffe_py.data.db import DBWriter
from caffe_py.proto import caffe_pb2
from device_cases import net_from_text


def _record(image, boxes):
    """An AnnotatedDatum with a PNG image and boxes (label, xmin, ymin, xmax, ymax, difficult)."""
    record = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.BBOX)
    record.datum.encoded = True
    record.datum.data = cv2.imencode('.png', image)[1].tobytes()
    for i, (label, x0, y0, x1, y1, hard) in enumerate(boxes):
        group = record.annotation_group.add(group_label=label)
        group.annotation.add(instance_id=i, bbox=caffe_pb2.NormalizedBBox(
            xmin=x0, ymin=y0, xmax=x1, ymax=y1, difficult=hard))
    return record.SerializeToString()


def _scenes(n=4, size=(40, 60)):
    """Black images with white rectangles, and their boxes."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        image = np.zeros(size + (3,), np.uint8)
        boxes = []
        for label in (1, 2):
            x0, y0 = rng.integers(0, size[1] - 15), rng.integers(0, size[0] - 15)
            w, h = rng.integers(6, 15, 2)
            image[y0:y0 + h, x0:x0 + w] = 255 if label == 1 else 128
            boxes.append((label, x0 / size[1], y0 / size[0], (x0 + w) / size[1], (y0 + h) / size[0], label == 2))
        out.append((image, boxes))
    return out


@pytest.fixture
def lmdb(tmp_path):
    scenes = _scenes()
    path = str(tmp_path / 'anno_lmdb')
    with DBWriter(path, 'lmdb') as db:
        for i, (image, boxes) in enumerate(scenes):
            db.put('%08d' % i, _record(image, boxes))
    return path, scenes


def _layer(path, batch=2, transform='', extra='', phase='TRAIN'):
    return net_from_text('''
layer { name: "data" type: "AnnotatedData" top: "data" top: "label" include { phase: %s }
  data_param { source: "%s" backend: LMDB batch_size: %d }
  transform_param { %s }
  annotated_data_param { %s } }
''' % (phase, path, batch, transform, extra), caffe.TRAIN if phase == 'TRAIN' else caffe.TEST)


def test_annotated_data_reads_images_and_boxes(lmdb):
    path, scenes = lmdb
    net = _layer(path, transform='mean_value: 10 scale: 0.5 resize_param { resize_mode: WARP height: 20 width: 30 }',
                 phase='TEST')
    net.forward()
    data, label = net.blobs['data'].data, net.blobs['label'].data
    assert data.shape == (2, 3, 20, 30) and label.shape == (1, 1, 4, 8)
    for i in range(2):
        image, boxes = scenes[i]
        expected = (cv2.resize(image, (30, 20)).astype(np.float32) - 10) * 0.5
        np.testing.assert_allclose(data[i], expected.transpose(2, 0, 1))
        for j, (lab, x0, y0, x1, y1, hard) in enumerate(boxes):
            np.testing.assert_allclose(label[0, 0, 2 * i + j], [i, lab, j, x0, y0, x1, y1, hard], rtol=1e-6)
    net.forward()                                               # the next two records
    assert net.blobs['label'].data[0, 0, 0, 3] == np.float32(scenes[2][1][0][1])


def test_mirror_moves_boxes_with_the_pixels(lmdb):
    path, scenes = lmdb
    net = _layer(path, batch=4, transform='mirror: true')
    seen = set()
    for _ in range(3):
        net.forward()
        data, label = net.blobs['data'].data, net.blobs['label'].data[0, 0]
        for row in label:
            item = int(row[0])
            x0, y0, x1, y1 = row[3:7] * [60, 40, 60, 40]
            inside = data[item, 0, int(round(y0)):int(round(y1)), int(round(x0)):int(round(x1))]
            assert inside.min() > 0                              # the box covers its rectangle
            original = [b for b in scenes[item][1] if b[0] == row[1]][0]
            seen.add(bool(abs(row[3] - original[1]) > 1e-6))
    assert seen == {True, False}                                 # some items mirrored, some not


def _anno(boxes):
    return {'label': np.array([b[0] for b in boxes]), 'instance': np.arange(len(boxes)),
            'difficult': np.zeros(len(boxes), bool), 'box': np.array([b[1:5] for b in boxes], np.float32)}


def test_expand_places_the_image_and_its_boxes_together():
    image, boxes = _scenes(1)[0]
    stream = rng.CaffeStream(1)
    new_h, new_w, top, left = annotated.plan_expand(caffe_pb2.ExpansionParameter(prob=1, max_expand_ratio=3),
                                                    40, 60, stream)
    canvas = annotated_image.expand(image, new_h, new_w, top, left, np.uint8(7))
    window = np.array([-left / 60, -top / 40, (new_w - left) / 60, (new_h - top) / 40], np.float32)
    moved = annotated_boxes.project(window, _anno(boxes))
    assert canvas.shape[0] > image.shape[0] and (canvas == 7).any()
    for box, label in zip(moved['box'], moved['label']):
        x0, y0, x1, y1 = np.round(box * [new_w, new_h, new_w, new_h]).astype(int)
        assert (canvas[y0:y1, x0:x1] == (255 if label == 1 else 128)).all()


def _sampler(trials, max_sample=None, scale=(0.3, 1.0), aspect=(0.5, 2.0), **constraint):
    sampler = caffe_pb2.BatchSampler(max_trials=trials)
    if max_sample is not None:
        sampler.max_sample = max_sample
    sampler.sampler.min_scale, sampler.sampler.max_scale = scale
    sampler.sampler.min_aspect_ratio, sampler.sampler.max_aspect_ratio = aspect
    for name, value in constraint.items():
        setattr(sampler.sample_constraint, name, value)
    return sampler


def test_samplers_drawn_as_arrays_match_trial_by_trial_draws():
    """The vectorised samplers take the same windows and leave the stream where one trial at a time does."""
    objects = np.array([[0.1, 0.1, 0.4, 0.5], [0.6, 0.6, 0.9, 0.9]], np.float32)
    samplers = [_sampler(1, 1, scale=(1, 1), aspect=(1, 1)), _sampler(50, 1, min_jaccard_overlap=0.5),
                _sampler(30, 3, max_jaccard_overlap=0.2), _sampler(20, None, min_sample_coverage=0.5),
                _sampler(40, 2, min_object_coverage=0.9), _sampler(10, 0), _sampler(25, 1, scale=(0.95, 1.0)),
                _sampler(50, None, scale=(1, 1), aspect=(1, 1))]       # redraws in every draw of a trial
    for seed in range(6):
        fast, slow = rng.CaffeStream(seed), rng.CaffeStream(seed)
        windows = annotated_boxes.generate_samples(objects, samplers, fast)
        expected = [w for s in samplers for w in annotated_boxes._sequential_trials(s, objects, slow)]
        np.testing.assert_array_equal(np.reshape(windows, (-1, 4)), np.reshape(expected, (-1, 4)))
        assert fast.words(1) == slow.words(1)
    assert len(windows) > 3


def test_a_rare_redraw_in_an_offset_is_followed(monkeypatch):
    """An offset's word whose value rounds up to the range's end: boost redraws it, the samplers go one
    trial at a time."""
    sequential = []
    original = annotated_boxes._sequential_trials
    monkeypatch.setattr(annotated_boxes, '_sequential_trials', lambda *a: sequential.append(1) or original(*a))
    objects = np.array([[0.1, 0.1, 0.4, 0.5]], np.float32)
    samplers = [_sampler(5, None, scale=(0.5, 0.5), aspect=(1, 1))]
    fast, slow = rng.CaffeStream(1), rng.CaffeStream(1)
    for stream in (fast, slow):
        stream.unread(np.array([7, 8, 0xffffffff], np.uint32))
    windows = annotated_boxes.generate_samples(objects, samplers, fast)
    np.testing.assert_array_equal(windows, original(samplers[0], objects, slow))
    assert sequential == [1] and fast.words(1) == slow.words(1)


def test_batch_samplers_keep_crops_that_meet_the_constraint():
    objects = np.array([[0.1, 0.1, 0.4, 0.5], [0.6, 0.6, 0.9, 0.9]], np.float32)
    whole = caffe_pb2.BatchSampler(max_sample=1, max_trials=1)
    windows = annotated_boxes.generate_samples(objects, [whole, _sampler(50, 1, min_jaccard_overlap=0.3)],
                                               rng.CaffeStream(2))
    assert len(windows) == 2                                     # the whole image, one window
    np.testing.assert_allclose(windows[0], [0, 0, 1, 1])
    assert max(annotated_boxes.jaccard(objects, windows[1])) >= 0.3
    # the fork's emit constraint: only boxes whose centre is in the window survive the crop
    emit = caffe_pb2.EmitConstraint(emit_type=caffe_pb2.EmitConstraint.CENTER)
    rect, window = annotated_boxes.crop_rect(np.array([0, 0, 0.5, 0.5], np.float32), 100, 100)
    kept = annotated_boxes.project(window, _anno([(1, 0.1, 0.1, 0.4, 0.5), (2, 0.6, 0.6, 0.9, 0.9)]), emit)
    assert rect == (0, 0, 50, 50) and list(kept['label']) == [1]
    np.testing.assert_allclose(kept['box'], [[0.2, 0.2, 0.8, 1.0]], rtol=1e-6)


def test_distortion_draws_in_the_forks_order_and_changes_pixels():
    image = np.random.default_rng(3).integers(0, 256, (20, 20, 3)).astype(np.uint8)
    param = caffe_pb2.DistortionParameter(brightness_prob=1, brightness_delta=32)
    steps = annotated.plan_distortion(param, rng.CaffeStream(4), rng.GlibcRand(1))
    out = annotated_image.distort(image, steps)
    shift = out.astype(int) - image
    unclipped = (image > 40) & (image < 215)
    assert len(np.unique(shift[unclipped])) == 1 and shift[unclipped][0] == np.rint(steps[0][1])
    param = caffe_pb2.DistortionParameter(hue_prob=1, hue_delta=18, saturation_prob=0.5, saturation_lower=0.5,
                                          saturation_upper=1.5, contrast_prob=1, contrast_lower=0.5,
                                          contrast_upper=1.5, random_order_prob=1)
    for seed in range(4):
        steps = annotated.plan_distortion(param, rng.CaffeStream(seed), rng.GlibcRand(seed + 1))
        u = rng.CaffeStream(seed).uniform
        first = u(1, 0, 1)[0] > 0.5             # the order: brightness, contrast, saturation, hue; or
        names = ['brightness', 'contrast', 'saturation', 'hue'] if first else \
            ['brightness', 'saturation', 'hue', 'contrast']     # brightness, saturation, hue, contrast
        probs = {'brightness': (0, 0, 0), 'contrast': (1, 0.5, 1.5), 'saturation': (0.5, 0.5, 1.5),
                 'hue': (1, -18, 18)}
        expected = []
        for name in names:
            prob, low, high = probs[name]
            if u(1, 0, 1)[0] < np.float32(prob):
                value = u(1, low, high)[0]
                if name != 'contrast' or abs(value - 1) > 1e-3:
                    expected.append((name, value))
        u(1, 0, 1)      # random_order_prob's draw (prob 1: the channels are reordered)
        order = [0, 1, 2]
        rng.GlibcRand(seed + 1).random_shuffle(order)
        assert steps == expected + [('order', order)]
        out = annotated_image.distort(image, steps)
        assert out.shape == image.shape and out.dtype == np.uint8 and (out != image).any()


def test_full_ssd_augmentation_gives_valid_labels(lmdb):
    path, _ = lmdb
    net = _layer(path, batch=4, transform='''mirror: true mean_value: 104 mean_value: 117 mean_value: 123
      resize_param { prob: 1 resize_mode: WARP height: 32 width: 32 interp_mode: LINEAR interp_mode: AREA }
      emit_constraint { emit_type: CENTER }
      distort_param { brightness_prob: 0.5 brightness_delta: 32 contrast_prob: 0.5 contrast_lower: 0.5
        contrast_upper: 1.5 hue_prob: 0.5 hue_delta: 18 saturation_prob: 0.5 saturation_lower: 0.5
        saturation_upper: 1.5 random_order_prob: 0.0 }
      expand_param { prob: 0.5 max_expand_ratio: 4.0 }''', extra='''
      batch_sampler { max_sample: 1 max_trials: 1 }
      batch_sampler { sampler { min_scale: 0.3 max_scale: 1.0 min_aspect_ratio: 0.5 max_aspect_ratio: 2.0 }
        sample_constraint { min_jaccard_overlap: 0.1 } max_sample: 1 max_trials: 50 }''')
    for _ in range(4):
        net.forward()
        assert net.blobs['data'].data.shape == (4, 3, 32, 32)
        label = net.blobs['label'].data[0, 0]
        valid = label[label[:, 0] >= 0]
        assert ((valid[:, 3:7] >= 0) & (valid[:, 3:7] <= 1)).all()
        assert (valid[:, 5] > valid[:, 3]).all() and (valid[:, 6] > valid[:, 4]).all()
        assert set(valid[:, 1]) <= {1, 2}


def test_noise_effects():
    image = np.random.default_rng(6).integers(0, 256, (30, 40, 3)).astype(np.uint8)
    noise = annotated_image.noise
    np.testing.assert_array_equal(noise(image, caffe_pb2.NoiseParameter(inverse=True)), 255 - image)
    out = noise(image, caffe_pb2.NoiseParameter(posterize=True))
    assert set(np.unique(out)) <= {32, 96, 160, 224}
    out = noise(image, caffe_pb2.NoiseParameter(decolorize=True))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    param = caffe_pb2.NoiseParameter(saltpepper=True, saltpepper_param={'fraction': 0.1, 'value': [7]})
    out = noise(image, param, (np.array([0, 29]), np.array([3, 39])))
    assert (out == 7).all(axis=2).sum() == 2 and (out[0, 3] == 7).all() and (out[29, 39] == 7).all()
    param = caffe_pb2.NoiseParameter(gauss_blur=True, hist_eq=True, clahe=True, jpeg=50, erode=True,
                                     convert_to_hsv=True)
    assert noise(image, param).shape == image.shape
    gray = image[..., :1].copy()
    assert noise(gray, caffe_pb2.NoiseParameter(jpeg=90)).shape == (30, 40, 3)      # decoded in color
    with pytest.raises(ValueError, match='noise_param.convert_to_hsv needs color'):
        noise(gray, caffe_pb2.NoiseParameter(convert_to_hsv=True))


def test_convert_to_lab_is_read_as_the_fork_reads_its_float_image():
    """The fork's Transform reads the float32 Lab image's bytes as 8-bit pixels."""
    image = np.random.default_rng(7).integers(0, 256, (6, 8, 3)).astype(np.uint8)
    lab = annotated_image.noise(image, caffe_pb2.NoiseParameter(convert_to_lab=True))
    assert lab.dtype == np.float32
    np.testing.assert_allclose(lab, cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_BGR2Lab), rtol=1e-6)
    rows, cols = slice(1, 5), slice(2, 7)
    got = annotated_image.read_as_fork(lab, 3, rows, cols, mirror=True)
    raw = lab[1:5].tobytes()
    row_bytes = 8 * 3 * 4
    expected = np.array([[raw[r * row_bytes + 2 * 12 + k] for k in range(5 * 3)] for r in range(4)], np.uint8)
    np.testing.assert_array_equal(got, expected.reshape(4, 5, 3)[:, ::-1])
    np.testing.assert_array_equal(annotated_image.read_as_fork(image, 3, rows, cols, False), image[rows, cols])


@pytest.mark.parametrize('shape', [(40, 80), (80, 40)])
def test_fit_large_size_and_pad_letterboxes_image_and_boxes(shape):
    image = np.zeros(shape + (3,), np.uint8)
    image[10:20, 5:25] = 255
    box = np.array([[5 / shape[1], 10 / shape[0], 25 / shape[1], 20 / shape[0]]], np.float32)
    param = caffe_pb2.ResizeParameter(resize_mode=caffe_pb2.ResizeParameter.FIT_LARGE_SIZE_AND_PAD,
                                      height=60, width=60, pad_value=[9])
    out = annotated_image.resize(image, param, cv2.INTER_LINEAR)
    assert out.shape == (60, 60, 3) and (out == 9).any()
    x0, y0, x1, y1 = annotated_boxes.resized_boxes(box, param, *shape)[0] * 60
    assert out[int(np.ceil(y0)):int(y1), int(np.ceil(x0)):int(x1)].min() >= 250     # inside: white
    bright = np.argwhere(out[..., 0] > 128)
    np.testing.assert_allclose([bright[:, 1].min(), bright[:, 0].min()], [x0, y0], atol=1.01)


@pytest.mark.parametrize('shape', [(40, 80), (80, 40)])
def test_fit_small_size_keeps_the_aspect_and_extrapolates_boxes(shape):
    image = np.zeros(shape + (3,), np.uint8)
    param = caffe_pb2.ResizeParameter(resize_mode=caffe_pb2.ResizeParameter.FIT_SMALL_SIZE, height=30, width=30)
    out = annotated_image.resize(image, param, cv2.INTER_NEAREST)
    assert out.shape == ((30, 60, 3) if shape[1] > shape[0] else (60, 30, 3))
    assert annotated_boxes.small_side_size(param, *shape) == out.shape[:2]
    box = np.array([[0.25, 0.5, 0.75, 1.0]], np.float32)
    np.testing.assert_allclose(annotated_boxes.resized_boxes(box, param, *shape), box, rtol=1e-6)
    param.height_scale, param.width_scale = 5, 10        # boxes in units of 10 x 5 pixels of the crop
    window = np.array([0, 0, 0.5, 1], np.float32)        # the left half of the resized image
    h, w = out.shape[:2]
    np.testing.assert_allclose(annotated_boxes.extrapolated_boxes(box, param, *shape, window),
                               box * [w / 2 / 10, h / 5, w / 2 / 10, h / 5], rtol=1e-6)


def test_fit_small_size_batches_follow_each_image(tmp_path):
    path = str(tmp_path / 'sizes')
    with DBWriter(path, 'lmdb') as db:
        for i, size in enumerate([(40, 80), (50, 20)]):
            db.put('%08d' % i, _record(np.full(size + (3,), 50 * i, np.uint8), [(1, 0.1, 0.1, 0.5, 0.5, False)]))
    net = _layer(path, batch=1, transform='resize_param { resize_mode: FIT_SMALL_SIZE height: 20 width: 20 }')
    shapes = []
    for _ in range(2):
        net.forward()
        shapes.append(net.blobs['data'].data.shape)
        np.testing.assert_allclose(net.blobs['label'].data[0, 0, 0, 3:7], [0.1, 0.1, 0.5, 0.5], rtol=1e-6)
    assert shapes == [(1, 3, 20, 40), (1, 3, 50, 20)]
    with pytest.raises(ValueError, match='FIT_SMALL_SIZE needs batch_size 1'):
        _layer(path, batch=2, transform='resize_param { resize_mode: FIT_SMALL_SIZE height: 20 width: 20 }')


def test_interp_mode_is_rolled_on_a_die_of_equal_faces():
    counts = np.zeros(3, int)
    stream = rng.CaffeStream(3)
    for _ in range(300):
        counts[annotated.roll_weighted_die(3, stream)] += 1
    assert counts.min() > 70
    value = rng.CaffeStream(5).uniform(1, 0, np.float32(3) * np.float32(1 / 3))[0]
    assert annotated.roll_weighted_die(3, rng.CaffeStream(5)) == int(value > np.float32(1 / 3)) + \
        int(value > np.float32(1 / 3) + np.float32(1 / 3))


def _main_words(seed, count):
    return [int(w) for w in rng.CaffeStream(seed).words(count)]


def test_a_seeded_run_draws_from_caffes_streams_in_the_forks_order(tmp_path):
    """Follow the draws by hand: Caffe's stream gives the reader thread's word, InitRand twice (the
    second seeds the transformer: mirror) and the prefetch thread's seed (expansion, samplers, pick)."""
    scenes = _scenes(2)
    path = str(tmp_path / 'follow')
    with DBWriter(path, 'lmdb') as db:
        for i, (image, boxes) in enumerate(scenes):
            db.put('%08d' % i, _record(image, boxes))
    caffe.set_random_seed(11)
    net = _layer(path, batch=2, transform='''mirror: true mean_value: 5
      resize_param { resize_mode: WARP height: 40 width: 60 }
      expand_param { prob: 0.8 max_expand_ratio: 2 }''', extra='''
      batch_sampler { max_sample: 1 max_trials: 1 }
      batch_sampler { sampler { min_scale: 0.6 max_scale: 0.6 } max_sample: 1 max_trials: 1 }''')
    _, _, transformer_seed, thread_seed = _main_words(11, 4)
    thread, transformer = rng.CaffeStream(thread_seed), rng.CaffeStream(transformer_seed)
    u = lambda a, b: thread.uniform(1, a, b)[0]     # noqa: E731
    seen = set()
    for step in range(2):
        net.forward()
        seen |= _follow_batch(scenes, net, u, thread, transformer)
    assert all({choice[k] for choice in seen} == {0, 1} for k in range(3))    # each way, at least once


def _follow_batch(scenes, net, u, thread, transformer):
    """Check one batch against the draws made here; (expanded, cropped, mirrored) of its items."""
    data, label = net.blobs['data'].data, net.blobs['label'].data[0, 0]
    seen = set()
    for item, (image, boxes) in enumerate(scenes):
        expanded = cropped = False
        anno = np.array([b[1:5] for b in boxes])
        if u(0, 1) <= np.float32(0.8):          # expansion: probability, ratio, top, left
            ratio = u(1, 2)
            height, width = int(np.float32(40) * ratio), int(np.float32(60) * ratio)
            top, left = int(np.floor(u(0, height - 40))), int(np.floor(u(0, width - 60)))
            image = annotated_image.expand(image, height, width, top, left, np.uint8(5))
            anno = (anno * [60, 40, 60, 40] + [left, top, left, top]) / [width, height, width, height]
            expanded = True
        u(1, 1), u(1, 1), u(0, 0), u(0, 0)      # the whole-image sampler's trial (boost redraws there)
        scale, ratio = u(0.6, 0.6), u(1, 1)
        x, y = u(0, 1 - scale), u(0, 1 - scale)
        if int(thread.words(1)[0]) % 2:         # the pick: the second window
            h, w = image.shape[:2]
            x0, y0 = int(np.float32(x) * w), int(np.float32(y) * h)
            image = image[y0:y0 + int(np.float32(y + scale) * h - np.float32(y) * h),
                          x0:x0 + int(np.float32(x + scale) * w - np.float32(x) * w)]
            anno = np.clip((anno - [x, y, x, y]) / scale, 0, 1)
            cropped = True
        mirror = int(transformer.words(1)[0]) % 2
        expected = cv2.resize(image, (60, 40)).astype(np.float32) - 5
        if mirror:
            expected = expected[:, ::-1]
            anno = np.stack([1 - anno[:, 2], anno[:, 1], 1 - anno[:, 0], anno[:, 3]], 1)
        np.testing.assert_array_equal(data[item], expected.transpose(2, 0, 1))
        rows = label[label[:, 0] == item]
        np.testing.assert_allclose(rows[:, 3:7], anno[(anno[:, 2] > anno[:, 0]) & (anno[:, 3] > anno[:, 1])],
                                   atol=2e-6)
        seen.add((expanded, cropped, mirror))
    return seen


def test_numpy_streams_still_run_the_layer(lmdb, monkeypatch):
    monkeypatch.setitem(rng._state, 'stream', None)       # both restored after the test
    monkeypatch.setitem(rng._state, 'kind', 'numpy')
    caffe.set_random_seed(4)
    net = _layer(lmdb[0], transform='mirror: true resize_param { height: 20 width: 30 interp_mode: AREA '
                 'interp_mode: CUBIC } expand_param { prob: 1 max_expand_ratio: 2 }',
                 extra='batch_sampler { sampler { min_scale: 0.5 } max_trials: 5 }')
    net.forward()
    assert net.blobs['data'].data.shape == (2, 3, 20, 30)
    assert net.layers[0].source.stream.kind == 'numpy'


@pytest.mark.parametrize('transform, match', [
    ('crop_h: 10 crop_w: 10', 'crop_h / crop_w in TRAIN need crop_size or mirror'),
    ('noise_param { saltpepper: true }', 'needs saltpepper_param.value'),
    ('expand_param { max_expand_ratio: 1 }', 'max_expand_ratio must be > 1'),
    ('distort_param { contrast_prob: 0.5 contrast_lower: 1.5 contrast_upper: 0.5 }', 'contrast_lower/upper'),
])
def test_invalid_settings_are_clear_errors(lmdb, transform, match):
    with pytest.raises(ValueError, match='AnnotatedData layer "data": .*' + match):
        net = _layer(lmdb[0], transform=transform)
        net.forward()


def test_ranks_of_a_data_parallel_run_share_the_records_round_robin(lmdb):
    """In TRAIN, rank r of N keeps record k when k % N == r, as Caffe 1.0's Data layer."""
    path, scenes = lmdb
    try:
        caffe.set_solver_count(2)
        caffe.set_solver_rank(1)
        net = _layer(path, batch=2, transform='resize_param { resize_mode: WARP height: 40 width: 60 }')
        net.forward()
    finally:
        caffe.set_solver_count(1)
        caffe.set_solver_rank(0)
    label = net.blobs['label'].data[0, 0]
    assert label[0, 3] == np.float32(scenes[1][1][0][1])        # records 1 and 3
    assert label[2, 3] == np.float32(scenes[3][1][0][1])


def _raw_record(image, boxes):
    """An AnnotatedDatum holding raw CHW bytes."""
    record = caffe_pb2.AnnotatedDatum.FromString(_record(image, boxes))
    record.datum.encoded = False
    record.datum.data = np.ascontiguousarray(image.transpose(2, 0, 1)).tobytes()
    record.datum.channels, record.datum.height, record.datum.width = image.shape[2], *image.shape[:2]
    return record.SerializeToString()


def test_raw_records_take_the_forks_raw_path(tmp_path):
    """Not distorted, not resized (a resize to another size fails the fork's shape check)."""
    image, boxes = _scenes(1)[0]
    path = str(tmp_path / 'raw')
    with DBWriter(path, 'lmdb') as db:
        db.put('0', _raw_record(image, boxes))
    net = _layer(path, batch=1, transform='distort_param { brightness_prob: 1 brightness_delta: 50 } '
                 'resize_param { height: 40 width: 60 }')
    net.forward()
    np.testing.assert_array_equal(net.blobs['data'].data[0], image.transpose(2, 0, 1))
    np.testing.assert_allclose(net.blobs['label'].data[0, 0, :, 3:7], [b[1:5] for b in boxes], rtol=1e-6)
    net = _layer(path, batch=1, transform='resize_param { height: 20 width: 30 }')
    with pytest.raises(ValueError, match='transformed image is 3x40x60, the batch is 3x20x30'):
        net.forward()


def test_mean_file_is_subtracted_where_the_fork_subtracts_it(tmp_path):
    """Encoded records: at the output pixel (after mirroring); raw records: under the source pixel
    (cropped and mirrored with it); an expansion canvas is filled from it."""
    from caffe_py import formats
    image, boxes = _scenes(1)[0]
    mean = np.random.default_rng(8).uniform(0, 200, (1, 3, 40, 60)).astype(np.float32)
    formats.write_binaryproto(str(tmp_path / 'mean.binaryproto'), mean)
    mean_file = 'mean_file: "%s" ' % (tmp_path / 'mean.binaryproto')
    for name, put in (('png', _record), ('raw', _raw_record)):
        path = str(tmp_path / name)
        with DBWriter(path, 'lmdb') as db:
            db.put('0', put(image, boxes))
        net = _layer(path, batch=8, transform=mean_file + 'mirror: true scale: 0.5')
        net.forward()
        flipped = [k for k in range(8) if net.blobs['label'].data[0, 0, 2 * k, 3] != np.float32(boxes[0][1])]
        assert 0 < len(flipped) < 8
        for k in range(8):
            pixels = image.transpose(2, 0, 1).astype(np.float32)
            if name == 'raw':
                expected = pixels - mean[0]
                expected = expected[:, :, ::-1] if k in flipped else expected
            else:
                expected = (pixels[:, :, ::-1] if k in flipped else pixels) - mean[0]
            np.testing.assert_allclose(net.blobs['data'].data[k], expected * 0.5, rtol=1e-6, atol=1e-5)
    fill = (mean[0].transpose(1, 2, 0).astype(np.int64) & 0xff).astype(np.uint8)    # static_cast<char>
    canvas = annotated_image.expand(image[:20, :30], 40, 60, 5, 7, fill)
    np.testing.assert_array_equal(canvas[5:25, 7:37], image[:20, :30])
    np.testing.assert_array_equal(canvas[:5], np.floor(mean[0, :, :5].transpose(1, 2, 0)))
    net = _layer(str(tmp_path / 'png'), transform=mean_file + 'expand_param { prob: 1 max_expand_ratio: 2 }')
    with pytest.raises(ValueError, match=r'expanded to \d+x\d+, which the mean file \(40x60\) must match'):
        net.forward()


@pytest.mark.parametrize('mode', ['CONSTANT', 'MIRRORED', 'REPEAT_NEAREST'])
def test_fit_large_size_and_pad_modes(mode):
    image = np.random.default_rng(9).integers(0, 256, (20, 40, 3)).astype(np.uint8)
    param = caffe_pb2.ResizeParameter(resize_mode=caffe_pb2.ResizeParameter.FIT_LARGE_SIZE_AND_PAD, height=30,
                                      width=40, pad_mode=getattr(caffe_pb2.ResizeParameter, mode), pad_value=[1, 2, 3])
    out = annotated_image.resize(image, param, cv2.INTER_NEAREST)
    assert out.shape == (30, 40, 3)
    np.testing.assert_array_equal(out[5:25], image)                # 20 rows centred: 5 above, 5 below
    above = {'CONSTANT': np.broadcast_to([1, 2, 3], (5, 40, 3)), 'MIRRORED': image[5:0:-1],
             'REPEAT_NEAREST': np.broadcast_to(image[:1], (5, 40, 3))}[mode]
    np.testing.assert_array_equal(out[:5], above)
    with pytest.raises(ValueError, match='Specify either 1 pad_value or as many as channels: 3'):
        annotated_image.resize(image, caffe_pb2.ResizeParameter(
            resize_mode=caffe_pb2.ResizeParameter.FIT_LARGE_SIZE_AND_PAD, height=30, width=40, pad_value=[1, 2]),
            cv2.INTER_NEAREST)
