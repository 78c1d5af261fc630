"""MobileNet-YOLO's YOLOv3 training losses (eric612/MobileNet-YOLO): Yolov3 (yolov3_layer.cpp) with
its MSE and IoU-variant (IOU, GIOU, DIOU, CIOU) box losses, and GaussianYolov3
(gaussian_yolov3_layer.cpp, after jwchoi384/Gaussian_YOLOv3)."""
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

    coords = 4              # box channels before the objectness
    raw_channels = (2, 3)   # box channels read raw (w, h); the others go through the sigmoid
    box_channels = (0, 1, 2, 3)   # x, y, w, h

    def setup(self, bottom, top):
        p = self.layer_param.yolov3_param
        self.classes, self.num = p.num_class, p.num
        self.biases = np.asarray(p.biases, np.float64).reshape(-1, 2)
        self.mask = list(p.mask)
        if len(self.mask) < self.num or any(m >= len(self.biases) for m in self.mask[:self.num]):
            raise self.error('yolov3_param needs num (%d) mask entries naming biases pairs (%d pairs), got %s'
                             % (self.num, len(self.biases), self.mask))
        self.p = p
        self.mse = p.iou_loss == _IOU.MSE
        self.overlap = p.iou_loss           # the overlap of the search, the anchor choice
        self.eps = p.label_smooth_eps

    def reshape(self, bottom, top):
        n, c = bottom[0].shape[:2] if bottom[0].num_axes == 4 else (0, -1)
        per = self.coords + 1 + self.classes
        if c != self.num * per:
            raise self.error('bottom[0] %s must be (N, num * (%d + num_class) = %d, H, W)'
                             % (bottom[0].shape_string(), self.coords + 1, self.num * per))
        if bottom[1].shape[0] != n or bottom[1].count_range(1) % 5:
            raise self.error('bottom[1] %s must hold rows (class, x, y, w, h) per image' % bottom[1].shape_string())
        top[0].reshape(())

    def _class_delta(self, delta, prob, label):
        """delta_region_class_v3 at one cell: delta and prob are (classes,) views."""
        p = self.p
        eps = self.eps
        if delta[label]:
            delta[label] = -p.class_scale * ((1 - eps) + 0.5 * eps - prob[label])
            return
        self._class_deltas(delta, prob, label)

    def _class_deltas(self, delta, prob, label):
        """Every class's delta at one cell, one-hot smoothed by eps, or darknet's focal weighting."""
        p = self.p
        eps = self.eps
        onehot = (np.arange(self.classes) == label).astype(np.float64)
        if p.use_focal_loss:
            pt = prob[label] + 1e-15
            grad = -(1 - pt) * (2 * pt * np.log(pt) + pt - 1)
            delta[:] = -p.class_scale * (onehot - prob) * 0.5 * grad
        else:
            target = onehot * (1 - eps) + 0.5 * eps if eps else onehot
            delta[:] = -p.class_scale * (target - prob)

    def _box_delta(self, delta, swap, pred, truth, k, j, i, grid):
        """The box deltas of anchor k at cell (j, i) (delta and swap: its (coords,) views); the
        overlap it reports (None for MSE)."""
        p = self.p
        h, w = grid
        x, y, tw, th = truth
        bias = self.biases[self.mask[k]]
        if self.mse:
            scale = p.coord_scale * (2 - tw * th)
            delta[:] = -scale * (np.array([x * w - i, y * h - j, np.log(tw * w * p.anchors_scale / bias[0]),
                                           np.log(th * h * p.anchors_scale / bias[1])]) - swap)
            return None
        # delta_region_box's IoU-loss branch
        overlap = iou_value(pred, truth, p.iou_loss if p.iou_loss in (_IOU.GIOU, _IOU.CIOU) else _IOU.DIOU)
        pred = np.concatenate([pred[:2], np.where(pred[2:] == 0, 1.0, pred[2:])])   # as the fork
        with np.errstate(over='ignore', invalid='ignore'):
            d = iou_deltas(pred, truth, p.iou_loss) * [1, 1, np.exp(swap[2]), np.exp(swap[3])] * p.iou_normalizer
        delta[:] = (delta if p.accumulate else 0) - self._limit(d)
        return overlap

    def _limit(self, d):
        """Non-finite deltas to 0, the others clipped to +-max_delta unless that is FLT_MAX."""
        d = np.where(np.isfinite(d), d, 0)
        return d if self.p.max_delta == _FLT_MAX else np.clip(d, -self.p.max_delta, self.p.max_delta)

    def _assign(self, delta, swap, boxes, k, j, i, truth, label, grid):
        """The deltas of anchor k at cell (j, i) for one truth (x, y, w, h); the overlap its box
        delta reports."""
        c = self.coords
        overlap = self._box_delta(delta[k, :c, j, i], swap[k, :c, j, i], boxes[k, j, i], np.array(truth),
                                  k, j, i, grid)
        delta[k, c, j, i] = -(1 - swap[k, c, j, i]) * (self.p.object_scale if self.p.use_logic_gradient else 1)
        self._class_delta(delta[k, c + 1:, j, i], swap[k, c + 1:, j, i], label)
        return overlap

    def forward(self, bottom, top):
        p = self.p
        raw = bottom[0].data
        raw = (raw if isinstance(raw, np.ndarray) else raw.get()).astype(np.float64)
        labels = bottom[1].data
        labels = (labels if isinstance(labels, np.ndarray) else labels.get()).astype(np.float64)
        n, _, h, w = raw.shape
        c = self.coords
        raw = raw.reshape(n, self.num, c + 1 + self.classes, h, w)
        labels = labels.reshape(n, -1, 5)
        swap = _sigmoid(np, raw)                  # the fork's swap: sigmoids, and the raw w, h
        swap[:, :, self.raw_channels] = raw[:, :, self.raw_channels]
        anchors = self.biases[self.mask[:self.num]]
        bx, by, bw, bh = (swap[:, :, ch] for ch in self.box_channels)
        boxes = np.stack([(np.arange(w) + bx) / w, (np.arange(h)[:, None] + by) / h,
                          np.exp(bw) * anchors[:, 0, None, None] / (w * p.anchors_scale),
                          np.exp(bh) * anchors[:, 1, None, None] / (h * p.anchors_scale)], -1)
        shapes = np.column_stack([np.zeros((len(self.biases), 2)),
                                  self.biases / [w * p.anchors_scale, h * p.anchors_scale]])
        delta = np.zeros_like(raw)
        delta[:, :, c] = swap[:, :, c]
        overlaps = []                             # each assignment's overlap (IoU losses)
        for b in range(n):
            rows = labels[b]
            searched = rows[:np.argmax(rows[:, 1] == 0)] if (rows[:, 1] == 0).any() else rows
            best = iou_value(boxes[b][..., None, :], searched[:, 1:], self.overlap).max(axis=-1, initial=0)
            delta[b, :, c][best > p.thresh] = 0
            assigned = rows[:np.argmax(rows[:, 3] == 0)] if (rows[:, 3] == 0).any() else rows
            for label, x, y, tw, th in assigned:
                truth = (x, y, tw, th)
                i, j = min(int(x * w), w - 1), min(int(y * h), h - 1)
                ious = iou_value(shapes, np.array([0.0, 0.0, tw, th]), self.overlap)
                best_n = int(np.argmax(ious)) if (ious > 0).any() else -1
                picked = []
                if best_n in self.mask[:self.num]:
                    best_n = self.mask.index(best_n)          # as the fork: now a mask position
                    picked.append(best_n)
                if p.iou_thresh < 1:
                    picked += [self.mask.index(pair) for pair in range(len(self.biases))
                               if pair in self.mask[:self.num] and pair != best_n and ious[pair] > p.iou_thresh]
                for k in picked:
                    overlaps.append(self._assign(delta[b], swap[b], boxes[b], k, j, i, truth, int(label), (h, w)))
        self.delta = delta.reshape(bottom[0].shape)
        if p.use_logic_gradient:
            slope = swap * (1 - swap)
            if not self.mse:                      # the fork's forward left the raw values in its swap
                slope[:, :, :c] = raw[:, :, :c] * (1 - raw[:, :, :c])
            slope[:, :, self.raw_channels] = 1
            self.delta_back = self.delta * slope.reshape(bottom[0].shape)
        else:
            self.delta_back = self.delta
        if self.mse:
            top[0].data[...] = (delta * delta).sum() / n
        else:
            box_loss = p.iou_normalizer * sum(1 - o for o in overlaps) / len(overlaps) if overlaps else 0
            top[0].data[...] = ((delta[:, :, c:] ** 2).sum() + box_loss) / n

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down)
        if propagate_down[0]:
            alpha = float(top[0].diff.reshape(())) / bottom[0].shape[0]
            bottom[0].diff[...] = bottom[0].xp.asarray((self.delta_back * alpha).astype(self.dtype))


