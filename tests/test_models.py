"""models/: the classic nets build with Caffe's shapes, their train_val nets match Caffe's in structure,
the solvers parse, and mini CaffeNet's committed weights load."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe_py
from caffe_py import formats
from caffe_py.net import filter_net
from caffe_py.proto import caffe_pb2
from conftest import CORPUS, REFERENCE, ROOT, need

MODELS = os.path.join(ROOT, 'models')

# (folder, our deploy file, the corpus counterpart)
DEPLOYS = [
    ('bvlc_reference_caffenet', 'deploy.prototxt', 'deploy.prototxt'),
    ('bvlc_alexnet', 'deploy.prototxt', 'deploy.prototxt'),
    ('bvlc_googlenet', 'deploy.prototxt', 'deploy.prototxt'),
    ('finetune_flickr_style', 'deploy.prototxt', 'deploy.prototxt'),
    ('lenet', 'lenet.prototxt', 'lenet.prototxt'),
    ('cifar10_quick', 'cifar10_quick.prototxt', 'cifar10_quick.prototxt'),
]
TRAIN_VALS = [
    ('bvlc_reference_caffenet', 'train_val.prototxt'),
    ('bvlc_alexnet', 'train_val.prototxt'),
    ('bvlc_googlenet', 'train_val.prototxt'),
    ('finetune_flickr_style', 'train_val.prototxt'),
    ('lenet', 'lenet_train_test.prototxt'),
    ('cifar10_quick', 'cifar10_quick_train_test.prototxt'),
]
SOLVERS = ['bvlc_reference_caffenet/solver.prototxt', 'bvlc_alexnet/solver.prototxt',
           'bvlc_googlenet/solver.prototxt', 'bvlc_googlenet/quick_solver.prototxt',
           'finetune_flickr_style/solver.prototxt', 'lenet/lenet_solver.prototxt',
           'cifar10_quick/cifar10_quick_solver.prototxt', 'mini_caffenet/solver.prototxt']
PRETRAINED = os.path.join(MODELS, 'mini_caffenet', 'mini_caffenet_pretrained.caffemodel')


def shapes_of(net):
    return ([[l.name, l.type] for l in net.layers],
            [[k, list(v.shape)] for k, v in net.blobs.items()],
            {k: [list(b.shape) for b in v] for k, v in net.params.items()})


@pytest.mark.parametrize('folder,mine,theirs', DEPLOYS, ids=[d[0] for d in DEPLOYS])
def test_deploy_builds_with_the_corpus_counterparts_shapes(folder, mine, theirs):
    expected = json.load(open(need(os.path.join(REFERENCE, 'nets', folder, theirs + '.shapes.json'))))
    net = caffe_py.Net(os.path.join(MODELS, folder, mine), caffe_py.TEST)
    layers, blobs, params = shapes_of(net)
    assert layers == expected['layers']
    assert blobs == [[k, v] for k, v in expected['blobs'].items()]
    assert params == {k: v for k, v in expected['params'].items() if v}
    assert net.inputs == expected['inputs'] and net.outputs == expected['outputs']


def _structure(param):
    """Per layer: what a reader of the prototxt would compare (wiring, phases, multipliers, widths)."""
    rows = []
    for layer in param.layer:
        own = {}
        for field in ('convolution_param', 'inner_product_param', 'pooling_param', 'lrn_param',
                      'dropout_param', 'accuracy_param'):
            if layer.HasField(field):
                own[field] = formats.to_text(getattr(layer, field))
        rows.append(dict(name=layer.name, type=layer.type, bottom=list(layer.bottom), top=list(layer.top),
                         include=[r.phase for r in layer.include], loss_weight=list(layer.loss_weight),
                         mults=[(p.lr_mult, p.decay_mult) for p in layer.param],
                         batch=layer.data_param.batch_size or layer.image_data_param.batch_size,
                         crop=layer.transform_param.crop_size, mirror=layer.transform_param.mirror,
                         **own))
    return rows


def _normalized(param):
    # stride 1 and an empty constant filler are the defaults some of Caffe's files spell out
    for layer in param.layer:
        if layer.HasField('convolution_param') and list(layer.convolution_param.stride) == [1]:
            del layer.convolution_param.stride[:]
        for p in (layer.convolution_param, layer.inner_product_param):
            for filler in (p.weight_filler, p.bias_filler):
                if filler.type == 'constant' and filler.value == 0:
                    filler.ClearField('value')
    return param


@pytest.mark.parametrize('folder,name', TRAIN_VALS, ids=[t[0] for t in TRAIN_VALS])
def test_train_val_has_the_structure_of_caffes(folder, name):
    reference = need(os.path.join(REFERENCE, 'nets', folder, name + '.upgraded.prototxt'))
    theirs = _normalized(formats.parse_text(open(reference).read(), caffe_pb2.NetParameter))
    mine = _normalized(formats.read_net(os.path.join(MODELS, folder, name)))
    ours, caffes = _structure(mine), _structure(theirs)
    assert [r['name'] for r in ours] == [r['name'] for r in caffes]
    for a, b in zip(ours, caffes):
        assert a == b, a['name']


def _with_inputs(param, phase, batch=2):
    """The `phase` net of `param` with each data layer replaced by an Input of its crop size
    (and no fillers: only the shapes matter here)."""
    param = caffe_pb2.NetParameter.FromString(param.SerializeToString())
    param.state.phase = phase
    param = filter_net(param)
    for layer in param.layer:
        for p in (layer.convolution_param, layer.inner_product_param):
            p.ClearField('weight_filler')
            p.ClearField('bias_filler')
        if layer.type in ('Data', 'ImageData'):
            crop = layer.transform_param.crop_size or 28
            channels = 1 if 'mnist' in layer.data_param.source else 3
            if 'cifar' in layer.data_param.source:
                crop = 32
            layer.ClearField('include')
            layer.ClearField('transform_param')
            layer.ClearField('data_param')
            layer.ClearField('image_data_param')
            layer.type = 'Input'
            layer.input_param.shape.add().dim.extend([batch, channels, crop, crop])
            layer.input_param.shape.add().dim.append(batch)
    return param


@pytest.mark.parametrize('folder,name', TRAIN_VALS, ids=[t[0] for t in TRAIN_VALS])
def test_train_val_builds_in_both_phases_with_deploy_shapes(folder, name):
    """Without the data: the data layers become Inputs of batch 2; the other blobs have deploy's shapes."""
    theirs = dict((f, t) for f, _, t in DEPLOYS)[folder]
    path = os.path.join(REFERENCE, 'nets', folder, theirs + '.shapes.json')
    deploy = json.load(open(path))['blobs'] if os.path.isdir(REFERENCE) else {}   # ../shared may be absent
    param = formats.read_net(os.path.join(MODELS, folder, name))
    for phase in (caffe_py.TRAIN, caffe_py.TEST):
        net = caffe_py.Net(_with_inputs(param, phase), phase)
        for blob, value in net.blobs.items():
            if blob in deploy:
                assert list(value.shape[1:]) == deploy[blob][1:], blob
        assert any('loss' in o for o in net.outputs)
        accuracy = [o for o in net.outputs if 'top-' in o or o == 'accuracy']
        assert bool(accuracy) == (phase == caffe_py.TEST)


