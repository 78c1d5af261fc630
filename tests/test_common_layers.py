"""Common layers: float64 gradient checks, parameter variants, Caffe's tie rules and refusals."""
import numpy as np
import pytest
from google.protobuf import text_format

from caffe_py import TEST, Net
from caffe_py.proto import caffe_pb2
from harness import layer_gradient_check, layer_net, layer_net_text, numeric_gradient_check, rand


net_text = layer_net_text
build = layer_net
check = layer_gradient_check


FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -1 max: 1 }'


# -- gradients --------------------------------------------------------------------------------------

@pytest.mark.parametrize('param,shape', [
    ('num_output: 3', (2, 2, 3)),
    ('num_output: 3 bias_term: false', (2, 4)),
    ('num_output: 2 transpose: true', (3, 4)),
    ('num_output: 2 axis: 2', (2, 2, 3)),
    ('num_output: 2 axis: -1 transpose: true', (2, 2, 3)),
])
def test_inner_product_gradient(param, shape):
    check({'x': rand(*shape)}, 'type: "InnerProduct" inner_product_param { %s %s }' % (param, FILLERS))


def test_concat_slice_split_gradients():
    check({'a': rand(2, 1, 3), 'b': rand(2, 3, 3, seed=1)}, 'type: "Concat"')
    check({'a': rand(2, 2), 'b': rand(3, 2, seed=1)}, 'type: "Concat" concat_param { axis: 0 }')
    check({'x': rand(2, 5, 2)}, 'type: "Slice" slice_param { axis: -2 slice_point: 1 slice_point: 4 }',
          tops=('a', 'b', 'c'))
    check({'x': rand(2, 3)}, 'type: "Split"', tops=('a', 'b', 'c'))
    check({'x': rand(2, 3)}, 'type: "Split"', tops=('a',))


def test_flatten_reshape_gradients():
    check({'x': rand(2, 3, 2, 2)}, 'type: "Flatten" flatten_param { axis: 1 end_axis: 2 }')
    check({'x': rand(2, 6, 2)}, 'type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 3 } }')


@pytest.mark.parametrize('param', [
    'operation: SUM',
    'operation: SUM coeff: 0.5 coeff: -1 coeff: 2',
    'operation: PROD',
    'operation: PROD stable_prod_grad: false',
    'operation: MAX',
])
def test_eltwise_gradient(param):
    inputs = {n: rand(2, 3, 2, seed=i) + (3 if 'false' in param else 0) for i, n in enumerate('abc')}
    check(inputs, 'type: "Eltwise" eltwise_param { %s }' % param)


@pytest.mark.parametrize('axis', [0, 1, -1])
def test_softmax_gradient(axis):
    check({'x': rand(2, 3, 4)}, 'type: "Softmax" softmax_param { axis: %d }' % axis)


def test_softmax_in_place_gradient():
    text = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }\n'
            'layer { name: "copy" type: "Power" bottom: "x" top: "y" }\n'
            'layer { name: "L" type: "Softmax" bottom: "y" top: "y" }')
    numeric_gradient_check(text, {'x': rand(2, 4)})


def test_tile_crop_gradients():
    check({'x': rand(2, 3, 2)}, 'type: "Tile" tile_param { axis: 1 tiles: 3 }')
    check({'x': rand(2, 3)}, 'type: "Tile" tile_param { axis: 0 tiles: 2 }')
    check({'x': rand(2, 4, 5), 'ref': rand(2, 2, 3)},
          'type: "Crop" crop_param { axis: 1 offset: 1 offset: 2 }', no_grad=('ref',))


@pytest.mark.parametrize('op', ['SUM', 'ASUM', 'SUMSQ', 'MEAN'])
@pytest.mark.parametrize('axis', [0, 1, -1])
def test_reduction_gradient(op, axis):
    x = rand(2, 3, 2)
    x += np.sign(x) * 0.1        # away from ASUM's kink
    check({'x': x}, 'type: "Reduction" reduction_param { operation: %s axis: %d coeff: -1.5 }' % (op, axis))


def test_filter_batch_reindex_gradients():
    check({'x': rand(5, 2), 'z': rand(5, 1, 2), 'sel': np.array([1.0, 0, 1, 1, 0])},
          'type: "Filter"', tops=('y', 'w'), no_grad=('sel',))
    check({'x': rand(4, 3), 'idx': np.array([3.0, 0, 3, 1, 3])}, 'type: "BatchReindex"', no_grad=('idx',))


def test_parameter_silence_embed_gradients():
    check({}, 'type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }',
          params={'L': [rand(2, 3)]})
    net = check({'x': rand(2, 3)}, 'type: "Silence"', tops=())
    np.testing.assert_array_equal(net.blobs['x'].diff, 0)
    check({'x': np.array([[0.0, 4, 2], [4, 4, 1]])},
          'type: "Embed" embed_param { num_output: 3 input_dim: 5 %s }' % FILLERS, no_grad=('x',))


