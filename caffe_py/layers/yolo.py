"""Layers of the YOLO Caffe ports (eric612/MobileNet-YOLO and the caffe-yolo family): Reorg,
YoloDetectionOutput (YOLOv2), Yolov3DetectionOutput, RegionLoss (YOLOv2 training) and Mish
(caffe-yolov3's YOLOv4).
(Their Upsample shares its type name with SegNet's and lives in segmentation.py.)
"""
import numpy as np

from ..backend import get_array_module
from ..layer import Layer, register
from .cores import split_apply
from .loss import LossLayer
from .neuron import NeuronLayer


@register('Reorg')
class ReorgLayer(Layer):
    """Darknet's reorg (YOLOv2's passthrough), with its memory order: the bottom (N, C, H, W) is
    read as (N, C/s^2, H*s, W*s) and written as (N, C, H, W) in stride-phase-major channel order,
    the top being that memory seen as (N, C*s^2, H/s, W/s). `reverse` is the inverse: (N, C, H, W)
    -> (N, C/s^2, H*s, W*s). Backward is the inverse permutation."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.reorg_param
        if not param.HasField('stride') or param.stride < 1:
            raise self.error('Reorg Layer needs a positive stride param.')
        if top[0] is bottom[0]:
            raise self.error('Reorg Layer does not allow in-place computation.')
        self.stride = param.stride
        self.reverse = param.reverse

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error('bottom must be (N, C, H, W), got %s' % bottom[0].shape_string())
        n, c, h, w = bottom[0].shape
        s = self.stride
        if c % (s * s):
            raise self.error('channels (%d) must be a multiple of stride^2 (%d)' % (c, s * s))
        if self.reverse:
            top[0].reshape(n, c // (s * s), h * s, w * s)
        else:
            if h % s or w % s:
                raise self.error('height and width (%d, %d) must be multiples of the stride %d' % (h, w, s))
            top[0].reshape(n, c * s * s, h // s, w // s)
        # the two views of the same memory, in the bottom's C, H, W (both directions):
        # "wide" (N, C/s^2, H, s, W, s) and "deep" (N, s, s, C/s^2, H, W)
        self.wide = (n, c // (s * s), h, s, w, s)
        self.deep = (n, s, s, c // (s * s), h, w)

    def _wide_to_deep(self, src, dst):
        dst.reshape(self.deep)[...] = src.reshape(self.wide).transpose(0, 3, 5, 1, 2, 4)

    def _deep_to_wide(self, src, dst):
        dst.reshape(self.wide)[...] = src.reshape(self.deep).transpose(0, 3, 4, 1, 5, 2)

    def forward(self, bottom, top):
        move = self._deep_to_wide if self.reverse else self._wide_to_deep
        move(bottom[0].data, top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            move = self._wide_to_deep if self.reverse else self._deep_to_wide
            move(top[0].diff, bottom[0].diff)


def _sigmoid(xp, x):
    return 1 / (1 + xp.exp(-x))


def _greedy_nms(boxes, threshold):
    """Indices kept by greedy NMS over boxes (K, 4) = (cx, cy, w, h) in descending score order:
    a box is dropped when its IoU with a kept, higher-scored box is >= threshold (darknet's rule)."""
    left, right = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 0] + boxes[:, 2] / 2
    top, bottom = boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 1] + boxes[:, 3] / 2
    area = boxes[:, 2] * boxes[:, 3]
    alive = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        rest = slice(i + 1, None)
        w = np.minimum(right[i], right[rest]) - np.maximum(left[i], left[rest])
        h = np.minimum(bottom[i], bottom[rest]) - np.maximum(top[i], top[rest])
        inter = np.where((w < 0) | (h < 0), 0, w * h)
        iou = inter / (area[i] + area[rest] - inter)
        alive[rest] &= ~(iou >= threshold)
    return np.flatnonzero(alive)


