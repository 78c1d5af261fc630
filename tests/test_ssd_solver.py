"""SSD's solver (weiliu89/caffe, branch ssd) unchanged: its fields parse, and eval_type "detection"
logs the mean average precision of DetectionEvaluate's rows as the fork's Solver::TestDetection does."""
import re

import numpy as np
import pytest

import caffe_py as caffe
from caffe_py import detection_eval
from caffe_py.data.db import DBWriter
from caffe_py.proto import caffe_pb2
from caffe_py.solvers import SolverError, get_solver
from test_annotated_data import _record

SIZE = 48
NET = '''name: "mini_ssd"
layer { name: "data" type: "AnnotatedData" top: "data" top: "label" include { phase: %(phase)s }
  data_param { source: "%(source)s" backend: LMDB batch_size: 2 }
  transform_param { mean_value: 127.5 scale: 0.007843
    resize_param { prob: 1 resize_mode: WARP height: 48 width: 48 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "loc" type: "Convolution" bottom: "conv2" top: "loc"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "mbox_loc" type: "Flatten" bottom: "loc_perm" top: "mbox_loc" flatten_param { axis: 1 } }
layer { name: "conf" type: "Convolution" bottom: "conv2" top: "conf"
  convolution_param { num_output: 12 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "mbox_conf" type: "Flatten" bottom: "conf_perm" top: "mbox_conf" flatten_param { axis: 1 } }
layer { name: "mbox_priorbox" type: "PriorBox" bottom: "conv2" bottom: "data" top: "mbox_priorbox"
  prior_box_param { min_size: 10 max_size: 20 aspect_ratio: 2 clip: false
    variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "mbox_loc" bottom: "mbox_conf" bottom: "mbox_priorbox"
  bottom: "label" top: "mbox_loss" include { phase: TRAIN }
  propagate_down: true propagate_down: true propagate_down: false propagate_down: false
  multibox_loss_param { num_classes: 3 share_location: true match_type: PER_PREDICTION overlap_threshold: 0.5
    background_label_id: 0 neg_pos_ratio: 3 neg_overlap: 0.5 code_type: CENTER_SIZE } }
layer { name: "conf_reshape" type: "Reshape" bottom: "mbox_conf" top: "conf_reshape" include { phase: TEST }
  reshape_param { shape { dim: 0 dim: -1 dim: 3 } } }
layer { name: "conf_softmax" type: "Softmax" bottom: "conf_reshape" top: "conf_softmax" include { phase: TEST }
  softmax_param { axis: 2 } }
layer { name: "conf_flatten" type: "Flatten" bottom: "conf_softmax" top: "conf_flatten" include { phase: TEST } }
layer { name: "detection_out" type: "DetectionOutput" bottom: "mbox_loc" bottom: "conf_flatten"
  bottom: "mbox_priorbox" top: "detection_out" include { phase: TEST }
  detection_output_param { num_classes: 3 share_location: true background_label_id: 0
    nms_param { nms_threshold: 0.45 top_k: 400 } code_type: CENTER_SIZE keep_top_k: 200
    confidence_threshold: 0.01 } }
layer { name: "detection_eval" type: "DetectionEvaluate" bottom: "detection_out" bottom: "label"
  top: "detection_eval" include { phase: TEST }
  detection_evaluate_param { num_classes: 3 background_label_id: 0 overlap_threshold: 0.5 } }
'''
# the fields of SSD's own solvers (ssd_pascal.py writes them), in a small run
SOLVER = '''train_net: "train.prototxt"
test_net: "test.prototxt"
test_iter: 3
test_interval: 2
base_lr: 0.001
display: 1
max_iter: 2
lr_policy: "multistep"
gamma: 0.1
momentum: 0.9
weight_decay: 0.0005
stepvalue: 1
snapshot: 0
snapshot_prefix: "mini_ssd"
solver_mode: CPU
device_id: 0
debug_info: false
snapshot_after_train: false
test_initialization: true
average_loss: 10
iter_size: 1
type: "SGD"
random_seed: 5
eval_type: "detection"
ap_version: "11point"
'''


