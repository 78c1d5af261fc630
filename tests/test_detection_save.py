"""DetectionOutput's save_output_param files (VOC, COCO, ILSVRC) and visualize, as the SSD fork
(weiliu89/caffe, branch ssd) writes and draws them: hand cases, the tiny SSD over several batches
against the files computed here from its DetectionOutput rows, the num_test_image round, errors,
GPU mode on the CuPy stand-in, and visualize's video."""
import json
import os

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

import caffe_py as caffe
import fakecupy
from caffe_py.layer import LayerError
from caffe_py.net import NetError
from caffe_py.proto import caffe_pb2
from conftest import ROOT
from device_cases import cpu_mode, net_from_text
from test_detection_layers import CONF, PRIORS, _inputs, _prior_blob

TINY = os.path.join(ROOT, 'models', 'tiny_ssd')
WEIGHTS = os.path.join(TINY, 'tiny_ssd.caffemodel')
f32 = np.float32
LABEL_MAP = ('item { name: "none_of_the_above" label: 0 display_name: "background" }\n'
             'item { name: "17" label: 1 display_name: "circle" }\n'
             'item { name: "square" label: 2 display_name: "square" }\n')


def _files(tmp_path, names_sizes):
    (tmp_path / 'labelmap.prototxt').write_text(LABEL_MAP)
    (tmp_path / 'name_size.txt').write_text(''.join('%s %d %d\n' % row for row in names_sizes))
    return str(tmp_path / 'labelmap.prototxt'), str(tmp_path / 'name_size.txt')


def _save_param(tmp_path, fmt, extra='', names_sizes=(('img_a', 100, 200), ('img_b', 375, 500))):
    label_map, name_size = _files(tmp_path, names_sizes)
    return ('save_output_param { output_directory: "%s" output_name_prefix: "comp4_" output_format: "%s" '
            'label_map_file: "%s" name_size_file: "%s" %s }' % (tmp_path / 'out', fmt, label_map, name_size, extra))


def _hand_net(save, num=2):
    text = ('layer { name: "d" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "priors" top: "d" '
            'detection_output_param { num_classes: 3 confidence_threshold: 0.3 code_type: CORNER '
            'nms_param { nms_threshold: 0.5 } %s } }' % save)
    net = net_from_text(_inputs(loc=(num, PRIORS.size), conf=(num, CONF.size), priors=(1, 2, PRIORS.size)) + text)
    net.blobs['loc'].data[...] = 0
    net.blobs['conf'].data[...] = CONF
    net.blobs['priors'].data[...] = _prior_blob()
    return net


def _read(tmp_path, name):
    return (tmp_path / 'out' / name).read_text()


# -- by hand: the four detections of each image (CONF, PRIORS) on a 100x200 and a 375x500 image ---

def test_voc_files_by_hand(tmp_path):
    _hand_net(_save_param(tmp_path, 'VOC')).forward()
    # corners and sizes rounded to 1/100 and cut to integers: 187.5 -> 187, ymax = 187 + 187
    assert _read(tmp_path, 'comp4_17.txt') == ('img_a 0.9 0 0 100 50\nimg_a 0.7 0 50 100 100\n'
                                               'img_b 0.9 0 0 250 187\nimg_b 0.7 0 187 250 374\n')
    assert _read(tmp_path, 'comp4_square.txt') == ('img_a 0.95 100 50 200 100\nimg_a 0.6 10 0 110 50\n'
                                                   'img_b 0.95 250 187 500 374\nimg_b 0.6 25 0 275 187\n')
    assert sorted(os.listdir(tmp_path / 'out')) == ['comp4_17.txt', 'comp4_square.txt']


def test_ilsvrc_file_by_hand(tmp_path):
    _hand_net(_save_param(tmp_path, 'ILSVRC')).forward()
    assert _read(tmp_path, 'comp4_.txt').splitlines()[2:6] == [
        'img_a 2 0.95 100 50 200 100', 'img_a 2 0.6 10 0 110 50', 'img_b 1 0.9 0 0 250 187',
        'img_b 1 0.7 0 187 250 374']


