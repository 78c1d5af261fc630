"""Vision layers: float64 gradient checks, naive-loop references for parameter variants, refusals."""
import itertools

import numpy as np
import pytest
from google.protobuf import text_format

from caffe_py import TEST, TRAIN, Net, backend
from caffe_py.layers import cores, vision
from caffe_py.proto import caffe_pb2
from harness import layer_gradient_check, layer_net, layer_net_text, rand

FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -1 max: 1 }'


net_text = layer_net_text
build = layer_net
check = layer_gradient_check


def conv(params):
    return 'type: "Convolution" convolution_param { %s %s }' % (params, FILLERS)


def deconv(params):
    return 'type: "Deconvolution" convolution_param { %s %s }' % (params, FILLERS)


# -- naive references -----------------------------------------------------------------------------

def naive_conv(x, w, b, stride, pad, dilation, group):
    """Direct loops over every output and tap, zeros outside the image (Caffe's im2col rule)."""
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    kernel = w.shape[2:]
    out = [(s + 2 * p - (d * (k - 1) + 1)) // st + 1
           for s, k, st, p, d in zip(spatial, kernel, stride, pad, dilation)]
    o_total = w.shape[0]
    og, cg = o_total // group, c // group
    y = np.zeros((n, o_total) + tuple(out))
    for o in range(o_total):
        g = o // og
        for pos in itertools.product(*map(range, out)):
            for tap in itertools.product(*map(range, kernel)):
                src = [q * st - p + t * d for q, st, p, t, d in zip(pos, stride, pad, tap, dilation)]
                if all(0 <= s < lim for s, lim in zip(src, spatial)):
                    patch = x[(slice(None), slice(g * cg, (g + 1) * cg)) + tuple(src)]
                    y[(slice(None), o) + pos] += patch @ w[(o, slice(None)) + tap]
        if b is not None:
            y[:, o] += b[o]
    return y


def naive_deconv(x, w, b, stride, pad, group, out):
    """Scatter every input through the kernel (the transpose of naive_conv)."""
    n, c = x.shape[:2]
    og = w.shape[1]
    cg = c // group
    y = np.zeros((n, og * group) + tuple(out))
    for ci in range(c):
        g = ci // cg
        for pos in itertools.product(*map(range, x.shape[2:])):
            for tap in itertools.product(*map(range, w.shape[2:])):
                dst = [q * st - p + t for q, st, p, t in zip(pos, stride, pad, tap)]
                if all(0 <= s < lim for s, lim in zip(dst, out)):
                    for oc in range(og):
                        y[(slice(None), g * og + oc) + tuple(dst)] += \
                            x[(slice(None), ci) + pos] * w[(ci, oc) + tap]
    if b is not None:
        y += b.reshape((1, -1) + (1,) * len(out))
    return y


