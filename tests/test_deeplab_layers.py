"""DeepLab v2's layers: hand cases, the fork's loops written out, float64 gradient checks, and
GPU mode (CuPy's stand-in) equal to the CPU."""
import os

import numpy as np
import pytest

from caffe_py import TRAIN
from harness import layer_forward as run, layer_gradient_check, layer_net, rand


def labels(shape, high, seed=0):
    return np.random.default_rng(seed).integers(0, high, shape).astype(np.float64)


# -- SegAccuracy ---------------------------------------------------------------------------------

def fork_confusion(scores, label, ignore):
    """The fork's loops: per pixel, the greatest (score, class) pair; ignored labels skipped."""
    classes = scores.shape[1]
    matrix = np.zeros((classes, classes), np.int64)
    for n in range(scores.shape[0]):
        for h in range(scores.shape[2]):
            for w in range(scores.shape[3]):
                best = max((scores[n, c, h, w], c) for c in range(classes))[1]
                truth = int(label[n, 0, h, w])
                if truth not in ignore:
                    matrix[truth, best] += 1
    return matrix


def fork_scores(m):
    """ConfusionMatrix accuracy(), avgRecall(false), avgJaccard() written out."""
    total = m.sum()
    accuracy = np.trace(m) / total if total else 0.0
    recalls = [m[i, i] / m[i].sum() for i in range(len(m)) if m[i].sum() > 0]
    recall = sum(recalls) / len(recalls) if recalls else 0.0
    jaccard = 0.0
    for i in range(len(m)):
        union = m[i].sum() + m[:, i].sum() - m[i, i]
        jaccard += 1.0 if m[i, i] == union else m[i, i] / union
    return [accuracy, recall, jaccard / len(m)]


SEG_ACC = 'type: "SegAccuracy" seg_accuracy_param { ignore_label: 255 %s }'


def test_seg_accuracy_hand_case():
    # 1 image, 3 classes, 4 pixels: predictions 0, 1, 2 (a tie of 1 and 2: the higher class), 0
    scores = np.zeros((1, 3, 1, 4))
    scores[0, :, 0, 0] = [5, 1, 1]
    scores[0, :, 0, 1] = [0, 2, 1]
    scores[0, :, 0, 2] = [0, 3, 3]
    scores[0, :, 0, 3] = [4, 0, 0]
    label = np.array([0, 1, 1, 255], np.float64).reshape(1, 1, 1, 4)
    out = run({'x': scores, 'label': label}, SEG_ACC % '').blobs['y'].data
    # matrix rows 0: [1, 0, 0], 1: [0, 1, 1], 2: [0, 0, 0]; IoU: 1, 1/2, class 2 0/1
    assert out.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(out.ravel(), [2 / 3, (1 + 0.5) / 2, (1 + 0.5 + 0) / 3])


def test_seg_accuracy_against_the_forks_loops_and_reset():
    scores = np.round(rand(2, 4, 3, 5), 1)          # rounding makes ties
    label = labels((2, 1, 3, 5), 4)
    label[0, 0, 0, :3] = [255, 7, 7]
    ignore = {255, 7}
    layer = 'type: "SegAccuracy" seg_accuracy_param { ignore_label: 255 ignore_label: 7 %s }'
    once = fork_confusion(scores, label, ignore)
    net = run({'x': scores, 'label': label}, layer % '')
    net.forward()
    np.testing.assert_allclose(net.blobs['y'].data.ravel(), fork_scores(once))
    acc = run({'x': scores, 'label': label}, layer % 'reset: false')
    acc.blobs['x'].data[...] = scores[::-1]
    acc.blobs['label'].data[...] = label[::-1]
    acc.forward()                                  # accumulates over forwards, as the fork's
    both = once + fork_confusion(scores[::-1], label[::-1], ignore)
    np.testing.assert_allclose(acc.blobs['y'].data.ravel(), fork_scores(both))