def _scenes(path, count, seed):
    """`count` dark images with one to three bright squares of classes 1 and 2, as an AnnotatedDatum LMDB;
    the squares sit on priors (centres 4k + 2, sides 10 and 14), so that untrained nets find some."""
    rng = np.random.default_rng(seed)
    with DBWriter(path, 'lmdb') as db:
        for i in range(count):
            image = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.uint8)
            boxes = []
            for _ in range(rng.integers(1, 4)):
                label = int(rng.integers(1, 3))
                w = h = int(rng.choice([10, 14]))
                x0, y0 = 4 * rng.integers(2, 10, 2) + 2 - w // 2
                image[y0:y0 + h, x0:x0 + w] = 255 if label == 1 else 160
                boxes.append((label, x0 / SIZE, y0 / SIZE, (x0 + w) / SIZE, (y0 + h) / SIZE, False))
            db.put('%08d' % i, _record(image, boxes))


@pytest.fixture
def ssd_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _scenes('train_lmdb', 4, 0)
    _scenes('test_lmdb', 6, 1)
    (tmp_path / 'train.prototxt').write_text(NET % dict(phase='TRAIN', source='train_lmdb'))
    (tmp_path / 'test.prototxt').write_text(NET % dict(phase='TEST', source='test_lmdb'))
    return tmp_path


def write_solver(folder, replace=(), extra=''):
    text = SOLVER
    for old, new in replace:
        text = text.replace(old, new)
    (folder / 'solver.prototxt').write_text(text + extra)
    return str(folder / 'solver.prototxt')


def messages(stream, text):
    return [line.split('] ', 1)[1] for line in stream.getvalue().splitlines()
            if text in line and re.match(r'[IWEF]\d{4} ', line)]


def separately_run_map(solver, test_iter, ap_version):
    """mean_average_precision of a separate test net sharing the solver's weights, over its first
    test_iter batches: checks the solver's collection and logging (the mAP itself is checked by hand
    in test_detection_layers)."""
    net = caffe.Net('test.prototxt', caffe.TEST)
    net.share_with(solver.net)
    try:
        rows = [net.forward()['detection_eval'][0, 0].copy() for _ in range(test_iter)]
    finally:
        net.close()
    return detection_eval.mean_average_precision(rows, ap_version)


def test_ssd_solver_fields_parse_by_name():
    param = caffe.formats.parse_text(
        SOLVER + 'show_per_class_result: true\nplateau_winsize: 10\nplateau_winsize: 20\n'
        'layer_wise_reduce: false\nweights: "a.caffemodel"\n', caffe_pb2.SolverParameter(), 'solver.prototxt')
    assert (param.eval_type, param.ap_version, param.show_per_class_result) == ('detection', '11point', True)
    assert list(param.plateau_winsize) == [10, 20]
    # BVLC's fields at the fork's numbers 41 and 42 stay BVLC's
    assert not param.layer_wise_reduce and list(param.weights) == ['a.caffemodel']
    defaults = caffe_pb2.SolverParameter()
    assert (defaults.eval_type, defaults.ap_version, defaults.show_per_class_result) == \
        ('classification', 'Integral', False)
    # a binary SolverParameter carries them at caffe.proto's numbers
    assert caffe_pb2.SolverParameter.FromString(param.SerializeToString()) == param


def test_detection_test_logs_the_mean_average_precision(ssd_dir, captured_log):
    solver = get_solver(write_solver(ssd_dir, extra='show_per_class_result: true\ntest_compute_loss: true\n'))
    solver.solve()
    try:
        outputs = messages(captured_log, 'Test net output')
        assert len(outputs) == 2                  # at iterations 0 and 2 (max_iter)
        logged = float(outputs[-1].rsplit('= ', 1)[1])
        assert outputs[-1].startswith('    Test net output #0: detection_eval = ')
        mean_ap, per_class = separately_run_map(solver, 3, '11point')
        assert mean_ap > 0 and sorted(per_class) == [1, 2]
        assert outputs[-1] == '    Test net output #0: detection_eval = %s' % caffe.log.fmt(mean_ap)
        classes = messages(captured_log, 'class')
        assert classes[-2:] == ['class%d: %s' % (c, caffe.log.fmt(per_class[c])) for c in (1, 2)]
        assert messages(captured_log, 'Test loss: ') == ['Test loss: 0'] * 2
    finally:
        solver.close()


