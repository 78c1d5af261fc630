"""MobileNet-YOLO's Yolov3 training loss (eric612/MobileNet-YOLO's yolov3_layer.cpp, MSE box loss)."""
import numpy as np

from ..layer import register
from ..proto import caffe_pb2
from .loss import LossLayer
from .yolo import _iou, _sigmoid

_IOU = caffe_pb2.Yolov3Parameter


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
    """

    def setup(self, bottom, top):
        p = self.layer_param.yolov3_param
        if p.iou_loss != _IOU.MSE:
            raise self.error('iou_loss %s is not implemented (MSE is)' % _IOU.IOU_LOSS.Name(p.iou_loss))
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

    def _assign(self, delta, act, raw, k, j, i, truth, label, grid):
        """The deltas of anchor k at cell (j, i) for one truth (x, y, w, h)."""
        p = self.p
        h, w = grid
        x, y, tw, th = truth
        bias = self.biases[self.mask[k]]
        scale = p.coord_scale * (2 - tw * th)
        delta[k, 0, j, i] = -scale * (x * w - i - act[k, 0, j, i])
        delta[k, 1, j, i] = -scale * (y * h - j - act[k, 1, j, i])
        delta[k, 2, j, i] = -scale * (np.log(tw * w * p.anchors_scale / bias[0]) - raw[k, 2, j, i])
        delta[k, 3, j, i] = -scale * (np.log(th * h * p.anchors_scale / bias[1]) - raw[k, 3, j, i])
        delta[k, 4, j, i] = -(1 - act[k, 4, j, i]) * (p.object_scale if p.use_logic_gradient else 1)
        self._class_delta(delta[k, 5:, j, i], act[k, 5:, j, i], label)

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
        for b in range(n):
            rows = labels[b]
            searched = rows[:np.argmax(rows[:, 1] == 0)] if (rows[:, 1] == 0).any() else rows
            if len(searched):
                best = _iou(boxes[b][..., None, :], searched[:, 1:]).max(axis=-1)
                delta[b, :, 4][best > p.thresh] = 0
            assigned = rows[:np.argmax(rows[:, 3] == 0)] if (rows[:, 3] == 0).any() else rows
            for label, x, y, tw, th in assigned:
                truth = (x, y, tw, th)
                i, j = min(int(x * w), w - 1), min(int(y * h), h - 1)
                ious = _iou(shapes, np.array([0.0, 0.0, tw, th]))
                best_n = int(np.argmax(ious)) if (ious > 0).any() else -1
                if best_n in self.mask[:self.num]:
                    best_n = self.mask.index(best_n)          # as the fork: now a mask position
                    self._assign(delta[b], act[b], raw[b], best_n, j, i, truth, int(label), (h, w))
                if p.iou_thresh < 1:
                    for pair in range(len(self.biases)):
                        if pair in self.mask[:self.num] and pair != best_n and ious[pair] > p.iou_thresh:
                            k = self.mask.index(pair)
                            self._assign(delta[b], act[b], raw[b], k, j, i, truth, int(label), (h, w))
        self.delta = delta.reshape(bottom[0].shape)
        if p.use_logic_gradient:
            slope = act * (1 - act)
            slope[:, :, 2:4] = 1
            self.delta_back = self.delta * slope.reshape(bottom[0].shape)
        else:
            self.delta_back = self.delta
        top[0].data[...] = (delta * delta).sum() / n

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down)
        if propagate_down[0]:
            alpha = float(top[0].diff.reshape(())) / bottom[0].shape[0]
            bottom[0].diff[...] = bottom[0].xp.asarray((self.delta_back * alpha).astype(self.dtype))