# -- variants and semantics -----------------------------------------------------------------------

def test_inner_product_transpose_and_axis():
    x = rand(2, 3, 4).astype(np.float32)
    net = build({'x': x}, 'type: "InnerProduct" inner_product_param { num_output: 5 axis: 2 %s }' % FILLERS,
                dtype=np.float32)
    w, b = net.params['L'][0].data, net.params['L'][1].data
    assert w.shape == (5, 4) and net.blobs['y'].shape == (2, 3, 5)
    net.forward()
    np.testing.assert_allclose(net.blobs['y'].data, x @ w.T + b, rtol=1e-5, atol=1e-6)
    tnet = build({'x': x}, 'type: "InnerProduct" inner_product_param { num_output: 5 axis: 2 transpose: true '
                 '%s }' % FILLERS, dtype=np.float32)
    assert tnet.params['L'][0].shape == (4, 5)
    tnet.params['L'][0].data[...] = w.T
    tnet.params['L'][1].data[...] = b
    tnet.forward()
    np.testing.assert_allclose(tnet.blobs['y'].data, net.blobs['y'].data, rtol=1e-6)
    assert tnet.blobs['y'].data.dtype == np.float32


def test_inner_product_refuses_changed_input_size():
    net = build({'x': rand(2, 4)}, 'type: "InnerProduct" inner_product_param { num_output: 2 }')
    net.blobs['x'].reshape(2, 5)
    with pytest.raises(ValueError, match='InnerProduct layer "L".*incompatible'):
        net.forward()
    with pytest.raises(ValueError, match='num_output'):
        build({'x': rand(2, 4)}, 'type: "InnerProduct"')


def test_concat_single_bottom_and_legacy_dim():
    x = rand(2, 3)
    net = build({'x': x}, 'type: "Concat"')
    net.forward()
    np.testing.assert_array_equal(net.blobs['y'].data, x)
    assert np.shares_memory(net.blobs['y'].data, net.blobs['x'].data)
    net = build({'a': rand(2, 3), 'b': rand(2, 3, seed=1)}, 'type: "Concat" concat_param { concat_dim: 0 }')
    assert net.blobs['y'].shape == (4, 3)


@pytest.mark.parametrize('inputs,param,message', [
    ({'a': (2, 3), 'b': (2, 4)}, 'axis: 0', 'same shape except'),
    ({'a': (2, 3), 'b': (2, 3, 1)}, '', 'same number of axes'),
    ({'a': (2, 3), 'b': (2, 3)}, 'axis: 0 concat_dim: 0', 'not both'),
    ({'a': (2, 3), 'b': (2, 3)}, 'concat_dim: 2', 'out of range'),
    ({'a': (2, 3), 'b': (2, 3)}, 'axis: 2', 'out of range'),
])
def test_concat_refusals(inputs, param, message):
    with pytest.raises(ValueError, match='Concat layer "L".*' + message):
        build({k: np.zeros(v) for k, v in inputs.items()}, 'type: "Concat" concat_param { %s }' % param)


def test_slice_variants():
    x = np.arange(12.0).reshape(2, 6)
    net = build({'x': x}, 'type: "Slice" slice_param { slice_dim: 1 slice_point: 2 slice_point: 5 }',
                tops=('a', 'b', 'c'))
    net.forward()
    for name, part in zip('abc', np.split(x, [2, 5], axis=1)):
        np.testing.assert_array_equal(net.blobs[name].data, part)
    net = build({'x': x}, 'type: "Slice" slice_param { axis: 1 }', tops=('a', 'b', 'c'))
    assert [net.blobs[n].shape for n in 'abc'] == [(2, 2)] * 3


@pytest.mark.parametrize('param,tops,message', [
    ('axis: 1', ('a', 'b', 'c', 'd'), 'evenly divide'),
    ('axis: 1 slice_point: 2', ('a', 'b', 'c'), 'slice points'),
    ('axis: 1 slice_point: 4 slice_point: 2', ('a', 'b', 'c'), 'increase'),
    ('axis: 1 slice_point: 6', ('a', 'b'), 'increase'),
    ('axis: 1 slice_dim: 1', ('a', 'b'), 'not both'),
])
def test_slice_refusals(param, tops, message):
    with pytest.raises(ValueError, match='Slice layer "L".*' + message):
        build({'x': np.zeros((2, 6))}, 'type: "Slice" slice_param { %s }' % param, tops=tops)


