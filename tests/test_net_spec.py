"""net_spec as pycaffe's (BVLC python/caffe/test/test_net_spec.py and net_spec.py): names,
layer order, ntop=0, in_place, the TypeError for a bottom that is not a Top, where keywords go."""
import re

import pytest

import caffe_py as caffe
from caffe_py import layers as L, params as P


def lenet(batch_size, spec=True):
    """LeNet as pycaffe's test writes it, through a NetSpec or anonymously."""
    n = caffe.NetSpec() if spec else {}
    n['data'], n['label'] = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]),
                                               dict(dim=[batch_size, 1, 1, 1])],
                                        transform_param=dict(scale=1. / 255), ntop=2)
    n['conv1'] = L.Convolution(n['data'], kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    n['pool1'] = L.Pooling(n['conv1'], kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n['conv2'] = L.Convolution(n['pool1'], kernel_size=5, num_output=50, weight_filler=dict(type='xavier'))
    n['pool2'] = L.Pooling(n['conv2'], kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n['ip1'] = L.InnerProduct(n['pool2'], num_output=500, weight_filler=dict(type='xavier'))
    n['relu1'] = L.ReLU(n['ip1'], in_place=True)
    n['ip2'] = L.InnerProduct(n['relu1'], num_output=10, weight_filler=dict(type='xavier'))
    n['loss'] = L.SoftmaxWithLoss(n['ip2'], n['label'])
    return n.to_proto() if spec else n['loss'].to_proto()


def test_lenet_named_and_anonymous_build_as_pycaffe():
    named = lenet(5)
    assert [layer.name for layer in named.layer] == [
        'data', 'conv1', 'pool1', 'conv2', 'pool2', 'ip1', 'relu1', 'ip2', 'loss']
    assert named.layer[6].bottom == named.layer[6].top == ['ip1']
    assert len(caffe.Net(named, caffe.TEST).layers) == 9
    anon = lenet(5, spec=False)
    assert [layer.name for layer in anon.layer] == [
        'DummyData1', 'Convolution1', 'Pooling1', 'Convolution2', 'Pooling2', 'InnerProduct1', 'ReLU1',
        'InnerProduct2', 'SoftmaxWithLoss1']
    assert list(anon.layer[0].top) == ['DummyData1', 'DummyData2']
    assert list(anon.layer[6].top) == list(anon.layer[6].bottom) == ['InnerProduct1']
    assert list(anon.layer[-1].bottom) == ['InnerProduct2', 'DummyData2']
    assert anon.layer[0].transform_param.scale == pytest.approx(1. / 255)
    assert len(caffe.Net(anon, caffe.TEST).layers) == 9


def test_zero_top_layers_are_functions_and_still_emitted():
    n = caffe.NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    assert isinstance(n.silence_data, caffe.net_spec.Function) and n.silence_data.tops == ()
    proto = n.to_proto()
    assert [(layer.name, layer.type, list(layer.top)) for layer in proto.layer] == [
        ('data', 'DummyData', ['data', 'data2']), ('silence_data', 'Silence', []),
        ('silence_data2', 'Silence', [])]
    net = caffe.Net(proto, caffe.TEST)
    assert len(net.forward()) == 0
    assert caffe.to_proto(L.Silence(n.data, ntop=0)).layer[-1].name == 'Silence1'


def test_a_bottom_that_is_not_a_top_is_a_type_error_naming_layer_and_index():
    data = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=re.escape("Silence input 0 is not a Top (type is <class 'tuple'>)")):
        L.Silence(data, ntop=0)
    L.Silence(*data, ntop=0)
    with pytest.raises(TypeError, match='Eltwise input 1 is not a Top'):
        L.Eltwise(data[0], 'data2')


def test_layers_follow_the_tops_depth_first_not_the_call_order():
    n = caffe.NetSpec()
    first = L.Input(shape=dict(dim=[1, 2]))
    second = L.Input(shape=dict(dim=[1, 2]))
    n.b = second
    n.a = first
    n.sum = L.Eltwise(n.a, n.b)
    assert [layer.name for layer in n.to_proto().layer] == ['b', 'a', 'sum']
    with pytest.raises(KeyError, match='no top "c"'):
        n['c']
    assert not hasattr(n, 'c')


def test_keywords_go_to_the_own_message_first_then_the_layer():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=[3], name='renamed', loss_weight=0.5,
                           param=dict(lr_mult=2), convolution_param=dict(bias_term=False),
                           engine='CAFFE', include=dict(phase=caffe.TEST))
    n.pool = L.Pooling(n.conv, pool='AVE', kernel_size=2)
    conv, pool = n.to_proto().layer[1:]
    assert conv.name == 'renamed' and list(conv.top) == ['conv']
    assert list(conv.convolution_param.kernel_size) == [3] and not conv.convolution_param.bias_term
    assert conv.convolution_param.engine == caffe.params.Convolution.CAFFE
    assert list(conv.loss_weight) == [0.5] and conv.param[0].lr_mult == 2
    assert pool.pooling_param.pool == P.Pooling.AVE and list(pool.bottom) == ['conv']
    n.bad = L.ReLU(n.pool, not_a_field=1)
    with pytest.raises(AttributeError, match='layer "bad" \\(ReLU\\): no field "not_a_field" in '
                                             'ReLUParameter or LayerParameter'):
        n.to_proto()


def test_in_place_layer_names_and_several_in_place_steps():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3]))
    n.relu = L.ReLU(n.data, in_place=True)
    n.drop = L.Dropout(n.relu, in_place=True, dropout_ratio=0.3)
    anon = L.TanH(n.drop, in_place=True)
    proto = caffe.to_proto(anon)
    assert [(layer.name, list(layer.bottom), list(layer.top)) for layer in proto.layer] == [
        ('Input1', [], ['Input1']), ('ReLU1', ['Input1'], ['Input1']),
        ('Dropout1', ['Input1'], ['Input1']), ('TanH1', ['Input1'], ['Input1'])]
    named = n.to_proto()
    assert [(layer.name, list(layer.top)) for layer in named.layer] == [
        ('data', ['data']), ('relu', ['data']), ('drop', ['data'])]
    assert named.layer[2].dropout_param.dropout_ratio == pytest.approx(0.3)