def test_seg_accuracy_unexpected_label_and_shapes_fail_clearly():
    label = np.zeros((1, 1, 2, 2))
    label[0, 0, 1, 0] = 9
    with pytest.raises(ValueError, match=r'SegAccuracy layer "L": Unexpected label 9 at \(0, 0, 1, 0\)'):
        run({'x': rand(1, 3, 2, 2), 'label': label}, SEG_ACC % '')
    with pytest.raises(ValueError, match='must be'):
        run({'x': rand(1, 3, 2, 2), 'label': np.zeros((1, 1, 2, 3))}, SEG_ACC % '')



# -- UniqueLabel ---------------------------------------------------------------------------------

def test_unique_label_hand_case():
    label = np.array([[3, 3, 255, 1], [0, 0, 0, 0]], np.float64).reshape(2, 1, 2, 2)
    layer = 'type: "UniqueLabel" unique_label_param { max_labels: 4 ignore_label: 255 force_label: 0 }'
    out = run({'label': label}, layer).blobs['y'].data
    assert out.shape == (2, 4, 1, 1)
    np.testing.assert_array_equal(out.reshape(2, 4), [[0, 1, 3, -1], [0, -1, -1, -1]])


def test_unique_label_capacity_fails_clearly():
    layer = 'type: "UniqueLabel" unique_label_param { max_labels: 2 }'
    with pytest.raises(ValueError, match='Too many unique elements.*image 0 has 3, max_labels 2'):
        run({'label': np.array([1, 2, 3.0]).reshape(1, 1, 1, 3)}, layer)
    with pytest.raises(ValueError, match='At least one label more than the forced ones'):
        run({'label': np.zeros((1, 1, 1, 1))},
            'type: "UniqueLabel" unique_label_param { max_labels: 1 force_label: 0 }')


# -- SpatialProduct ------------------------------------------------------------------------------

def test_spatial_product_forward_and_gradient():
    x, m = rand(2, 3, 4, 5), rand(2, 1, 4, 5, seed=1)
    out = run({'x': x, 'm': m}, 'type: "SpatialProduct"').blobs['y'].data
    for c in range(3):                       # the fork: channel by channel, caffe_mul
        np.testing.assert_array_equal(out[:, c], x[:, c] * m[:, 0])
    layer_gradient_check({'x': rand(2, 3, 2, 3), 'm': rand(2, 1, 2, 3, seed=1)}, 'type: "SpatialProduct"')
    with pytest.raises(ValueError, match='must be \\(N, 1, ...\\)'):
        run({'x': x, 'm': rand(2, 2, 4, 5)}, 'type: "SpatialProduct"')


# -- BiasChannel ---------------------------------------------------------------------------------

def fork_bias_channel(x, label, pixel, bg, fg, ignore, background):
    """The fork's loops (background: None when neither background_label nor bg_bias is given)."""
    y = x.copy()
    for n in range(x.shape[0]):
        if not pixel:
            for j in range(label.shape[1]):
                lab = int(label[n, j, 0, 0])
                if lab not in ignore:
                    y[n, lab] += bg if lab == 0 else fg
            continue
        for h in range(x.shape[2]):
            for w in range(x.shape[3]):
                lab = int(label[n, 0, h, w])
                if lab in ignore:
                    continue
                if background is not None:
                    y[n, background, h, w] += bg
                    if lab != background:
                        y[n, lab, h, w] += fg
                else:
                    y[n, lab, h, w] += fg
    return y


def test_bias_channel_image_labels():
    x = rand(2, 4, 2, 3)
    label = np.array([[0, 2, 2, -1], [3, 255, -1, -1]], np.float64).reshape(2, 4, 1, 1)
    layer = 'type: "BiasChannel" bias_channel_param { bg_bias: 1.5 fg_bias: 4 ignore_label: 255 }'
    out = run({'x': x, 'label': label}, layer).blobs['y'].data
    np.testing.assert_allclose(out, fork_bias_channel(x, label, False, 1.5, 4, {-1, 255}, 0))
    np.testing.assert_allclose(out[0, 2] - x[0, 2], 8)       # listed twice: biased twice
    layer_gradient_check({'x': x, 'label': label}, layer, no_grad=('label',))