def test_split_shares_data_and_sums_diffs():
    net = build({'x': rand(2, 3)}, 'type: "Split"', tops=('a', 'b', 'c'))
    net.forward()
    assert all(np.shares_memory(net.blobs[n].data, net.blobs['x'].data) for n in 'abc')
    for i, n in enumerate('abc'):
        net.blobs[n].diff[...] = i + 1
    net.backward()
    np.testing.assert_array_equal(net.blobs['x'].diff, 6)


def test_flatten_shares_memory_and_shapes():
    net = build({'x': rand(2, 3, 4, 5)}, 'type: "Flatten"')
    assert net.blobs['y'].shape == (2, 60)
    net.forward()
    assert np.shares_memory(net.blobs['y'].data, net.blobs['x'].data)
    assert np.shares_memory(net.blobs['y'].diff, net.blobs['x'].diff)
    net = build({'x': rand(2, 3, 4, 5)}, 'type: "Flatten" flatten_param { axis: 0 end_axis: 1 }')
    assert net.blobs['y'].shape == (6, 4, 5)
    with pytest.raises(ValueError, match='in-place'):
        build({'x': rand(2, 3)}, 'type: "Flatten"', tops=('x',))


@pytest.mark.parametrize('param,shape', [
    ('shape { dim: 0 dim: -1 }', (2, 60)),
    ('shape { dim: -1 dim: 4 dim: 5 }', (6, 4, 5)),
    ('shape { dim: 0 dim: 0 dim: 20 }', (2, 3, 20)),
    ('shape { dim: 5 dim: 4 } axis: 2', (2, 3, 5, 4)),
    ('shape { dim: 1 dim: -1 } axis: 1 num_axes: 1', (2, 1, 3, 4, 5)),
    ('shape { dim: 1 } axis: 0 num_axes: 0', (1, 2, 3, 4, 5)),
    ('shape { dim: -1 } axis: -3', (2, 3, 20)),
    ('shape { } axis: -1 num_axes: 0', (2, 3, 4, 5)),
])
def test_reshape_inference(param, shape):
    net = build({'x': rand(2, 3, 4, 5)}, 'type: "Reshape" reshape_param { %s }' % param)
    assert net.blobs['y'].shape == shape
    net.forward()
    assert np.shares_memory(net.blobs['y'].data, net.blobs['x'].data)


@pytest.mark.parametrize('param,message', [
    ('shape { dim: -1 dim: -1 }', 'multiple -1'),
    ('shape { dim: 7 dim: -1 }', 'divisible'),
    ('shape { dim: 7 dim: 2 }', 'count must match'),
    ('shape { dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 }', 'no corresponding bottom axis'),
    ('shape { dim: 2 } axis: 5', 'out of range'),
    ('shape { dim: 2 } axis: 1 num_axes: 4', 'out of range'),
    ('shape { dim: 2 } num_axes: -2', 'num_axes'),
])
def test_reshape_refusals(param, message):
    with pytest.raises(ValueError, match='Reshape layer "L".*' + message):
        build({'x': rand(2, 3, 4, 5)}, 'type: "Reshape" reshape_param { %s }' % param)


def test_reshape_refuses_in_place():
    with pytest.raises(ValueError, match='in-place'):
        build({'x': rand(2, 3)}, 'type: "Reshape" reshape_param { shape { dim: -1 } }', tops=('x',))


def test_eltwise_max_ties_as_caffe():
    a = np.array([[1.0, 2.0, 3.0, 0.0]])
    b = np.array([[1.0, 2.0, 0.0, 0.0]])
    c = np.array([[1.0, 0.0, 3.0, 5.0]])
    net = build({'a': a, 'b': b, 'c': c}, 'type: "Eltwise" eltwise_param { operation: MAX }')
    net.forward()
    net.blobs['y'].diff[...] = 1
    net.backward()
    np.testing.assert_array_equal(net.blobs['y'].data, [[1, 2, 3, 5]])
    # a tie between bottoms 0 and 1 goes to 1; a later bottom must be strictly greater
    np.testing.assert_array_equal(net.blobs['a'].diff, [[0, 0, 1, 0]])
    np.testing.assert_array_equal(net.blobs['b'].diff, [[1, 1, 0, 0]])
    np.testing.assert_array_equal(net.blobs['c'].diff, [[0, 0, 0, 1]])


@pytest.mark.parametrize('param,message', [
    ('operation: SUM coeff: 1', 'one coefficient per bottom'),
    ('operation: PROD coeff: 1 coeff: 2', 'only takes coefficients for summation'),
])
def test_eltwise_refusals(param, message):
    with pytest.raises(ValueError, match='Eltwise layer "L".*' + message):
        build({'a': rand(2), 'b': rand(2)}, 'type: "Eltwise" eltwise_param { %s }' % param)
    with pytest.raises(ValueError, match='Eltwise layer "L"'):
        build({'a': rand(2), 'b': rand(3)}, 'type: "Eltwise"')


