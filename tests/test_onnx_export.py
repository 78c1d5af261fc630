"""caffe_py.onnx: every converter on small random nets with tricky parameters, checked in onnxruntime
against caffe-py's forward; refusals; the CLI; dynamic batch; opsets."""
import numpy as np
import pytest
from google.protobuf import text_format

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

import caffe_py  # noqa: E402
from caffe_py import onnx as caffe_onnx  # noqa: E402
from caffe_py.onnx import survey  # noqa: E402
from caffe_py.proto import caffe_pb2  # noqa: E402
from caffe_py.tools import cli  # noqa: E402


def build(inputs, layers):
    """A TEST net: one Input layer per (name, shape) of `inputs`, then the layers' prototxt text."""
    text = ''.join('layer { name: "in_%s" type: "Input" top: "%s" input_param { shape { %s } } }\n'
                   % (name, name, ' '.join('dim: %d' % d for d in shape)) for name, shape in inputs.items())
    param = text_format.Parse(text + layers, caffe_pb2.NetParameter())
    return caffe_py.Net(param, caffe_py.TEST)


def roundtrip(net, feeds=None, tol=1e-5, seed=0, randomize=True, **kwargs):
    """Export, run in onnxruntime and caffe-py on the same inputs; the graph's outputs must agree."""
    if randomize:
        survey.randomize(net, seed)
    model = caffe_onnx.export(net, **kwargs)
    feeds = feeds or survey.random_inputs(net, model, seed)
    got = survey.run_onnx(model, feeds)
    want = survey.run_caffe(net, feeds, list(got))
    for name, value in want.items():
        assert got[name].shape == value.shape, name
    error = survey.worst_error(got, want)
    assert error <= tol, error
    return model, got


X4 = {'x': (2, 3, 9, 8)}

