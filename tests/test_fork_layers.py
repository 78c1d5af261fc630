"""Fork layers (depthwise, R-CNN, YOLO, segmentation): hand-computed cases, float64 gradient
checks, and forward against OpenCV dnn's implementations of the same layers."""
import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from caffe_py import TEST, TRAIN, Net, backend, formats
from caffe_py.proto import caffe_pb2
from harness import layer_forward as run, layer_gradient_check, rand

ROIS = np.array([[0, 0, 0, 7, 7], [1, 2.4, 1.5, 9.6, 5.2], [0, 5, 6, 5, 6], [1, -3, 2, 30, 40],
                 [0, 12, 12, 15, 15]], np.float64)


check = layer_gradient_check


def opencv_forward(inputs, layer, weights=None, tmp_path=None):
    """OpenCV dnn's output of the same one-layer net (float32), read from a prototxt
    (and a caffemodel written by caffe-py when the layer has weights)."""
    text = ''.join('input: "%s"\ninput_shape { %s }\n' % (n, ' '.join('dim: %d' % d for d in np.shape(v)))
                   for n, v in inputs.items())
    links = ' '.join('bottom: "%s"' % b for b in inputs)
    text += 'layer { name: "L" %s top: "y" %s }\n' % (links, layer)
    proto = tmp_path / 'net.prototxt'
    proto.write_text(text)
    if weights is None:
        net = cv2.dnn.readNetFromCaffe(str(proto))
    else:
        ours = run({k: v.astype(np.float32) for k, v in inputs.items()}, layer, dtype=np.float32,
                   params=weights)
        ours.save(str(tmp_path / 'net.caffemodel'))
        net = cv2.dnn.readNetFromCaffe(str(proto), str(tmp_path / 'net.caffemodel'))
    for name, value in inputs.items():
        net.setInput(np.ascontiguousarray(value, np.float32), name)
    return net.forward()


def ours32(inputs, layer, params=None):
    return run({k: v.astype(np.float32) for k, v in inputs.items()}, layer, dtype=np.float32,
               params=params).blobs['y'].data


# -- depthwise -----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def depthwise_core_on_small_planes(monkeypatch):
    """The test nets are small: let the depthwise core take them all (see test_depthwise_route)."""
    from caffe_py.layers import mobile
    monkeypatch.setattr(mobile._Depthwise, 'MIN_PLANE', 0)


FILL = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -1 max: 1 }'


@pytest.mark.parametrize('geometry', ['kernel_size: 3 stride: 2 pad: 1', 'kernel_size: 3 pad: 2 dilation: 2',
                                      'kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2'])
def test_depthwise_equals_grouped_convolution_forward_and_backward(geometry):
    x = rand(2, 6, 7, 8)
    w, b = rand(6, 1, 3, 3, seed=1), rand(6, seed=2)
    if 'kernel_h' in geometry:
        w = rand(6, 1, 2, 3, seed=1)
    conv = 'convolution_param { num_output: 6 group: 6 %s }' % geometry
    dy = None
    outs = []
    for kind in ('Convolution', 'DepthwiseConvolution', 'ConvolutionDepthwise'):
        text = conv if kind != 'ConvolutionDepthwise' else conv.replace('num_output: 6 group: 6', 'num_output: 99')
        net = run({'x': x}, 'type: "%s" %s' % (kind, text), params=(w, b))
        layer = net.layer_dict['L']
        assert kind == 'Convolution' or type(layer.core).__name__ == 'DepthwiseCore'
        dy = rand(*net.blobs['y'].shape, seed=3) if dy is None else dy
        net.blobs['y'].diff[...] = dy
        net.clear_param_diffs()
        net.backward_from_to()
        outs.append((net.blobs['y'].data.copy(), net.blobs['x'].diff.copy(),
                     layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy()))
    for other in outs[1:]:
        for a, e in zip(other, outs[0]):
            np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def test_depthwise_gradients():
    check({'x': rand(2, 3, 5, 5)}, 'type: "DepthwiseConvolution" convolution_param { num_output: 3 group: 3 '
          'kernel_size: 3 stride: 2 pad: 1 %s }' % FILL)
    check({'x': rand(1, 2, 4, 5)}, 'type: "ConvolutionDepthwise" convolution_param { num_output: 1 '
          'kernel_size: 2 %s }' % FILL)


def test_depthwise_route(monkeypatch):
    from caffe_py.layers import mobile
    monkeypatch.setattr(mobile._Depthwise, 'MIN_PLANE', 144)
    for size, core in ((12, 'DepthwiseCore'), (11, '_GemmConv')):
        net = run({'x': rand(1, 4, size, size)}, 'type: "DepthwiseConvolution" convolution_param { num_output: 4 '
                  'group: 4 kernel_size: 3 pad: 1 }')
        assert type(net.layer_dict['L'].core).__name__ == core


def test_depthwise_with_multiplier_runs_grouped_gemm():
    net = run({'x': rand(1, 2, 5, 5)}, 'type: "DepthwiseConvolution" convolution_param { num_output: 4 group: 2 '
              'kernel_size: 3 %s }' % FILL)
    assert type(net.layer_dict['L'].core).__name__ != 'DepthwiseCore'
    assert net.blobs['y'].shape == (1, 4, 3, 3)


def test_depthwise_against_opencv(tmp_path):
    x = rand(2, 6, 9, 9)
    layer = 'type: "DepthwiseConvolution" convolution_param { num_output: 6 group: 6 kernel_size: 3 stride: 2 pad: 1 }'
    weights = (rand(6, 1, 3, 3, seed=1).astype(np.float32), rand(6, seed=2).astype(np.float32))
    # OpenCV has no DepthwiseConvolution type: its grouped Convolution reads the same weights
    expected = opencv_forward({'x': x}, layer.replace('DepthwiseConvolution', 'Convolution'), weights, tmp_path)
    np.testing.assert_allclose(ours32({'x': x}, layer, weights), expected, rtol=1e-5, atol=1e-5)


