"""MobileNet-YOLO's Yolov3 loss against the fork's loops written out with its flat indices."""
import math

import numpy as np
import pytest

from test_fork_layers import forward_backward, rand, run

BIASES = [10, 14, 23, 27, 37, 58]


FLT_MAX = float(np.finfo(np.float32).max)


def fork_box_iou(a, b, kind):
    """bbox_util.cpp's box_iou(a, b, type) with box_giou, box_diou, box_ciou, written out."""
    def overlap(x1, w1, x2, w2):
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)
    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = 0 if w < 0 or h < 0 else w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    iou = inter / union
    top, bot = min(a[1] - a[3] / 2, b[1] - b[3] / 2), max(a[1] + a[3] / 2, b[1] + b[3] / 2)
    left, right = min(a[0] - a[2] / 2, b[0] - b[2] / 2), max(a[0] + a[2] / 2, b[0] + b[2] / 2)
    cw, ch = right - left, bot - top
    if kind == 'GIOU':
        c = cw * ch
        return iou if c == 0 else iou - (c - union) / c
    if kind in ('DIOU', 'CIOU'):
        c = cw * cw + ch * ch
        if c == 0:
            return iou
        d = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
        if kind == 'DIOU':
            return iou - pow(d / c, 0.6)
        ar = 4 / (math.pi * math.pi) * (math.atan(b[2] / b[3]) - math.atan(a[2] / a[3])) ** 2
        return iou - (d / c + ar / (1 - iou + ar + 0.000001) * ar)
    return iou