@pytest.mark.parametrize('param, background', [('bg_bias: 0.5 fg_bias: 3', 0), ('background_label: 2', 2),
                                               ('fg_bias: 3', None)])
def test_bias_channel_pixel_labels(param, background):
    x = rand(2, 3, 3, 4)
    label = labels((2, 1, 3, 4), 3, seed=2)
    label[0, 0, 0, :2] = [255, -1]
    layer = 'type: "BiasChannel" bias_channel_param { label_type: PIXEL ignore_label: 255 %s }' % param
    out = run({'x': x, 'label': label}, layer).blobs['y'].data
    bg = 0.5 if 'bg_bias' in param else 1.0
    np.testing.assert_allclose(out, fork_bias_channel(x, label, True, bg, 3 if 'fg' in param else 2.0,
                                                      {-1, 255}, background))


def test_bias_channel_unexpected_label_fails_clearly():
    label = np.array([0, 5.0]).reshape(1, 2, 1, 1)
    with pytest.raises(ValueError, match=r'BiasChannel layer "L": Unexpected label 5 at \(0, 1, 0, 0\)'):
        run({'x': rand(1, 3, 2, 2), 'label': label}, 'type: "BiasChannel"')


# -- AdaptiveBiasChannel -------------------------------------------------------------------------

def fork_adaptive_bias(x, label, num_iter, bg_portion, fg_portion, suppress, margin, shuffle):
    """The fork's loops, in float32 as its float nets; `shuffle` is std::random_shuffle."""
    f = np.float32
    y = x.astype(f).copy()
    num, channels, height, width = y.shape
    spatial = height * width
    for n in range(num):
        labels = sorted(int(v) for v in label[n].ravel() if int(v) != -1)
        if not labels:
            continue
        bgnd = 0 in labels
        top = y[n].reshape(channels, spatial)
        if suppress:
            ext = np.full(spatial, np.finfo(f).max, f)
            for c in range(channels):
                if c in labels:
                    for i in range(spatial):
                        ext[i] = min(ext[i], top[c, i])
            for c in range(channels):
                if c not in labels:
                    for i in range(spatial):
                        if top[c, i] > ext[i]:
                            top[c, i] = ext[i] - f(margin)
        ext = top[labels[0]].copy()
        for c in labels[1:]:
            for i in range(spatial):
                ext[i] = max(ext[i], top[c, i])
        mean0 = sum(float(v) for v in ext) / spatial
        for _ in range(num_iter):
            tail = labels[int(bgnd):]
            shuffle(tail)
            labels[int(bgnd):] = tail
            for c in labels:
                nth = int(f(bg_portion if c == 0 else fg_portion) * f(spatial))
                diff = np.sort(ext - top[c])
                top[c] += diff[nth]
                for i in range(spatial):
                    ext[i] = max(ext[i], top[c, i])
        mean1 = sum(float(v) for v in ext) / spatial
        top += f(mean0 - mean1)
    return y


ABC = 'type: "AdaptiveBiasChannel" adaptive_bias_channel_param { num_iter: 3 bg_portion: 0.3 fg_portion: 0.25 %s }'


@pytest.mark.parametrize('suppress', ['', 'suppress_others: false'])
def test_adaptive_bias_channel_against_the_forks_loops(suppress):
    from caffe_py import rng as caffe_rng
    x = rand(2, 5, 4, 5).astype(np.float32)
    label = np.array([[0, 2, 4, -1], [3, 1, -1, -1]], np.float32).reshape(2, 4, 1, 1)
    caffe_rng.c_srand(7)
    out = run({'x': x, 'label': label}, ABC % suppress, dtype=np.float32).blobs['y'].data
    shuffle = caffe_rng.GlibcRand(7).random_shuffle
    expected = fork_adaptive_bias(x, label, 3, 0.3, 0.25, not suppress, 1e-5, shuffle)
    np.testing.assert_array_equal(out, expected)
    # the listed classes win at least about their portion of the pixels
    winners = out.argmax(axis=1)
    assert (winners[0] == 0).mean() >= 0.25 and (winners[1] == 1).mean() > 0
    if not suppress:
        assert not np.isin(winners[0], [1, 3]).any()     # unlisted classes lose everywhere