CASES = {
    'conv_pad_stride_dilation_group': (X4, '''layer { name: "c" type: "Convolution" bottom: "x" top: "y"
        convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride: 2 pad_h: 1 pad_w: 2 dilation: 2
        group: 3 } }'''),
    'conv_no_bias_1x1_two_bottoms': (X4, '''layer { name: "a" type: "AbsVal" bottom: "x" top: "a" }
        layer { name: "c" type: "Convolution" bottom: "x" bottom: "a" top: "y" top: "z"
        convolution_param { num_output: 4 kernel_size: 1 bias_term: false } }'''),
    'deconv_groups': (X4, '''layer { name: "d" type: "Deconvolution" bottom: "x" top: "y"
        convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 3 } }'''),
    'deconv_dilated': (X4, '''layer { name: "d" type: "Deconvolution" bottom: "x" top: "y"
        convolution_param { num_output: 2 kernel_size: 3 stride: 3 dilation: 2 } }'''),
    'max_ceil_pad_dropped_window': ({'x': (2, 3, 5, 5)}, '''layer { name: "p" type: "Pooling" bottom: "x"
        top: "y" pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 } }'''),
    'max_ceil_no_pad': (X4, '''layer { name: "p" type: "Pooling" bottom: "x" top: "y"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }'''),
    'max_floor': (X4, '''layer { name: "p" type: "Pooling" bottom: "x" top: "y"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR } }'''),
    'ave_pad_clipped_divisor': ({'x': (2, 3, 8, 7)}, '''layer { name: "p" type: "Pooling" bottom: "x"
        top: "y" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }'''),
    'ave_pad_dropped_window': ({'x': (2, 3, 5, 6)}, '''layer { name: "p" type: "Pooling" bottom: "x"
        top: "y" pooling_param { pool: AVE kernel_h: 2 kernel_w: 3 stride: 2 pad_h: 1 pad_w: 2 } }'''),
    'ave_no_pad_ceil': (X4, '''layer { name: "p" type: "Pooling" bottom: "x" top: "y"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 } }'''),
    'global_max_and_ave': (X4, '''layer { name: "p" type: "Pooling" bottom: "x" top: "y"
        pooling_param { pool: MAX global_pooling: true } }
        layer { name: "q" type: "Pooling" bottom: "x" top: "z" pooling_param { pool: AVE global_pooling: true } }'''),
    'stochastic_test_phase': (X4, '''layer { name: "r" type: "AbsVal" bottom: "x" top: "a" }
        layer { name: "p" type: "Pooling" bottom: "a" top: "y"
        pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 } }'''),
    'spp_levels_odd_sizes': ({'x': (2, 3, 9, 7)}, '''layer { name: "s" type: "SPP" bottom: "x" top: "y"
        spp_param { pyramid_height: 3 pool: AVE } }
        layer { name: "t" type: "SPP" bottom: "x" top: "z" spp_param { pyramid_height: 2 pool: MAX } }
        layer { name: "u" type: "SPP" bottom: "x" top: "t" spp_param { pyramid_height: 1 } }'''),
    'im2col_dilated_padded': (X4, '''layer { name: "i" type: "Im2col" bottom: "x" top: "y"
        convolution_param { kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 dilation: 2 } }'''),
    'lrn_across': (X4, '''layer { name: "n" type: "LRN" bottom: "x" top: "y"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }'''),
    'lrn_within': (X4, '''layer { name: "n" type: "LRN" bottom: "x" top: "y"
        lrn_param { local_size: 5 alpha: 0.9 beta: 0.6 norm_region: WITHIN_CHANNEL } }'''),
    'inner_product_transpose': (X4, '''layer { name: "f" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 5 transpose: true } }'''),
    'inner_product_axis2': (X4, '''layer { name: "f" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 4 axis: 2 } }'''),
    'eltwise_sum_coeff_prod_max': (X4, '''layer { name: "s" type: "Split" bottom: "x" top: "a" top: "b" top: "c" }
        layer { name: "e1" type: "Eltwise" bottom: "a" bottom: "b" top: "y1"
        eltwise_param { operation: SUM coeff: 0.5 coeff: -2 } }
        layer { name: "e2" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y2"
        eltwise_param { operation: PROD } }
        layer { name: "e3" type: "Eltwise" bottom: "y1" bottom: "c" top: "y3" eltwise_param { operation: MAX } }'''),
    'scale_axis_num_axes_bias': (X4, '''layer { name: "s" type: "Scale" bottom: "x" top: "y"
        scale_param { axis: 1 num_axes: 2 bias_term: true } }'''),
    'scale_second_bottom_and_bias': ({'x': (2, 3, 4, 5), 'w': (2, 3)}, '''layer { name: "s" type: "Scale"
        bottom: "x" bottom: "w" top: "y" scale_param { axis: 0 } }
        layer { name: "b" type: "Bias" bottom: "y" top: "z" bias_param { axis: 2 num_axes: 1 } }
        layer { name: "b2" type: "Bias" bottom: "z" bottom: "w" top: "t" bias_param { axis: 0 } }'''),
    'batch_norm_factor': (X4, '''layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y"
        batch_norm_param { eps: 0.001 } }'''),
    'concat_slice_axes': (X4, '''layer { name: "s" type: "Slice" bottom: "x" top: "a" top: "b" top: "c"
        slice_param { axis: 2 slice_point: 2 slice_point: 7 } }
        layer { name: "c" type: "Concat" bottom: "c" bottom: "a" top: "y" concat_param { axis: 2 } }
        layer { name: "s2" type: "Slice" bottom: "x" top: "d" top: "e" slice_param { axis: -1 } }'''),
    'flatten_reshape': (X4, '''layer { name: "f" type: "Flatten" bottom: "x" top: "y"
        flatten_param { axis: 1 end_axis: 2 } }
        layer { name: "r" type: "Reshape" bottom: "y" top: "z" reshape_param { shape { dim: 0 dim: -1 dim: 4 } } }
        layer { name: "r2" type: "Reshape" bottom: "z" top: "t" reshape_param { axis: 1 num_axes: 1
        shape { dim: 6 dim: 9 } } }'''),
    'neurons': (X4, '''layer { name: "a" type: "ReLU" bottom: "x" top: "a" relu_param { negative_slope: 0.1 } }
        layer { name: "b" type: "ELU" bottom: "x" top: "b" elu_param { alpha: 0.7 } }
        layer { name: "c" type: "Sigmoid" bottom: "x" top: "c" }
        layer { name: "d" type: "TanH" bottom: "x" top: "d" }
        layer { name: "e" type: "AbsVal" bottom: "x" top: "e" }
        layer { name: "f" type: "BNLL" bottom: "x" top: "f" }
        layer { name: "g" type: "Threshold" bottom: "x" top: "g" threshold_param { threshold: 0.2 } }
        layer { name: "h" type: "Clip" bottom: "x" top: "h" clip_param { min: -0.5 max: 0.7 } }
        layer { name: "i" type: "Swish" bottom: "x" top: "i" swish_param { beta: 1.5 } }
        layer { name: "j" type: "ReLU" bottom: "x" top: "j" }
        layer { name: "k" type: "Dropout" bottom: "j" top: "j" dropout_param { dropout_ratio: 0.3 } }'''),
    'power_exp_log': (X4, '''layer { name: "a" type: "AbsVal" bottom: "x" top: "a" }
        layer { name: "p" type: "Power" bottom: "a" top: "p" power_param { power: 1.5 scale: 2 shift: 0.5 } }
        layer { name: "q" type: "Power" bottom: "x" top: "q" power_param { power: 1 scale: -3 shift: 1 } }
        layer { name: "r" type: "Power" bottom: "x" top: "r" power_param { power: 0 } }
        layer { name: "e" type: "Exp" bottom: "x" top: "e" exp_param { base: 2 scale: 0.5 shift: 1 } }
        layer { name: "e2" type: "Exp" bottom: "x" top: "e2" }
        layer { name: "l" type: "Log" bottom: "p" top: "l" log_param { base: 10 scale: 3 shift: 1 } }
        layer { name: "l2" type: "Log" bottom: "p" top: "l2" }'''),
    'prelu_channel_and_shared': (X4, '''layer { name: "a" type: "PReLU" bottom: "x" top: "a" }
        layer { name: "b" type: "PReLU" bottom: "x" top: "b" prelu_param { channel_shared: true } }'''),
    'crop_offsets': ({'x': (2, 3, 9, 8), 'r': (2, 2, 4, 5)}, '''layer { name: "c" type: "Crop" bottom: "x"
        bottom: "r" top: "y" crop_param { axis: 1 offset: 1 offset: 3 offset: 2 } }
        layer { name: "d" type: "Crop" bottom: "x" bottom: "r" top: "z" crop_param { axis: 2 offset: 3 } }'''),
    'softmax_axis2': (X4, '''layer { name: "s" type: "Softmax" bottom: "x" top: "y" softmax_param { axis: 2 } }
        layer { name: "t" type: "Softmax" bottom: "x" top: "z" }'''),
    'mvn_variants': (X4, '''layer { name: "a" type: "MVN" bottom: "x" top: "a" }
        layer { name: "b" type: "MVN" bottom: "x" top: "b" mvn_param { across_channels: true } }
        layer { name: "c" type: "MVN" bottom: "x" top: "c" mvn_param { normalize_variance: false } }'''),
    'tile_reduction': (X4, '''layer { name: "t" type: "Tile" bottom: "x" top: "t" tile_param { axis: 2 tiles: 3 } }
        layer { name: "a" type: "Reduction" bottom: "x" top: "a" reduction_param { axis: 2 } }
        layer { name: "b" type: "Reduction" bottom: "x" top: "b" reduction_param { operation: ASUM axis: 1 } }
        layer { name: "c" type: "Reduction" bottom: "x" top: "c" reduction_param { operation: SUMSQ coeff: 0.5 } }
        layer { name: "d" type: "Reduction" bottom: "x" top: "d" reduction_param { operation: MEAN axis: -1 } }'''),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_converter_matches_caffe_py(case):
    inputs, layers = CASES[case]
    net = build(inputs, layers)
    roundtrip(net, outputs=[b for b in net.blobs if b not in inputs])


@pytest.mark.parametrize('opset', [13, 17, 18])
def test_mish_exports_as_onnx_mish_or_its_definition(opset):
    net = build(X4, 'layer { name: "m" type: "Mish" bottom: "x" top: "y" }')
    x = np.random.default_rng(0).standard_normal(X4['x']).astype(np.float32) * 20
    model, _ = roundtrip(net, feeds={'x': x}, opset=opset, outputs=['y'])
    assert ('Mish' in [n.op_type for n in model.graph.node]) == (opset >= 18)


def test_pooling_geometry_is_caffes_for_many_sizes():
    """Every (size, kernel, stride, pad) with pad < kernel: output shape and values equal Caffe's."""
    for pool in ('MAX', 'AVE'):
        for size in (4, 5, 6, 7):
            for kernel, stride, pad in ((2, 2, 0), (2, 2, 1), (3, 2, 1), (3, 3, 2), (4, 3, 1), (3, 1, 1)):
                net = build({'x': (1, 2, size, size + 1)}, '''layer { name: "p" type: "Pooling" bottom: "x"
                    top: "y" pooling_param { pool: %s kernel_size: %d stride: %d pad: %d } }'''
                            % (pool, kernel, stride, pad))
                roundtrip(net)


def test_argmax_top_k_out_max_val_axis_and_ties():
    """Ties go to the larger index, as Caffe's partial_sort on (value, index) pairs."""
    x = np.round(np.random.default_rng(1).standard_normal((3, 4, 5)).astype(np.float32))
    for extra in ('top_k: 2', 'out_max_val: true top_k: 3', 'axis: 1 top_k: 2', 'axis: 2 out_max_val: true',
                  'axis: -1'):
        net = build({'x': x.shape}, 'layer { name: "a" type: "ArgMax" bottom: "x" top: "y" argmax_param { %s } }'
                    % extra)
        roundtrip(net, feeds={'x': x}, tol=0)


def test_max_pooling_mask_top_is_the_first_maximum_in_the_plane():
    x = np.round(np.random.default_rng(8).standard_normal((2, 3, 7, 6))).astype(np.float32)
    for extra in ('kernel_size: 3 stride: 2 pad: 1', 'kernel_size: 2 stride: 2', 'global_pooling: true'):
        net = build({'x': x.shape}, '''layer { name: "p" type: "Pooling" bottom: "x" top: "y" top: "mask"
            pooling_param { pool: MAX %s } }''' % extra)
        roundtrip(net, feeds={'x': x}, tol=0, outputs=['y', 'mask'])


def test_embed_and_batch_reindex_take_float_indices():
    ids = np.array([[0, 4, 2], [3, 3, 1]], np.float32)
    net = build({'ids': ids.shape, 'x': (4, 3)}, '''layer { name: "e" type: "Embed" bottom: "ids" top: "y"
        embed_param { num_output: 6 input_dim: 5 } }
        layer { name: "p" type: "Parameter" top: "pick" parameter_param { shape { dim: 2 } } }
        layer { name: "r" type: "BatchReindex" bottom: "x" bottom: "pick" top: "z" }''')
    survey.randomize(net)
    net.params['p'][0].data[...] = [3, 0]
    x = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    roundtrip(net, feeds={'ids': ids, 'x': x}, randomize=False, outputs=['y', 'z'])


def test_filter_keeps_the_selected_items():
    net = build({'x': (5, 3, 2), 'y': (5, 4), 'sel': (5, 1)}, '''layer { name: "f" type: "Filter" bottom: "x"
        bottom: "y" bottom: "sel" top: "fx" top: "fy" }''')
    rng = np.random.default_rng(7)
    feeds = {'x': rng.standard_normal((5, 3, 2)).astype(np.float32),
             'y': rng.standard_normal((5, 4)).astype(np.float32),
             'sel': np.array([[1], [0], [2], [0], [1]], np.float32)}
    _, got = roundtrip(net, feeds=feeds, tol=0)
    assert got['fx'].shape == (3, 3, 2)


def test_accuracy_and_softmax_loss_with_ignore_label():
    scores = np.random.default_rng(3).standard_normal((6, 5)).astype(np.float32)
    scores[0, :] = 1.0                                   # a tie: counts against the label
    labels = np.array([2, 4, 1, 0, 3, 1], np.float32)
    net = build({'s': scores.shape, 'l': labels.shape}, '''
        layer { name: "a1" type: "Accuracy" bottom: "s" bottom: "l" top: "a1" }
        layer { name: "a2" type: "Accuracy" bottom: "s" bottom: "l" top: "a2" accuracy_param { top_k: 2 } }
        layer { name: "a3" type: "Accuracy" bottom: "s" bottom: "l" top: "a3" top: "c3"
                accuracy_param { ignore_label: 1 } }
        layer { name: "l1" type: "SoftmaxWithLoss" bottom: "s" bottom: "l" top: "l1" }
        layer { name: "l2" type: "SoftmaxWithLoss" bottom: "s" bottom: "l" top: "l2"
                loss_param { ignore_label: 4 } }
        layer { name: "l3" type: "SoftmaxWithLoss" bottom: "s" bottom: "l" top: "l3"
                loss_param { normalization: FULL ignore_label: 4 } }
        layer { name: "l4" type: "SoftmaxWithLoss" bottom: "s" bottom: "l" top: "l4"
                loss_param { normalize: false } }''')
    _, got = roundtrip(net, feeds={'s': scores, 'l': labels})
    assert set(got) == {'a1', 'a2', 'a3', 'c3', 'l1', 'l2', 'l3', 'l4'}
    # the normalizers follow a dynamic batch
    model = caffe_onnx.export(net, dynamic_batch=True)
    feeds = {'s': scores[:4], 'l': labels[:4]}
    got = survey.run_onnx(model, feeds)
    assert survey.worst_error(got, survey.run_caffe(net, feeds, list(got))) <= 1e-6


REFUSED = {
    'LSTM': ({'x': (3, 2, 4), 'c': (3, 2)}, '''layer { name: "r" type: "LSTM" bottom: "x" bottom: "c" top: "y"
        recurrent_param { num_output: 5 } }'''),
    'Dropout': (X4, 'layer { name: "d" type: "Dropout" bottom: "x" top: "y" phase: TRAIN }'),
    'Pooling': (X4, '''layer { name: "p" type: "Pooling" bottom: "x" top: "y"
        pooling_param { pool: MAX kernel_size: 1 stride: 3 } }'''),
}


@pytest.mark.parametrize('kind', sorted(REFUSED))
def test_inexpressible_layers_are_refused_with_one_line(kind):
    net = build(*REFUSED[kind])
    with pytest.raises(caffe_onnx.ExportError) as info:
        caffe_onnx.export(net)
    message = str(info.value)
    assert '\n' not in message and message.startswith('%s layer "' % kind)


PY_LAYER = '''layer { name: "py" type: "Python" bottom: "x" top: "y"
    python_param { module: "pylayers" layer: "%s" } }'''


def test_python_layer_needs_an_export_hook(tmp_path, monkeypatch):
    (tmp_path / 'onnx_pylayers.py').write_text('''
import caffe_py
class Double(caffe_py.Layer):
    def setup(self, bottom, top): pass
    def reshape(self, bottom, top): top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top): top[0].data[...] = 2 * bottom[0].data
class ExportedDouble(Double):
    def export_onnx(self, ctx):
        ctx.op('Mul', [ctx.bottoms[0], ctx.const(2.0)], ctx.top(0))
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(caffe_onnx.ExportError, match='Python layer "py".*export_onnx'):
        caffe_onnx.export(build(X4, (PY_LAYER % 'Double').replace('pylayers', 'onnx_pylayers')))
    roundtrip(build(X4, (PY_LAYER % 'ExportedDouble').replace('pylayers', 'onnx_pylayers')))


SMALL_NET = '''layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 4
    kernel_size: 3 pad: 1 } }
    layer { name: "r" type: "ReLU" bottom: "c" top: "c" }
    layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
    layer { name: "bn" type: "BatchNorm" bottom: "p" top: "p" }
    layer { name: "f" type: "InnerProduct" bottom: "p" top: "f" inner_product_param { num_output: 3 } }
    layer { name: "s" type: "Softmax" bottom: "f" top: "prob" }'''


@pytest.mark.parametrize('opset', [13, 18, 21])
def test_other_opsets(opset):
    model, _ = roundtrip(build(X4, SMALL_NET + '''layer { name: "m" type: "MVN" bottom: "c" top: "m" }
        layer { name: "a" type: "Reduction" bottom: "c" top: "a" reduction_param { operation: MEAN axis: 1 } }'''),
                         opset=opset, outputs=['prob', 'm', 'a'])
    assert model.opset_import[0].version == opset


def test_dynamic_batch_runs_other_batch_sizes():
    net = build({'x': (1, 3, 9, 8)}, SMALL_NET + '''
        layer { name: "fl" type: "Flatten" bottom: "c" top: "flat" }
        layer { name: "am" type: "ArgMax" bottom: "f" top: "am" argmax_param { top_k: 2 } }''')
    survey.randomize(net)
    model = caffe_onnx.export(net, dynamic_batch=True, outputs=['prob', 'flat', 'am'])
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == 'N'
    x = np.random.default_rng(4).standard_normal((5, 3, 9, 8)).astype(np.float32)
    got = survey.run_onnx(model, {'x': x})
    want = survey.run_caffe(net, {'x': x}, list(got))
    assert got['prob'].shape == (5, 3)
    assert survey.worst_error(got, want) <= 1e-5


def test_dynamic_batch_refuses_a_reshape_over_the_batch_axis():
    net = build({'x': (2, 3, 4)}, 'layer { name: "r" type: "Reshape" bottom: "x" top: "y" '
                'reshape_param { shape { dim: -1 dim: 4 } } }')
    with pytest.raises(caffe_onnx.ExportError, match='Reshape layer "r".*dynamic'):
        caffe_onnx.export(net, dynamic_batch=True)
    roundtrip(net)


def test_bad_opset_and_output_are_one_line_errors():
    net = build(X4, SMALL_NET)
    with pytest.raises(caffe_onnx.ExportError, match='opset 9'):
        caffe_onnx.export(net, opset=9)
    with pytest.raises(caffe_onnx.ExportError, match='output "nope"'):
        caffe_onnx.export(net, outputs=['nope'])


def test_cli_writes_a_model_onnxruntime_runs(tmp_path, capsys):
    net = build(X4, SMALL_NET)
    survey.randomize(net)
    net_path, weights = tmp_path / 'deploy.prototxt', tmp_path / 'w.caffemodel'
    net_path.write_text(text_format.MessageToString(caffe_pb2.NetParameter(layer=[
        l.layer_param for l in net.layers])))
    net.save(str(weights))
    out = tmp_path / 'model.onnx'
    assert cli.main(['export_onnx', '-model', str(net_path), '-weights', str(weights), '-output', str(out),
                     '-opset', '18', '-dynamic_batch']) == 0
    assert 'Wrote %s: opset 18' % out in capsys.readouterr().err
    import onnx
    model = onnx.load(str(out))
    x = np.random.default_rng(5).standard_normal((2, 3, 9, 8)).astype(np.float32)
    got = survey.run_onnx(model, {'x': x})
    assert survey.worst_error(got, survey.run_caffe(net, {'x': x}, ['prob'])) <= 1e-5
    assert cli.main(['export_onnx', '-model', str(net_path), '-output', str(out), '-outputs', 'c,prob']) == 0
    assert [o.name for o in onnx.load(str(out)).graph.output] == ['c', 'prob']
    capsys.readouterr()
    assert cli.main(['export_onnx', '-model', str(net_path)]) == 1
    assert 'export_onnx needs -output' in capsys.readouterr().err


RECURRENT = {
    'rnn': ({'x': (4, 3, 2, 3), 'cont': (4, 3), 'h0': (1, 3, 5)}, '''layer { name: "r" type: "RNN"
        bottom: "x" bottom: "cont" bottom: "h0" top: "y" top: "hT"
        recurrent_param { num_output: 5 expose_hidden: true } }'''),
    'rnn_static': ({'x': (4, 3, 6), 'cont': (4, 3), 's': (3, 2), 'h0': (1, 3, 5)}, '''layer { name: "r"
        type: "RNN" bottom: "x" bottom: "cont" bottom: "s" bottom: "h0" top: "y" top: "hT"
        recurrent_param { num_output: 5 expose_hidden: true } }'''),
    'lstm': ({'x': (5, 2, 3), 'cont': (5, 2), 'h0': (1, 2, 4), 'c0': (1, 2, 4)}, '''layer { name: "l"
        type: "LSTM" bottom: "x" bottom: "cont" bottom: "h0" bottom: "c0" top: "y" top: "hT" top: "cT"
        recurrent_param { num_output: 4 expose_hidden: true } }'''),
    'lstm_unit': ({'c0': (1, 3, 4), 'gates': (1, 3, 16), 'cont': (1, 3)}, '''layer { name: "u"
        type: "LSTMUnit" bottom: "c0" bottom: "gates" bottom: "cont" top: "c" top: "h" }'''),
    'lstm_static': ({'x': (5, 2, 3), 'cont': (5, 2), 's': (2, 3), 'h0': (1, 2, 4), 'c0': (1, 2, 4)},
                    '''layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" bottom: "s" bottom: "h0"
        bottom: "c0" top: "y" top: "hT" top: "cT" recurrent_param { num_output: 4 expose_hidden: true } }'''),
}


@pytest.mark.parametrize('case', sorted(RECURRENT))
def test_recurrent_layers_unrolled_with_exposed_states(case):
    """Sequences restart where cont is 0; the exposed initial and final states are inputs and outputs."""
    inputs, layers = RECURRENT[case]
    net = build(inputs, layers)
    rng = np.random.default_rng(6)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in inputs.items()}
    feeds['cont'] = np.ones(inputs['cont'], np.float32)
    feeds['cont'][0, 0] = 0
    feeds['cont'][-1, 1] = 0
    roundtrip(net, feeds=feeds, outputs=[b for b in net.blobs if b not in inputs])
    if case == 'lstm_unit':
        return
    with pytest.raises(caffe_onnx.ExportError, match='dynamic'):
        caffe_onnx.export(net, dynamic_batch=True)


def test_a_net_in_gpu_mode_exports_its_device_weights():
    """Parameters living on the device are read back through the host (CuPy stand-in)."""
    import fakecupy
    if fakecupy.compiler() is None:
        pytest.skip('no C++ compiler for the CuPy stand-in')
    cpu = build(X4, SMALL_NET)
    survey.randomize(cpu)
    expected = caffe_onnx.export(cpu)
    with fakecupy.fake_gpu():
        gpu = build(X4, SMALL_NET)
        for name, blobs in cpu.params.items():
            for i, blob in enumerate(blobs):
                gpu.params[name][i].data[...] = blob.data
        got = caffe_onnx.export(gpu)
    assert [i.raw_data for i in got.graph.initializer] == [i.raw_data for i in expected.graph.initializer]