def naive_pool(x, method, k, s, p, out):
    """Caffe's CPU loops for MAX (first max, plane index) and AVE (padded divisor)."""
    n, c, h, w = x.shape
    y = np.zeros((n, c) + out)
    mask = np.full((n, c) + out, -1.0)
    for ph, pw in itertools.product(range(out[0]), range(out[1])):
        hs, ws = ph * s[0] - p[0], pw * s[1] - p[1]
        he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
        size = (he - hs) * (we - ws)
        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
        win = x[:, :, hs:he, ws:we].reshape(n, c, -1)
        if method == 'MAX':
            arg = win.argmax(-1)
            y[:, :, ph, pw] = win.max(-1)
            mask[:, :, ph, pw] = (hs + arg // (we - ws)) * w + ws + arg % (we - ws)
        else:
            y[:, :, ph, pw] = win.sum(-1) / size
    return y, mask


# -- convolution ----------------------------------------------------------------------------------

@pytest.mark.parametrize('params,shape', [
    ('num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2', (2, 4, 5, 5)),
    ('num_output: 2 kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2 dilation: 2', (1, 2, 5, 6)),
    ('num_output: 3 kernel_size: 1 bias_term: false', (2, 2, 3, 3)),
    ('num_output: 2 kernel_size: 2 kernel_size: 1 kernel_size: 2 pad: 1', (1, 2, 3, 2, 3)),
    ('num_output: 2 kernel_size: 2 axis: 2', (2, 1, 2, 4, 3)),
    ('num_output: 2', (3, 4)),  # no spatial axis: an inner product over channels
])
def test_convolution_gradient(params, shape):
    check({'x': rand(*shape)}, conv(params))


def test_convolution_gradient_two_bottoms_share_weights():
    check({'a': rand(2, 2, 4, 4), 'b': rand(2, 2, 4, 4, seed=1)},
          conv('num_output: 2 kernel_size: 3 pad: 1'), tops=('ya', 'yb'))


@pytest.mark.parametrize('params,shape', [
    ('num_output: 4 kernel_size: 3 stride: 2 pad: 1 group: 2', (2, 2, 3, 3)),
    ('num_output: 2 kernel_size: 2 dilation: 2', (1, 3, 3, 2)),
    ('num_output: 3 kernel_size: 1', (2, 2, 2, 2)),
    ('num_output: 6 kernel_size: 3 pad: 1 group: 2', (2, 4, 4, 3)),     # batch-last columns
])
def test_deconvolution_gradient(params, shape):
    check({'x': rand(*shape)}, deconv(params))


CONV_VARIANTS = [
    # (params, input shape, stride, pad, dilation, group)
    ('num_output: 6 kernel_size: 3 stride: 2 pad: 2 dilation: 2 group: 3', (2, 6, 9, 8), (2, 2), (2, 2), (2, 2), 3),
    ('num_output: 2 kernel_size: 3 stride: 3 pad: 1', (1, 2, 7, 5), (3, 3), (1, 1), (1, 1), 1),
    ('num_output: 3 kernel_size: 2 stride: 2', (2, 2, 6), (2,), (0,), (1,), 1),
    ('num_output: 2 kernel_size: 2 stride: 1 stride: 2 stride: 1 pad: 0 pad: 1 pad: 1 group: 2',
     (1, 4, 3, 4, 3), (1, 2, 1), (0, 1, 1), (1, 1, 1), 2),
    ('num_output: 4 kernel_size: 1 group: 2', (3, 4, 2, 3), (1, 1), (0, 0), (1, 1), 2),
]


@pytest.mark.parametrize('params,shape,stride,pad,dilation,group', CONV_VARIANTS)
def test_convolution_matches_naive_loops(params, shape, stride, pad, dilation, group):
    x = rand(*shape)
    net = build({'x': x}, conv(params))
    net.forward_from_to()
    w, b = (blob.data for blob in net.layer_dict['L'].blobs)
    np.testing.assert_allclose(net.blobs['y'].data, naive_conv(x, w, b, stride, pad, dilation, group),
                               rtol=1e-12, atol=1e-12)


def test_convolution_input_smaller_than_kernel_reads_zeros_like_caffe():
    # (3 - 4) / 2 + 1 == 1 with C's truncating division: one window reaching past the image
    x = rand(1, 1, 3, 3)
    net = build({'x': x}, conv('num_output: 1 kernel_size: 4 stride: 2 bias_term: false'))
    net.forward_from_to()
    w = net.layer_dict['L'].blobs[0].data
    assert net.blobs['y'].shape == (1, 1, 1, 1)
    np.testing.assert_allclose(net.blobs['y'].data.ravel(), [(x[0, 0] * w[0, 0, :3, :3]).sum()])


def test_deconvolution_matches_naive_scatter():
    x = rand(2, 4, 3, 2)
    net = build({'x': x}, deconv('num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2'))
    net.forward_from_to()
    w, b = (blob.data for blob in net.layer_dict['L'].blobs)
    assert w.shape == (4, 3, 3, 3)
    expected = naive_deconv(x, w, b, (2, 2), (1, 1), 2, (5, 3))
    np.testing.assert_allclose(net.blobs['y'].data, expected, rtol=1e-12, atol=1e-12)


def seeded_pass(net):
    """Seeded weights and top diff through layer 'L': [y, x diff, parameter diffs]."""
    for i, blob in enumerate(net.layer_dict['L'].blobs):
        blob.data[...] = rand(*blob.shape, seed=3 + i)
    net.forward_from_to()
    net.blobs['y'].diff[...] = rand(*net.blobs['y'].shape, seed=4)
    net.clear_param_diffs()
    net.backward_from_to()
    return ([net.blobs['y'].data.copy(), net.blobs['x'].diff.copy()]
            + [blob.diff.copy() for blob in net.layer_dict['L'].blobs])


@pytest.mark.parametrize('layer,batch_last', [
    (conv('num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2'), False),
    (conv('num_output: 2 kernel_size: 3 pad: 1 dilation: 2'), True),
    (conv('num_output: 2 kernel_size: 1'), False),
    (deconv('num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2'), False),
    (deconv('num_output: 6 kernel_size: 3 pad: 1 group: 2'), True),
])
def test_chunks_and_column_orders_agree_with_naive(monkeypatch, layer, batch_last):
    """Whole minibatch, one image per chunk, two images per chunk: same results, all as the loops."""
    x = rand(5, 4, 7, 6)
    results = []
    budget = vision.COL_BYTES
    for images_per_chunk in (None, 1, 2):
        monkeypatch.setattr(vision, 'COL_BYTES', budget)
        net = build({'x': x}, layer)
        core = net.layer_dict['L'].core
        assert core.batch_last == batch_last
        if images_per_chunk:
            per_image = core.group * core.kdim * core.window.out_count * 8
            monkeypatch.setattr(vision, 'COL_BYTES', per_image * images_per_chunk)
        results.append(seeded_pass(net))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    w, b = (blob.data for blob in net.layer_dict['L'].blobs)
    window = core.window
    if 'Deconvolution' in layer:
        expected = naive_deconv(x, w, b, window.stride, window.pad, core.group, net.blobs['y'].shape[2:])
    else:
        expected = naive_conv(x, w, b, window.stride, window.pad, window.dilation, core.group)
    np.testing.assert_allclose(results[0][0], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('params', ['pad: 0', 'pad: 1', 'pad: 0 stride: 2', 'pad: 1 stride: 2'])
def test_weight_gradient_reads_the_bottom_at_backward_time(params):
    """As Caffe, which runs im2col again in backward: a bottom changed after forward counts."""
    x, changed = rand(2, 2, 5, 5), rand(2, 2, 5, 5, seed=1)
    layer = conv('num_output: 2 kernel_size: 3 %s' % params)
    grads = []
    for forward_input in (x, changed):
        net = build({'x': forward_input}, layer, params=[np.ones((2, 2, 3, 3)), np.zeros(2)])
        net.forward_from_to()
        net.blobs['x'].data[...] = changed
        net.blobs['y'].diff[...] = rand(*net.blobs['y'].shape, seed=2)
        net.clear_param_diffs()
        net.backward_from_to()
        grads.append(net.layer_dict['L'].blobs[0].diff.copy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


def test_param_diffs_accumulate_and_respect_lr_mult_zero():
    x = rand(2, 2, 4, 4)
    layer = ('type: "Convolution" param { lr_mult: 1 } param { lr_mult: 0 } '
             'convolution_param { num_output: 2 kernel_size: 3 %s }' % FILLERS)
    net = build({'x': x}, layer)
    net.forward_from_to()
    net.blobs['y'].diff[...] = 1
    net.clear_param_diffs()
    net.backward_from_to()
    once = net.layer_dict['L'].blobs[0].diff.copy()
    net.backward_from_to()
    np.testing.assert_allclose(net.layer_dict['L'].blobs[0].diff, 2 * once)
    # force_backward turns every param on, as in Caffe; without it lr_mult 0 keeps the bias diff at 0
    param = text_format.Parse(net_text({'x': x.shape}, layer), caffe_pb2.NetParameter())
    plain = Net(param, TEST, dtype=np.float64)
    plain.blobs['x'].data[...] = x
    plain.forward_from_to()
    plain.blobs['y'].diff[...] = 1
    layer = plain.layer_dict['L']
    layer.backward([plain.blobs['y']], [False], [plain.blobs['x']])
    assert not plain.layer_dict['L'].blobs[1].diff.any()
    assert plain.layer_dict['L'].blobs[0].diff.any()


@pytest.mark.parametrize('layer,shape', [
    (conv('num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2'), (5, 4, 7, 6)),
    (conv('num_output: 2 kernel_size: 3 pad: 1'), (5, 4, 7, 6)),
    (conv('num_output: 3 kernel_size: 1'), (5, 4, 3, 3)),
    (deconv('num_output: 6 kernel_size: 3 pad: 1 group: 2'), (5, 4, 4, 3)),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }', (3, 5, 7, 6)),
    ('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }', (3, 5, 7, 6)),
    ('type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }', (3, 5, 4, 3)),
    ('type: "LRN" lrn_param { local_size: 3 alpha: 0.5 norm_region: WITHIN_CHANNEL }', (3, 5, 4, 3)),
])
def test_work_split_over_threads_changes_nothing(monkeypatch, layer, shape):
    """Element-wise work runs in parallel parts (here 3, on tiny arrays): same numbers as serial."""
    x = rand(*shape)
    results = []
    for count, smallest in ((1, cores.MIN_PARALLEL), (3, 0)):
        monkeypatch.setattr(cores, 'CORES', count)
        monkeypatch.setattr(cores, 'MIN_PARALLEL', smallest)
        net = build({'x': x}, layer, dtype=np.float32)
        results.append(seeded_pass(net))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def weights_blob(shape):
    dims = ' '.join('dim: %d' % d for d in shape)
    data = ' '.join('data: 0.5' for _ in range(int(np.prod(shape))))
    return 'blobs { shape { %s } %s }' % (dims, data)


@pytest.mark.parametrize('layer,message', [
    ('type: "Convolution" %s %s convolution_param { num_output: 2 kernel_size: 3 }'
     % (weights_blob((2, 3, 2, 2)), weights_blob((2,))),
     'Incorrect weight shape: expected shape 2 2 3 3; instead, shape was 2 3 2 2'),
    ('type: "Convolution" %s %s convolution_param { num_output: 2 kernel_size: 1 }'
     % (weights_blob((2, 2, 1, 1)), weights_blob((3,))), 'Incorrect bias shape'),
    ('type: "Convolution" %s convolution_param { num_output: 2 kernel_size: 1 }'
     % weights_blob((2, 2, 1, 1)), 'Incorrect number of weight blobs'),
    ('type: "Deconvolution" %s convolution_param { num_output: 4 kernel_size: 2 bias_term: false }'
     % weights_blob((4, 2, 2, 2)), 'expected shape 2 4 2 2'),
    (conv('num_output: 2'), 'kernel_size must be specified once'),
    (conv('num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3'), 'not both'),
    (conv('num_output: 2 kernel_h: 3'), 'Filter dimensions must be nonzero'),
    (conv('num_output: 2 kernel_size: 3 stride: 0'), 'Stride dimensions must be nonzero'),
    (conv('num_output: 2 kernel_size: 1 kernel_size: 2 kernel_size: 3'), 'once per spatial dimension'),
    (conv('kernel_size: 1'), 'num_output must be positive'),
    (conv('num_output: 3 kernel_size: 1 group: 2'), 'multiples of group'),
    (conv('num_output: 4 kernel_size: 1 group: 3'), 'multiple of group'),
    (conv('num_output: 2 kernel_size: 5'), 'output spatial shape'),
])
def test_convolution_refuses_bad_parameters(layer, message):
    with pytest.raises(ValueError, match=message) as info:
        build({'x': rand(1, 2, 4, 4)}, layer)
    assert '"L"' in str(info.value)


def test_convolution_refuses_channel_change_on_reshape():
    net = build({'x': rand(1, 2, 4, 4)}, conv('num_output: 2 kernel_size: 3'))
    net.blobs['x'].reshape(1, 3, 4, 4)
    with pytest.raises(ValueError, match='incompatible with convolution kernel'):
        net.forward_from_to()


# -- im2col ---------------------------------------------------------------------------------------

def test_im2col_gradient_and_layout():
    x = rand(2, 2, 4, 5)
    check({'x': x}, 'type: "Im2col" convolution_param { kernel_h: 2 kernel_w: 3 stride: 2 pad: 1 dilation: 1 }')
    net = build({'x': x}, 'type: "Im2col" convolution_param { kernel_size: 2 }')
    net.forward_from_to()
    y = net.blobs['y'].data
    assert y.shape == (2, 8, 3, 4)
    # channel (c, i, j) holds x[c, h + i, w + j]
    for c, i, j in itertools.product(range(2), range(2), range(2)):
        np.testing.assert_array_equal(y[:, c * 4 + i * 2 + j], x[:, c, i:i + 3, j:j + 4])


# -- pooling --------------------------------------------------------------------------------------

@pytest.mark.parametrize('params,shape', [
    ('pool: MAX kernel_size: 3 stride: 2 pad: 1', (2, 2, 5, 5)),
    ('pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 round_mode: FLOOR', (1, 2, 4, 6)),
    ('pool: AVE kernel_size: 3 stride: 2 pad: 1', (2, 2, 5, 4)),
    ('pool: AVE kernel_size: 2 stride: 3 pad_h: 1 pad_w: 0', (1, 2, 6, 7)),
    ('pool: AVE global_pooling: true', (2, 3, 3, 2)),
    ('pool: MAX global_pooling: true', (2, 3, 3, 2)),
])
def test_pooling_gradient(params, shape):
    check({'x': rand(*shape)}, 'type: "Pooling" pooling_param { %s }' % params)


POOL_VARIANTS = [
    # params, input, kernel, stride, pad, expected output
    ('kernel_size: 3 stride: 2', (2, 2, 6, 6), (3, 3), (2, 2), (0, 0), (3, 3)),
    ('kernel_size: 3 stride: 2 round_mode: FLOOR', (2, 2, 6, 6), (3, 3), (2, 2), (0, 0), (2, 2)),
    # the last window in W would start in the padding: dropped
    ('kernel_size: 2 stride: 2 pad: 1', (1, 2, 6, 5), (2, 2), (2, 2), (1, 1), (4, 3)),
    ('kernel_size: 3 stride: 3 pad: 1', (1, 1, 7, 6), (3, 3), (3, 3), (1, 1), (3, 3)),
    ('kernel_size: 2 stride: 3 pad: 1', (1, 1, 7, 6), (2, 2), (3, 3), (1, 1), (3, 3)),
    ('kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 2 pad_w: 1', (1, 2, 5, 4), (3, 2), (2, 1), (2, 1),
     (4, 5)),
]


@pytest.mark.parametrize('method', ['MAX', 'AVE'])
@pytest.mark.parametrize('params,shape,kernel,stride,pad,out', POOL_VARIANTS)
def test_pooling_matches_caffe_loops(method, params, shape, kernel, stride, pad, out):
    x = rand(*shape)
    tops = ('y', 'mask') if method == 'MAX' else ('y',)
    net = build({'x': x}, 'type: "Pooling" pooling_param { pool: %s %s }' % (method, params), tops=tops)
    net.forward_from_to()
    y, mask = naive_pool(x, method, kernel, stride, pad, out)
    np.testing.assert_allclose(net.blobs['y'].data, y, rtol=1e-12)
    if method == 'MAX':
        np.testing.assert_array_equal(net.blobs['mask'].data, mask)


def test_max_pooling_routes_to_first_max_and_reads_the_mask_top():
    x = np.zeros((1, 1, 2, 4))
    x[0, 0] = [[1, 3, 3, 0], [3, 2, 0, 3]]
    net = build({'x': x}, 'type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }',
                tops=('y', 'mask'))
    net.forward_from_to()
    np.testing.assert_array_equal(net.blobs['mask'].data.ravel(), [1, 2])
    net.blobs['y'].diff[...] = [[[[10, 20]]]]
    net.blobs['mask'].data[...] = [[[[4, 7]]]]
    net.backward_from_to()
    expected = np.zeros((2, 4))
    expected[1, 0], expected[1, 3] = 10, 20
    np.testing.assert_array_equal(net.blobs['x'].diff[0, 0], expected)


def test_max_pooling_overlapping_windows_accumulate():
    x = np.array([[[[0., 9, 0, 0, 0]]]])
    net = build({'x': x}, 'type: "Pooling" pooling_param { pool: MAX kernel_h: 1 kernel_w: 3 stride: 1 }')
    net.forward_from_to()
    net.blobs['y'].diff[...] = 1
    net.backward_from_to()
    np.testing.assert_array_equal(net.blobs['x'].diff.ravel(), [0, 2, 1, 0, 0])


def test_stochastic_pooling_test_phase_is_weighted_average():
    x = np.abs(rand(2, 2, 5, 5))
    x[0, 0, :3, :3] = 0
    net = build({'x': x}, 'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 }')
    net.forward_from_to()
    y = net.blobs['y'].data
    assert y.shape == (2, 2, 2, 2)
    for ph, pw in itertools.product(range(2), range(2)):
        win = x[:, :, 2 * ph:2 * ph + 3, 2 * pw:2 * pw + 3].reshape(2, 2, -1)
        total = win.sum(-1)
        expected = np.where(total > 0, (win ** 2).sum(-1) / np.where(total > 0, total, 1), 0)
        np.testing.assert_allclose(y[:, :, ph, pw], expected)
    assert y[0, 0, 0, 0] == 0


def test_stochastic_pooling_train_samples_proportionally_and_routes_back():
    backend.set_random_seed(7)
    values = np.array([1., 2., 3., 4.])
    x = np.tile(values.reshape(1, 1, 2, 2), (2000, 1, 1, 1))
    net = build({'x': x}, 'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 }',
                phase=TRAIN)
    net.forward_from_to()
    picked = net.blobs['y'].data.ravel()
    freq = np.array([(picked == v).mean() for v in values])
    np.testing.assert_allclose(freq, values / values.sum(), atol=0.04)
    net.blobs['y'].diff[...] = 1
    net.backward_from_to()
    diff = net.blobs['x'].diff.reshape(2000, 4)
    np.testing.assert_array_equal(diff.sum(1), 1)
    np.testing.assert_array_equal(diff.argmax(1), [list(values).index(v) for v in picked])
    # the last window is clipped at the border (CEIL, no padding): only real cells are picked
    x = np.abs(rand(50, 1, 3, 3)) + 0.1
    net = build({'x': x}, 'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 }',
                phase=TRAIN)
    net.forward_from_to()
    assert np.all(net.blobs['y'].data[:, :, 1, 1] == x[:, :, 2, 2])


@pytest.mark.parametrize('params,message', [
    ('pool: MAX kernel_size: 2 kernel_h: 2 kernel_w: 2', 'not both'),
    ('pool: MAX kernel_h: 2', 'kernel_size OR kernel_h and kernel_w'),
    ('pool: MAX', 'kernel_size OR kernel_h and kernel_w'),
    ('pool: MAX kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1', 'pad is pad OR pad_h and pad_w'),
    ('pool: MAX kernel_size: 2 stride_h: 1', 'Stride is stride OR stride_h and stride_w'),
    ('pool: MAX global_pooling: true kernel_size: 2', 'Filter size cannot specified'),
    ('pool: AVE global_pooling: true pad: 1', 'only pad = 0 and stride = 1'),
    ('pool: STOCHASTIC kernel_size: 3 pad: 1', 'Padding implemented only for average and max'),
    ('pool: MAX kernel_size: 2 pad: 2', 'must be smaller than the kernel'),
])
def test_pooling_refuses_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        build({'x': rand(1, 1, 4, 4)}, 'type: "Pooling" pooling_param { %s }' % params)


def test_pooling_refusals_on_blobs():
    with pytest.raises(ValueError, match='only MAX pooling has a second'):
        build({'x': rand(1, 1, 4, 4)}, 'type: "Pooling" pooling_param { pool: AVE kernel_size: 2 }',
              tops=('y', 'm'))
    with pytest.raises(ValueError, match='Input must have 4 axes'):
        build({'x': rand(1, 4, 4)}, 'type: "Pooling" pooling_param { pool: AVE kernel_size: 2 }')


# -- SPP ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('params,shape', [('pyramid_height: 3 pool: MAX', (1, 2, 8, 7)),
                                          ('pyramid_height: 2 pool: AVE', (2, 1, 5, 3)),
                                          ('pyramid_height: 1 pool: AVE', (2, 2, 3, 3))])