@pytest.mark.parametrize('ap_version', ['Integral', 'MaxIntegral'])
def test_several_test_nets_each_over_its_test_iter(ssd_dir, captured_log, ap_version):
    path = write_solver(ssd_dir, [('test_net: "test.prototxt"\ntest_iter: 3\n',
                                   'test_net: "test.prototxt"\ntest_net: "test.prototxt"\n'
                                   'test_iter: 1\ntest_iter: 3\n'), ('"11point"', '"%s"' % ap_version),
                                  ('max_iter: 2', 'max_iter: 0')])
    solver = get_solver(path)
    solver.solve()
    try:
        assert messages(captured_log, 'Testing net') == ['Iteration 0, Testing net (#0)',
                                                         'Iteration 0, Testing net (#1)']
        outputs = messages(captured_log, 'Test net output')
        expected = ['    Test net output #0: detection_eval = %s'
                    % caffe.log.fmt(separately_run_map(solver, n, ap_version)[0]) for n in (1, 3)]
        assert outputs == expected
        assert not messages(captured_log, 'class')
    finally:
        solver.close()


class _Outputs:
    """A stand-in test net whose output 'e' holds the next batch of rows at each forward."""
    def __init__(self, *batches):
        self.outputs, self.batches, self.blobs = ['e'], list(batches), {'e': self}

    def forward(self):
        self.current = np.array(self.batches.pop(0), np.float32).reshape(1, 1, -1, 5)

    def read_data(self):
        return self.current


def test_detection_rows_by_hand(captured_log):
    from caffe_py.solvers.detection_test import DetectionRows
    net = _Outputs([(-1, 1, 2, -1, -1), (-1, 2, 1, -1, -1), (0, 1, .9, 1, 0), (0, 1, .8, 0, 1), (0, 2, .5, 0, 0)],
                   [(-1, 1, 0, -1, -1), (-1, 2, 0, -1, -1), (1, 1, .7, 1, 0)])
    rows = DetectionRows(net)
    for _ in range(2):
        net.forward()
        rows.add()
    rows.report('Integral', per_class_result=True)
    # class 1: tp, fp, tp of 2 positives: 1 * 0.5 + 2/3 * 0.5; class 2 has only a detection matched
    # to nothing evaluated (tp = fp = 0): a warning, AP 0, and it still counts in the mean
    assert messages(captured_log, 'class') == ['class1: 0.833333']
    assert messages(captured_log, 'Missing') == ['Missing true_pos for label: 2']
    assert messages(captured_log, 'Test net output') == ['    Test net output #0: e = 0.416667']
    # no detection at all: the fork logs no line for the output
    captured_log.seek(0)
    captured_log.truncate()
    net = _Outputs([(-1, 1, 2, -1, -1), (-1, 2, 1, -1, -1)])
    rows = DetectionRows(net)
    net.forward()
    rows.add()
    rows.report('11point')
    assert captured_log.getvalue() == ''


def test_outputs_other_than_detection_rows_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = ('layer { name: "x" type: "DummyData" top: "x" dummy_data_param { shape { dim: 2 dim: 3 } } }\n'
           'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 2 } }')
    param = caffe_pb2.SolverParameter(test_iter=[1], test_interval=1, max_iter=0, eval_type='detection',
                                      snapshot_after_train=False)
    caffe.formats.parse_text(net, param.net_param, 'net')
    solver = get_solver(param)
    with pytest.raises(ValueError, match=r'test net output #0 \(ip\) has shape \(2, 2\); it must be '
                                         r"DetectionEvaluate's rows of 5 values"):
        solver.solve()
    for field, value, message in (('eval_type', 'detections', 'Unknown evaluation type: detections'),
                                  ('ap_version', 'VOC07', 'Unknown ap_version: VOC07')):
        bad = caffe_pb2.SolverParameter()
        bad.CopyFrom(param)
        setattr(bad, field, value)
        with pytest.raises(SolverError, match=message):
            get_solver(bad)


def test_caffe_py_train_prints_the_detection_eval_line(ssd_dir, capfd):
    from caffe_py.tools import cli
    path = write_solver(ssd_dir, [('max_iter: 2', 'max_iter: 1')])
    assert cli.main(['train', '-solver', path]) == 0
    err = capfd.readouterr().err
    assert re.search(r'\] {5}Test net output #0: detection_eval = [0-9.e-]+\n', err), err[-3000:]