# -- ShuffleChannel, Axpy --------------------------------------------------------------------------

def test_shuffle_channel_hand_case_and_gradient():
    x = np.arange(6, dtype=np.float64).reshape(1, 6, 1, 1)
    net = run({'x': x}, 'type: "ShuffleChannel" shuffle_channel_param { group: 2 }')
    assert net.blobs['y'].data.reshape(-1).tolist() == [0, 3, 1, 4, 2, 5]
    check({'x': rand(2, 6, 2, 3)}, 'type: "ShuffleChannel" shuffle_channel_param { group: 3 }')


def test_shuffle_channel_against_opencv(tmp_path):
    x = rand(2, 12, 3, 4)
    layer = 'type: "ShuffleChannel" shuffle_channel_param { group: 3 }'
    np.testing.assert_array_equal(ours32({'x': x}, layer), opencv_forward({'x': x}, layer, tmp_path=tmp_path))


def test_axpy_hand_case_and_gradient():
    a = np.array([[2.0, -1.0]]).reshape(1, 2, 1, 1)
    x = np.ones((1, 2, 1, 2))
    y = np.arange(4.0).reshape(1, 2, 1, 2)
    net = run({'a': a, 'x': x, 'z': y}, 'type: "Axpy"')
    np.testing.assert_array_equal(net.blobs['y'].data.reshape(-1), [2, 3, 1, 2])
    check({'a': rand(2, 3, 1, 1), 'x': rand(2, 3, 2, 2, seed=1), 'z': rand(2, 3, 2, 2, seed=2)}, 'type: "Axpy"')


# -- R-CNN -----------------------------------------------------------------------------------------

def naive_roi_pool(x, rois, ph, pw, scale):
    """The fork's loops, literally (float32 bin sizes, C rounding)."""
    out = np.zeros((len(rois), x.shape[1], ph, pw))
    height, width = x.shape[2:]
    f32 = np.float32
    for n, roi in enumerate(rois):
        b = int(roi[0])
        c_round = [int(np.sign(v) * np.floor(abs(v) + 0.5)) for v in f32(roi[1:]) * f32(scale)]
        x1, y1, x2, y2 = c_round
        bh = f32(max(y2 - y1 + 1, 1)) / f32(ph)
        bw = f32(max(x2 - x1 + 1, 1)) / f32(pw)
        for i in range(ph):
            for j in range(pw):
                hs = min(max(int(np.floor(f32(i) * bh)) + y1, 0), height)
                he = min(max(int(np.ceil(f32(i + 1) * bh)) + y1, 0), height)
                ws = min(max(int(np.floor(f32(j) * bw)) + x1, 0), width)
                we = min(max(int(np.ceil(f32(j + 1) * bw)) + x1, 0), width)
                if he <= hs or we <= ws:
                    continue
                out[n, :, i, j] = x[b, :, hs:he, ws:we].max(axis=(1, 2))
    return out


ROI_LAYER = 'type: "ROIPooling" roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.5 }'


def test_roi_pooling_against_the_forks_loops_and_gradient():
    x = rand(2, 3, 8, 7)
    net = run({'x': x, 'rois': ROIS}, ROI_LAYER)
    np.testing.assert_array_equal(net.blobs['y'].data, naive_roi_pool(x, ROIS, 3, 2, 0.5))
    check({'x': x, 'rois': ROIS}, ROI_LAYER, no_grad=('rois',))


def test_roi_pooling_backward_routes_to_first_maximum():
    x = np.zeros((1, 1, 2, 2))
    net = run({'x': x, 'rois': np.array([[0, 0, 0, 1, 1.0]])},
              'type: "ROIPooling" roi_pooling_param { pooled_h: 1 pooled_w: 1 }')
    net.blobs['y'].diff[...] = 5
    net.backward_from_to()
    np.testing.assert_array_equal(net.blobs['x'].diff.reshape(-1), [5, 0, 0, 0])


def naive_roi_pool_backward(x, rois, dy, ph, pw, scale):
    """The fork's forward loop recording max_idx (strict >: the first maximum), then its backward."""
    dx = np.zeros(x.shape)
    height, width = x.shape[2:]
    f32 = np.float32
    for n, roi in enumerate(rois):
        b = int(roi[0])
        x1, y1, x2, y2 = [int(np.sign(v) * np.floor(abs(v) + 0.5)) for v in f32(roi[1:]) * f32(scale)]
        bh, bw = f32(max(y2 - y1 + 1, 1)) / f32(ph), f32(max(x2 - x1 + 1, 1)) / f32(pw)
        for c in range(x.shape[1]):
            for i in range(ph):
                for j in range(pw):
                    hs = min(max(int(np.floor(f32(i) * bh)) + y1, 0), height)
                    he = min(max(int(np.ceil(f32(i + 1) * bh)) + y1, 0), height)
                    ws = min(max(int(np.floor(f32(j) * bw)) + x1, 0), width)
                    we = min(max(int(np.ceil(f32(j + 1) * bw)) + x1, 0), width)
                    best, at = -np.inf, None
                    for h in range(hs, he):
                        for w in range(ws, we):
                            if x[b, c, h, w] > best:
                                best, at = x[b, c, h, w], (h, w)
                    if at is not None:
                        dx[b, c][at] += dy[n, c, i, j]
    return dx


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_roi_pooling_backward_equals_the_forks_loops_with_ties(dtype):
    """Ties everywhere (values rounded to halves, -0.0 next to 0.0), bins of 1 to 9 cells a side."""
    x = np.round(rand(2, 3, 26, 11) * 2) / 2
    x[0, 0] = 0.0
    x[0, 0, :4] = -0.0                                   # the first maximum of bins across row 4
    rois = np.vstack([ROIS, [[1, 0, 0, 25, 25], [0, 4, 2, 19, 9], [1, 0, 0, 2, 30], [0, 0, 0, 20, 60]]])
    layer = 'type: "ROIPooling" roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.5 }'
    net = run({'x': x.astype(dtype), 'rois': rois.astype(dtype)}, layer, dtype=dtype)
    dy = rand(*net.blobs['y'].shape, seed=1).astype(dtype)
    net.blobs['y'].diff[...] = dy
    net.backward_from_to()
    expected = naive_roi_pool_backward(x.astype(dtype), rois, dy.astype(np.float64), 3, 2, 0.5)
    np.testing.assert_array_equal(net.blobs['x'].diff, expected.astype(dtype))