def test_spp_gradient(params, shape):
    check({'x': rand(*shape)}, 'type: "SPP" spp_param { %s }' % params)


def test_spp_equals_pooling_flatten_concat():
    x = rand(2, 3, 9, 7)
    net = build({'x': x}, 'type: "SPP" spp_param { pyramid_height: 3 pool: MAX }')
    net.forward_from_to()
    parts = []
    for level in range(3):
        bins = 2 ** level
        k = (-(-9 // bins), -(-7 // bins))
        p = ((k[0] * bins - 9 + 1) // 2, (k[1] * bins - 7 + 1) // 2)
        pool = build({'x': x}, 'type: "Pooling" pooling_param { pool: MAX kernel_h: %d kernel_w: %d '
                     'stride_h: %d stride_w: %d pad_h: %d pad_w: %d }' % (k + k + p))
        pool.forward_from_to()
        parts.append(pool.blobs['y'].data.reshape(2, -1))
    np.testing.assert_array_equal(net.blobs['y'].data, np.concatenate(parts, axis=1))
    one = build({'x': x}, 'type: "SPP" spp_param { pyramid_height: 1 }')
    assert one.blobs['y'].shape == (2, 3, 1, 1)


def test_spp_refuses_levels_finer_than_the_input():
    with pytest.raises(ValueError, match='must be smaller than the kernel'):
        build({'x': rand(1, 1, 3, 3)}, 'type: "SPP" spp_param { pyramid_height: 3 }')


# -- LRN ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('params', ['local_size: 3 alpha: 0.5 beta: 0.75 k: 1.5',
                                    'local_size: 5 alpha: 2 beta: 0.6',
                                    'local_size: 3 alpha: 0.7 beta: 0.75 norm_region: WITHIN_CHANNEL',
                                    'local_size: 1 alpha: 1.5 beta: 2 norm_region: WITHIN_CHANNEL'])
def test_lrn_gradient(params):
    check({'x': rand(2, 4, 3, 3)}, 'type: "LRN" lrn_param { %s }' % params)


def test_lrn_matches_formulas():
    x = rand(2, 5, 4, 3)
    net = build({'x': x}, 'type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }')
    net.forward_from_to()
    squares = np.pad(x ** 2, ((0, 0), (1, 1), (0, 0), (0, 0)))
    scale = 2 + 0.5 / 3 * (squares[:, :-2] + squares[:, 1:-1] + squares[:, 2:])
    np.testing.assert_allclose(net.blobs['y'].data, x * scale ** -0.75, rtol=1e-12)
    net = build({'x': x}, 'type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 '
                          'norm_region: WITHIN_CHANNEL }')
    net.forward_from_to()
    padded = np.pad(x ** 2, ((0, 0), (0, 0), (1, 1), (1, 1)))
    window = sum(padded[:, :, i:i + 4, j:j + 3] for i in range(3) for j in range(3))
    # padded cells count in the divisor; k is not used
    np.testing.assert_allclose(net.blobs['y'].data, x * (1 + 0.5 * window / 9) ** -0.75, rtol=1e-12)


@pytest.mark.parametrize('beta', [0.75, 0.5, 1, 0.6])
def test_negative_power_within_float32_rounding(beta):
    base = np.random.default_rng(0).uniform(0.5, 50, 10000).astype(np.float32)
    out = vision.negative_power(base, beta, np.empty_like(base))
    exact = base.astype(np.float64) ** -beta
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, exact, rtol=3e-7)


def test_lrn_refuses_even_size():
    with pytest.raises(ValueError, match='odd values for local_size'):
        build({'x': rand(1, 2, 2, 2)}, 'type: "LRN" lrn_param { local_size: 4 }')