def fork_dx_box_iou(pred, truth, kind):
    """yolov3_layer.cpp's dx_box_iou, line by line: (dx, dy, dw, dh)."""
    def div(a, b):
        return a / b if b else (math.nan if a == 0 else math.copysign(math.inf, a))
    t, b, l, r = pred[1] - pred[3] / 2, pred[1] + pred[3] / 2, pred[0] - pred[2] / 2, pred[0] + pred[2] / 2
    pt, pb, pl, pr = min(t, b), max(t, b), min(l, r), max(l, r)
    tt, tb, tl, tr = truth[1] - truth[3] / 2, truth[1] + truth[3] / 2, truth[0] - truth[2] / 2, truth[0] + truth[2] / 2
    X = (pb - pt) * (pr - pl)
    Xhat = (tb - tt) * (tr - tl)
    Ih = min(pb, tb) - max(pt, tt)
    Iw = min(pr, tr) - max(pl, tl)
    I = Iw * Ih  # noqa: E741
    U = X + Xhat - I
    S = (pred[0] - truth[0]) ** 2 + (pred[1] - truth[1]) ** 2
    giou_Cw = max(pr, tr) - min(pl, tl)
    giou_Ch = max(pb, tb) - min(pt, tt)
    giou_C = giou_Cw * giou_Ch
    dX = {'t': -(pr - pl), 'b': pr - pl, 'l': -(pb - pt), 'r': pb - pt}
    dI = {'t': -Iw if pt > tt else 0, 'b': Iw if pb < tb else 0, 'l': -Ih if pl > tl else 0, 'r': Ih if pr < tr else 0}
    dU = {k: dX[k] - dI[k] for k in 'tblr'}
    dC = {'t': -giou_Cw if pt < tt else 0, 'b': giou_Cw if pb > tb else 0,
          'l': -giou_Ch if pl < tl else 0, 'r': giou_Ch if pr > tr else 0}
    p = {k: 0.0 for k in 'tblr'}
    if U > 0:
        p = {k: ((U * dI[k]) - (I * dU[k])) / (U * U) for k in 'tblr'}
    p['t'] = p['t'] if t < b else p['b']
    p['b'] = p['b'] if t < b else p['t']
    p['l'] = p['l'] if l < r else p['r']
    p['r'] = p['r'] if l < r else p['l']
    if kind == 'GIOU':
        if giou_C > 0:
            p = {k: p[k] + ((giou_C * dU[k]) - (U * dC[k])) / (giou_C * giou_C) for k in 'tblr'}
        if Iw <= 0 or Ih <= 0:
            p = {k: div((giou_C * dU[k]) - (U * dC[k]), giou_C * giou_C) for k in 'tblr'}
    Ct, Cb = min(pred[1] - pred[3] / 2, truth[1] - truth[3] / 2), max(pred[1] + pred[3] / 2, truth[1] + truth[3] / 2)
    Cl, Cr = min(pred[0] - pred[2] / 2, truth[0] - truth[2] / 2), max(pred[0] + pred[2] / 2, truth[0] + truth[2] / 2)
    Cw, Ch = Cr - Cl, Cb - Ct
    C = Cw * Cw + Ch * Ch
    dCt_dy, dCt_dh = (1, -0.5) if pt < tt else (0, 0)
    dCb_dy, dCb_dh = (1, 0.5) if pb > tb else (0, 0)
    dCl_dx, dCl_dw = (1, -0.5) if pl < tl else (0, 0)
    dCr_dx, dCr_dw = (1, 0.5) if pr > tr else (0, 0)
    dCw_dx, dCw_dw = dCr_dx - dCl_dx, dCr_dw - dCl_dw
    dCh_dy, dCh_dh = dCb_dy - dCt_dy, dCb_dh - dCt_dh
    p_dx, p_dy, p_dw, p_dh = p['l'] + p['r'], p['t'] + p['b'], p['r'] - p['l'], p['b'] - p['t']
    if kind in ('DIOU', 'CIOU'):
        ar_w = ar_h = 0
        if kind == 'CIOU':
            gap = math.atan(truth[2] / truth[3]) - math.atan(pred[2] / pred[3])
            ar_loss = 4 / (math.pi * math.pi) * gap * gap
            alpha = ar_loss / (1 - div(I, U) + ar_loss + 0.000001)
            ar_w, ar_h = alpha * 8 / (math.pi * math.pi) * gap * pred[3], alpha * -8 / (math.pi * math.pi) * gap * pred[2]
        terms = (div(2 * (truth[0] - pred[0]) * C - (2 * Cw * dCw_dx) * S, C * C),
                 div(2 * (truth[1] - pred[1]) * C - (2 * Ch * dCh_dy) * S, C * C),
                 div((2 * Cw * dCw_dw) * S, C * C) + ar_w, div((2 * Ch * dCh_dh) * S, C * C) + ar_h)
        if C > 0:
            p_dx, p_dy, p_dw, p_dh = p_dx + terms[0], p_dy + terms[1], p_dw + terms[2], p_dh + terms[3]
        if Iw <= 0 or Ih <= 0:
            p_dx, p_dy, p_dw, p_dh = terms
    return p_dx, p_dy, p_dw, p_dh