def test_adaptive_bias_channel_portion_one_wins_everywhere():
    layer = ('type: "AdaptiveBiasChannel" adaptive_bias_channel_param { bg_portion: 1 fg_portion: 0 '
             'suppress_others: false }')
    out = run({'x': rand(1, 3, 3, 3), 'label': np.array([0, 2.0]).reshape(1, 2, 1, 1)}, layer).blobs['y'].data
    assert (out[0, 0] >= out[0].max(axis=0)).all()


def test_adaptive_bias_channel_without_labels_copies_the_scores():
    x = rand(1, 3, 2, 2)
    out = run({'x': x, 'label': -np.ones((1, 2, 1, 1))}, ABC % '').blobs['y'].data
    np.testing.assert_array_equal(out, x)



# -- WeightedSoftmaxWithLoss ---------------------------------------------------------------------

WSL = 'type: "WeightedSoftmaxWithLoss" loss_param { ignore_label: 255 %s }'


def weighted_loss_inputs():
    x = rand(2, 3, 2, 3)
    label = labels((2, 1, 2, 3), 3, seed=3)
    label[0, 0, 0, 0] = 255
    weight = np.abs(rand(2, 1, 2, 3, seed=4)) + 0.5
    return {'x': x, 'label': label, 'w': weight}


@pytest.mark.parametrize('norm', ['', 'normalization: FULL', 'normalization: BATCH_SIZE', 'normalization: NONE'])
def test_weighted_softmax_loss_against_the_forks_sums_and_gradient(norm):
    inputs = weighted_loss_inputs()
    x, label, weight = inputs['x'], inputs['label'], inputs['w']
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    loss = weightsum = 0.0
    for n in range(2):
        for h in range(2):
            for w in range(3):
                if label[n, 0, h, w] != 255:
                    loss -= weight[n, 0, h, w] * np.log(p[n, int(label[n, 0, h, w]), h, w])
                    weightsum += weight[n, 0, h, w]
    normalizer = {'': weightsum, 'normalization: FULL': 12, 'normalization: BATCH_SIZE': 2,
                  'normalization: NONE': 1}[norm]
    out = run(inputs, WSL % norm).blobs['y'].data
    np.testing.assert_allclose(out, loss / max(1.0, normalizer))
    layer_gradient_check(inputs, WSL % norm, no_grad=('label', 'w'))


def test_weighted_softmax_loss_with_two_bottoms_is_softmax_with_loss():
    inputs = weighted_loss_inputs()
    del inputs['w']
    ours = run(inputs, WSL % '').blobs['y'].data
    bvlc = run(inputs, 'type: "SoftmaxWithLoss" loss_param { ignore_label: 255 }').blobs['y'].data
    np.testing.assert_allclose(ours, bvlc)
    layer_gradient_check(inputs, WSL % '', no_grad=('label',))
    with pytest.raises(ValueError, match='one value per label'):
        run(dict(inputs, w=np.ones((2, 1, 2, 2))), WSL % '')



# -- a weakly supervised DeepLab-style net (models/fork_styles/deeplab_weak_style.prototxt) -------

STYLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'models', 'fork_styles',
                     'deeplab_weak_style.prototxt')


def style_inputs():
    rng = np.random.default_rng(0)
    label = np.zeros((2, 1, 16, 16), np.float32)
    label[0, 0, 4:10, 4:10] = 2
    label[1, 0, :, 8:] = 3
    label[1, 0, 0, :] = 255
    return {'data': rng.standard_normal((2, 3, 32, 32)).astype(np.float32), 'label': label,
            'weight': np.where(label == 0, 1, 3).astype(np.float32)}


