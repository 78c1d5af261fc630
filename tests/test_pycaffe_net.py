"""pycaffe's Net surface, after BVLC's python/caffe/test/test_net.py: forward/backward with
start/end, the constructors, the private names scripts use, and the per-layer callbacks."""
import numpy as np
import pytest

import caffe_py as caffe

NUM_OUTPUT = 13
SIMPLE_NET = """name: 'testnet' force_backward: true
layer { type: 'DummyData' name: 'data' top: 'data' top: 'label'
  dummy_data_param { num: 5 channels: 2 height: 3 width: 4
    num: 5 channels: 1 height: 1 width: 1
    data_filler { type: 'gaussian' std: 1 } data_filler { type: 'constant' } } }
layer { type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
  convolution_param { num_output: 11 kernel_size: 2 pad: 3
    weight_filler { type: 'gaussian' std: 1 } bias_filler { type: 'constant' value: 2 } }
  param { decay_mult: 1 } param { decay_mult: 0 } }
layer { type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip_blob'
  inner_product_param { num_output: 13
    weight_filler { type: 'gaussian' std: 2.5 } bias_filler { type: 'constant' value: -3 } } }
layer { type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip_blob' bottom: 'label' top: 'loss' }
"""

LEVELS_NET = """
layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 2 dim: 3 } } }
layer { name: 'NoLevel' type: 'InnerProduct' bottom: 'data' top: 'NoLevel'
  inner_product_param { num_output: 1 } }
layer { name: 'Level1Only' type: 'InnerProduct' bottom: 'data' top: 'Level1Only'
  include { min_level: 1 max_level: 1 } inner_product_param { num_output: 1 } }
"""


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / 'net.prototxt'
    path.write_text(SIMPLE_NET)
    return str(path)


@pytest.fixture
def net(net_file):
    net = caffe.Net(net_file, caffe.TRAIN)
    net.blobs['label'].data[...] = np.random.RandomState(0).randint(
        NUM_OUTPUT, size=net.blobs['label'].data.shape)
    return net


def test_forward_with_end_returns_the_end_layers_tops(net):
    conv = net.blobs['conv']
    conv.data[...] = np.random.RandomState(1).uniform(size=conv.shape)
    out = net.forward(start='ip', end='ip')
    assert list(out) == ['ip_blob']
    weights, bias = net.params['ip'][0].data, net.params['ip'][1].data
    expected = conv.data.reshape(len(conv.data), -1) @ weights.T + bias
    np.testing.assert_allclose(out['ip_blob'], expected, rtol=1e-4, atol=1e-4)
    assert out['ip_blob'] is net.blobs['ip_blob'].data
    # a multi-top end layer gives every top, `blobs` adds more
    assert sorted(net.forward(end='data', blobs=['conv'])) == ['conv', 'data', 'label']
    assert list(net.forward()) == ['loss']


def test_backward_with_end_returns_the_end_layers_bottom_diffs(net):
    net.forward()
    top_diff = np.random.RandomState(2).uniform(size=net.blobs['ip_blob'].shape).astype(np.float32)
    net.blobs['ip_blob'].diff[...] = top_diff
    out = net.backward(start='ip', end='ip')
    assert list(out) == ['conv']
    expected = (top_diff @ net.params['ip'][0].data).reshape(net.blobs['conv'].shape)
    np.testing.assert_allclose(out['conv'], expected, rtol=1e-4, atol=1e-4)
    assert sorted(net.backward(end='loss', diffs=['conv'])) == ['conv', 'ip_blob', 'label']
    assert net.backward() == {}       # no inputs: nothing by default, as pycaffe


def test_forward_and_backward_take_inputs_and_output_diffs_as_kwargs():
    proto = caffe.NetSpec()
    proto.data = caffe.layers.Input(shape=dict(dim=[2, 3]))
    proto.ip = caffe.layers.InnerProduct(proto.data, num_output=4, weight_filler=dict(type='gaussian'))
    param = proto.to_proto()
    param.force_backward = True
    net = caffe.Net(param, caffe.TEST)
    net.params['ip'][1].data[...] = 0
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    out = net.forward(data=x)
    np.testing.assert_allclose(out['ip'], x @ net.params['ip'][0].data.T, rtol=1e-6)
    ones = np.ones((2, 4))
    grads = net.backward(ip=ones)
    np.testing.assert_allclose(grads['data'], ones @ net.params['ip'][0].data, rtol=1e-6)
    net.forward(data=np.ones((2, 1)))          # broadcasts, as pycaffe's data[...] = array
    assert (net.blobs['data'].data == 1).all()
    with pytest.raises(ValueError, match='not batch sized'):
        net.forward(data=np.ones((3, 3)))
    with pytest.raises(KeyError, match='label: not among the inputs'):
        net.forward(label=x)
    with pytest.raises(KeyError, match='data: not among the outputs'):
        net.backward(data=x)


