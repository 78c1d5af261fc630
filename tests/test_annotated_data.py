"""SSD's AnnotatedData layer and its augmentations (weiliu89/caffe) on generated LMDBs."""
import cv2
import numpy as np
import pytest

import caffe_py as caffe
from caffe_py.data import annotated
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


def test_expand_places_the_image_and_its_boxes_together():
    rng = np.random.default_rng(1)
    image, boxes = _scenes(1)[0]
    anno = {'label': np.array([1, 2]), 'instance': np.array([0, 1]), 'difficult': np.zeros(2, bool),
            'box': np.array([b[1:5] for b in boxes], np.float32)}
    param = caffe_pb2.ExpansionParameter(prob=1, max_expand_ratio=3)
    canvas, moved = annotated.expand(image, anno, param, [7, 7, 7], rng)
    assert canvas.shape[0] > image.shape[0] and (canvas == 7).any()
    h, w = canvas.shape[:2]
    for box, label in zip(moved['box'], moved['label']):
        x0, y0, x1, y1 = np.round(box * [w, h, w, h]).astype(int)
        assert (canvas[y0:y1, x0:x1] == (255 if label == 1 else 128)).all()


def test_batch_samplers_keep_crops_that_meet_the_constraint():
    rng = np.random.default_rng(2)
    boxes = np.array([[0.1, 0.1, 0.4, 0.5], [0.6, 0.6, 0.9, 0.9]], np.float32)
    anno = {'label': np.array([1, 2]), 'instance': np.arange(2), 'difficult': np.zeros(2, bool), 'box': boxes}
    sampler = caffe_pb2.BatchSampler(max_sample=1, max_trials=50)
    sampler.sampler.min_scale, sampler.sampler.max_scale = 0.3, 1.0
    sampler.sampler.min_aspect_ratio, sampler.sampler.max_aspect_ratio = 0.5, 2.0
    sampler.sample_constraint.min_jaccard_overlap = 0.3
    windows = annotated.generate_samples(anno, [caffe_pb2.BatchSampler(max_sample=1, max_trials=1), sampler], rng)
    assert len(windows) == 2                                     # the whole image, one window
    np.testing.assert_allclose(windows[0], [0, 0, 1, 1])
    assert max(annotated._jaccard(boxes, windows[1])) >= 0.3
    # the fork's emit constraint: only boxes whose centre is in the window survive the crop
    image = np.zeros((100, 100, 3), np.uint8)
    emit = caffe_pb2.EmitConstraint(emit_type=caffe_pb2.EmitConstraint.CENTER)
    cropped, kept = annotated.crop(image, anno, np.array([0, 0, 0.5, 0.5], np.float32), emit)
    assert cropped.shape == (50, 50, 3) and list(kept['label']) == [1]
    np.testing.assert_allclose(kept['box'], [[0.2, 0.2, 0.8, 1.0]], rtol=1e-6)


def test_distortion_changes_pixels_within_bounds():
    image = np.random.default_rng(3).integers(0, 256, (20, 20, 3)).astype(np.uint8)
    param = caffe_pb2.DistortionParameter(brightness_prob=1, brightness_delta=32)
    out = annotated.distort(image, param, np.random.default_rng(4))
    shift = out.astype(int) - image
    unclipped = (image > 40) & (image < 215)
    assert len(np.unique(shift[unclipped])) == 1 and shift[unclipped][0] != 0
    param = caffe_pb2.DistortionParameter(hue_prob=1, hue_delta=18, saturation_prob=1, saturation_lower=0.5,
                                          saturation_upper=1.5, contrast_prob=1, contrast_lower=0.5,
                                          contrast_upper=1.5, random_order_prob=1)
    out = annotated.distort(image, param, np.random.default_rng(5))
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
    rng = np.random.default_rng(0)
    out = annotated.noise(image, caffe_pb2.NoiseParameter(inverse=True), rng)
    np.testing.assert_array_equal(out, 255 - image)
    out = annotated.noise(image, caffe_pb2.NoiseParameter(posterize=True), rng)
    assert set(np.unique(out)) <= {32, 96, 160, 224}
    out = annotated.noise(image, caffe_pb2.NoiseParameter(decolorize=True), rng)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    param = caffe_pb2.NoiseParameter(saltpepper=True, saltpepper_param={'fraction': 0.1, 'value': [7]})
    out = annotated.noise(image, param, rng)
    assert 50 <= (out == 7).all(axis=2).sum() <= 120                 # 120 draws, some repeated
    param = caffe_pb2.NoiseParameter(gauss_blur=True, hist_eq=True, clahe=True, jpeg=50, erode=True,
                                     convert_to_hsv=True)
    assert annotated.noise(image, param, rng).shape == image.shape


def test_unsupported_option_is_a_clear_error(lmdb):
    net = _layer(lmdb[0], transform='noise_param { convert_to_lab: true }')
    with pytest.raises(ValueError, match='AnnotatedData layer "data": noise_param.convert_to_lab is not supported'):
        net.forward()


@pytest.mark.parametrize('shape', [(40, 80), (80, 40)])
def test_fit_large_size_and_pad_letterboxes_image_and_boxes(shape):
    image = np.zeros(shape + (3,), np.uint8)
    image[10:20, 5:25] = 255
    anno = {'label': np.array([1]), 'instance': np.array([0]), 'difficult': np.zeros(1, bool),
            'box': np.array([[5 / shape[1], 10 / shape[0], 25 / shape[1], 20 / shape[0]]], np.float32)}
    param = caffe_pb2.ResizeParameter(resize_mode=caffe_pb2.ResizeParameter.FIT_LARGE_SIZE_AND_PAD,
                                      height=60, width=60, pad_value=[9])
    out, moved = annotated.resize(image, anno, param, np.random.default_rng(0))
    assert out.shape == (60, 60, 3) and (out == 9).any()
    x0, y0, x1, y1 = moved['box'][0] * 60
    assert out[int(np.ceil(y0)):int(y1), int(np.ceil(x0)):int(x1)].min() >= 250     # inside: white
    bright = np.argwhere(out[..., 0] > 128)
    np.testing.assert_allclose([bright[:, 1].min(), bright[:, 0].min()], [x0, y0], atol=1.01)


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