def test_roi_pooling_against_opencv(tmp_path):
    x = rand(2, 4, 12, 10)
    expected = opencv_forward({'x': x, 'rois': ROIS}, ROI_LAYER, tmp_path=tmp_path)
    np.testing.assert_allclose(ours32({'x': x, 'rois': ROIS}, ROI_LAYER), expected, rtol=1e-6)


PSROI = 'type: "PSROIPooling" psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 3 }'


def naive_psroi(x, rois, dim, g, scale):
    f32 = np.float32
    out = np.zeros((len(rois), dim, g, g))
    height, width = x.shape[2:]
    for n, roi in enumerate(rois):
        r = [f32(np.sign(v) * np.floor(abs(v) + 0.5)) for v in roi[1:]]
        x1, y1 = r[0] * f32(scale), r[1] * f32(scale)
        x2, y2 = (r[2] + 1) * f32(scale), (r[3] + 1) * f32(scale)
        bw, bh = max(x2 - x1, f32(0.1)) / f32(g), max(y2 - y1, f32(0.1)) / f32(g)
        for d in range(dim):
            for i in range(g):
                for j in range(g):
                    hs = min(max(int(np.floor(f32(i) * bh + y1)), 0), height)
                    he = min(max(int(np.ceil(f32(i + 1) * bh + y1)), 0), height)
                    ws = min(max(int(np.floor(f32(j) * bw + x1)), 0), width)
                    we = min(max(int(np.ceil(f32(j + 1) * bw + x1)), 0), width)
                    if he > hs and we > ws:
                        out[n, d, i, j] = x[int(roi[0]), (d * g + i) * g + j, hs:he, ws:we].mean()
    return out


def test_psroi_pooling_against_the_forks_loops_and_gradient():
    x = rand(2, 18, 8, 9)
    net = run({'x': x, 'rois': ROIS}, PSROI)
    np.testing.assert_allclose(net.blobs['y'].data, naive_psroi(x, ROIS, 2, 3, 0.5), rtol=1e-12, atol=1e-12)
    check({'x': rand(2, 18, 5, 6), 'rois': ROIS}, PSROI, no_grad=('rois',))


def test_psroi_pooling_against_opencv(tmp_path):
    x = rand(2, 18, 12, 10)
    expected = opencv_forward({'x': x, 'rois': ROIS}, PSROI, tmp_path=tmp_path)
    np.testing.assert_allclose(ours32({'x': x, 'rois': ROIS}, PSROI), expected, rtol=1e-5, atol=1e-6)


def test_smooth_l1_loss_hand_case_and_gradients():
    a = np.array([[0.5, 3.0, -2.0, 0.1]])
    b = np.zeros((1, 4))
    net = run({'a': a, 'b': b}, 'type: "SmoothL1Loss"')
    # |x| < 1: 0.5 x^2; else |x| - 0.5 ; divided by num = 1
    assert net.blobs['y'].data == pytest.approx(0.125 + 2.5 + 1.5 + 0.005)
    win, wout = np.array([[2.0, 1, 1, 0]]), np.array([[1.0, 0.5, 1, 1]])
    net = run({'a': a, 'b': b, 'i': win, 'o': wout}, 'type: "SmoothL1Loss" smooth_l1_loss_param { sigma: 2 }')
    # sigma^2 = 4: |x| < 0.25 -> 2 x^2, else |x| - 0.125
    assert net.blobs['y'].data == pytest.approx((1 - 0.125) + 0.5 * (3 - 0.125) + (2 - 0.125) + 0)
    inputs = {'a': rand(3, 4, 2, 1), 'b': rand(3, 4, 2, 1, seed=1), 'i': rand(3, 4, 2, 1, seed=2),
              'o': rand(3, 4, 2, 1, seed=3)}
    check(inputs, 'type: "SmoothL1Loss" smooth_l1_loss_param { sigma: 3 }', no_grad=('i', 'o'))


# -- YOLO ------------------------------------------------------------------------------------------

def darknet_reorg(x, stride, forward):
    """darknet's reorg_cpu, literally, on (b, c, h, w) = the bottom's shape."""
    b_, c, h, w = x.shape
    flat, out = x.reshape(-1), np.zeros(x.size)
    out_c = c // (stride * stride)
    for b in range(b_):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2, offset = k % out_c, k // out_c
                    w2, h2 = i * stride + offset % stride, j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    if forward:
                        out[out_index] = flat[in_index]
                    else:
                        out[in_index] = flat[out_index]
    return out


@pytest.mark.parametrize('reverse', [False, True])
def test_reorg_is_darknets_and_gradient(reverse):
    x = rand(2, 8, 4, 6)
    layer = 'type: "Reorg" reorg_param { stride: 2 reverse: %s }' % str(reverse).lower()
    net = run({'x': x}, layer)
    expected_shape = (2, 2, 8, 12) if reverse else (2, 32, 2, 3)
    assert net.blobs['y'].shape == expected_shape
    np.testing.assert_array_equal(net.blobs['y'].data.reshape(-1), darknet_reorg(x, 2, reverse))
    check({'x': rand(1, 8, 2, 4)}, layer)


def test_reorg_against_opencv(tmp_path):
    x = rand(2, 8, 6, 6)
    layer = 'type: "Reorg" reorg_param { stride: 2 }'
    np.testing.assert_array_equal(ours32({'x': x}, layer), opencv_forward({'x': x}, layer, tmp_path=tmp_path))