def test_flickr_style_replaces_fc8_and_learns_it_faster():
    param = formats.read_net(os.path.join(MODELS, 'finetune_flickr_style', 'train_val.prototxt'))
    by_name = {l.name: l for l in param.layer}
    assert 'fc8' not in by_name
    fc8 = by_name['fc8_flickr']
    assert fc8.inner_product_param.num_output == 20
    assert [(p.lr_mult, p.decay_mult) for p in fc8.param] == [(10, 1), (20, 0)]
    for layer in param.layer:
        if layer.param and layer.name != 'fc8_flickr':
            assert [(p.lr_mult, p.decay_mult) for p in layer.param] == [(1, 1), (2, 0)], layer.name
    sources = [l.image_data_param.source for l in param.layer if l.type == 'ImageData']
    assert sources == ['data/flickr_style/train.txt', 'data/flickr_style/test.txt']


@pytest.mark.parametrize('path', SOLVERS)
def test_solvers_parse_and_name_their_nets_from_the_repository_root(path):
    solver = formats.read_solver(os.path.join(MODELS, path))
    assert solver.net.startswith('models/') and os.path.exists(os.path.join(ROOT, solver.net))
    assert solver.snapshot_prefix and solver.test_iter and solver.max_iter > 0
    formats.read_net(os.path.join(ROOT, solver.net))