def test_coco_json_by_hand(tmp_path):
    _hand_net(_save_param(tmp_path, 'COCO')).forward()
    text = _read(tmp_path, 'comp4_.json')
    # boost's write_json layout, the fork's cut from the first "[" and its own closing "]", numbers
    # (and numeric names) unquoted by its regex, floats with 9 significant digits
    first = ('[\n        {\n            "image_id": "img_a",\n            "category_id": 17,\n'
             '            "bbox": [\n                0,\n                0,\n                100,\n'
             '                50\n            ],\n            "score": 0.899999976\n        },\n')
    assert text.startswith(first)
    assert text.endswith('            "score": 0.600000024\n        }\n    \n]\n')
    found = json.loads(text)
    assert len(found) == 8
    assert found[7] == {'image_id': 'img_b', 'category_id': 'square', 'bbox': [25, 0, 250, 187.5],
                        'score': 0.600000024}


def test_coco_names_are_escaped_as_boost_does():
    from caffe_py.detection_save import _json_escape
    assert _json_escape('val/img"1\\\u00e9\x01\t') == 'val\\/img\\"1\\\\\u00e9\\u0001\\t'


def test_fit_large_size_and_pad_maps_boxes_back_to_the_original_image(tmp_path):
    """resize_param FIT_LARGE_SIZE_AND_PAD: a 100x200 image letterboxed into 300x300 fills rows
    75..225; a box over the image's part of the letterbox covers the whole original image."""
    from caffe_py.detection_save import output_boxes
    from caffe_py.proto import caffe_pb2
    resize = caffe_pb2.ResizeParameter(resize_mode=caffe_pb2.ResizeParameter.FIT_LARGE_SIZE_AND_PAD,
                                       height=300, width=300)
    boxes = np.array([[0, .25, 1, .75], [.5, .5, 1, .625], [0, 0, 1, .2]], f32)
    np.testing.assert_allclose(output_boxes(boxes, 100, 200, resize),
                               [[0, 0, 200, 100], [100, 50, 200, 75], [0, 0, 200, 20]], atol=1e-4)
    # WARP (and no resize_param): clipped to the image, then scaled
    np.testing.assert_allclose(output_boxes(np.array([[-.1, .5, 1.2, 1]], f32), 100, 200, None),
                               [[0, 50, 200, 100]])


# -- the tiny SSD over several batches ---------------------------------------------------------

NAMES = [('101', 300, 300), ('102', 375, 500), ('103', 480, 640), ('104', 333, 250), ('105', 1000, 1500)]


def _tiny_net_text(tmp_path, save):
    with open(os.path.join(TINY, 'test_lmdb.prototxt')) as f:
        text = f.read()
    text = text.replace('examples/ssd_detect/scenes_test_lmdb', str(tmp_path / 'lmdb')).replace(
        'batch_size: 8', 'batch_size: 2')
    assert text.count('confidence_threshold: 0.01 }') == 1
    return text.replace('confidence_threshold: 0.01 }', 'confidence_threshold: 0.01 %s }' % save)


def _tiny_net(text):
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TEST, weights=WEIGHTS)


def _tiny_rows(text, batches):
    """Each batch's DetectionOutput rows."""
    net = _tiny_net(text)
    rows = []
    for _ in range(batches):
        net.forward()
        rows.append(net.blobs['detection_out'].data[0, 0].copy())
    return rows


def _expected(rows_per_batch, names, start, count, batch=2):
    """(image, label, score, [x, y, w, h] as the fork rounds them) of the images start..start+count-1
    seen over the batches, computed from the rows and name_size sizes."""
    out = []
    for seen, (b, i) in enumerate((b, i) for b in range(len(rows_per_batch)) for i in range(batch)):
        if not start <= seen < start + count:
            continue
        name, height, width = names[seen - start]
        for row in rows_per_batch[b]:
            if row[0] != i or row[1] == -1:
                continue
            box = np.clip(row[3:7].astype(f32), 0, 1) * np.array([width, height, width, height], f32)
            corner = box[:2] * f32(100)
            size = (box[2:] - box[:2]) * f32(100)
            values = [np.floor(np.float64(v) + 0.5) / 100 for v in list(corner) + list(size)]
            out.append((name, int(row[1]), f32(row[2]), [float(f32(v)) for v in values]))
    return out