def fork_yolov3(x, labels, num, classes, mask, scale=8, thresh=0.6, iou_thresh=0.5, coord=5.0, obj=1.0,
                cls=1.0, eps=float(np.float32(0.1)), logic=False, focal=False, iou_loss='MSE', normalizer=0.25,
                max_delta=10.0, accumulate=True):
    """yolov3_layer.cpp's Forward_cpu/Backward_cpu, index by index: (loss, bottom diff / top diff)."""
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

    def plain_iou(a, b):
        w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
        inter = 0 if w < 0 or h < 0 else w * h
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)

    def iou(a, b):
        return fork_box_iou(a, b, iou_loss)

    def region_box(pair, index, i, j):
        return [(i + swap[index]) / W, (j + swap[index + stride]) / H,
                math.exp(swap[index + 2 * stride]) * BIASES[2 * pair] / (W * scale),
                math.exp(swap[index + 3 * stride]) * BIASES[2 * pair + 1] / (H * scale)]

    def box_delta(truth, pair, index, i, j, s):
        if iou_loss != 'MSE':
            return iou_box_delta(truth, pair, index, i, j)
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

    def iou_box_delta(truth, pair, index, i, j):
        pred = region_box(pair, index, i, j)
        ious = {t: fork_box_iou(pred, truth, t) for t in ('GIOU', 'DIOU', 'CIOU')}
        pred[2] = pred[2] or 1.0
        pred[3] = pred[3] or 1.0
        dx, dy, dw, dh = fork_dx_box_iou(pred, truth, iou_loss)
        dw *= math.exp(swap[index + 2 * stride])
        dh *= math.exp(swap[index + 3 * stride])
        for c, d in enumerate((dx, dy, dw, dh)):
            d *= normalizer
            d = 0 if math.isnan(d) or math.isinf(d) else d
            if max_delta != FLT_MAX:
                d = min(max(d, -max_delta), max_delta)
            if not accumulate:
                diff[index + c * stride] = 0
            diff[index + c * stride] += -d
        return ious.get(iou_loss, ious['DIOU'])

    count, iou_losses = 0, 0.0

    def assign(k, pos, b, truth, label, i, j):
        nonlocal count, iou_losses
        index = k * size * stride + pos + b * per
        value = box_delta(truth, mask[k], index, i, j, coord * (2 - truth[2] * truth[3]))
        if iou_loss != 'MSE':
            count, iou_losses = count + 1, iou_losses + 1 - value
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
    if iou_loss == 'MSE':
        loss = (diff * diff).sum() / n_img
    else:
        loss = 0
        for index in range(flat.size):
            if (index % per) // stride % size < 4:
                swap[index] = flat[index]              # the fork's forward leaves the raw x, y in swap
            else:
                loss += diff[index] * diff[index]
        loss = (loss + (normalizer * iou_losses / count if count else 0)) / n_img
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


@pytest.mark.parametrize('extra, options', [
    ('iou_loss: GIOU', {'iou_loss': 'GIOU'}), ('iou_loss: DIOU', {'iou_loss': 'DIOU'}),
    ('iou_loss: CIOU', {'iou_loss': 'CIOU'}), ('iou_loss: IOU', {'iou_loss': 'IOU'}),
    ('iou_loss: GIOU iou_normalizer: 0.07 max_delta: 0.01 accumulate: false',
     {'iou_loss': 'GIOU', 'normalizer': float(np.float32(0.07)), 'max_delta': float(np.float32(0.01)),
      'accumulate': False}),
    ('iou_loss: CIOU max_delta: 3.4028235e38 use_logic_gradient: true object_scale: 2',
     {'iou_loss': 'CIOU', 'max_delta': FLT_MAX, 'logic': True, 'obj': 2})])
def test_yolov3_iou_losses_match_the_forks_loops(extra, options):
    """The fork's IoU-loss deltas are not the gradient of its reported loss (see yolo_iou.py), so
    they are checked against its formulas written out, and the loss as it reports it."""
    x = rand(2, 16, 3, 4) * 0.5
    labels = LABELS.copy()
    labels[1, 5:10] = [1, 0.55, 0.75, 0.2, 0.3]     # a second truth in the same cell: the deltas add up
    for mask in ((0, 1), (1, 2)):
        net = run({'x': x, 'labels': labels}, layer(extra, mask))
        loss, grad = fork_yolov3(x, labels, 2, 3, list(mask), thresh=0.2, iou_thresh=0.2, **options)
        assert net.blobs['y'].data == pytest.approx(loss, rel=1e-12)
        net.blobs['y'].diff[...] = 1
        net.backward_from_to()
        np.testing.assert_allclose(net.blobs['x'].diff, grad, rtol=1e-12, atol=1e-15)
        assert np.abs(grad.reshape(2, 2, 8, 3, 4)[:, :, :4]).max() > 0


def _numeric_grad(f, box, h=1e-6):
    box = np.asarray(box, np.float64)
    return np.array([(f(box + h * e) - f(box - h * e)) / (2 * h) for e in np.eye(4)])