@pytest.mark.parametrize('path', [p for p in SOLVERS if not p.startswith('mini_caffenet/')])
def test_solvers_match_the_corpus_hyperparameters(path):
    """Each Model Zoo solver here has the corpus copy's hyperparameters (mini_caffenet's is ours alone)."""
    theirs = formats.read_solver(need(os.path.join(CORPUS, path)))
    mine = formats.read_solver(os.path.join(MODELS, path))
    for field in ('test_iter', 'test_interval', 'base_lr', 'lr_policy', 'gamma', 'power', 'stepsize',
                  'max_iter', 'momentum', 'weight_decay', 'snapshot', 'average_loss', 'display',
                  'test_initialization'):
        assert getattr(mine, field) == getattr(theirs, field), field


def test_generated_files_are_up_to_date():
    done = subprocess.run([sys.executable, os.path.join(MODELS, 'make_models.py'), '--check'],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mini_caffenet_pretrained_weights_load_and_are_small():
    assert os.path.getsize(PRETRAINED) < 4 << 20
    net = caffe_py.Net(os.path.join(MODELS, 'mini_caffenet', 'deploy.prototxt'), caffe_py.TEST,
                       weights=PRETRAINED)
    trained = formats.read_net(PRETRAINED, binary=True)
    assert [l.name for l in trained.layer if l.blobs] == list(net.params)
    conv1 = formats.blob_to_array(next(l for l in trained.layer if l.name == 'conv1').blobs[0])
    np.testing.assert_array_equal(net.params['conv1'][0].data, conv1.reshape(net.params['conv1'][0].shape))
    assert float(np.abs(conv1).std()) > 0.01     # trained, not a filler's zeros


def test_net_spec_names_tops_layers_and_in_place_blobs_as_pycaffe():
    from caffe_py.net_spec import NetSpec, layers as L, params as P
    n = NetSpec()
    n.data, n.label = L.DummyData(ntop=2, shape=[dict(dim=[2, 3, 8, 8]), dict(dim=[2])])
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, param=[dict(lr_mult=1), dict(lr_mult=2)],
                           weight_filler=dict(type='xavier'))
    n.relu = L.ReLU(n.conv, in_place=True)
    n.pool = L.Pooling(n.relu, pool=P.Pooling.AVE, kernel_size=2, stride=2)
    n.ip = L.InnerProduct(n.pool, num_output=5)
    n.loss = L.SoftmaxWithLoss(n.ip, n.label, loss_weight=2, include=dict(phase='TRAIN'))
    param = n.to_proto()
    by_name = {l.name: l for l in param.layer}
    assert [l.name for l in param.layer] == ['data', 'conv', 'relu', 'pool', 'ip', 'loss']
    assert list(by_name['data'].top) == ['data', 'label']
    assert list(by_name['relu'].top) == ['conv'] and list(by_name['pool'].bottom) == ['conv']
    assert by_name['pool'].pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    assert [p.lr_mult for p in by_name['conv'].param] == [1, 2]
    assert by_name['conv'].convolution_param.weight_filler.type == 'xavier'
    assert list(by_name['loss'].loss_weight) == [2] and by_name['loss'].include[0].phase == caffe_py.TRAIN
    net = caffe_py.Net(param, caffe_py.TRAIN)
    assert list(net.blobs['ip'].shape) == [2, 5]
    n.bad = L.ReLU(n.ip, not_a_field=1)
    with pytest.raises(ValueError, match='no field "not_a_field"'):
        n.to_proto()