def _voc_lines(expected, label):
    return ''.join('%s %g %d %d %d %d\n' % (name, score, int(b[0]), int(b[1]), int(b[0]) + int(b[2]),
                                             int(b[1]) + int(b[3]))
                   for name, lab, score, b in expected if lab == label)


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    from test_ssd_model import _module
    make = _module(os.path.join(TINY, 'make_tiny_ssd.py'), 'make_tiny_ssd')
    path = tmp_path_factory.mktemp('scenes')
    make.write_lmdb(str(path / 'lmdb'), 6, seed=7)
    return path


def _setup(tmp_path, scenes, fmt, extra=''):
    os.symlink(scenes / 'lmdb', tmp_path / 'lmdb')
    return _tiny_net_text(tmp_path, _save_param(tmp_path, fmt, extra, NAMES))


def test_tiny_ssd_voc_files_over_batches(tmp_path, scenes):
    """Batches of 2, num_test_image 5: the files hold images 1-5 (the round ends inside the third
    batch); the sixth image starts a new round, which is not written."""
    text = _setup(tmp_path, scenes, 'VOC', 'num_test_image: 5')
    rows = _tiny_rows(text, 3)
    expected = _expected(rows, NAMES, 0, 5)
    assert {name for name, *_ in expected} >= {'101', '102', '105'}
    assert _read(tmp_path, 'comp4_17.txt') == _voc_lines(expected, 1)
    assert _read(tmp_path, 'comp4_square.txt') == _voc_lines(expected, 2)


def test_tiny_ssd_coco_and_ilsvrc_files_over_batches(tmp_path, scenes):
    text = _setup(tmp_path, scenes, 'COCO')
    rows = _tiny_rows(text, 3)                   # 6 images: one round of 5 (all the names), one started
    expected = _expected(rows, NAMES, 0, 5)
    found = json.loads(_read(tmp_path, 'comp4_.json'))
    assert [(d['image_id'], d['category_id']) for d in found] == \
        [(int(name), {1: 17, 2: 'square'}[label]) for name, label, *_ in expected]
    np.testing.assert_allclose([d['bbox'] for d in found], [b for *_, b in expected], rtol=1e-7)
    np.testing.assert_allclose([d['score'] for d in found], [s for _, _, s, _ in expected], rtol=1e-7)

    ilsvrc = tmp_path / 'ilsvrc'
    ilsvrc.mkdir()
    text = _setup(ilsvrc, scenes, 'ILSVRC')
    _tiny_rows(text, 3)
    lines = _read(ilsvrc, 'comp4_.txt').splitlines()
    assert lines == ['%s %d %g %d %d %d %d' % (name, label, score, int(b[0]), int(b[1]), int(b[0]) + int(b[2]),
                                               int(b[1]) + int(b[3])) for name, label, score, b in expected]


def test_num_test_image_rounds_start_over_with_the_first_name(tmp_path, scenes):
    """num_test_image 3, batches of 2: nothing after the first batch; images 1-3 after the second;
    images 4-6 (named as the first three) after the third, replacing them."""
    net = _tiny_net(_setup(tmp_path, scenes, 'ILSVRC', 'num_test_image: 3'))
    rows = []
    for k in range(3):
        net.forward()
        rows.append(net.blobs['detection_out'].data[0, 0].copy())
        if k == 0:
            assert not (tmp_path / 'out' / 'comp4_.txt').exists()
        if k == 1:
            first = _read(tmp_path, 'comp4_.txt')
    expected = [_expected(rows, NAMES, start, 3) for start in (0, 3)]
    assert [line.split()[0] for line in first.splitlines()] == [name for name, *_ in expected[0]]
    second = _read(tmp_path, 'comp4_.txt').splitlines()
    assert [line.split()[1:3] for line in second] == [[str(label), '%g' % score] for _, label, score, _ in expected[1]]
    assert second != first.splitlines()


def test_caffe_py_test_writes_voc_files(tmp_path, scenes):
    """The README's command: `caffe-py test` over a test net with save_output_param."""
    from caffe_py.tools import cli
    text = _setup(tmp_path, scenes, 'VOC', 'num_test_image: 4')
    (tmp_path / 'test.prototxt').write_text(text)
    assert cli.main(['test', '-model', str(tmp_path / 'test.prototxt'), '-weights', WEIGHTS,
                     '-iterations', '2']) == 0
    expected = _expected(_tiny_rows(text, 2), NAMES, 0, 4)
    assert _read(tmp_path, 'comp4_square.txt') == _voc_lines(expected, 2)