def test_constructors_as_pycaffe(net_file, net, tmp_path):
    weights = str(tmp_path / 'w.caffemodel')
    net.save(weights)
    for other in (caffe.Net(net_file, caffe.TRAIN, weights=weights),
                  caffe.Net(net_file, weights, caffe.TRAIN),          # legacy order
                  caffe.Net(network_file=net_file, phase=caffe.TRAIN, weights=weights)):
        for name, blobs in net.params.items():
            for mine, theirs in zip(blobs, other.params[name]):
                assert (mine.data == theirs.data).all()
    levels = tmp_path / 'levels.prototxt'
    levels.write_text(LEVELS_NET)
    assert 'Level1Only' not in caffe.Net(str(levels), caffe.TEST).blobs
    assert 'Level1Only' in caffe.Net(str(levels), caffe.TEST, 1).blobs        # positional level
    assert 'Level1Only' in caffe.Net(str(levels), caffe.TEST, level=1, stages=['a']).blobs


def test_private_names_and_views(net):
    assert net._layer_names == ['data', 'conv', 'ip', 'loss']
    assert net._blob_names == ['data', 'label', 'conv', 'ip_blob', 'loss']
    assert net._inputs == [] and net._outputs == [4] and net.outputs == ['loss']
    assert net._bottom_ids(3) == [3, 1] and net._top_ids(0) == [0, 1]
    assert net._blob_loss_weights == [0, 0, 0, 0, 1]
    assert list(net.blob_loss_weights.values()) == [0, 0, 0, 0, 1]
    assert [layer.type for layer in net.layers] == ['DummyData', 'Convolution', 'InnerProduct', 'SoftmaxWithLoss']
    assert list(net.layer_dict) == net._layer_names
    assert list(net.params) == ['conv', 'ip']
    blob = net.blobs['data']
    assert (blob.num, blob.channels, blob.height, blob.width, blob.count) == (5, 2, 3, 4, 120)
    assert list(blob.shape) == [5, 2, 3, 4]
    loss = net._forward(0, len(net.layers) - 1)
    assert loss == pytest.approx(float(net.blobs['loss'].data))
    net._backward(len(net.layers) - 1, 0)
    assert np.abs(net.params['conv'][0].diff).sum() > 0
    net.clear_param_diffs()
    assert not net.params['conv'][0].diff.any()


def test_layer_callbacks_run_in_caffes_order(net):
    calls = []
    net.before_forward(lambda i: calls.append(('bf', i)))
    net.after_forward(lambda i: calls.append(('af', i)))
    net.before_backward(lambda i: calls.append(('bb', i)))
    net.after_backward(lambda i: calls.append(('ab', i)))
    net.forward(start='conv', end='ip')
    assert calls == [('bf', 1), ('af', 1), ('bf', 2), ('af', 2)]
    calls.clear()
    net.backward(start='ip', end='conv')
    assert calls == [('bb', 2), ('ab', 2), ('bb', 1), ('ab', 1)]


def test_module_level_names_of_pycaffe():
    import logging
    timer = caffe.Timer()
    timer.start()
    timer.stop()
    assert timer.ms >= 0
    assert isinstance(caffe.has_nccl(), bool)
    before = caffe.log.logger.level
    try:
        caffe.init_log(1)
        assert caffe.log.logger.level == logging.WARNING
    finally:
        caffe.log.logger.setLevel(before)
    assert callable(caffe.log) and caffe.log.info == caffe.log.logger.info
    for name in ('Net', 'SGDSolver', 'NesterovSolver', 'AdaGradSolver', 'RMSPropSolver', 'AdaDeltaSolver',
                 'AdamSolver', 'get_solver', 'set_mode_cpu', 'set_mode_gpu', 'set_device', 'set_random_seed',
                 'Layer', 'layer_type_list', 'TRAIN', 'TEST', 'Classifier', 'Detector', 'io', 'layers',
                 'params', 'NetSpec', 'to_proto', 'coord_map', 'proto'):
        assert hasattr(caffe, name), name


def test_caffe_log_logs_a_message_at_info_as_bvlc_train_py_calls_it(captured_log):
    caffe.log('Using devices %s' % str([0, 1]))
    line = captured_log.getvalue().splitlines()[-1]
    assert line.startswith('I') and line.endswith(' test_pycaffe_net.py:%d] Using devices [0, 1]' % (
        test_caffe_log_logs_a_message_at_info_as_bvlc_train_py_calls_it.__code__.co_firstlineno + 1))
