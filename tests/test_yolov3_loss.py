"""MobileNet-YOLO's Yolov3 loss against the fork's loops written out with its flat indices."""
import math

import numpy as np
import pytest

from test_fork_layers import forward_backward, rand, run

BIASES = [10, 14, 23, 27, 37, 58]


def fork_yolov3(x, labels, num, classes, mask, scale=8, thresh=0.6, iou_thresh=0.5, coord=5.0, obj=1.0,
                cls=1.0, eps=float(np.float32(0.1)), logic=False, focal=False):
    """yolov3_layer.cpp's Forward_cpu/Backward_cpu (MSE), index by index: (loss, bottom diff / top diff)."""
    n_img, channels, H, W = x.shape
    flat = x.reshape(-1)
    size, stride, per = 5 + classes, H * W, channels * H * W
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    swap = flat.copy()
    for index in range(flat.size):
        if (index % per) // stride % size not in (2, 3):
            swap[index] = sig(flat[index])
    diff = np.zeros_like(flat)
    rows = labels.reshape(n_img, -1)

    def overlap(x1, w1, x2, w2):
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)

    def iou(a, b):
        w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
        inter = 0 if w < 0 or h < 0 else w * h
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)

    def region_box(pair, index, i, j):
        return [(i + swap[index]) / W, (j + swap[index + stride]) / H,
                math.exp(swap[index + 2 * stride]) * BIASES[2 * pair] / (W * scale),
                math.exp(swap[index + 3 * stride]) * BIASES[2 * pair + 1] / (H * scale)]

    def box_delta(truth, pair, index, i, j, s):
        diff[index] = -s * (truth[0] * W - i - swap[index])
        diff[index + stride] = -s * (truth[1] * H - j - swap[index + stride])
        diff[index + 2 * stride] = -s * (math.log(truth[2] * W * scale / BIASES[2 * pair]) - swap[index + 2 * stride])
        diff[index + 3 * stride] = -s * (math.log(truth[3] * H * scale / BIASES[2 * pair + 1]) - swap[index + 3 * stride])

    def class_delta(index, label):
        if diff[index + stride * label]:
            diff[index + stride * label] = -cls * ((1 - eps) + 0.5 * eps - swap[index + stride * label])
            return
        pt = swap[index + stride * label] + 1e-15
        grad = -(1 - pt) * (2 * pt * math.log(pt) + pt - 1)
        for c in range(classes):
            y = 1.0 if c == label else 0.0
            if focal:
                diff[index + stride * c] = -cls * (y - swap[index + stride * c]) * 0.5 * grad
            else:
                diff[index + stride * c] = -cls * ((y * (1 - eps) + 0.5 * eps if eps else y) - swap[index + stride * c])

    def assign(k, pos, b, truth, label, i, j):
        index = k * size * stride + pos + b * per
        box_delta(truth, mask[k], index, i, j, coord * (2 - truth[2] * truth[3]))
        diff[index + 4 * stride] = -(1 - swap[index + 4 * stride]) * (obj if logic else 1)
        class_delta(index + 5 * stride, label)

    for b in range(n_img):
        for s in range(stride):
            for n in range(num):
                index = n * size * stride + s + b * per
                pred = region_box(mask[n], index, s % W, s // W)
                best = 0
                for t in range(len(rows[b]) // 5):
                    truth = rows[b][5 * t + 1:5 * t + 5]
                    if not truth[0]:
                        break
                    best = max(best, iou(pred, truth))
                diff[index + 4 * stride] = 0 if best > thresh else swap[index + 4 * stride]
        for t in range(len(rows[b]) // 5):
            label, tx, ty, tw, th = rows[b][5 * t:5 * t + 5]
            if not tw:
                break
            i, j = int(tx * W), int(ty * H)
            best_iou, best_n = 0, -1
            for n in range(len(BIASES) // 2):
                a = iou([0, 0, BIASES[2 * n] / (W * scale), BIASES[2 * n + 1] / (H * scale)], [0, 0, tw, th])
                if a > best_iou:
                    best_iou, best_n = a, n
            if best_n in mask[:num]:
                best_n = mask.index(best_n)
                assign(best_n, j * W + i, b, (tx, ty, tw, th), int(label), i, j)
            for n in range(len(BIASES) // 2):
                if n in mask[:num] and n != best_n and iou_thresh < 1:
                    a = iou([0, 0, BIASES[2 * n] / (W * scale), BIASES[2 * n + 1] / (H * scale)], [0, 0, tw, th])
                    if a > iou_thresh:
                        assign(mask.index(n), j * W + i, b, (tx, ty, tw, th), int(label), i, j)
    loss = (diff * diff).sum() / n_img
    if logic:
        for index in range(flat.size):
            if (index % per) // stride % size not in (2, 3):
                diff[index] *= swap[index] * (1 - swap[index])
    return loss, (diff / n_img).reshape(x.shape)


LABELS = np.zeros((2, 4 * 5))
LABELS[0, :15] = [1, 0.3, 0.4, 0.1, 0.2, 0, 0.35, 0.45, 0.3, 0.25, 2, 0.8, 0.2, 0.02, 0.03]   # two share a cell
LABELS[1, :5] = [0, 0.6, 0.7, 0.4, 0.5]


def layer(extra='', mask=(0, 1)):
    return ('type: "Yolov3" yolov3_param { num_class: 3 num: 2 anchors_scale: 8 iou_thresh: 0.2 thresh: 0.2 %s %s %s }'
            % (' '.join('biases: %d' % v for v in BIASES), ' '.join('mask: %d' % m for m in mask), extra))


@pytest.mark.parametrize('extra, mask, options', [
    ('', (0, 1), {}), ('', (1, 2), {}),       # (1, 2): the best anchors lie outside; an extra one takes a truth
    ('use_logic_gradient: true object_scale: 5 coord_scale: 2', (0, 1), {'logic': True, 'obj': 5, 'coord': 2}),
    ('use_focal_loss: true label_smooth_eps: 0 class_scale: 2', (0, 1), {'focal': True, 'eps': 0, 'cls': 2})])
def test_yolov3_matches_the_forks_loops(extra, mask, options):
    x = rand(2, 16, 3, 4)
    net = run({'x': x, 'labels': LABELS}, layer(extra, mask))
    loss, grad = fork_yolov3(x, LABELS, 2, 3, list(mask), thresh=0.2, iou_thresh=0.2, **options)
    assert net.blobs['y'].data == pytest.approx(loss, rel=1e-12)
    net.blobs['y'].diff[...] = 1
    net.backward_from_to()
    np.testing.assert_allclose(net.blobs['x'].diff, grad, rtol=1e-12, atol=1e-15)
    assert np.abs(grad).max() > 0


def test_yolov3_hand_values_and_truths_outside_the_mask():
    x = np.zeros((1, 16, 3, 4))           # sigmoid 0.5 everywhere, exp 1
    net = run({'x': x, 'labels': LABELS[:1]}, layer())
    net.blobs['y'].diff[...] = 1
    net.backward_from_to()
    d = net.blobs['x'].diff.reshape(2, 8, 3, 4)
    assert d[:, 4, 2, 0] == pytest.approx([0.5, 0.5])        # no truth near: objectness pushed to 0
    # truth 2 (0.8, 0.2, 0.02, 0.03) takes anchor pair 0 (10x14 / 32) at cell (0, 3): mask position 0
    assert d[0, 4, 0, 3] == pytest.approx(-0.5)
    np.testing.assert_allclose(d[0, 5:, 0, 3], [-(0.05 - 0.5), -(0.05 - 0.5), -(0.95 - 0.5)])
    s = 5 * (2 - 0.02 * 0.03)           # coord_scale 5 (the default)
    assert d[0, 0, 0, 3] == pytest.approx(-s * (0.8 * 4 - 3 - 0.5))
    assert d[0, 2, 0, 3] == pytest.approx(-s * math.log(0.02 * 4 * 8 / 10))


def test_yolov3_refuses_iou_losses_it_does_not_implement_and_bad_masks():
    with pytest.raises(Exception, match='GIOU'):
        run({'x': rand(1, 16, 3, 4), 'labels': LABELS[:1]}, layer('iou_loss: GIOU'))
    with pytest.raises(Exception, match='mask'):
        run({'x': rand(1, 16, 3, 4), 'labels': LABELS[:1]}, layer(mask=(1,)))


def test_yolov3_on_the_cupy_stand_in_matches_the_cpu():
    import fakecupy
    inputs = {'x': rand(2, 16, 3, 4), 'labels': LABELS}
    host = forward_backward(inputs, layer())
    with fakecupy.fake_gpu():
        device = forward_backward(inputs, layer())
    for a, e in zip(device[0] + device[1], host[0] + host[1]):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)