@pytest.mark.skipif(fakecupy.compiler() is None, reason='the fake device emulates kernels with g++, not installed')
def test_gpu_mode_on_the_stand_in_writes_the_same_files(tmp_path, scenes):
    """In GPU mode the files are what its rows say, and the CPU's up to the devices' float32 rounding."""
    written = []
    for device in (cpu_mode, fakecupy.fake_gpu):
        where = tmp_path / device.__name__
        where.mkdir()
        with device():
            rows = _tiny_rows(_setup(where, scenes, 'VOC', 'num_test_image: 4'), 2)
        files = [_read(where, name) for name in ('comp4_17.txt', 'comp4_square.txt')]
        expected = _expected(rows, NAMES, 0, 4)
        assert files == [_voc_lines(expected, 1), _voc_lines(expected, 2)]
        written.append([line.split() for text in files for line in text.splitlines()])
    cpu, gpu = written
    assert len(cpu) == len(gpu) > 10
    assert [row[0] for row in cpu] == [row[0] for row in gpu]
    gpu_rows, cpu_rows = (np.array([row[1:] for row in rows], float) for rows in (gpu, cpu))
    np.testing.assert_allclose(gpu_rows[:, 0], cpu_rows[:, 0], rtol=1e-5, atol=1e-7)   # scores
    np.testing.assert_allclose(gpu_rows[:, 1:], cpu_rows[:, 1:], atol=1)   # whole pixels, float32 rounding


# -- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize('case, message', [
    ('label_map', 'Failed to read label map file: file not found: {tmp}/missing.prototxt'),
    ('name_size', 'Failed to open name size file: {tmp}/missing.txt'),
    ('name_size_line', 'name size file {tmp}/bad.txt line 2'),
    ('num_test_image', 'num_test_image 3 must be in 1..2'),
    ('directory', 'cannot create {tmp}/file/out (detection_output_param.save_output_param.output_directory)'),
    ('format', 'output_format "PASCAL" is not one of VOC, COCO, ILSVRC'),
    ('label', 'Cannot find label: 2 in the label map {tmp}/labelmap.prototxt'),
    ('resize', 'save_output_param.resize_param needs height and width (got 0 x 300)'),
])
def test_errors_name_the_path_and_setting(tmp_path, case, message):
    save = _save_param(tmp_path, 'PASCAL' if case == 'format' else 'VOC',
                       {'num_test_image': 'num_test_image: 3',
                        'resize': 'resize_param { resize_mode: FIT_LARGE_SIZE_AND_PAD width: 300 }'}.get(case, ''))
    (tmp_path / 'file').write_text('')
    (tmp_path / 'bad.txt').write_text('a 1 2\nb 3\n')
    replace = {'label_map': ('labelmap.prototxt', 'missing.prototxt'), 'name_size': ('name_size.txt', 'missing.txt'),
               'name_size_line': ('name_size.txt', 'bad.txt'), 'directory': ('/out"', '/file/out"')}
    if case in replace:
        save = save.replace(*replace[case])
    if case == 'label':
        (tmp_path / 'labelmap.prototxt').write_text(LABEL_MAP.rsplit('item', 1)[0])
    with pytest.raises((LayerError, NetError)) as info:
        _hand_net(save).forward()
    text = str(info.value)
    assert message.format(tmp=tmp_path) in text and '\n' not in text, text
    assert text.startswith('DetectionOutput layer "d": ')