def test_yolo_upsample_nearest_and_gradient():
    x = np.array([[[[1.0, 2], [3, 4]]]])
    net = run({'x': x}, 'type: "Upsample" upsample_param { scale: 2 }')
    np.testing.assert_array_equal(net.blobs['y'].data[0, 0], [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    check({'x': rand(2, 3, 2, 3)}, 'type: "Upsample" upsample_param { scale: 3 }')


def test_yolo_upsample_against_opencv_nearest_resize():
    # OpenCV dnn's Caffe importer has no Upsample layer: compare with cv2.resize's nearest neighbour
    x = rand(1, 3, 5, 4)
    ours = ours32({'x': x}, 'type: "Upsample" upsample_param { scale: 2 }')
    cv = np.stack([cv2.resize(p, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
                   for p in x[0].astype(np.float32)])
    np.testing.assert_array_equal(ours[0], cv)


# -- segmentation ----------------------------------------------------------------------------------

def test_segnet_upsample_unpools_with_the_pooling_mask_and_gradient():
    x = rand(2, 3, 6, 5)
    pool = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 5 } } }'
            'layer { name: "p" type: "Pooling" bottom: "x" top: "p" top: "m" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }'
            'layer { name: "L" type: "Upsample" bottom: "p" bottom: "m" top: "y" upsample_param { upsample_h: 6 upsample_w: 5 } }')
    net = Net(text_format.Parse(pool, caffe_pb2.NetParameter()), TEST, dtype=np.float64)
    net.forward(x=x)
    y, p = net.blobs['y'].data, net.blobs['p'].data
    assert y.shape == x.shape
    # each window's maximum is back in place, every other position is zero
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept])
    assert kept.sum() == p.size
    np.testing.assert_allclose(np.sort(y[kept]), np.sort(p.reshape(-1)))
    mask = net.blobs['m'].data.copy()
    check({'x': rand(2, 3, 3, 3), 'm': mask}, 'type: "Upsample" upsample_param { upsample_h: 6 upsample_w: 5 }',
          no_grad=('m',))
    net2 = run({'x': rand(2, 3, 3, 3), 'm': mask}, 'type: "Upsample" upsample_param { scale: 2 pad_out_w: true }')
    assert net2.blobs['y'].shape == (2, 3, 6, 5)


def test_segnet_upsample_refuses_out_of_range_mask():
    with pytest.raises(Exception, match='out of range'):
        run({'x': rand(1, 1, 2, 2), 'm': np.full((1, 1, 2, 2), 99.0)}, 'type: "Upsample" upsample_param { scale: 2 }')