def test_softmax_stable_for_large_inputs():
    x = np.array([[1000.0, 1001.0, 999.0]], np.float32)
    net = build({'x': x}, 'type: "Softmax"', dtype=np.float32)
    net.forward()
    e = np.exp(np.array([-1.0, 0.0, -2.0]))
    np.testing.assert_allclose(net.blobs['y'].data[0], e / e.sum(), rtol=1e-6)


def test_argmax_variants_and_ties():
    x = np.array([[3.0, 1.0, 3.0, 2.0, 3.0], [0.0, 5.0, 4.0, 5.0, -1.0]])
    net = build({'x': x}, 'type: "ArgMax" argmax_param { top_k: 3 out_max_val: true }')
    net.forward()
    # std::partial_sort with std::greater on (value, index): equal values, larger index first
    np.testing.assert_array_equal(net.blobs['y'].data[:, 0, :], [[4, 2, 0], [3, 1, 2]])
    np.testing.assert_array_equal(net.blobs['y'].data[:, 1, :], [[3, 3, 3], [5, 5, 4]])
    assert net.blobs['y'].shape == (2, 2, 3)
    x3 = rand(2, 4, 3)
    net = build({'x': x3}, 'type: "ArgMax" argmax_param { axis: -2 out_max_val: true top_k: 2 }')
    net.forward()
    np.testing.assert_array_equal(net.blobs['y'].data, -np.sort(-x3, axis=1)[:, :2])
    with pytest.raises(ValueError, match='ArgMax layer "L".*top_k'):
        build({'x': x3}, 'type: "ArgMax" argmax_param { axis: 2 top_k: 4 }')
    with pytest.raises(ValueError, match='ArgMax layer "L".*top_k'):
        build({'x': x3}, 'type: "ArgMax" argmax_param { top_k: 13 }')


def test_crop_default_axis_and_refusals():
    x = np.arange(2 * 3 * 5 * 6.0).reshape(2, 3, 5, 6)
    net = build({'x': x, 'ref': np.zeros((1, 1, 2, 3))}, 'type: "Crop" crop_param { offset: 2 offset: 1 }')
    net.forward()
    np.testing.assert_array_equal(net.blobs['y'].data, x[:, :, 2:4, 1:4])
    with pytest.raises(ValueError, match='Crop layer "L".*out-of-bounds'):
        build({'x': x, 'ref': np.zeros((1, 1, 2, 3))}, 'type: "Crop" crop_param { offset: 4 }')
    with pytest.raises(ValueError, match='Crop layer "L".*number of offset'):
        build({'x': x, 'ref': np.zeros((1, 1, 2, 3))},
              'type: "Crop" crop_param { offset: 1 offset: 1 offset: 1 }')


def test_filter_reshapes_to_the_selection():
    x = rand(4, 2)
    net = build({'x': x, 'sel': np.zeros(4)}, 'type: "Filter"')
    assert net.blobs['y'].shape == (4, 2)          # Caffe's first reshape keeps the whole batch
    net.blobs['sel'].data[...] = [0, 1, 0, 1]
    net.forward()
    np.testing.assert_array_equal(net.blobs['y'].data, x[[1, 3]])
    net.blobs['sel'].data[...] = 0
    net.forward()
    assert net.blobs['y'].shape == (0, 2)


def test_index_inputs_refuse_explicit_backward():
    text = net_text({'x': (4, 3), 'idx': (2,)},
                    'type: "BatchReindex" loss_weight: 1 propagate_down: true propagate_down: true')
    net = Net(text_format.Parse('force_backward: true ' + text, caffe_pb2.NetParameter()), TEST)
    net.blobs['idx'].data[...] = [1, 2]
    net.forward()
    with pytest.raises(ValueError, match='BatchReindex layer "L".*index'):
        net.backward()
    bad = build({'x': rand(4, 3), 'idx': np.array([0.0, 4.0])}, 'type: "BatchReindex"')
    with pytest.raises(ValueError, match='out of range'):
        bad.forward()


def test_embed_refuses_bad_indices():
    net = build({'x': np.array([0.0, 5.0])}, 'type: "Embed" embed_param { num_output: 2 input_dim: 5 }')
    with pytest.raises(ValueError, match='Embed layer "L".*indices'):
        net.forward()
    with pytest.raises(ValueError, match='Embed layer "L".*input_dim'):
        build({'x': np.zeros(2)}, 'type: "Embed" embed_param { num_output: 2 }')


def test_tile_refusals():
    with pytest.raises(ValueError, match='Tile layer "L".*tiles'):
        build({'x': rand(2, 3)}, 'type: "Tile"')
    with pytest.raises(ValueError, match='Tile layer "L".*positive'):
        build({'x': rand(2, 3)}, 'type: "Tile" tile_param { tiles: 0 }')
