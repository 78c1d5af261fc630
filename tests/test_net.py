"""Net::Init semantics: NetState rules, splits, in-place blobs, loss weights, backward needs, sharing, weights I/O."""
import numpy as np
import pytest
from google.protobuf import text_format

import caffe_py
from caffe_py.net import NetError, filter_net, insert_splits
from caffe_py.proto import caffe_pb2

NET = '''
name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        param { lr_mult: 1 } param { lr_mult: 2 }
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
'''


def parse(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def make(text=NET, phase=caffe_py.TEST, **kw):
    return caffe_py.Net(parse(text), phase, **kw)


def test_splits_named_as_caffe_and_phase_filtering():
    test_net = make()
    assert list(test_net.blobs) == ['data', 'label', 'label_data_1_split_0', 'label_data_1_split_1',
                                    'conv', 'ip', 'ip_ip_0_split_0', 'ip_ip_0_split_1', 'acc', 'loss']
    assert [l.type for l in test_net.layers].count('Split') == 2
    train_net = make(phase=caffe_py.TRAIN)
    assert 'acc' not in train_net.blobs and 'ip_ip_0_split_0' not in train_net.blobs
    assert train_net.outputs == ['loss']
    assert test_net.outputs == ['acc', 'loss']


def test_in_place_layers_share_the_blob_and_loss_weights_default_to_one():
    net = make()
    assert net.top_vecs[net.layer_index('relu')][0] is net.blobs['conv']
    assert net.blob_loss_weights['loss'] == 1.0
    assert net.blob_loss_weights['acc'] == 0.0


def test_backward_needs_follow_caffe():
    net = make(phase=caffe_py.TRAIN)
    need = dict(zip(net.layer_names, net.layer_need_backward))
    assert need['conv'] and need['ip'] and need['loss'] and not need['data']
    assert net.blob_need_backward['conv'] and not net.blob_need_backward['data']


def test_state_rules_levels_and_stages():
    param = parse('''
      layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 } } }
      layer { name: "b" type: "Input" top: "b" input_param { shape { dim: 1 } } include { min_level: 2 } }
      layer { name: "c" type: "Input" top: "c" input_param { shape { dim: 1 } } include { stage: "x" } }
      layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 } } exclude { not_stage: "x" } }
    ''')
    param.state.level = 1
    assert [l.name for l in filter_net(param).layer] == ['a']
    param.state.level = 2
    param.state.stage.append('x')
    assert [l.name for l in filter_net(param).layer] == ['a', 'b', 'c', 'd']


def test_split_carries_loss_weight_of_a_consumed_loss_top():
    param = parse('''
      layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 } } }
      layer { name: "l" type: "Power" bottom: "x" top: "y" loss_weight: 2 }
      layer { name: "m" type: "Power" bottom: "y" top: "z" }
    ''')
    split = insert_splits(param)
    names = [l.name for l in split.layer]
    assert names == ['in', 'l', 'y_l_0_split', 'm']
    assert list(split.layer[2].loss_weight) == [2.0, 0.0]
    assert list(split.layer[1].loss_weight) == []
    assert list(split.layer[3].bottom) == ['y_l_0_split_1']


def test_unknown_bottom_and_duplicate_top_are_refused():
    with pytest.raises(NetError, match="Unknown bottom blob 'nope'"):
        make('layer { name: "r" type: "ReLU" bottom: "nope" top: "r" }')
    with pytest.raises(NetError, match='produced by multiple sources'):
        make('''layer { name: "a" type: "Input" top: "x" input_param { shape { dim: 1 } } }
                layer { name: "b" type: "Input" top: "x" input_param { shape { dim: 1 } } }''')


def test_unknown_layer_type_lists_known_types():
    with pytest.raises(NetError, match='Unknown layer type: "Bogus".*Convolution'):
        make('layer { name: "a" type: "Bogus" top: "x" }')


def test_shared_params_are_one_memory_and_accumulate():
    net = make('''
      force_backward: true
      layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
      layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" } param { name: "b" }
              inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
      layer { name: "b" type: "InnerProduct" bottom: "x" top: "b" param { name: "w" } param { name: "b" }
              inner_product_param { num_output: 2 } }
    ''')
    np.testing.assert_array_equal(net.params['a'][0].data, net.params['b'][0].data)
    assert len(net.learnable_params) == 2
    net.params['a'][0].data[...] = 3
    assert (net.params['b'][0].data == 3).all()
    assert net.param_owners == [-1, -1, 0, 1]


def test_save_and_copy_from_round_trip(tmp_path):
    net = make()
    path = str(tmp_path / 'w.caffemodel')
    net.save(path)
    other = make(weights=path)
    for name in net.params:
        for a, b in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    h5 = str(tmp_path / 'w.caffemodel.h5')
    net.save_hdf5(h5)
    third = make()
    third.copy_from(h5)
    np.testing.assert_array_equal(third.params['ip'][0].data, net.params['ip'][0].data)
    fourth = make()
    fourth.load_hdf5(h5)
    np.testing.assert_array_equal(fourth.params['ip'][0].data, net.params['ip'][0].data)


def test_copy_from_shape_mismatch_names_layer_and_shapes(tmp_path):
    path = str(tmp_path / 'w.caffemodel')
    make().save(path)
    with pytest.raises(NetError, match="layer 'ip'; shape mismatch.*rename the layer"):
        make(NET.replace('num_output: 3', 'num_output: 5'), weights=path)


def test_renamed_layer_starts_fresh_when_copying(tmp_path):
    path = str(tmp_path / 'w.caffemodel')
    source = make()
    source.params['ip'][0].data[...] = 7
    source.save(path)
    net = make(NET.replace('name: "ip"', 'name: "ip_new"'), weights=path)
    assert not (net.params['ip_new'][0].data == 7).any()
    np.testing.assert_array_equal(net.params['conv'][0].data, source.params['conv'][0].data)


def test_pycaffe_forward_and_backward():
    net = make('''
      force_backward: true
      layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
      layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
              inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    ''')
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = net.forward(x=x)
    w = net.params['ip'][0].data
    np.testing.assert_allclose(out['y'], x @ w.T, rtol=1e-6)
    grads = net.backward(y=np.ones((2, 2), np.float32))
    np.testing.assert_allclose(grads['x'], np.ones((2, 2)) @ w, rtol=1e-6)
    with pytest.raises(ValueError, match='shape'):
        net.forward(x=np.zeros((3, 3)))


def test_opencv_dnn_reads_a_saved_caffemodel(tmp_path):
    cv2 = pytest.importorskip('cv2')
    deploy = '''
      name: "small"
      input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
      layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
              convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 }
                                  bias_filler { type: "constant" value: 0.1 } } }
      layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
      layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
      layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
              inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
      layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
    '''
    proto_path = tmp_path / 'deploy.prototxt'
    proto_path.write_text(deploy)
    net = caffe_py.Net(str(proto_path), caffe_py.TEST)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ours = net.forward(data=x)['prob'].copy()
    net.save(str(tmp_path / 'w.caffemodel'))
    cv_net = cv2.dnn.readNetFromCaffe(str(proto_path), str(tmp_path / 'w.caffemodel'))
    cv_net.setInput(x)
    theirs = cv_net.forward()
    np.testing.assert_allclose(theirs.reshape(ours.shape), ours, rtol=1e-4, atol=1e-6)