def interp_reference(x, h_out, w_out):
    """The forks' caffe_cpu_interp2 loops (float ratios, lower pixel and the next)."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, h_out, w_out))
    rh = np.float32(h - 1) / np.float32(h_out - 1) if h_out > 1 else np.float32(0)
    rw = np.float32(w - 1) / np.float32(w_out - 1) if w_out > 1 else np.float32(0)
    for i in range(h_out):
        hr = rh * np.float32(i)
        h1 = int(hr)
        hp = 1 if h1 < h - 1 else 0
        l1 = float(hr - h1)
        for j in range(w_out):
            wr = rw * np.float32(j)
            w1 = int(wr)
            wp = 1 if w1 < w - 1 else 0
            m1 = float(wr - w1)
            out[:, :, i, j] = ((1 - l1) * ((1 - m1) * x[:, :, h1, w1] + m1 * x[:, :, h1, w1 + wp])
                               + l1 * ((1 - m1) * x[:, :, h1 + hp, w1] + m1 * x[:, :, h1 + hp, w1 + wp]))
    return out


@pytest.mark.parametrize('param, shape', [('zoom_factor: 2', (9, 11)), ('shrink_factor: 2', (3, 3)),
                                          ('height: 7 width: 4', (7, 4)),
                                          ('zoom_factor: 3 shrink_factor: 2', (7, 7)),
                                          ('zoom_factor: 2 pad_beg: -1 pad_end: -1', (5, 7))])
def test_interp_against_the_forks_loops_and_gradient(param, shape):
    x = rand(2, 3, 5, 6)
    layer = 'type: "Interp" interp_param { %s }' % param
    net = run({'x': x}, layer)
    assert net.blobs['y'].shape[2:] == shape
    crop = x[:, :, 1:-1, 1:-1] if 'pad_beg' in param else x
    np.testing.assert_allclose(net.blobs['y'].data, interp_reference(crop, *shape), rtol=1e-6, atol=1e-6)
    check({'x': rand(1, 2, 4, 3)}, layer)


def test_interp_hand_case():
    net = run({'x': np.array([[[[0.0, 2.0], [4.0, 6.0]]]])}, 'type: "Interp" interp_param { height: 3 width: 3 }')
    np.testing.assert_allclose(net.blobs['y'].data[0, 0], [[0, 1, 2], [2, 3, 4], [4, 5, 6]])


@pytest.mark.parametrize('param', ['zoom_factor: 2', 'height: 9 width: 7'])   # OpenCV reads no shrink_factor
def test_interp_against_opencv(param, tmp_path):
    x = rand(2, 3, 5, 6)
    layer = 'type: "Interp" interp_param { %s }' % param
    expected = opencv_forward({'x': x}, layer, tmp_path=tmp_path)
    np.testing.assert_allclose(ours32({'x': x}, layer), expected, rtol=1e-5, atol=1e-5)


SEGNET_BN = ('type: "BN" bn_param { scale_filler { type: "constant" value: 2 } '
             'shift_filler { type: "constant" value: 0.5 } %s }')


def test_segnet_bn_learn_and_inference():
    x = rand(4, 3, 2, 5)
    net = run({'x': x}, SEGNET_BN % '', tops=('y', 'mean', 'var'))
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    expected = 2 * (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-9) + 0.5
    np.testing.assert_allclose(net.blobs['y'].data, expected, rtol=1e-10)
    np.testing.assert_allclose(net.blobs['mean'].data.reshape(-1), mean)
    np.testing.assert_allclose(net.blobs['var'].data.reshape(-1), var)
    net = run({'x': x}, SEGNET_BN % 'bn_mode: INFERENCE')
    np.testing.assert_allclose(net.blobs['y'].data, 2 * x + 0.5)
    scale, shift = rand(1, 3, 1, 1, seed=4), rand(1, 3, 1, 1, seed=5)
    check({'x': rand(3, 3, 2, 2)}, SEGNET_BN % '', params={'L': [scale, shift]})
    check({'x': rand(3, 3, 2, 2)}, SEGNET_BN % 'bn_mode: INFERENCE', params={'L': [scale, shift]})


PSP_BN = ('type: "BN" bn_param { slope_filler { type: "constant" value: 1.5 } '
          'bias_filler { type: "constant" value: -1 } momentum: 0.9 eps: 1e-5 %s }')


def test_pspnet_bn_train_test_frozen():
    x = rand(4, 3, 2, 5)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    net = run({'x': x}, PSP_BN % '', phase=TRAIN)
    layer = net.layer_dict['L']
    assert len(layer.blobs) == 4 and [s.lr_mult for s in layer.layer_param.param][2:] == [0, 0]
    expected = 1.5 * (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) - 1
    np.testing.assert_allclose(net.blobs['y'].data, expected, rtol=1e-10)
    rate = 1 - float(np.float32(0.9))     # momentum is a float in the schema
    np.testing.assert_allclose(layer.blobs[2].data.reshape(-1), rate * mean)
    np.testing.assert_allclose(layer.blobs[3].data.reshape(-1), rate * var)
    stored = [np.ones((1, 3, 1, 1)) * 1.5, np.zeros((1, 3, 1, 1)), mean.reshape(1, 3, 1, 1) + 1,
              var.reshape(1, 3, 1, 1) * 4]
    for phase, extra in ((TEST, ''), (TRAIN, 'frozen: true')):
        net = run({'x': x}, PSP_BN % extra, phase=phase, params=stored)
        expected = 1.5 * (x - mean[:, None, None] - 1) / np.sqrt(4 * var[:, None, None] + 1e-5)
        np.testing.assert_allclose(net.blobs['y'].data, expected, rtol=1e-10)
    assert [s.lr_mult for s in net.layer_dict['L'].layer_param.param] == [0, 0, 0, 0]
    params = {'L': [rand(1, 3, 1, 1, seed=6), rand(1, 3, 1, 1, seed=7)] + stored[2:]}
    for phase in (TRAIN, TEST):   # the running statistics take no gradient (as in the fork)
        check({'x': rand(3, 3, 2, 2)}, PSP_BN % '', phase=phase, params=params, no_grad=('L/2', 'L/3'))


def test_yolov3_detection_output_hand_case():
    # one scale, 2x2 cells, one anchor (biases[2] = 8 x 16 at anchors_scale 4: w = e^0 * 8 / (2 * 4)), 2 classes
    logits = np.full((1, 7, 2, 2), -20.0)
    logits[0, 2:4] = 0                          # w = 1, h = 2 relative before exp
    logits[0, 0:2] = 0                          # sigmoid 0.5: centres in the middle of the cells
    logits[0, 4, 0, 0] = logits[0, 4, 0, 1] = 20    # objectness ~1 in cells (0, 0) and (0, 1)
    logits[0, 5, 0, 0] = 2.0                    # class 0 in cell (0, 0)
    logits[0, 6, 0, 1] = 1.0                    # class 1 in cell (0, 1), overlapping: IoU 1/3
    layer = ('type: "Yolov3DetectionOutput" yolov3_detection_output_param { num_classes: 2 num_box: 1 '
             'confidence_threshold: 0.5 nms_threshold: %s biases: 1 biases: 1 biases: 8 biases: 16 anchors_scale: 4 '
             'mask_group_num: 1 mask: 1 }')
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    out = run({'x': logits}, layer % '0.45').blobs['y'].data.reshape(-1, 7)
    np.testing.assert_allclose(out, [[0, 1, sig(2) * sig(20), -0.25, -0.75, 0.75, 1.25],
                                     [0, 2, sig(1) * sig(20), 0.25, -0.75, 1.25, 1.25]], rtol=1e-6)
    out = run({'x': logits}, layer % '0.3').blobs['y'].data.reshape(-1, 7)
    assert out.shape == (1, 7) and out[0, 1] == 1
    logits[0, 4] = -20
    out = run({'x': logits}, layer % '0.3').blobs['y'].data.reshape(-1, 7)
    np.testing.assert_array_equal(out, [[0, -1, -1, -1, -1, -1, -1]])


def test_fast_rcnn_dropout_scale_train_false_scales_at_test_time():
    x = rand(2, 5)
    layer = 'type: "Dropout" dropout_param { dropout_ratio: 0.25 scale_train: false }'
    np.testing.assert_allclose(run({'x': x}, layer).blobs['y'].data, 0.75 * x)
    y = run({'x': x}, layer, phase=TRAIN).blobs['y'].data
    assert set(np.unique(y / x).round(12)) <= {0.0, 1.0}
    check({'x': x}, layer)


FASTER_RCNN_TEST = '''
input: "data" input_shape { dim: 1 dim: 3 dim: 32 dim: 48 }
input: "im_info" input_shape { dim: 1 dim: 3 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 stride: 4 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "rpn_cls" type: "Convolution" bottom: "conv" top: "rpn_cls_score"
        convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "rpn_prob" type: "Softmax" bottom: "rpn_cls_score" top: "rpn_cls_prob" }
layer { name: "rpn_bbox" type: "Convolution" bottom: "conv" top: "rpn_bbox_pred"
        convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "proposal" type: "Python" bottom: "rpn_cls_prob" bottom: "rpn_bbox_pred" bottom: "im_info"
        top: "rois" python_param { module: "rcnn_pylayers" layer: "ProposalLayer"
        param_str: "{'feat_stride': 4, 'anchor': 12, 'top_n': 6}" } }
layer { name: "roi_pool" type: "ROIPooling" bottom: "conv" bottom: "rois" top: "pool"
        roi_pooling_param { pooled_w: 3 pooled_h: 3 spatial_scale: 0.25 } }
layer { name: "cls_score" type: "InnerProduct" bottom: "pool" top: "cls_score"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "bbox_pred" type: "InnerProduct" bottom: "pool" top: "bbox_pred"
        inner_product_param { num_output: 12 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "cls_prob" type: "Softmax" bottom: "cls_score" top: "cls_prob" }
'''


def test_faster_rcnn_test_net_with_a_users_python_proposal_layer():
    net = Net(formats.parse_net_text(FASTER_RCNN_TEST), TEST, dtype=np.float64)
    out = net.forward(data=rand(1, 3, 32, 48), im_info=np.array([[32.0, 48.0, 1.0]]))
    rois = net.blobs['rois'].data
    assert rois.shape == (6, 5) and out['cls_prob'].shape == (6, 3) and out['bbox_pred'].shape == (6, 12)
    assert (rois[:, 1:] >= 0).all() and (rois[:, 3] <= 47).all() and (rois[:, 4] <= 31).all()
    np.testing.assert_allclose(out['cls_prob'].sum(axis=1), 1)
    np.testing.assert_array_equal(net.blobs['pool'].data, naive_roi_pool(net.blobs['conv'].data, rois, 3, 3, 0.25))


def test_yolov2_detection_output_hand_case():
    # 2x2 cells, one anchor of 1 x 2 cells, 3 classes: one confident box in cell (row 1, col 0)
    logits = np.full((1, 8, 2, 2), -20.0)
    logits[0, 0:4] = 0
    logits[0, 4, 1, 0] = 20
    logits[0, 5:8, 1, 0] = [0.0, np.log(3.0), 0.0]     # softmax: 0.2, 0.6, 0.2
    layer = ('type: "YoloDetectionOutput" yolo_detection_output_param { num_classes: 3 num_box: 1 '
             'confidence_threshold: 0.5 biases: 1 biases: 2 }')
    out = run({'x': logits}, layer).blobs['y'].data.reshape(-1, 7)
    score = 0.6 / (1 + np.exp(-20))
    np.testing.assert_allclose(out, [[0, 2, score, 0.25 - 0.25, 0.75 - 0.5, 0.25 + 0.25, 0.75 + 0.5]], rtol=1e-6)


# -- the same layers in GPU mode: CuPy's stand-in here, a real device in the `gpu` run -------------

DEVICE_CASES = [
    ({'x': rand(2, 6, 7, 8)}, 'type: "DepthwiseConvolution" convolution_param { num_output: 6 group: 6 '
     'kernel_size: 3 stride: 2 pad: 1 %s }' % FILL, ()),
    ({'x': rand(2, 6, 3, 3)}, 'type: "ShuffleChannel" shuffle_channel_param { group: 2 }', ()),
    ({'x': rand(2, 6, 3, 3) * 5}, 'type: "ReLU6" relu6_param { negative_slope: 0.1 }', ()),
    ({'x': rand(2, 3, 4, 5) * 30}, 'type: "Mish"', ()),
    ({'a': rand(2, 3, 1, 1), 'x': rand(2, 3, 2, 2, seed=1), 'z': rand(2, 3, 2, 2, seed=2)}, 'type: "Axpy"', ()),
    ({'x': rand(2, 3, 8, 7), 'rois': ROIS}, ROI_LAYER, ('rois',)),
    ({'x': rand(2, 18, 8, 9), 'rois': ROIS}, PSROI, ('rois',)),
    ({'a': rand(3, 4), 'b': rand(3, 4, seed=1), 'i': rand(3, 4, seed=2), 'o': rand(3, 4, seed=3)},
     'type: "SmoothL1Loss" smooth_l1_loss_param { sigma: 3 }', ()),
    ({'x': rand(2, 8, 4, 6)}, 'type: "Reorg" reorg_param { stride: 2 }', ()),
    ({'x': rand(2, 3, 2, 3)}, 'type: "Upsample" upsample_param { scale: 2 }', ()),
    ({'x': rand(2, 3, 5, 6)}, 'type: "Interp" interp_param { zoom_factor: 2 pad_beg: -1 pad_end: -1 }', ()),
    ({'x': rand(4, 3, 2, 5)}, SEGNET_BN % '', ()),
    ({'x': rand(4, 3, 2, 5)}, PSP_BN % '', ()),
    ({'x': rand(1, 14, 3, 3)}, 'type: "Yolov3DetectionOutput" yolov3_detection_output_param { num_classes: 2 '
     'num_box: 2 confidence_threshold: 0.3 biases: 4 biases: 5 biases: 8 biases: 9 anchors_scale: 8 '
     'mask_group_num: 1 mask: 0 mask: 1 }', ()),
    ({'x': rand(2, 3, 2, 2), 'label': np.array([0, 1, 2, 1, 1, 1, 0, 2.0]).reshape(2, 1, 2, 2)},
     'type: "SoftmaxWithLoss" loss_param { weight_by_label_freqs: true class_weighting: 0.5 '
     'class_weighting: 2 class_weighting: 1.5 }', ()),
    ({'x': rand(2, 14, 3, 3), 'labels': np.array([[0, 0.3, 0.6, 0.5, 0.25, 1, 0.8, 0.2, 0.1, 0.3] + [0] * 10,
                                                  [1, 0.5, 0.5, 0.9, 0.9] + [0] * 15], np.float64)},
     'type: "RegionLoss" region_loss_param { num_class: 2 num: 2 biases: 1 biases: 1 biases: 2 biases: 3 '
     'biases: 1 biases: 1 biases: 1 biases: 1 biases: 1 biases: 1 rescore: 0 }', ()),
]


def forward_backward(inputs, layer, tops=('y',)):
    backend.set_random_seed(0)          # the same filled weights on both sides
    net = run(inputs, layer, phase=TRAIN, tops=tops)
    net.clear_param_diffs()
    for name in net.outputs:
        if not net.blob_loss_weights[name]:
            net.blobs[name].diff[...] = rand(*net.blobs[name].shape, seed=9)
    net.backward_from_to()
    grads = [net.blobs[n].diff.copy() for n in inputs] + [backend.to_numpy(b.diff).copy()
                                                           for b in net.layer_dict['L'].blobs]
    return [net.blobs[n].data.copy() for n in net.outputs], grads


def compare_devices(mode):
    for inputs, layer, _ in DEVICE_CASES:
        host = forward_backward(inputs, layer)
        with mode():
            device = forward_backward(inputs, layer)
        for a, e in zip(device[0] + device[1], host[0] + host[1]):
            np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12, err_msg=layer)


def test_fork_layers_on_the_cupy_stand_in_match_the_cpu():
    import fakecupy
    compare_devices(fakecupy.fake_gpu)


@pytest.mark.gpu
def test_fork_layers_on_the_device_match_the_cpu():
    import device_cases
    compare_devices(device_cases.gpu_mode)


def test_bayesian_segnet_dropout_samples_at_test_time():
    x = np.ones((4, 50))
    y = run({'x': x}, 'type: "Dropout" dropout_param { dropout_ratio: 0.5 sample_weights_test: true }').blobs['y'].data
    assert set(np.unique(y)) == {0.0, 2.0}


def test_dense_image_data_keeps_labels_aligned_with_pixels(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        image = rng.integers(0, 250, (12, 10, 3)).astype(np.uint8)
        cv2.imwrite(str(tmp_path / ('im%d.png' % i)), image)
        cv2.imwrite(str(tmp_path / ('lab%d.png' % i)), image[:, :, 0] // 50)   # label: a function of the pixel
        lines.append('im%d.png lab%d.png' % (i, i))
    (tmp_path / 'list.txt').write_text('\n'.join(lines) + '\n')
    text = ('layer { name: "data" type: "DenseImageData" top: "data" top: "label" '
            'transform_param { mean_value: 10 mean_value: 20 mean_value: 30 scale: 0.5 } '
            'dense_image_data_param { source: "%s" root_folder: "%s/" batch_size: 2 mirror: true '
            'crop_height: 7 crop_width: 6 shuffle: true } }' % (tmp_path / 'list.txt', tmp_path))
    net = Net(text_format.Parse(text, caffe_pb2.NetParameter()), TRAIN)
    for _ in range(3):
        net.forward()
        data, label = net.blobs['data'].data, net.blobs['label'].data
        assert data.shape == (2, 3, 7, 6) and label.shape == (2, 1, 7, 6)
        blue = np.rint(data[:, 0] / 0.5 + 10)
        np.testing.assert_array_equal(label[:, 0], blue // 50)


def dense_net(tmp_path, param, phase=TRAIN):
    text = ('layer { name: "data" type: "DenseImageData" top: "data" top: "label" '
            'dense_image_data_param { source: "%s" root_folder: "%s/" %s } }' % (tmp_path / 'list.txt', tmp_path, param))
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


def test_enet_label_divide_factor(tmp_path):
    """ENet's encoder training reads the label at new_height/f x new_width/f (nearest neighbour)."""
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 12, (32, 48)).astype(np.uint8) for _ in range(2)]
    for i, label in enumerate(labels):
        cv2.imwrite(str(tmp_path / ('im%d.png' % i)), rng.integers(0, 250, (32, 48, 3)).astype(np.uint8))
        cv2.imwrite(str(tmp_path / ('lab%d.png' % i)), label)
        cv2.imwrite(str(tmp_path / ('small%d.png' % i)), label[::4, ::4])
    (tmp_path / 'list.txt').write_text('im0.png lab0.png\nim1.png lab1.png\n')
    net = dense_net(tmp_path, 'batch_size: 2 new_height: 16 new_width: 24 label_divide_factor: 4')
    assert net.blobs['data'].shape == (2, 3, 16, 24) and net.blobs['label'].shape == (2, 1, 4, 6)
    net.forward()
    for i, label in enumerate(labels):       # 32x48 -> 4x6: OpenCV's nearest takes every 8th pixel
        np.testing.assert_array_equal(net.blobs['label'].data[i, 0], label[::8, ::8])
    assert dense_net(tmp_path, 'batch_size: 1 new_height: 16 new_width: 24').blobs['label'].shape == (1, 1, 16, 24)
    # without new_height the label images must already be divided
    (tmp_path / 'list.txt').write_text('im0.png small0.png\nim1.png small1.png\n')
    net = dense_net(tmp_path, 'batch_size: 2 label_divide_factor: 4')
    net.forward()
    assert net.blobs['data'].shape == (2, 3, 32, 48)
    np.testing.assert_array_equal(net.blobs['label'].data[:, 0], np.stack(labels)[:, ::4, ::4])
    (tmp_path / 'list.txt').write_text('im0.png lab0.png\n')
    with pytest.raises(Exception, match='label divided by label_divide_factor 4.*lab0.png'):
        dense_net(tmp_path, 'batch_size: 1 label_divide_factor: 4').forward()
    with pytest.raises(Exception, match='label_divide_factor must be at least 1'):
        dense_net(tmp_path, 'batch_size: 1 label_divide_factor: 0')
    with pytest.raises(Exception, match='label_divide_factor 2 with crop_height'):
        dense_net(tmp_path, 'batch_size: 1 label_divide_factor: 2 crop_height: 8 crop_width: 8')