@register('GaussianYolov3')
class GaussianYolov3Layer(Yolov3Layer):
    """Gaussian YOLOv3's loss for one output scale (yolov3_param): per anchor 8 box channels
    (x, sigma_x, y, sigma_y, w, sigma_w, h, sigma_h; all through the sigmoid but w, h), objectness,
    classes. As Yolov3 with plain IoU (iou_loss is not read) and these differences, the fork's:

    box deltas, with t the truth's (x * W - col, y * H - row, log(w * W * anchors_scale / bias), ...)
    and s = coord_scale * (2 - w * h): z = (t - mu) / sigma, N = exp(-z^2 / 2) / (sqrt(2 pi) *
    (sigma + 0.3)), c = s / 2 * N / (N + 1e-9); mu gets -c * z / sigma, sigma gets
    -c * (z^2 / sigma - 1 / (sigma + 0.3)), each times iou_normalizer, non-finite ones 0, clipped to
    max_delta, added up unless accumulate is false. That is s / 2 * iou_normalizer times the
    gradient of -log(N + 1e-9) in (mu, sigma), the sigmoid outputs (raw w, h), not the gradient of
    the reported loss (sum of the objectness and class deltas^2 + iou_normalizer * mean(1 - IoU)) / N.
    Classes: no label smoothing; where the cell's class-0 delta is already set, only the label's
    becomes -(1 - p), without class_scale. With use_logic_gradient the box channels but w, h get
    r * (1 - r) of their raw values r, as the fork's backward reads them.
    """
    coords = 8
    raw_channels = (4, 6)
    box_channels = (0, 2, 4, 6)

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.mse = False
        self.overlap = _IOU.IOU
        self.eps = 0

    def _class_delta(self, delta, prob, label):
        """delta_region_gaussian_class_v3 at one cell."""
        if delta[0]:
            delta[label] = -(1 - prob[label])
            return
        self._class_deltas(delta, prob, label)

    def _box_delta(self, delta, swap, pred, truth, k, j, i, grid):
        """delta_region_gaussian_box: the Gaussian deltas of one anchor; its box's IoU."""
        p = self.p
        h, w = grid
        x, y, tw, th = truth
        bias = self.biases[self.mask[k]]
        target = np.array([x * w - i, y * h - j, np.log(tw * w * p.anchors_scale / bias[0]),
                           np.log(th * h * p.anchors_scale / bias[1])])
        mu, sigma = swap[0::2], swap[1::2]
        scale = p.coord_scale * (2 - tw * th)
        with np.errstate(all='ignore'):
            z = (target - mu) / sigma
            density = np.exp(-z * z / 2) / (np.sqrt(2 * np.pi) * (sigma + 0.3))
            c = 0.5 / (density + 1e-9) * density * scale
            d_mu = self._limit(c * z / sigma * p.iou_normalizer)
            d_sigma = self._limit(c * (z * z / sigma - 1 / (sigma + 0.3)) * p.iou_normalizer)
        if not p.accumulate:
            delta[:] = 0
        delta[0::2] -= d_mu
        delta[1::2] -= d_sigma
        return iou_value(pred, truth, _IOU.IOU)