@pytest.mark.parametrize('pred', [[0.42, 0.52, 0.3, 0.2], [0.6, 0.36, 0.1, 0.5], [0.9, 0.9, 0.1, 0.1]])
def test_iou_deltas_are_the_gradients_they_stand_for(pred):
    """dx_box_iou in float64: GIoU's deltas are the gradient of GIoU in (x, y) and twice it in (w, h)
    (the fork does not halve) where the boxes overlap (apart, its union subtracts the product of the
    two negative overlaps, and the deltas are no gradient; the fork's loops check those). DIoU's are not a gradient: they stand for IoU - d / c (the fork reports
    IoU - (d / c)^0.6) but take the enclosing diagonal's term -d * dc / c^2 with the sign flipped in
    (x, y) (right in (w, h)) and the IoU part doubled in (w, h); where the boxes are apart the IoU
    part is dropped. Checked here against numeric derivatives of IoU, d and c."""
    from caffe_py.layers.yolo_iou import iou_deltas, iou_value
    from caffe_py.proto import caffe_pb2
    P = caffe_pb2.Yolov3Parameter
    truth = np.array([0.5, 0.45, 0.25, 0.3])
    pred = np.array(pred)
    apart = iou_value(pred, truth, P.IOU) == 0
    if not apart:
        giou = _numeric_grad(lambda b: iou_value(b, truth, P.GIOU), pred)
        np.testing.assert_allclose(iou_deltas(pred, truth, P.GIOU), giou * [1, 1, 2, 2], rtol=1e-6, atol=1e-8)

    def diagonal(b):
        cw = max(b[0] + b[2] / 2, truth[0] + truth[2] / 2) - min(b[0] - b[2] / 2, truth[0] - truth[2] / 2)
        ch = max(b[1] + b[3] / 2, truth[1] + truth[3] / 2) - min(b[1] - b[3] / 2, truth[1] - truth[3] / 2)
        return cw * cw + ch * ch
    d, c = ((pred[:2] - truth[:2]) ** 2).sum(), diagonal(pred)
    d_grad = np.array([2 * (pred[0] - truth[0]), 2 * (pred[1] - truth[1]), 0, 0])
    c_term = d * _numeric_grad(diagonal, pred) / (c * c) * [-1, -1, 1, 1]
    iou_part = _numeric_grad(lambda b: iou_value(b, truth, P.IOU), pred) * [1, 1, 2, 2]
    expected = (0 if apart else iou_part) - d_grad / c + c_term
    np.testing.assert_allclose(iou_deltas(pred, truth, P.DIOU), expected, rtol=1e-6, atol=1e-8)


def test_iou_values_and_deltas_match_the_forks_functions_on_random_boxes():
    """Pairs overlapping, nested and apart (the fork's other branches), every kind."""
    from caffe_py.layers.yolo_iou import iou_deltas, iou_value
    from caffe_py.proto import caffe_pb2
    rng = np.random.default_rng(3)
    boxes = np.column_stack([rng.uniform(0, 1, (300, 2)), rng.uniform(0.01, 0.5, (300, 2))])
    for kind in ('IOU', 'GIOU', 'DIOU', 'CIOU'):
        code = caffe_pb2.Yolov3Parameter.IOU_LOSS.Value(kind)
        values = iou_value(boxes[:150], boxes[150:], code)
        for k, (a, b) in enumerate(zip(boxes[:150], boxes[150:])):
            assert values[k] == pytest.approx(fork_box_iou(a, b, kind), rel=1e-12, abs=1e-15)
            np.testing.assert_allclose(iou_deltas(a, b, code), fork_dx_box_iou(a, b, kind), rtol=1e-12, atol=1e-14)
    assert (iou_value(boxes[:150], boxes[150:], 0) == 0).sum() > 50     # many apart


def test_yolov3_refuses_bad_masks():
    with pytest.raises(Exception, match='mask'):
        run({'x': rand(1, 16, 3, 4), 'labels': LABELS[:1]}, layer(mask=(1,)))


@pytest.mark.parametrize('extra', ['', 'iou_loss: CIOU use_logic_gradient: true'])
def test_yolov3_on_the_cupy_stand_in_matches_the_cpu(extra):
    import fakecupy
    inputs = {'x': rand(2, 16, 3, 4), 'labels': LABELS}
    host = forward_backward(inputs, layer(extra))
    with fakecupy.fake_gpu():
        device = forward_backward(inputs, layer(extra))
    for a, e in zip(device[0] + device[1], host[0] + host[1]):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)