def test_segnet_class_weighted_softmax_loss():
    x = rand(2, 3, 2, 2)
    label = np.array([[[0, 1], [2, 1]], [[1, 1], [0, 2]]], np.float64).reshape(2, 1, 2, 2)
    weights = [0.5, 2.0, 1.5]
    layer = ('type: "SoftmaxWithLoss" loss_param { weight_by_label_freqs: true class_weighting: 0.5 '
             'class_weighting: 2 class_weighting: 1.5 }')
    net = run({'x': x, 'label': label}, layer)
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    lab = label[:, 0].astype(int)
    picked = np.take_along_axis(p, lab[:, None], axis=1)[:, 0]
    expected = -(np.log(picked) * np.take(weights, lab)).sum() / lab.size
    assert net.blobs['y'].data == pytest.approx(expected)
    check({'x': x, 'label': label}, layer, no_grad=('label',))
    with pytest.raises(Exception, match='class weight'):
        run({'x': rand(1, 2, 1, 1), 'label': np.zeros((1, 1, 1, 1))}, layer)


def test_region_loss_darknet_deltas_hand_case():
    # S = 2, one anchor (2 x 2 cells), 2 classes; one truth of class 1 centred in cell (row 1, col 0)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    x = rand(1, 7, 2, 2) * 0.5
    labels = np.zeros((1, 300 * 5))
    labels[0, :5] = [1, 0.3, 0.6, 0.5, 0.25]
    layer = ('type: "RegionLoss" region_loss_param { num_class: 2 num: 1 thresh: 0.6 object_scale: 5 '
             'noobject_scale: 1 class_scale: 1 coord_scale: 1 %s }' % ' '.join('biases: %g' % v for v in
                                                                            [2, 2, 1, 1, 1, 1, 1, 1, 1, 1]))
    net = run({'x': x, 'labels': labels}, layer, phase=TRAIN)
    g = x[0]
    obj = sig(g[4])
    delta = np.zeros_like(g)
    delta[4] = obj * obj * (1 - obj)                          # no box overlaps the truth by > 0.6 here
    pred = [(0 + sig(g[0, 1, 0])) / 2, (1 + sig(g[1, 1, 0])) / 2, np.exp(g[2, 1, 0]), np.exp(g[3, 1, 0])]
    left, right = max(pred[0] - pred[2] / 2, 0.05), min(pred[0] + pred[2] / 2, 0.55)
    top_, bottom_ = max(pred[1] - pred[3] / 2, 0.475), min(pred[1] + pred[3] / 2, 0.725)
    inter = max(right - left, 0) * max(bottom_ - top_, 0)
    iou = inter / (pred[2] * pred[3] + 0.125 - inter)
    assert iou <= 0.6
    scale = 1.0                                               # rescore (the default): coord_scale as given
    s0, s1 = sig(g[0, 1, 0]), sig(g[1, 1, 0])
    delta[0, 1, 0] = -scale * (0.6 - s0) * s0 * (1 - s0)
    delta[1, 1, 0] = -scale * (0.2 - s1) * s1 * (1 - s1)
    delta[2, 1, 0] = -scale * (np.log(0.5 * 2 / 2) - g[2, 1, 0])
    delta[3, 1, 0] = -scale * (np.log(0.25 * 2 / 2) - g[3, 1, 0])
    o = obj[1, 0]
    delta[4, 1, 0] = -5 * (iou - o) * o * (1 - o)
    p = np.exp(g[5:, 1, 0]) / np.exp(g[5:, 1, 0]).sum()
    delta[5:, 1, 0] = -(np.array([0, 1]) - p)
    assert net.blobs['y'].data == pytest.approx((delta ** 2).sum())
    net.backward_from_to()
    np.testing.assert_allclose(net.blobs['x'].diff[0], delta, rtol=1e-10)