def test_deeplab_style_net_trains_from_image_labels_and_tests(tmp_path):
    from caffe_py import TEST, Net, backend, formats
    from caffe_py import rng as caffe_rng
    backend.set_random_seed(1)
    caffe_rng.c_srand(1)
    param = formats.read_net(STYLE)
    net = Net(param, TRAIN)
    out = net.forward(**style_inputs())
    assert np.isfinite(out['loss']) and np.isfinite(out['loss_pixels'])
    estimate = net.blobs['estimate'].data
    assert set(np.unique(estimate[0])) <= {0, 2} and set(np.unique(estimate[1])) <= {0, 3}   # image labels only
    np.testing.assert_array_equal(net.blobs['labels'].data.reshape(2, 4), [[0, 2, -1, -1], [0, 3, -1, -1]])
    net.backward()
    assert np.abs(net.layer_dict['conv1'].blobs[0].diff).max() > 0
    for layer in param.layer:
        if layer.type == 'MatWrite':
            layer.mat_write_param.prefix = str(tmp_path) + '/fc8_'
    test = Net(param, TEST)
    scores = test.forward(**style_inputs())['accuracy']
    assert scores.shape == (1, 1, 1, 3) and ((0 <= scores) & (scores <= 1)).all()
    import scipy.io
    written = scipy.io.loadmat(str(tmp_path / 'fc8_iter_0_blob_0.mat'))['data']
    np.testing.assert_array_equal(written, test.blobs['fc8'].data.transpose(3, 2, 1, 0))


# -- GPU mode: CuPy's stand-in, a real device in the `gpu` run ---------------------------------

SEG_LABEL = labels((2, 1, 3, 4), 3, seed=5)
SEG_LABEL[1, 0, 0] = 255
# (inputs, layer, whether it has a backward)
DEVICE_CASES = [
    ({'x': np.round(rand(2, 3, 3, 4), 1), 'label': SEG_LABEL}, SEG_ACC % 'reset: false', False),
    ({'label': np.array([3, 3, 255, 1, 0, 2, 2, 2], np.float64).reshape(2, 1, 2, 2)},
     'type: "UniqueLabel" unique_label_param { max_labels: 4 ignore_label: 255 force_label: 0 }', False),
    ({'x': rand(2, 3, 4, 5), 'm': rand(2, 1, 4, 5, seed=1)}, 'type: "SpatialProduct"', True),
    ({'x': rand(2, 4, 2, 3), 'label': np.array([[0, 2, 2, -1], [3, 255, -1, -1]], np.float64).reshape(2, 4, 1, 1)},
     'type: "BiasChannel" bias_channel_param { ignore_label: 255 }', True),
    ({'x': rand(2, 3, 2, 3), 'label': SEG_LABEL[:, :, :2, :3]},
     'type: "BiasChannel" bias_channel_param { label_type: PIXEL ignore_label: 255 bg_bias: 0.5 }', True),
    ({'x': rand(2, 5, 4, 5), 'label': np.array([[0, 2, 4, -1], [3, 1, -1, -1]], np.float64).reshape(2, 4, 1, 1)},
     ABC % '', False),
    (weighted_loss_inputs(), WSL % '', True),
]


def forward_backward(inputs, layer, backward):
    from caffe_py import rng as caffe_rng
    caffe_rng.c_srand(3)                    # AdaptiveBiasChannel's shuffles
    net = layer_net(inputs, layer, phase=TRAIN)
    net.forward()
    out = [np.array(net.blobs[n].data) for n in net.outputs]
    if not backward:
        return out
    for name in net.outputs:
        if not net.blob_loss_weights[name]:
            net.blobs[name].diff[...] = rand(*net.blobs[name].shape, seed=9)
    net.backward_from_to()
    return out + [np.array(net.blobs[n].diff) for n in inputs]


def compare_devices(mode):
    for inputs, layer, backward in DEVICE_CASES:
        host = forward_backward(inputs, layer, backward)
        with mode():
            device = forward_backward(inputs, layer, backward)
        for a, e in zip(device, host):
            np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12, err_msg=layer)


def test_deeplab_layers_on_the_cupy_stand_in_match_the_cpu():
    import fakecupy
    compare_devices(fakecupy.fake_gpu)


@pytest.mark.gpu
def test_deeplab_layers_on_the_device_match_the_cpu():
    import device_cases
    compare_devices(device_cases.gpu_mode)
