"""Real model files exported to ONNX compute in onnxruntime what caffe-py (and Caffe) compute."""
import glob
import os

import numpy as np
import pytest

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

import caffe_py  # noqa: E402
from caffe_py.onnx import survey  # noqa: E402
from conftest import CORPUS, REFERENCE  # noqa: E402

NETS = survey.net_files(CORPUS)
UPGRADED = sorted(glob.glob(os.path.join(REFERENCE, 'nets', '*', '*.upgraded.prototxt')))
FORWARDS = sorted(glob.glob(os.path.join(REFERENCE, 'nets', '*', '*.forward.npz')))
# nets with CaffeNet's fc6 (37M weights) take 7-20 s each to fill, export and run: slow
HEAVY = ('alexnet', 'caffenet', 'flickr_style', 'full_conv')


def _ids(paths):
    return ['/'.join(p.split(os.sep)[-2:]) for p in paths]


def _marked(paths):
    return [pytest.param(p, marks=pytest.mark.slow) if any(h in p for h in HEAVY) else p for p in paths]


def _built(path):
    """The TEST net at batch 1 with random weights (real ones where the corpus has them), or skip
    when Caffe could not build it either (its data source is absent)."""
    try:
        return survey.prepare(path)[0]
    except Exception as exc:
        pytest.skip('not built: %s' % str(exc).split('\n')[0])


def _check(net):
    model, error = survey.check(net)
    assert error <= survey.TOLERANCE, error
    feeds = survey.random_inputs(net, model)
    outputs = survey.run_caffe(net, feeds, [o.name for o in model.graph.output])
    assert all(np.std(v) > 0 or v.size == 1 for v in outputs.values())   # not a degenerate comparison


@pytest.mark.skipif(not NETS, reason='../shared/corpus is absent')
@pytest.mark.parametrize('path', _marked(NETS), ids=_ids(NETS))
def test_corpus_net_exports_and_agrees(path):
    _check(_built(path))


@pytest.mark.slow
@pytest.mark.skipif(not UPGRADED, reason='../shared/reference/nets is absent')
@pytest.mark.parametrize('path', UPGRADED, ids=_ids(UPGRADED))
def test_caffes_upgraded_net_exports_and_agrees(path):
    _check(_built(path))


@pytest.mark.skipif(not FORWARDS, reason='../shared/reference/nets is absent')
@pytest.mark.parametrize('path', FORWARDS, ids=_ids(FORWARDS))
def test_real_weights_in_onnxruntime_give_caffes_outputs(path):
    """The real caffemodels, exported, reproduce BVLC Caffe's own recorded outputs."""
    expected = np.load(path)
    folder = os.path.join(CORPUS, os.path.basename(os.path.dirname(path)))
    weights = os.path.join(folder, os.path.basename(path)[:-len('.forward.npz')])
    (deploy,) = [p for p in survey.net_files(folder) if not any(w in p for w in ('train', 'test'))]
    net = caffe_py.Net(deploy, caffe_py.TEST, weights=weights)
    feeds = {key[3:]: expected[key] for key in expected.files if key.startswith('in/')}
    for name, value in feeds.items():
        net.blobs[name].reshape(value.shape)
    net.reshape()
    model = survey.export(net)
    got = survey.run_onnx(model, feeds)
    want = {key[4:]: expected[key] for key in expected.files if key.startswith('out/') and key[4:] in got}
    assert want
    assert survey.worst_error(got, want) <= survey.TOLERANCE


@pytest.mark.skipif(not NETS, reason='../shared/corpus is absent')
def test_survey_counts_and_nets_caffe_could_not_build():
    """Every corpus net either exports or was not built; those not built are the ones Caffe could
    not build either (reference/nets has their net_error.txt)."""
    small = [p for p in NETS if not any(h in p for h in HEAVY + ('googlenet', 'resnet'))]
    results = survey.survey(small)
    statuses = {status for _, status, _ in results}
    assert statuses <= {'exported', 'not built'}, [r for r in results if r[1] not in ('exported', 'not built')]
    for path, status, _ in results:
        caffe_error = os.path.join(REFERENCE, 'nets', os.path.basename(os.path.dirname(path)),
                                   os.path.basename(path) + '.net_error.txt')
        if status == 'not built' and os.path.isdir(os.path.join(REFERENCE, 'nets')):
            assert os.path.exists(caffe_error), path


LAYER_CASES = sorted(glob.glob(os.path.join(REFERENCE, 'layers', '*.npz')))
# reference cases ONNX cannot express exactly (refused with a one-line reason), by case name
REFUSED_CASES = {
    # without expose_hidden, a pass starts from the previous pass's state: no stateless graph
    'lstm_basic': 'LSTM', 'rnn_basic': 'RNN',
}


@pytest.mark.skipif(not LAYER_CASES, reason='../shared/reference/layers is absent')
@pytest.mark.parametrize('path', LAYER_CASES, ids=[os.path.basename(p)[:-4] for p in LAYER_CASES])
def test_reference_layer_case_in_onnxruntime_gives_caffes_outputs(path):
    """Each of Caffe's layer cases, exported with its parameters, computes Caffe's recorded outputs
    in onnxruntime, or is refused with one line naming its layer."""
    from harness import load_case
    case, meta, param, phase = load_case(path)
    net = caffe_py.Net(param, phase)
    feeds = {name: case['in/' + name] for name in meta['inputs']}
    for key in case.files:
        if key.startswith('param/'):
            _, layer, index = key.split('/')
            net.params[layer][int(index)].data[...] = case[key]
    outputs = [key[4:] for key in case.files if key.startswith('out/') and key[4:] not in feeds]
    name = os.path.basename(path)[:-4]
    try:
        model = survey.export(net, outputs=outputs)
    except survey.ExportError as exc:
        assert name in REFUSED_CASES, str(exc)
        assert str(exc).startswith('%s layer' % REFUSED_CASES[name]) and '\n' not in str(exc)
        return
    assert name not in REFUSED_CASES
    if not outputs:          # Silence: nothing to run
        return
    got = survey.run_onnx(model, feeds)
    for blob in outputs:
        want = case['out/' + blob]
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got[blob].reshape(want.shape), want, rtol=1e-4, atol=1e-4 * scale, err_msg=blob)