def test_relu6_hand_case_gradient_and_opencv(tmp_path):
    x = np.array([[-2.0, -0.5, 0.5, 5.5, 6.5, 9.0]])
    layer = 'type: "ReLU6" relu6_param { negative_slope: 0.25 }'
    np.testing.assert_allclose(run({'x': x}, layer).blobs['y'].data, [[-0.5, -0.125, 0.5, 5.5, 6, 6]])
    check({'x': x}, layer)
    x = rand(2, 3, 4, 5) * 5
    np.testing.assert_allclose(ours32({'x': x}, 'type: "ReLU6"'),
                               opencv_forward({'x': x}, 'type: "ReLU6"', tmp_path=tmp_path), rtol=1e-6)


def test_mish_values_gradient_extremes_in_place_and_opencv(tmp_path):
    x = np.array([[-1e4, -100, -30, -20.5, -1, 0, 0.5, 1, 20.5, 30, 100, 1e4]])
    y = run({'x': x}, 'type: "Mish"').blobs['y'].data
    with np.errstate(over='ignore'):
        naive = x * np.tanh(np.log1p(np.exp(x)))       # exact where exp(x) does not overflow
    small = np.abs(x) <= 30
    np.testing.assert_allclose(y[small], naive[small], rtol=1e-14)
    np.testing.assert_array_equal(y[x > 30], x[x > 30])
    assert (y[x < -30] <= 0).all() and (y[x < -30] > -1e-30).all()
    assert run({'x': x.astype(np.float32)}, 'type: "Mish"', dtype=np.float32).blobs['y'].data[0, 7] == \
        pytest.approx(0.8650984, rel=1e-7)
    net = run({'x': x}, 'type: "Mish"')
    net.blobs['y'].diff[...] = 1
    net.backward_from_to()
    assert np.isfinite(net.blobs['x'].diff).all()
    np.testing.assert_allclose(net.blobs['x'].diff[0, [0, 11]], [0, 1])
    check({'x': rand(3, 4, 2) * 4}, 'type: "Mish"')
    x = rand(2, 3, 4) * 4
    dy = rand(2, 3, 4, seed=1)
    outputs = []
    for tops in (('y',), ('x',)):                       # in place keeps the input for backward
        net = run({'x': x}, 'type: "Mish"', tops=tops)
        out = net.blobs[tops[0]].data.copy()
        net.blobs[tops[0]].diff[...] = dy
        net.backward_from_to()
        outputs.append((out, net.blobs['x'].diff.copy()))
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    np.testing.assert_array_equal(outputs[0][1], outputs[1][1])
    x = rand(2, 3, 4, 5) * 5
    np.testing.assert_allclose(ours32({'x': x}, 'type: "Mish"'),
                               opencv_forward({'x': x}, 'type: "Mish"', tmp_path=tmp_path), rtol=1e-5, atol=1e-6)