class _YoloOutput(Layer):
    """What both YOLO outputs share: per image, detections sorted by score (stable), pruned by
    class-agnostic greedy NMS, as rows (image, label + 1, score, xmin, ymin, xmax, ymax), relative
    and unclipped, in a (1, 1, K, 7) top; without any detection one row of -1 per image, its id
    first. (The fork labels every row image 0 and runs NMS over the whole batch; here each image
    keeps its id and its own NMS, which is the same for one image.)"""
    min_bottom = 1
    exact_num_top = 1
    coords = 4              # box channels before the objectness

    def _grids(self, bottom):
        """[logits (N, boxes, coords + 1 + classes, H, W) float64 on the host], one per bottom."""
        out = []
        per = self.coords + 1 + self.classes
        for i, blob in enumerate(bottom):
            if blob.num_axes != 4 or blob.shape[1] != self.boxes * per:
                raise self.error('bottom[%d] %s must be (N, num_box * (%d + num_classes) = %d, H, W)'
                                 % (i, blob.shape_string(), self.coords + 1, self.boxes * per))
            x = blob.data
            x = (x if isinstance(x, np.ndarray) else x.get()).astype(np.float64)
            n, _, h, w = blob.shape
            out.append(x.reshape(n, self.boxes, per, h, w))
        return out

    def reshape(self, bottom, top):
        self._grids(bottom)
        top[0].reshape(1, 1, bottom[0].shape[0], 7)

    def forward(self, bottom, top):
        rows = []
        for image, (boxes, labels, scores) in enumerate(self._candidates(bottom)):
            order = np.argsort(-scores, kind='stable')
            keep = order[_greedy_nms(boxes[order], self.nms)]
            b = boxes[keep]
            rows.append(np.column_stack([np.full(len(keep), image), labels[keep] + 1, scores[keep],
                                         b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2,
                                         b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2]))
        found = np.concatenate(rows)
        if not len(found):
            found = np.full((bottom[0].shape[0], 7), -1.0)
            found[:, 0] = np.arange(bottom[0].shape[0])
        top[0].reshape(1, 1, len(found), 7)
        top[0].data[...] = top[0].xp.asarray(found.reshape(top[0].shape))


def _centres(x):
    """Box centres from logits (N, boxes, channels, H, W), x and y first: (col + sigmoid) / W, (row + sigmoid) / H."""
    h, w = x.shape[3:]
    return (np.arange(w) + _sigmoid(np, x[:, :, 0])) / w, (np.arange(h)[:, None] + _sigmoid(np, x[:, :, 1])) / h


@register('YoloDetectionOutput')
class YoloDetectionOutputLayer(_YoloOutput):
    """MobileNet-YOLO's YOLOv2 decoding (one or two bottoms (N, num_box * (5 + classes), H, W), the
    same anchors): centres as YOLOv3's, w = exp * biases[2n] / W, h = exp * biases[2n + 1] / H (anchors
    in cells), one detection per cell and anchor: its best softmax class, scored sigmoid(objectness) *
    probability, kept from confidence_threshold up."""

    def setup(self, bottom, top):
        p = self.layer_param.yolo_detection_output_param
        if not p.HasField('num_classes'):
            raise self.error('Must specify num_classes')
        self.classes, self.boxes = p.num_classes, p.num_box
        self.threshold, self.nms = p.confidence_threshold, p.nms_threshold
        self.biases = np.asarray(p.biases, np.float64).reshape(-1, 2)
        if len(self.biases) < self.boxes:
            raise self.error('%d biases pairs for %d boxes' % (len(self.biases), self.boxes))

    def _candidates(self, bottom):
        grids = self._grids(bottom)
        per_image = [([], [], []) for _ in range(bottom[0].shape[0])]
        for x in grids:
            h, w = x.shape[3:]
            cx, cy = _centres(x)
            bw = np.exp(x[:, :, 2]) * self.biases[:self.boxes, 0, None, None] / w
            bh = np.exp(x[:, :, 3]) * self.biases[:self.boxes, 1, None, None] / h
            logits = x[:, :, 5:]
            prob = np.exp(logits - logits.max(axis=2, keepdims=True))
            prob /= prob.sum(axis=2, keepdims=True)
            label = prob.argmax(axis=2)
            score = _sigmoid(np, x[:, :, 4]) * prob.max(axis=2)
            for image in range(len(x)):
                b, i, j = np.nonzero(score[image] >= self.threshold)
                per_image[image][0].append(np.stack([cx[image, b, i, j], cy[image, b, i, j],
                                                     bw[image, b, i, j], bh[image, b, i, j]], 1))
                per_image[image][1].append(label[image, b, i, j])
                per_image[image][2].append(score[image, b, i, j])
        return [tuple(np.concatenate(part) for part in parts) for parts in per_image]


