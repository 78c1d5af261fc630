"""MobileNet-YOLO's Yolov3 training loss (eric612/MobileNet-YOLO's yolov3_layer.cpp), with its MSE and
IoU-variant (IOU, GIOU, DIOU, CIOU) box losses."""
import numpy as np

from ..layer import register
from ..proto import caffe_pb2
from .loss import LossLayer
from .yolo import _sigmoid
from .yolo_iou import iou_deltas, iou_value

_IOU = caffe_pb2.Yolov3Parameter
_FLT_MAX = float(np.finfo(np.float32).max)


@register('Yolov3')
class Yolov3Layer(LossLayer):
    """YOLOv3's loss for one output scale, with the fork's deltas. Bottoms: predictions
    (N, num * (5 + num_class), H, W), anchor k of this scale being biases pair mask[k]; labels
    (N, K * 5) as rows (class, x, y, w, h) relative to the image, ending at the first row whose x
    (objectness search) or w (assignments) is 0. Boxes: ((col + sigmoid) / W, (row + sigmoid) / H,
    exp * bias / (W * anchors_scale), exp * bias / (H * anchors_scale)).

    Deltas, per image: objectness sigmoid(o) - 0 everywhere, 0 where the box overlaps a truth by
    more than thresh. Each truth takes, in its cell, the anchor (over all biases pairs) whose shape
    overlaps it best when that pair is in mask, and every other pair of mask whose shape overlaps it
    by more than iou_thresh; there: box deltas -s * (t - p) with s = coord_scale * (2 - w * h) on
    sigmoid(x, y) and raw (w, h), objectness -(1 - sigmoid(o)) (times object_scale with
    use_logic_gradient), classes -class_scale * (y - sigmoid(c)) with one-hot y smoothed by
    label_smooth_eps (y * (1 - eps) + eps / 2), or darknet's focal weighting; a cell's second truth
    only resets its own class. The loss is sum(delta^2) / N; backward hands delta * top diff / N down
    (with use_logic_gradient, times sigmoid' on all but w, h): darknet's deltas, not the gradient of
    that loss. (The fork reuses the best pair's variable for its mask position, so the extra-anchor
    pass may revisit the best anchor; that is kept. Truth cells are clipped to the grid.)

    iou_loss IOU, GIOU, DIOU or CIOU (yolo_iou.py): that overlap replaces IoU in the objectness
    search and the anchor choice; the box deltas are -iou_normalizer * the fork's IoU deltas (dw, dh
    times exp of the raw w, h), non-finite ones 0, clipped to +-max_delta (unless FLT_MAX), added to
    what the anchor holds (set with accumulate false); coord_scale is unused. The loss is
    (sum of the objectness and class deltas^2 + iou_normalizer * sum(1 - overlap) / assignments) / N,
    the overlap being GIoU, CIoU, or (DIOU and IOU) the fork's DIoU. Those box deltas are not the
    gradient of that loss: dx, dy lack sigmoid' and 1 / W, dw, dh the anchor's scale and a half.
    With use_logic_gradient the fork's backward multiplies x, y by r * (1 - r) of their raw values
    r (its forward leaves the raw values where the sigmoids were); that is kept.
    """

    def setup(self, bottom, top):
        p = self.layer_param.yolov3_param
        self.classes, self.num = p.num_class, p.num
        self.biases = np.asarray(p.biases, np.float64).reshape(-1, 2)
        self.mask = list(p.mask)
        if len(self.mask) < self.num or any(m >= len(self.biases) for m in self.mask[:self.num]):
            raise self.error('yolov3_param needs num (%d) mask entries naming biases pairs (%d pairs), got %s'
                             % (self.num, len(self.biases), self.mask))
        self.p = p

    def reshape(self, bottom, top):
        n, c = bottom[0].shape[:2] if bottom[0].num_axes == 4 else (0, -1)
        if c != self.num * (5 + self.classes):
            raise self.error('bottom[0] %s must be (N, num * (5 + num_class) = %d, H, W)'
                             % (bottom[0].shape_string(), self.num * (5 + self.classes)))
        if bottom[1].shape[0] != n or bottom[1].count_range(1) % 5:
            raise self.error('bottom[1] %s must hold rows (class, x, y, w, h) per image' % bottom[1].shape_string())
        top[0].reshape(())

    def _class_delta(self, delta, prob, label):
        """delta_region_class_v3 at one cell: delta and prob are (classes,) views."""
        p = self.p
        eps = p.label_smooth_eps
        if delta[label]:
            delta[label] = -p.class_scale * ((1 - eps) + 0.5 * eps - prob[label])
            return
        onehot = (np.arange(self.classes) == label).astype(np.float64)
        if p.use_focal_loss:
            pt = prob[label] + 1e-15
            grad = -(1 - pt) * (2 * pt * np.log(pt) + pt - 1)
            delta[:] = -p.class_scale * (onehot - prob) * 0.5 * grad
        else:
            target = onehot * (1 - eps) + 0.5 * eps if eps else onehot
            delta[:] = -p.class_scale * (target - prob)

    def _box_delta(self, delta, raw, pred, truth):
        """delta_region_box's IoU-loss branch at one anchor: its overlap with the truth."""
        p = self.p
        overlap = iou_value(pred, truth, p.iou_loss if p.iou_loss in (_IOU.GIOU, _IOU.CIOU) else _IOU.DIOU)
        pred = np.concatenate([pred[:2], np.where(pred[2:] == 0, 1.0, pred[2:])])   # as the fork
        with np.errstate(over='ignore', invalid='ignore'):
            d = iou_deltas(pred, truth, p.iou_loss) * [1, 1, np.exp(raw[2]), np.exp(raw[3])] * p.iou_normalizer
        d = np.where(np.isfinite(d), d, 0)
        if p.max_delta != _FLT_MAX:
            d = np.clip(d, -p.max_delta, p.max_delta)
        delta[:] = (delta if p.accumulate else 0) - d
        return overlap

    def _assign(self, delta, act, raw, boxes, k, j, i, truth, label, grid):
        """The deltas of anchor k at cell (j, i) for one truth (x, y, w, h); the IoU-variant
        overlap of its box (None for MSE)."""
        p = self.p
        h, w = grid
        x, y, tw, th = truth
        bias = self.biases[self.mask[k]]
        overlap = None
        if p.iou_loss == _IOU.MSE:
            scale = p.coord_scale * (2 - tw * th)
            delta[k, 0, j, i] = -scale * (x * w - i - act[k, 0, j, i])
            delta[k, 1, j, i] = -scale * (y * h - j - act[k, 1, j, i])
            delta[k, 2, j, i] = -scale * (np.log(tw * w * p.anchors_scale / bias[0]) - raw[k, 2, j, i])
            delta[k, 3, j, i] = -scale * (np.log(th * h * p.anchors_scale / bias[1]) - raw[k, 3, j, i])
        else:
            overlap = self._box_delta(delta[k, :4, j, i], raw[k, :4, j, i], boxes[k, j, i], np.array(truth))
        delta[k, 4, j, i] = -(1 - act[k, 4, j, i]) * (p.object_scale if p.use_logic_gradient else 1)
        self._class_delta(delta[k, 5:, j, i], act[k, 5:, j, i], label)
        return overlap

    def forward(self, bottom, top):
        p = self.p
        raw = bottom[0].data
        raw = (raw if isinstance(raw, np.ndarray) else raw.get()).astype(np.float64)
        labels = bottom[1].data
        labels = (labels if isinstance(labels, np.ndarray) else labels.get()).astype(np.float64)
        n, _, h, w = raw.shape
        raw = raw.reshape(n, self.num, 5 + self.classes, h, w)
        labels = labels.reshape(n, -1, 5)
        act = _sigmoid(np, raw)               # sigmoid on all but w, h (those are read raw)
        anchors = self.biases[self.mask[:self.num]]
        boxes = np.stack([(np.arange(w) + act[:, :, 0]) / w, (np.arange(h)[:, None] + act[:, :, 1]) / h,
                          np.exp(raw[:, :, 2]) * anchors[:, 0, None, None] / (w * p.anchors_scale),
                          np.exp(raw[:, :, 3]) * anchors[:, 1, None, None] / (h * p.anchors_scale)], -1)
        shapes = np.column_stack([np.zeros((len(self.biases), 2)),
                                  self.biases / [w * p.anchors_scale, h * p.anchors_scale]])
        delta = np.zeros_like(raw)
        delta[:, :, 4] = act[:, :, 4]
        overlaps = []                         # IoU losses: each assignment's overlap
        for b in range(n):
            rows = labels[b]
            searched = rows[:np.argmax(rows[:, 1] == 0)] if (rows[:, 1] == 0).any() else rows
            best = iou_value(boxes[b][..., None, :], searched[:, 1:], p.iou_loss).max(axis=-1, initial=0)
            delta[b, :, 4][best > p.thresh] = 0
            assigned = rows[:np.argmax(rows[:, 3] == 0)] if (rows[:, 3] == 0).any() else rows
            for label, x, y, tw, th in assigned:
                truth = (x, y, tw, th)
                i, j = min(int(x * w), w - 1), min(int(y * h), h - 1)
                ious = iou_value(shapes, np.array([0.0, 0.0, tw, th]), p.iou_loss)
                best_n = int(np.argmax(ious)) if (ious > 0).any() else -1
                picked = []
                if best_n in self.mask[:self.num]:
                    best_n = self.mask.index(best_n)          # as the fork: now a mask position
                    picked.append(best_n)
                if p.iou_thresh < 1:
                    picked += [self.mask.index(pair) for pair in range(len(self.biases))
                               if pair in self.mask[:self.num] and pair != best_n and ious[pair] > p.iou_thresh]
                for k in picked:
                    overlaps.append(self._assign(delta[b], act[b], raw[b], boxes[b], k, j, i, truth, int(label),
                                                 (h, w)))
        self.delta = delta.reshape(bottom[0].shape)
        if p.use_logic_gradient:
            slope = act * (1 - act)
            slope[:, :, 2:4] = 1
            if p.iou_loss != _IOU.MSE:
                slope[:, :, :2] = raw[:, :, :2] * (1 - raw[:, :, :2])
            self.delta_back = self.delta * slope.reshape(bottom[0].shape)
        else:
            self.delta_back = self.delta
        if p.iou_loss == _IOU.MSE:
            top[0].data[...] = (delta * delta).sum() / n
        else:
            box_loss = p.iou_normalizer * sum(1 - o for o in overlaps) / len(overlaps) if overlaps else 0
            top[0].data[...] = ((delta[:, :, 4:] ** 2).sum() + box_loss) / n

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down)
        if propagate_down[0]:
            alpha = float(top[0].diff.reshape(())) / bottom[0].shape[0]
            bottom[0].diff[...] = bottom[0].xp.asarray((self.delta_back * alpha).astype(self.dtype))
