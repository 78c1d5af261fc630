"""The finetune_style example's snapshot, exported to ONNX, classifies the test set in onnxruntime
with the accuracy `caffe-py test` reports."""
import os
import re

import numpy as np
import pytest

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

import onnx  # noqa: E402

import caffe_py  # noqa: E402
from caffe_py import formats  # noqa: E402
from caffe_py.onnx import survey  # noqa: E402
from caffe_py.tools import cli  # noqa: E402
from conftest import ROOT  # noqa: E402

TRAIN_VAL = 'examples/finetune_style/train_val.prototxt'
DEPLOY = 'examples/finetune_style/deploy.prototxt'
PRETRAINED = 'models/mini_caffenet/mini_caffenet_pretrained.caffemodel'


def _finetune(tmp_path, max_iter):
    """Run the example's solver for max_iter iterations; the snapshot's path."""
    solver = formats.read_solver(os.path.join(ROOT, 'examples', 'finetune_style', 'solver.prototxt'))
    solver.max_iter = solver.test_interval = max_iter
    solver.snapshot = 0
    solver.snapshot_prefix = str(tmp_path / 'style')
    path = str(tmp_path / 'solver.prototxt')
    formats.write_solver(path, solver)
    assert cli.main(['train', '-solver', path, '-weights', PRETRAINED]) == 0
    return str(tmp_path / ('style_iter_%d.caffemodel' % max_iter))


def _test_batches():
    """The TEST phase's (data, label) batches as the ImageData layer reads them, once over the set."""
    net = caffe_py.Net(TRAIN_VAL, caffe_py.TEST)
    batches = []
    for _ in range(3):              # test_iter: 3 batches of 40 cover the 120 test images
        net.forward()
        batches.append({'data': net.blobs['data'].data.copy(), 'label': net.blobs['label'].data.copy()})
    return batches


def _caffe_test_accuracy(snapshot, capsys):
    capsys.readouterr()
    assert cli.main(['test', '-model', TRAIN_VAL, '-weights', snapshot, '-iterations', '3']) == 0
    return float(re.search(r'\] accuracy = ([0-9.e-]+)', capsys.readouterr().err).group(1))


def _check_example(tmp_path, capsys, max_iter):
    snapshot = _finetune(tmp_path, max_iter)
    accuracy = _caffe_test_accuracy(snapshot, capsys)
    batches = _test_batches()

    # the train_val net in its TEST phase: ImageData's tops become the inputs, Accuracy an output
    whole = str(tmp_path / 'train_val.onnx')
    assert cli.main(['export_onnx', '-model', TRAIN_VAL, '-weights', snapshot, '-output', whole]) == 0
    model = onnx.load(whole)
    assert [i.name for i in model.graph.input] == ['data', 'label']
    runs = [survey.run_onnx(model, batch) for batch in batches]
    assert np.mean([run['accuracy'] for run in runs]) == pytest.approx(accuracy, abs=1e-6)

    # the deploy net with a dynamic batch: the class of each test image by argmax
    deploy = str(tmp_path / 'deploy.onnx')
    assert cli.main(['export_onnx', '-model', DEPLOY, '-weights', snapshot, '-output', deploy,
                     '-dynamic_batch']) == 0
    model = onnx.load(deploy)
    right = 0
    for batch in batches:
        prob = survey.run_onnx(model, {'data': batch['data']})['prob']
        right += int((prob.argmax(axis=1) == batch['label']).sum())
    assert right / 120 == pytest.approx(accuracy, abs=1e-6)
    return accuracy


def test_finetuned_example_classifies_alike_in_onnxruntime(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)      # the example's paths are relative to the repository root
    _check_example(tmp_path, capsys, 20)


@pytest.mark.slow
def test_fully_finetuned_example_classifies_alike_in_onnxruntime(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert _check_example(tmp_path, capsys, 200) >= 0.6