@register('Yolov3DetectionOutput')
class Yolov3DetectionOutputLayer(_YoloOutput):
    """MobileNet-YOLO's YOLOv3 decoding: one bottom per scale, (N, boxes * (5 + classes), H, W).
    Per cell and anchor: x = (col + sigmoid) / W, y = (row + sigmoid) / H, w = exp * anchor_w /
    (W * anchors_scale), h likewise, class score = sigmoid(class) * sigmoid(objectness); every class
    scoring above confidence_threshold is a detection; detections are sorted by score and pruned by
    class-agnostic greedy NMS (see _YoloOutput). gaussian_box (Gaussian YOLOv3): per anchor
    (x, sigma_x, y, sigma_y, w, sigma_w, h, sigma_h, objectness, classes), the objectness scaled by
    (4 - the four sigmoid(sigma)) / 4, as the fork's CPU path (its GPU path subtracts sigma_x
    twice)."""

    def setup(self, bottom, top):
        p = self.layer_param.yolov3_detection_output_param
        if not p.HasField('num_classes'):
            raise self.error('Must specify num_classes')
        self.coords = 8 if p.gaussian_box else 4
        self.classes, self.boxes = p.num_classes, p.num_box
        self.threshold, self.nms = p.confidence_threshold, p.nms_threshold
        self.biases = np.asarray(p.biases, np.float64).reshape(-1, 2)
        if len(bottom) != p.mask_group_num:
            raise self.error('%d bottoms, mask_group_num says %d' % (len(bottom), p.mask_group_num))
        per_group = len(p.mask) // p.mask_group_num
        if per_group < self.boxes or len(p.anchors_scale) < len(bottom):
            raise self.error('needs num_box (%d) masks and one anchors_scale per bottom (masks %d, scales %d)'
                             % (self.boxes, len(p.mask), len(p.anchors_scale)))
        self.masks = [list(p.mask[g * per_group:g * per_group + self.boxes]) for g in range(len(bottom))]
        if max(max(m) for m in self.masks) >= len(self.biases):
            raise self.error('a mask names anchor %d of %d biases pairs' % (max(map(max, self.masks)),
                                                                             len(self.biases)))
        self.scales = list(p.anchors_scale)

    def _candidates(self, bottom):
        """Per image: boxes (K, 4) as (cx, cy, w, h), labels (K,), scores (K,)."""
        per_image = [([], [], []) for _ in range(bottom[0].shape[0])]
        for x, mask, scale in zip(self._grids(bottom), self.masks, self.scales):
            n, _, _, h, w = x.shape
            anchors = self.biases[mask]                                  # (boxes, 2)
            c = self.coords
            box = x[:, :, 0:c:c // 4]                  # x, y, w, h (Gaussian: every other channel)
            cx, cy = _centres(box)
            bw = np.exp(box[:, :, 2]) * anchors[:, 0, None, None] / (w * scale)
            bh = np.exp(box[:, :, 3]) * anchors[:, 1, None, None] / (h * scale)
            objectness = _sigmoid(np, x[:, :, c:c + 1])
            if c == 8:
                objectness = objectness * (4 - _sigmoid(np, x[:, :, 1:8:2]).sum(axis=2, keepdims=True)) / 4
            scores = _sigmoid(np, x[:, :, c + 1:]) * objectness       # (n, boxes, classes, h, w)
            for image in range(n):
                b, c, i, j = np.nonzero(scores[image] > self.threshold)
                boxes = np.stack([cx[image, b, i, j], cy[image, b, i, j], bw[image, b, i, j], bh[image, b, i, j]], 1)
                per_image[image][0].append(boxes)
                per_image[image][1].append(c)
                per_image[image][2].append(scores[image, b, c, i, j])
        return [tuple(np.concatenate(part) for part in parts) for parts in per_image]


@register('RegionLoss')
class RegionLossLayer(LossLayer):
    """MobileNet-YOLO's RegionLoss (YOLOv2's region layer, darknet's rules). Bottoms: predictions
    (N, num * (5 + classes), S, S) and labels (N, K * 5) as rows (class, x, y, w, h) relative to the
    image, the list ending at the first row whose x (for the objectness search) or w (for the
    assignments) is 0. Per anchor and cell a delta is kept, as darknet's: objectness is pushed to 0
    (noobject_scale) unless the box overlaps a truth by more than thresh; each truth takes the anchor
    of its cell whose shape overlaps it best (the anchor shape with bias_match) and sets that anchor's
    box deltas (coord_scale, times 2 - w*h without rescore), objectness (object_scale, towards the IoU
    with rescore, else 1) and class deltas (class_scale, softmax minus one-hot). The loss is
    sum(delta^2) / N and backward hands delta * top diff / N down: darknet's deltas, which are not
    the gradient of that loss (so no numeric gradient check applies)."""

    def setup(self, bottom, top):
        p = self.layer_param.region_loss_param
        if p.coords != 4 or not p.softmax:
            raise self.error('only coords: 4 with softmax is implemented (coords %d, softmax %d)' % (p.coords, p.softmax))
        if p.softmax_tree or p.class_map:
            raise self.error('softmax_tree and class_map are not implemented')
        self.classes, self.num = p.num_class, p.num
        biases = list(p.biases) if len(p.biases) >= 10 else [0.0] * 10
        self.biases = np.asarray(biases, np.float64).reshape(-1, 2)
        if len(self.biases) < self.num:
            raise self.error('%d biases pairs for num %d' % (len(self.biases), self.num))
        self.bias_match, self.rescore, self.thresh = p.bias_match, p.rescore, p.thresh
        self.scales = p.object_scale, p.noobject_scale, p.class_scale, p.coord_scale

    def reshape(self, bottom, top):
        n, c, h, w = bottom[0].shape if bottom[0].num_axes == 4 else (0, 0, 0, -1)
        if c != self.num * (5 + self.classes) or h != w:
            raise self.error('bottom[0] %s must be (N, num * (5 + num_class) = %d, S, S)'
                             % (bottom[0].shape_string(), self.num * (5 + self.classes)))
        if bottom[1].shape[0] != n or bottom[1].count_range(1) % 5:
            raise self.error('bottom[1] %s must hold rows (class, x, y, w, h) per image'
                             % bottom[1].shape_string())
        top[0].reshape(())

    def forward(self, bottom, top):
        obj_scale, noobj_scale, class_scale, coord_scale = self.scales
        x = bottom[0].data
        x = (x if isinstance(x, np.ndarray) else x.get()).astype(np.float64)
        labels = bottom[1].data
        labels = (labels if isinstance(labels, np.ndarray) else labels.get()).astype(np.float64)
        n, _, side, _ = x.shape
        x = x.reshape(n, self.num, 5 + self.classes, side, side)
        labels = labels.reshape(n, -1, 5)
        sx, sy, obj = _sigmoid(np, x[:, :, 0]), _sigmoid(np, x[:, :, 1]), _sigmoid(np, x[:, :, 4])
        logits = x[:, :, 5:]
        prob = np.exp(logits - logits.max(axis=2, keepdims=True))
        prob /= prob.sum(axis=2, keepdims=True)
        col, row = np.arange(side), np.arange(side)[:, None]
        boxes = np.stack([(col + sx) / side, (row + sy) / side,
                          np.exp(x[:, :, 2]) * self.biases[:self.num, 0, None, None] / side,
                          np.exp(x[:, :, 3]) * self.biases[:self.num, 1, None, None] / side], -1)
        delta = np.zeros_like(x)
        delta[:, :, 4] = noobj_scale * obj * obj * (1 - obj)
        for b in range(n):
            rows = labels[b]
            searched = rows[:np.argmax(rows[:, 1] == 0)] if (rows[:, 1] == 0).any() else rows
            if len(searched):
                best = _iou(boxes[b][..., None, :], searched[:, 1:]).max(axis=-1)
                delta[b, :, 4][best > self.thresh] = 0
            assigned = rows[:np.argmax(rows[:, 3] == 0)] if (rows[:, 3] == 0).any() else rows
            for label, tx, ty, tw, th in assigned:
                i, j = min(int(tx * side), side - 1), min(int(ty * side), side - 1)
                shapes = boxes[b, :, j, i, 2:].copy()
                if self.bias_match:
                    shapes = self.biases[:self.num] / side
                ious = _iou(np.column_stack([np.zeros((self.num, 2)), shapes]), np.array([0.0, 0.0, tw, th]))
                k = int(np.argmax(ious))
                scale = coord_scale if self.rescore else coord_scale * (2 - tw * th)
                iou = float(_iou(boxes[b, k, j, i], np.array([tx, ty, tw, th])))
                s = sx[b, k, j, i], sy[b, k, j, i]
                delta[b, k, 0, j, i] = -scale * (tx * side - i - s[0]) * s[0] * (1 - s[0])
                delta[b, k, 1, j, i] = -scale * (ty * side - j - s[1]) * s[1] * (1 - s[1])
                delta[b, k, 2, j, i] = -scale * (np.log(tw * side / self.biases[k, 0]) - x[b, k, 2, j, i])
                delta[b, k, 3, j, i] = -scale * (np.log(th * side / self.biases[k, 1]) - x[b, k, 3, j, i])
                o = obj[b, k, j, i]
                delta[b, k, 4, j, i] = -obj_scale * ((iou if self.rescore else 1.0) - o) * o * (1 - o)
                onehot = np.arange(self.classes) == int(label)
                delta[b, k, 5:, j, i] = -class_scale * (onehot - prob[b, k, :, j, i])
        self.delta = delta.reshape(bottom[0].shape)
        top[0].data[...] = (delta * delta).sum() / n

    def backward(self, top, propagate_down, bottom):
        if len(propagate_down) > 1 and propagate_down[1]:
            raise self.error('Layer cannot backpropagate to label inputs.')
        if propagate_down[0]:
            alpha = float(top[0].diff.reshape(())) / bottom[0].shape[0]
            bottom[0].diff[...] = bottom[0].xp.asarray((self.delta * alpha).astype(self.dtype))


def _iou(a, b):
    """IoU of centre-size boxes (..., 4), broadcasting; 0 where they do not overlap."""
    w = (np.minimum(a[..., 0] + a[..., 2] / 2, b[..., 0] + b[..., 2] / 2)
         - np.maximum(a[..., 0] - a[..., 2] / 2, b[..., 0] - b[..., 2] / 2))
    h = (np.minimum(a[..., 1] + a[..., 3] / 2, b[..., 1] + b[..., 3] / 2)
         - np.maximum(a[..., 1] - a[..., 3] / 2, b[..., 1] - b[..., 3] / 2))
    inter = np.where((w < 0) | (h < 0), 0, w * h)
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


def _mish_terms(x):
    """(tanh(softplus(x)), sigmoid(x)), finite for any x: with a = exp(min(x, 0)) and
    b = exp(-max(x, 0)), tanh(log(1 + e^x)) = a(a + 2b) / (a(a + 2b) + 2b^2), sigmoid = a / (a + b)."""
    xp = get_array_module(x)
    a = xp.minimum(x, 0)
    xp.exp(a, out=a)
    b = xp.maximum(x, 0)
    xp.negative(b, out=b)
    xp.exp(b, out=b)
    num = b + b
    num += a
    num *= a
    t = b * b
    t += t
    t += num
    xp.divide(num, t, out=t)
    b += a
    xp.divide(a, b, out=a)
    return t, a


def _mish(y, x):
    """y = x tanh(softplus(x)) (y may be x)."""
    t, _ = _mish_terms(x)
    get_array_module(x).multiply(x, t, out=y)


def _mish_grad(dx, x, dy):
    """dx = dy (t + x (1 - t^2) sigmoid(x)), t = tanh(softplus(x)) (dx may be dy)."""
    xp = get_array_module(x)
    t, sigmoid = _mish_terms(x)
    grad = t * t
    xp.subtract(1, grad, out=grad)
    grad *= x
    grad *= sigmoid
    grad += t
    xp.multiply(dy, grad, out=dx)


@register('Mish')
class MishLayer(NeuronLayer):
    """caffe-yolov3's Mish (YOLOv4): x * tanh(softplus(x)), computed stably for any |x| (the fork
    switches softplus to x above 20 and to e^x below -20, the same values in float32), on the
    cores in slices. Backward: the exact gradient tanh(sp) + x (1 - tanh(sp)^2) sigmoid(x) at the
    input. The fork's backward evaluates that formula at its top data, the output, which is not
    Mish's gradient; darknet, which trained YOLOv4, takes it at the input. In place, the input is kept."""

    def setup(self, bottom, top):
        self.input = None

    def forward(self, bottom, top):
        x = bottom[0].data
        self.input = x.copy() if top[0] is bottom[0] else None
        split_apply(_mish, top[0].data, x)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = bottom[0].data if self.input is None else self.input
            split_apply(_mish_grad, bottom[0].diff, x, top[0].diff)