def test_files_are_replaced_whole(tmp_path, monkeypatch):
    """A failure while writing leaves the previous round's file as it was, and no temporary file."""
    net = _hand_net(_save_param(tmp_path, 'ILSVRC'))
    net.forward()
    before = _read(tmp_path, 'comp4_.txt')
    import builtins
    real_open = builtins.open

    def failing_open(path, mode='r', *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if 'w' in mode and '.comp4_' in str(path):
            handle.write('half')
            handle.close()
            raise OSError(28, 'No space left on device')
        return handle
    monkeypatch.setattr(builtins, 'open', failing_open)
    net.blobs['conf'].data[...] = CONF * 0.5
    with pytest.raises(LayerError, match='cannot write .*comp4_.txt .*No space left on device'):
        net.forward()
    monkeypatch.undo()
    assert _read(tmp_path, 'comp4_.txt') == before
    assert os.listdir(tmp_path / 'out') == ['comp4_.txt']


def test_without_label_map_or_name_size_file_nothing_is_written(tmp_path):
    label_map, _ = _files(tmp_path, ())
    net = _hand_net('save_output_param { output_directory: "%s" output_format: "VOC" label_map_file: "%s" }'
                    % (tmp_path / 'out', label_map))
    net.forward()
    assert os.listdir(tmp_path / 'out') == []


# -- visualize -----------------------------------------------------------------------------------

def test_colors_are_the_forks():
    """GetColors: cv::RNG(12345) hues, saturation 0.3, value 0.99, handed to OpenCV as (r, g, b)."""
    from caffe_py.detection_visualize import _cv_rng_floats, colors
    state = 12345 * 4164903690                                    # the first multiply-with-carry step
    assert _cv_rng_floats(12345, 1)[0] == f32(state & 0xFFFFFFFF) * f32(2.3283064365386963e-10)
    palette = np.array(colors(6))
    assert palette.shape == (6, 3)
    np.testing.assert_allclose(palette.max(1), 0.99 * 255, rtol=1e-6)
    np.testing.assert_allclose(palette.min(1), 0.99 * 0.7 * 255, rtol=1e-6)
    assert colors(3) == colors(6)[:3]


def test_draw_puts_boxes_and_labels_on_the_images():
    from caffe_py.detection_visualize import colors, draw
    images = [np.zeros((200, 300, 3), np.uint8) for _ in range(2)]
    rows = np.array([[1, 2, .9, .1, .5, .5, .9], [1, 1, .3, .6, .1, .9, .4], [0, -1, -1, -1, -1, -1, -1]])
    palette = colors(3)
    draw(images, rows, 0.5, palette, {2: 'square'}, 12.5)
    color = np.rint(palette[2]).astype(np.uint8)
    drawn = images[1]
    np.testing.assert_array_equal(drawn[130, 30], color)                # left edge of box (30, 100)-(150, 180)
    np.testing.assert_array_equal(drawn[60, 210], 0)                    # the box under the threshold is not drawn
    assert (drawn[5:20, :60] == 255).any()                             # the FPS tab, white, at the top left
    assert (images[0][40:, :] == 0).all()                              # image 0 has only its FPS tab


def test_visualize_records_save_file_without_a_display(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv('DISPLAY', raising=False)
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    label_map, _ = _files(tmp_path, ())
    video = tmp_path / 'detections.avi'
    with open(os.path.join(TINY, 'deploy.prototxt')) as f:
        text = f.read()
    text = text.replace('bottom: "mbox_priorbox" top: "detection_out"',
                        'bottom: "mbox_priorbox" bottom: "data" top: "detection_out" '
                        'transform_param { mean_value: 127.5 scale: 0.007843 }')
    text = text.replace('confidence_threshold: 0.25 }', 'confidence_threshold: 0.25 visualize: true '
                        'visualize_threshold: 0.5 save_file: "%s" save_output_param { label_map_file: "%s" } }'
                        % (video, label_map))
    net = _tiny_net(text)
    scene = cv2.imread(os.path.join(ROOT, 'examples', 'ssd_detect', 'scene.jpg'))
    net.blobs['data'].data[...] = ((scene.astype(f32) - 127.5) * f32(0.007843)).transpose(2, 0, 1)
    for _ in range(3):
        net.forward()
    net.close()
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 3 and frames[0].shape == (300, 300, 3)
    assert np.abs(frames[0].astype(int) - scene).mean() > 1            # boxes drawn over the scene
    warnings = [r for r in caplog.records if 'no display' in r.getMessage()]
    assert len(warnings) == 1
    small = text.replace('scale: 0.007843 }', 'scale: 0.007843 resize_param { resize_mode: FIT_SMALL_SIZE } }')
    with pytest.raises(NetError, match='resize_mode FIT_SMALL_SIZE is not supported by caffe-py for visualize'):
        _tiny_net(small)
