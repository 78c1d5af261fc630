"""MobileNet-YOLO's Gaussian YOLOv3: the GaussianYolov3 loss against the fork's loops written out with
its flat indices, its box deltas against numeric derivatives of the Gaussian they stand for, and
Yolov3DetectionOutput's gaussian_box decoding."""
import math

import numpy as np
import pytest

from test_fork_layers import forward_backward, rand, run

BIASES = [10, 14, 23, 27, 37, 58]
FLT_MAX = float(np.finfo(np.float32).max)


def fork_gaussian_yolov3(x, labels, num, classes, mask, scale=8, thresh=0.2, iou_thresh=0.2, coord=5.0, obj=1.0,
                         cls=1.0, logic=False, focal=False, normalizer=0.25, max_delta=10.0, accumulate=True):
    """gaussian_yolov3_layer.cpp's Forward_cpu/Backward_cpu, index by index: (loss, bottom diff / top diff)."""
    n_img, channels, H, W = x.shape
    flat = x.reshape(-1)
    size, stride, per = 9 + classes, H * W, channels * H * W
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    swap = flat.copy()
    for index in range(flat.size):
        if (index % per) // stride % size not in (4, 6):
            swap[index] = sig(flat[index])
    diff = np.zeros_like(flat)
    rows = labels.reshape(n_img, -1)

    def overlap(x1, w1, x2, w2):
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)

    def iou(a, b):
        w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
        inter = 0 if w < 0 or h < 0 else w * h
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)

    def gaussian_box(pair, index, i, j):
        return [(i + swap[index]) / W, (j + swap[index + 2 * stride]) / H,
                math.exp(swap[index + 4 * stride]) * BIASES[2 * pair] / (W * scale),
                math.exp(swap[index + 6 * stride]) * BIASES[2 * pair + 1] / (H * scale)]

    def limit(d):
        d *= normalizer
        d = 0 if math.isnan(d) or math.isinf(d) else d
        return min(max(d, -max_delta), max_delta) if max_delta != FLT_MAX else d

    def box_delta(truth, pair, index, i, j, s):
        pred = gaussian_box(pair, index, i, j)
        value = iou(pred, truth)
        t = [truth[0] * W - i, truth[1] * H - j, math.log(truth[2] * W * scale / BIASES[2 * pair]),
             math.log(truth[3] * H * scale / BIASES[2 * pair + 1])]
        temps, ins = [], []
        for c in range(4):
            mu, sigma = swap[index + 2 * c * stride], swap[index + (2 * c + 1) * stride]
            in_exp = (t[c] - mu) / sigma
            normal = math.exp(in_exp ** 2 * (-1 / 2)) / (math.sqrt(math.pi * 2) * (sigma + 0.3))
            temps.append(1 / 2 * 1 / (normal + 1e-9) * normal * s)
            ins.append(in_exp)
        d = [limit(temps[c] * ins[c] * (1 / swap[index + (2 * c + 1) * stride])) for c in range(4)]
        if not accumulate:
            for c in range(8):
                diff[index + c * stride] = 0
        for c in range(4):
            diff[index + 2 * c * stride] += -d[c]
        for c in range(4):
            sigma = swap[index + (2 * c + 1) * stride]
            diff[index + (2 * c + 1) * stride] += -limit(temps[c] * (ins[c] ** 2 / sigma - 1 / (sigma + 0.3)))
        return value

    def class_delta(index, label):
        if diff[index]:
            diff[index + stride * label] = -(1 - swap[index + stride * label])
            return
        pt = swap[index + stride * label] + 1e-15
        grad = -(1 - pt) * (2 * pt * math.log(pt) + pt - 1)
        for c in range(classes):
            y = 1.0 if c == label else 0.0
            diff[index + stride * c] = -cls * (y - swap[index + stride * c])
            if focal:
                diff[index + stride * c] *= 0.5 * grad

    count, iou_losses = 0, 0.0

    def assign(k, pos, b, truth, label, i, j):
        nonlocal count, iou_losses
        index = k * size * stride + pos + b * per
        value = box_delta(truth, mask[k], index, i, j, coord * (2 - truth[2] * truth[3]))
        count, iou_losses = count + 1, iou_losses + 1 - value
        diff[index + 8 * stride] = -(1 - swap[index + 8 * stride]) * (obj if logic else 1)
        class_delta(index + 9 * stride, label)

    for b in range(n_img):
        for s in range(stride):
            for n in range(num):
                index = n * size * stride + s + b * per
                pred = gaussian_box(mask[n], index, s % W, s // W)
                best = 0
                for t in range(len(rows[b]) // 5):
                    truth = rows[b][5 * t + 1:5 * t + 5]
                    if not truth[0]:
                        break
                    best = max(best, iou(pred, truth))
                diff[index + 8 * stride] = 0 if best > thresh else swap[index + 8 * stride]
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
    loss = 0
    for index in range(flat.size):
        if (index % per) // stride % size < 8:
            swap[index] = flat[index]
        else:
            loss += diff[index] * diff[index]
    loss = (loss + (normalizer * iou_losses / count if count else 0)) / n_img
    if logic:
        for index in range(flat.size):
            if (index % per) // stride % size not in (4, 6):
                diff[index] *= swap[index] * (1 - swap[index])
    return loss, (diff / n_img).reshape(x.shape)


LABELS = np.zeros((2, 4 * 5))
LABELS[0, :15] = [1, 0.3, 0.4, 0.1, 0.2, 0, 0.35, 0.45, 0.3, 0.25, 2, 0.8, 0.2, 0.02, 0.03]   # two share a cell
LABELS[1, :10] = [0, 0.6, 0.7, 0.4, 0.5, 1, 0.55, 0.75, 0.2, 0.3]


def layer(extra='', mask=(0, 1)):
    return ('type: "GaussianYolov3" yolov3_param { num_class: 3 num: 2 anchors_scale: 8 iou_thresh: 0.2 thresh: 0.2 '
            '%s %s %s }' % (' '.join('biases: %d' % v for v in BIASES), ' '.join('mask: %d' % m for m in mask), extra))


@pytest.mark.parametrize('extra, options', [
    ('', {}),
    ('use_logic_gradient: true object_scale: 3 coord_scale: 2 iou_normalizer: 0.5',
     {'logic': True, 'obj': 3, 'coord': 2, 'normalizer': 0.5}),
    ('use_focal_loss: true class_scale: 2 accumulate: false max_delta: 0.05',
     {'focal': True, 'cls': 2, 'accumulate': False, 'max_delta': float(np.float32(0.05))}),
    ('max_delta: 3.4028235e38 iou_loss: GIOU label_smooth_eps: 0.3', {'max_delta': FLT_MAX})])   # neither is read
def test_gaussian_yolov3_matches_the_forks_loops(extra, options):
    x = rand(2, 24, 3, 4)
    for mask in ((0, 1), (1, 2)):
        net = run({'x': x, 'labels': LABELS}, layer(extra, mask))
        loss, grad = fork_gaussian_yolov3(x, LABELS, 2, 3, list(mask), **options)
        assert net.blobs['y'].data == pytest.approx(loss, rel=1e-12)
        net.blobs['y'].diff[...] = 1
        net.backward_from_to()
        np.testing.assert_allclose(net.blobs['x'].diff, grad, rtol=1e-12, atol=1e-15)
        assert np.abs(grad.reshape(2, 2, 12, 3, 4)[:, :, :8]).max() > 0


def test_gaussian_box_deltas_are_a_scaled_gradient_of_the_gaussian_they_stand_for():
    """The fork's mu and sigma deltas (accumulate false, no clipping) are s / 2 * iou_normalizer times
    the gradient of -log(N + 1e-9), N = exp(-((t - mu) / sigma)^2 / 2) / (sqrt(2 pi) (sigma + 0.3)),
    in the sigmoid outputs (raw w, h): float64 central differences. (The reported loss has no such
    term: these deltas are not its gradient.)"""
    from caffe_py import TEST, Net, formats
    from caffe_py.proto import caffe_pb2
    from harness import layer_net_text
    x = rand(1, 24, 3, 4) * 0.5
    labels = np.zeros((1, 5))
    labels[0] = [2, 0.3, 0.4, 0.1, 0.2]         # cell (1, 1), anchor pair 0 only (iou_thresh 1)
    text = layer_net_text({'x': x.shape, 'labels': labels.shape},
                          layer('iou_thresh: 1 max_delta: 3.4028235e38 iou_normalizer: 0.5 accumulate: false'
                                ).replace('iou_thresh: 0.2 ', ''))
    net = Net(formats.parse_text(text, caffe_pb2.NetParameter()), TEST, dtype=np.float64)
    net.blobs['x'].data[...] = x
    net.blobs['labels'].data[...] = labels
    net.forward()
    delta = net.layer_dict['L'].delta.reshape(2, 12, 3, 4)[0, :8, 1, 1]
    swap = 1 / (1 + np.exp(-x.reshape(2, 12, 3, 4)[0, :8, 1, 1]))
    swap[[4, 6]] = x.reshape(2, 12, 3, 4)[0, [4, 6], 1, 1]
    target = np.array([0.3 * 4 - 1, 0.4 * 3 - 1, math.log(0.1 * 32 / 10), math.log(0.2 * 24 / 14)])
    s = 5 * (2 - 0.1 * 0.2)

    def nll(v):
        mu, sigma = v[0::2], v[1::2]
        density = np.exp(-((target - mu) / sigma) ** 2 / 2) / (np.sqrt(2 * np.pi) * (sigma + 0.3))
        return -np.log(density + 1e-9).sum()
    h = 1e-6
    numeric = np.array([(nll(swap + h * e) - nll(swap - h * e)) / (2 * h) for e in np.eye(8)])
    np.testing.assert_allclose(delta, s / 2 * 0.5 * numeric, rtol=1e-6)


def test_gaussian_yolov3_refuses_a_yolov3_shaped_bottom():
    with pytest.raises(Exception, match='9 \\+ num_class'):
        run({'x': rand(1, 16, 3, 4), 'labels': LABELS[:1]}, layer())


def test_gaussian_yolov3_on_the_cupy_stand_in_matches_the_cpu():
    import fakecupy
    inputs = {'x': rand(2, 24, 3, 4), 'labels': LABELS}
    host = forward_backward(inputs, layer('use_logic_gradient: true'))
    with fakecupy.fake_gpu():
        device = forward_backward(inputs, layer('use_logic_gradient: true'))
    for a, e in zip(device[0] + device[1], host[0] + host[1]):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


def fork_gaussian_detections(x, classes, num, mask, scale, threshold):
    """yolov3_detection_output_layer.cpp's Forward_cpu with gaussian_box, before NMS, index by index:
    rows (label + 1, score, left, top, right, bottom)."""
    _, _, H, W = x.shape
    flat = x.reshape(-1)
    size, stride = 9 + classes, H * W
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    rows = []
    for s in range(stride):
        for n in range(num):
            index = n * size * stride + s
            swap = {c: flat[index + c * stride] if c in (4, 6) else sig(flat[index + c * stride]) for c in range(9)}
            uc_ver = 4.0 - swap[1] - swap[3] - swap[5] - swap[7]
            obj_score = swap[8] * uc_ver / 4.0
            for c in range(classes):
                score = sig(flat[index + (9 + c) * stride]) * obj_score
                if score > threshold:
                    bx, by = (s % W + swap[0]) / W, (s // W + swap[2]) / H
                    bw = math.exp(swap[4]) * BIASES[2 * mask[n]] / (W * scale)
                    bh = math.exp(swap[6]) * BIASES[2 * mask[n] + 1] / (H * scale)
                    rows.append((c + 1, score, bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2))
    return sorted(rows, key=lambda r: -r[1])


def test_yolov3_detection_output_gaussian_box_matches_the_forks_loop():
    x = rand(1, 2 * 11, 3, 4) * 2
    layer = ('type: "Yolov3DetectionOutput" yolov3_detection_output_param { num_classes: 2 num_box: 2 '
             'confidence_threshold: 0.15 nms_threshold: 1.01 gaussian_box: true %s anchors_scale: 8 '
             'mask_group_num: 1 mask: 1 mask: 2 }' % ' '.join('biases: %d' % v for v in BIASES))
    out = run({'x': x}, layer).blobs['y'].data.reshape(-1, 7)
    expected = fork_gaussian_detections(x, 2, 2, [1, 2], 8, 0.15)
    assert 3 < len(expected) == len(out)
    np.testing.assert_allclose(out[:, 1:], np.array(expected), rtol=1e-12)
    assert (out[:, 0] == 0).all()
    with pytest.raises(Exception, match='9 \\+ num_classes'):
        run({'x': rand(1, 14, 3, 4)}, layer)
