"""The IoU variants of MobileNet-YOLO's Yolov3 loss (eric612/MobileNet-YOLO's bbox_util.cpp and
yolov3_layer.cpp's dx_box_iou, after AlexeyAB's darknet): their values and the box deltas the fork
writes. Boxes are centre-size rows (..., 4) = (x, y, w, h), broadcasting."""
import numpy as np

from ..proto import caffe_pb2
from .yolo import _iou

_P = caffe_pb2.Yolov3Parameter
_ATAN = 4 / np.pi ** 2


def _edges(box):
    """(top, bottom, left, right) of centre-size boxes."""
    x, y, w, h = np.moveaxis(box, -1, 0)
    return y - h / 2, y + h / 2, x - w / 2, x + w / 2


def _enclosing(a, b):
    """Width and height of the smallest box holding both."""
    at, ab, al, ar = _edges(a)
    bt, bb, bl, br = _edges(b)
    return np.maximum(ar, br) - np.minimum(al, bl), np.maximum(ab, bb) - np.minimum(at, bt)


def iou_value(a, b, kind):
    """box_iou(a, b, kind): IoU; GIoU = IoU - (C - U) / C (C the enclosing area); DIoU =
    IoU - (d / c)^0.6 (d the squared centre distance, c the enclosing diagonal squared: the fork's
    exponent); CIoU = IoU - d / c - alpha * v with v = 4 / pi^2 (atan(w_b / h_b) - atan(w_a / h_a))^2,
    alpha = v / (1 - IoU + v + 1e-6). Where C (c) is 0 the IoU."""
    iou = _iou(a, b)
    if kind not in (_P.GIOU, _P.DIOU, _P.CIOU):
        return iou
    cw, ch = _enclosing(a, b)
    with np.errstate(divide='ignore', invalid='ignore'):
        if kind == _P.GIOU:
            c = cw * ch
            union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - iou_area(a, b)
            penalty = (c - union) / c
        else:
            c = cw * cw + ch * ch
            d = ((a[..., :2] - b[..., :2]) ** 2).sum(-1) / c
            if kind == _P.DIOU:
                penalty = d ** 0.6
            else:
                v = _ATAN * (np.arctan(b[..., 2] / b[..., 3]) - np.arctan(a[..., 2] / a[..., 3])) ** 2
                penalty = d + v / (1 - iou + v + 1e-6) * v
    return np.where(c == 0, iou, iou - penalty)


def iou_area(a, b):
    """box_intersection: the overlap area, 0 where the boxes are apart."""
    at, ab, al, ar = _edges(a)
    bt, bb, bl, br = _edges(b)
    w, h = np.minimum(ar, br) - np.maximum(al, bl), np.minimum(ab, bb) - np.maximum(at, bt)
    return np.where((w < 0) | (h < 0), 0, w * h)


def iou_deltas(pred, truth, kind):
    """dx_box_iou(pred, truth, kind): the fork's (dx, dy, dw, dh) of one prediction (4,) towards a
    truth (4,). The IoU part is IoU's gradient in (top, bottom, left, right) turned into the centre
    and size as dx = dl + dr, dw = dr - dl (not halved, as the fork says); GIoU adds d(U / C), DIoU
    and CIoU add -d(d / c) (the gradient of IoU - d / c, though the reported DIoU uses (d / c)^0.6),
    CIoU also alpha * dv with alpha = v / (1 - I / U + v + 1e-6). Where the boxes do not overlap
    (Iw or Ih <= 0) GIoU, DIoU and CIoU keep their added term alone. NaN where the fork divides by
    0 (the caller zeroes those)."""
    pt, pb, pl, pr = _edges(pred)
    tt, tb, tl, tr = _edges(truth)
    flip_v, flip_h = not pt < pb, not pl < pr
    pt, pb = min(pt, pb), max(pt, pb)
    pl, pr = min(pl, pr), max(pl, pr)
    ih, iw = min(pb, tb) - max(pt, tt), min(pr, tr) - max(pl, tl)
    inter = iw * ih
    union = (pb - pt) * (pr - pl) + (tb - tt) * (tr - tl) - inter
    # partial derivatives in (t, b, l, r) of the prediction's area, the intersection, the union
    d_area = np.array([-(pr - pl), pr - pl, -(pb - pt), pb - pt])
    d_inter = np.array([-iw if pt > tt else 0, iw if pb < tb else 0, -ih if pl > tl else 0, ih if pr < tr else 0])
    d_union = d_area - d_inter
    with np.errstate(divide='ignore', invalid='ignore'):
        grad = (union * d_inter - inter * d_union) / (union * union) if union > 0 else np.zeros(4)
        if flip_v:
            grad[0] = grad[1]
        if flip_h:
            grad[2] = grad[3]
        apart = iw <= 0 or ih <= 0
        if kind == _P.GIOU:
            cw, ch = max(pr, tr) - min(pl, tl), max(pb, tb) - min(pt, tt)
            c = cw * ch
            d_c = np.array([-cw if pt < tt else 0, cw if pb > tb else 0, -ch if pl < tl else 0, ch if pr > tr else 0])
            term = (c * d_union - union * d_c) / (c * c)
            grad = term if apart else grad + term if c > 0 else grad
        t, b, l, r = grad
        out = np.array([l + r, t + b, r - l, b - t])
        if kind in (_P.DIOU, _P.CIOU):
            cw, ch = _enclosing(pred, truth)
            c = cw * cw + ch * ch
            s = ((pred[:2] - truth[:2]) ** 2).sum()
            # the enclosing box's width and height in x and w (height: y and h) of the prediction
            right, left, bottom, top = float(pr > tr), float(pl < tl), float(pb > tb), float(pt < tt)
            dcw = (right - left, 0.5 * (right + left))
            dch = (bottom - top, 0.5 * (bottom + top))
            term = np.array([2 * (truth[0] - pred[0]) * c - 2 * cw * dcw[0] * s,
                             2 * (truth[1] - pred[1]) * c - 2 * ch * dch[0] * s,
                             2 * cw * dcw[1] * s, 2 * ch * dch[1] * s]) / (c * c)
            if kind == _P.CIOU:
                gap = np.arctan(truth[2] / truth[3]) - np.arctan(pred[2] / pred[3])
                v = _ATAN * gap * gap
                alpha = v / (1 - inter / union + v + 1e-6)
                term[2:] += alpha * 2 * _ATAN * gap * np.array([pred[3], -pred[2]])
            out = term if apart else out + term if c > 0 else out
    return out
