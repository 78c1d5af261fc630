"""SSD's layers (weiliu89/caffe, branch ssd): PriorBox, Permute, Normalize, DetectionOutput,
MultiBoxLoss, DetectionEvaluate.

Permute and Normalize compute with `xp` on either device. PriorBox, DetectionOutput,
MultiBoxLoss and DetectionEvaluate work on the host, as the fork's CPU code does (their
matching, NMS and mining are sequences of small decisions); blobs on the device are read and
written through their host views. Box arithmetic is in caffe_py/bbox.py.
"""
import numpy as np

from .. import bbox, detection_save, detection_visualize, fillers
from ..layer import Layer, register
from ..proto import caffe_pb2
from .loss import FLT_MIN, normalization_mode

_MB = caffe_pb2.MultiBoxLossParameter
_NORM = caffe_pb2.LossParameter


def _host(blob):
    """The blob's host side (itself on the CPU)."""
    return blob.host_view()


@register('PriorBox')
class PriorBoxLayer(Layer):
    """Default boxes for every cell of bottom[0]'s grid, in image-relative coordinates, and their
    variances: top (1, 2, H * W * priors * 4). The image size is img_size / img_h, img_w, or
    bottom[1]'s height and width; the cell step is step / step_h, step_w, or image / grid."""
    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.prior_box_param
        if not p.min_size:
            raise self.error('must provide min_size.')
        if any(s <= 0 for s in p.min_size):
            raise self.error('min_size must be positive.')
        ratios = [1.0]
        for ar in p.aspect_ratio:
            if all(abs(ar - r) >= 1e-6 for r in ratios):
                ratios.append(ar)
                if p.flip:
                    ratios.append(1.0 / ar)
        if p.max_size and len(p.max_size) != len(p.min_size):
            raise self.error('max_size must be given as many times as min_size (%d vs %d)'
                             % (len(p.max_size), len(p.min_size)))
        if any(mx <= mn for mn, mx in zip(p.min_size, p.max_size)):
            raise self.error('max_size must be greater than min_size.')
        if len(p.variance) not in (0, 1, 4) or any(v <= 0 for v in p.variance):
            raise self.error('variance must be given 0, 1 or 4 times, each positive (got %s)'
                             % list(p.variance))
        # the fork takes the sizes as int (int min_size_ = min_sizes_[s]) and the ratios as float
        f32 = np.float32
        sizes = []
        for s, min_size in enumerate(p.min_size):
            ms = int(min_size)
            sizes.append((f32(ms), f32(ms)))
            if p.max_size:
                side = f32(np.sqrt(float(ms * int(p.max_size[s]))))
                sizes.append((side, side))
            for ar in ratios:
                if abs(ar - 1.0) >= 1e-6:
                    root = np.sqrt(f32(ar))
                    sizes.append((f32(ms) * root, f32(ms) / root))
        self.box_sizes = np.array(sizes, np.float32)                 # (priors, 2): width, height
        self.variance = list(p.variance) or [0.1]
        if (p.HasField('img_h') or p.HasField('img_w')) and p.HasField('img_size'):
            raise self.error('Either img_size or img_h/img_w should be specified; not both.')
        if p.HasField('img_h') or p.HasField('img_w'):
            self.img = (p.img_h, p.img_w)
            if p.img_h <= 0 or p.img_w <= 0:
                raise self.error('img_h and img_w should be larger than 0.')
        else:
            self.img = (p.img_size, p.img_size)
        if (p.HasField('step_h') or p.HasField('step_w')) and p.HasField('step'):
            raise self.error('Either step or step_h/step_w should be specified; not both.')
        if p.HasField('step_h') or p.HasField('step_w'):
            self.step = (p.step_h, p.step_w)
            if p.step_h <= 0 or p.step_w <= 0:
                raise self.error('step_h and step_w should be larger than 0.')
        else:
            self.step = (p.step, p.step)
        self.offset = np.float32(p.offset)
        self.clip = p.clip

    def reshape(self, bottom, top):
        height, width = bottom[0].legacy_dim(2), bottom[0].legacy_dim(3)
        top[0].reshape((1, 2, height * width * len(self.box_sizes) * 4))

    def forward(self, bottom, top):
        f32 = np.float32
        height, width = bottom[0].legacy_dim(2), bottom[0].legacy_dim(3)
        img_h, img_w = self.img
        if not img_h or not img_w:
            img_h, img_w = bottom[1].legacy_dim(2), bottom[1].legacy_dim(3)
        step_h, step_w = (f32(s) for s in self.step)
        if not step_h or not step_w:
            step_h, step_w = f32(img_h) / f32(height), f32(img_w) / f32(width)
        cy = (np.arange(height, dtype=f32) + self.offset) * step_h
        cx = (np.arange(width, dtype=f32) + self.offset) * step_w
        half_w = self.box_sizes[:, 0].astype(np.float64) / 2
        half_h = self.box_sizes[:, 1].astype(np.float64) / 2
        cx = cx.astype(np.float64)[None, :, None]                   # (1, W, 1)
        cy = cy.astype(np.float64)[:, None, None]                   # (H, 1, 1)
        boxes = np.empty((height, width, len(self.box_sizes), 4), np.float64)
        boxes[..., 0] = (cx - half_w) / img_w
        boxes[..., 1] = (cy - half_h) / img_h
        boxes[..., 2] = (cx + half_w) / img_w
        boxes[..., 3] = (cy + half_h) / img_h
        out = _host(top[0]).data
        coords = out[0, 0]
        coords[...] = boxes.reshape(-1)
        if self.clip:
            np.clip(coords, 0, 1, out=coords)
        out[0, 1].reshape(-1, 4)[...] = np.asarray(self.variance, self.dtype)

    def allow_force_backward(self, bottom_index):
        return False


@register('Permute')
class PermuteLayer(Layer):
    """Reorders the axes: the named ones first, the others after them in their order. The
    identity order shares the bottom's memory."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        axes = bottom[0].num_axes
        order = list(self.layer_param.permute_param.order)
        for o in order:
            if o >= axes:
                raise self.error('order %d should be less than the input dimension %d.' % (o, axes))
        if len(set(order)) != len(order):
            raise self.error('there are duplicate orders: %s' % order)
        self.order = tuple(order + [i for i in range(axes) if i not in order])
        self.inverse = tuple(np.argsort(self.order))
        self.identity = self.order == tuple(range(axes))

    def reshape(self, bottom, top):
        if bottom[0].num_axes != len(self.order):
            raise self.error('bottom has %d axes, the layer was set up with %d'
                             % (bottom[0].num_axes, len(self.order)))
        top[0].reshape(tuple(bottom[0].shape[i] for i in self.order))
        if self.identity:
            top[0].share_data(bottom[0])
            top[0].share_diff(bottom[0])

    def forward(self, bottom, top):
        if not self.identity:
            top[0].data[...] = bottom[0].data.transpose(self.order)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and not self.identity:
            bottom[0].diff[...] = top[0].diff.transpose(self.inverse)


@register('Normalize')
class NormalizeLayer(Layer):
    """x / sqrt(sum x^2 + eps) times a learned scale (one, or one per channel); the sum runs
    over each whole item (across_spatial) or over the channels at each position."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.error('Number of axes of bottom blob must be >=2.')
        p = self.layer_param.norm_param
        self.across_spatial = p.across_spatial
        self.channel_shared = p.channel_shared
        self.eps = self.dtype.type(p.eps)
        channels = bottom[0].shape[1]
        if not self.blobs:
            self.blobs = [self.make_blob(() if self.channel_shared else (channels,))]
            filler = p.scale_filler if p.HasField('scale_filler') else \
                caffe_pb2.FillerParameter(type='constant', value=1.0)
            fillers.fill(self.blobs[0], filler)
        expected = 1 if self.channel_shared else channels
        if self.blobs[0].count != expected:
            raise self.error('Scale size is inconsistent with prototxt config (%d values, expected %d)'
                             % (self.blobs[0].count, expected))

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.error('Number of axes of bottom blob must be >=2.')
        top[0].reshape(bottom[0].shape)
        num, channels = bottom[0].shape[:2]
        self.shape3 = (num, channels, bottom[0].count // max(num * channels, 1))

    def _scale(self, xp):
        s = self.blobs[0].data.reshape(-1)
        return s[0] if self.channel_shared else s[None, :, None]

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].data.reshape(self.shape3)
        axes = (1, 2) if self.across_spatial else (1,)
        self.norm = xp.sqrt((x * x).sum(axis=axes, keepdims=True) + self.eps)
        self.unit = x / self.norm                     # kept: the top may be changed in place later
        top[0].data.reshape(self.shape3)[...] = self.unit * self._scale(xp)

    def backward(self, top, propagate_down, bottom):
        xp = top[0].xp
        dy = top[0].diff.reshape(self.shape3)
        if self.param_needs_backward(0):
            grad = self.blobs[0].diff.reshape(-1)
            product = self.unit * dy
            grad += product.sum() if self.channel_shared else product.sum(axis=(0, 2))
        if propagate_down[0]:
            axes = (1, 2) if self.across_spatial else (1,)
            along = (self.unit * dy).sum(axis=axes, keepdims=True)
            dx = (dy - self.unit * along) / self.norm * self._scale(xp)
            bottom[0].diff.reshape(self.shape3)[...] = dx


def _prior_boxes(blob, num_priors):
    """(boxes, variances), each (num_priors, 4), from a PriorBox top (1, 2, num_priors * 4)."""
    data = _host(blob).data.reshape(-1)
    return (data[:num_priors * 4].reshape(num_priors, 4),
            data[num_priors * 4:num_priors * 8].reshape(num_priors, 4))


def _num_priors(layer, loc, conf, priors, loc_classes, num_classes):
    """Priors of bottom[2] (its height / 4), checked against the loc and conf bottoms."""
    num_priors = priors.legacy_dim(2) // 4
    if num_priors * loc_classes * 4 != loc.count_range(1):
        raise layer.error('Number of priors must match number of location predictions '
                          '(%d priors x %d x 4 != %d)' % (num_priors, loc_classes, loc.count_range(1)))
    if num_priors * num_classes != conf.count_range(1):
        raise layer.error('Number of priors must match number of confidence predictions '
                          '(%d priors x %d classes != %d)' % (num_priors, num_classes, conf.count_range(1)))
    if loc.shape[0] != conf.shape[0]:
        raise layer.error('loc and conf have different numbers of items (%d vs %d)'
                          % (loc.shape[0], conf.shape[0]))
    return num_priors


@register('DetectionOutput')
class DetectionOutputLayer(Layer):
    """Decodes loc (N, priors * loc classes * 4) against the priors, keeps per class the boxes
    that survive NMS among those scoring above confidence_threshold in conf (N, priors *
    classes), then the keep_top_k best per image. Top (1, 1, kept, 7): image, label, score,
    xmin, ymin, xmax, ymax; one row (i, -1, ...) per image when nothing is kept. save_output_param
    writes the detections to files (caffe_py/detection_save.py); visualize draws them on the
    images of an optional fourth bottom, the data (caffe_py/detection_visualize.py)."""
    min_bottom = 3
    max_bottom = 4
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.detection_output_param
        if not p.HasField('num_classes'):
            raise self.error('Must specify num_classes')
        self.num_classes = p.num_classes
        self.share_location = p.share_location
        self.loc_classes = 1 if p.share_location else p.num_classes
        self.background = p.background_label_id
        self.code_type = p.code_type
        self.variance_in_target = p.variance_encoded_in_target
        self.keep_top_k = p.keep_top_k
        self.confidence_threshold = np.float32(p.confidence_threshold) \
            if p.HasField('confidence_threshold') else -np.float32(np.finfo(np.float32).max)
        nms = p.nms_param
        self.nms_threshold = nms.nms_threshold
        self.eta = nms.eta
        if self.nms_threshold < 0:
            raise self.error('nms_threshold must be non negative.')
        if not 0 < self.eta <= 1:
            raise self.error('nms_param.eta must be in (0, 1], got %g' % self.eta)
        self.top_k = nms.top_k if nms.HasField('top_k') else -1
        self.saver, display_names = detection_save.make_saver(
            self.error, p.save_output_param, self.background, self.num_classes)
        self.visualizer = None
        if p.visualize:
            if len(bottom) < 4:
                raise self.error('visualize needs the data blob as a fourth bottom')
            self.visualizer = detection_visualize.Visualizer(
                self.error, p, self.layer_param.transform_param, self.phase, display_names, self.num_classes)

    def reshape(self, bottom, top):
        self.num_priors = _num_priors(self, bottom[0], bottom[1], bottom[2], self.loc_classes,
                                      self.num_classes)
        top[0].reshape((1, 1, 1, 7))

    def forward(self, bottom, top):
        num = bottom[0].shape[0]
        loc = _host(bottom[0]).data.reshape(num, self.num_priors, self.loc_classes, 4)
        conf = _host(bottom[1]).data.reshape(num, self.num_priors, self.num_classes)
        priors, variances = _prior_boxes(bottom[2], self.num_priors)
        boxes = bbox.decode(priors, variances, loc.transpose(0, 2, 1, 3), self.code_type,
                            self.variance_in_target)                     # (N, loc classes, P, 4)
        rows = []
        for i in range(num):
            found = []                                                   # (label, kept indices)
            for c in range(self.num_classes):
                if c == self.background:
                    continue
                loc_class = 0 if self.share_location else c
                kept = bbox.nms(boxes[i, loc_class], conf[i, :, c], self.confidence_threshold,
                                self.nms_threshold, self.eta, self.top_k)
                found.append((c, kept))
            total = sum(len(k) for _, k in found)
            if -1 < self.keep_top_k < total:
                labels = np.concatenate([np.full(len(k), c) for c, k in found])
                index = np.concatenate([k for _, k in found])
                scores = conf[i, index, labels]
                best = np.argsort(-scores, kind='stable')[:self.keep_top_k]
                found = [(c, index[best][labels[best] == c]) for c, _ in found]
            for c, kept in found:
                if len(kept):
                    block = np.empty((len(kept), 7), np.float64)
                    block[:, 0] = i
                    block[:, 1] = c
                    block[:, 2] = conf[i, kept, c]
                    block[:, 3:] = boxes[i, 0 if self.share_location else c, kept]
                    rows.append(block)
        if rows:
            result = np.concatenate(rows)
        else:
            result = np.full((num, 7), -1.0)
            result[:, 0] = np.arange(num)
        top[0].reshape((1, 1, len(result), 7))
        _host(top[0]).data[0, 0] = result
        result = _host(top[0]).data[0, 0]                                # in the top's precision
        if self.saver is not None:
            self.saver.add(result, num)
        if self.visualizer is not None:
            self.visualizer(_host(bottom[3]).data, result)

    def close(self):
        """Finish the visualize video, if any."""
        if self.visualizer is not None:
            self.visualizer.close()

    def allow_force_backward(self, bottom_index):
        return False


def _ground_truth(layer, gt, background, use_difficult, num_classes):
    """{item: (boxes (G, 4), labels (G,), difficult (G,))} from label rows (item, label, instance,
    xmin, ymin, xmax, ymax, difficult); rows of item -1 are padding."""
    rows = gt.reshape(-1, 8)
    rows = rows[rows[:, 0].astype(np.int64) != -1]
    labels = rows[:, 1].astype(np.int64)
    if (labels == background).any():
        raise layer.error('Found background label %d in the dataset.' % background)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise layer.error('ground truth label %d is outside [0, num_classes = %d)'
                          % (labels.min() if labels.min() < 0 else labels.max(), num_classes))
    difficult = rows[:, 7].astype(bool)
    if not use_difficult:
        rows, labels, difficult = rows[~difficult], labels[~difficult], difficult[~difficult]
    items = rows[:, 0].astype(np.int64)
    return {int(item): (rows[items == item, 3:7], labels[items == item], difficult[items == item])
            for item in np.unique(items)}


def _smooth_l1(diff):
    """Per-element smooth L1 loss and its derivative (SmoothL1Loss, sigma 1)."""
    small = np.abs(diff) < 1
    return np.where(small, 0.5 * diff * diff, np.abs(diff) - 0.5), np.where(small, diff, np.sign(diff))


@register('MultiBoxLoss')
class MultiBoxLossLayer(Layer):
    """SSD's training loss. Bottoms: loc (N, priors * loc classes * 4), conf (N, priors *
    classes), priors (1, 2, priors * 4), ground truth (1, 1, G, 8). Priors (or decoded
    predictions) are matched to the ground truth; matched ones learn their class and box,
    mined negatives the background. Loss: loc_weight * localization + confidence, each divided
    by the normalizer (VALID: the number of matches)."""
    exact_num_bottom = 4
    exact_num_top = 1
    auto_top_blobs = True
    default_loss_weight = 1.0

    def setup(self, bottom, top):
        p = self.layer_param.multibox_loss_param
        if not p.HasField('num_classes'):
            raise self.error('Must provide num_classes.')
        if p.num_classes < 1:
            raise self.error('num_classes should not be less than 1.')
        self.p = p
        self.num_classes = p.num_classes
        self.loc_classes = 1 if p.share_location else p.num_classes
        self.background = p.background_label_id
        self.mining = p.mining_type != _MB.NONE
        if p.HasField('do_neg_mining') and p.do_neg_mining != self.mining:
            raise self.error('do_neg_mining (deprecated) disagrees with mining_type %s'
                             % _MB.MiningType.Name(p.mining_type))
        if self.mining and not p.share_location:
            raise self.error('Currently only support negative mining if share_location is true.')
        if p.conf_loss_type == _MB.SOFTMAX and not 0 <= self.background < self.num_classes:
            raise self.error('background_label_id should be within [0, num_classes) for Softmax.')
        if p.map_object_to_agnostic and self.num_classes != (2 if self.background >= 0 else 1):
            raise self.error('map_object_to_agnostic needs num_classes 2 (1 without background)')
        self.normalization = normalization_mode(self.layer_param.loss_param)
        given = list(self.layer_param.propagate_down)
        self.use_loc, self.use_conf = (given[0], given[1]) if given else (True, True)

    def set_loss_weights(self, top):
        if not self.layer_param.loss_weight:
            self.layer_param.loss_weight.append(self.default_loss_weight)
        super().set_loss_weights(top)

    def allow_force_backward(self, bottom_index):
        return bottom_index < 2

    def reshape(self, bottom, top):
        self.num_priors = _num_priors(self, bottom[0], bottom[1], bottom[2], self.loc_classes,
                                      self.num_classes)
        top[0].reshape(())

    # -- matching and mining ------------------------------------------------
    def _match(self, loc, priors, variances, gt):
        """Per item: {label: (matched ground truth index per prior, overlap per prior)}."""
        p = self.p
        bipartite = p.match_type == _MB.BIPARTITE
        matches = []
        for i in range(loc.shape[0]):
            if i not in gt:
                matches.append({})
                continue
            boxes, labels, _ = gt[i]
            found = {}
            if p.use_prior_for_matching:
                index, overlap = bbox.match(boxes, priors, bipartite, p.overlap_threshold,
                                            p.ignore_cross_boundary_bbox)
                if p.share_location:
                    found[-1] = (index, overlap)
                else:
                    for c in range(self.loc_classes):
                        if c != self.background:
                            own = (index > -1) & (labels[np.maximum(index, 0)] == c)
                            found[c] = (np.where(own, index, -1), overlap)
            else:
                for c in range(self.loc_classes):
                    label = -1 if p.share_location else c
                    if not p.share_location and c == self.background:
                        continue
                    preds = bbox.decode(priors, variances, loc[i, :, c], p.code_type,
                                        p.encode_variance_in_target)
                    subset = np.arange(len(labels)) if label == -1 else np.flatnonzero(labels == label)
                    index, overlap = bbox.match(boxes[subset], preds, bipartite, p.overlap_threshold,
                                                p.ignore_cross_boundary_bbox)
                    if len(subset):
                        index = np.where(index > -1, subset[np.maximum(index, 0)], index)
                    found[label] = (index, overlap)
            matches.append(found)
        return matches

    def _encode_loc(self, loc, priors, variances, gt, matches):
        """(predictions, targets, (item, prior, loc column) per row) for every matched prior, in
        the fork's order: item, label, prior (EncodeLocPrediction)."""
        p = self.p
        preds, targets, where = [], [], []
        for i, found in enumerate(matches):
            for label in sorted(found):
                index = found[label][0]
                js = np.flatnonzero(index > -1)
                if not len(js):
                    continue
                column = 0 if p.share_location else label
                target = bbox.encode(priors[js], variances[js], gt[i][0][index[js]], p.code_type,
                                     p.encode_variance_in_target)
                pred = loc[i, js, column].copy()
                if p.bp_inside:
                    ref = priors[js] if p.use_prior_for_matching else bbox.decode(
                        priors[js], variances[js], pred, p.code_type, p.encode_variance_in_target)
                    outside = (ref < 0) | (ref > 1)
                    pred[outside] = target[outside]
                if p.encode_variance_in_target:
                    pred, target = pred / variances[js], target / variances[js]
                preds.append(pred)
                targets.append(target)
                where.append(np.stack([np.full(len(js), i), js, np.full(len(js), column)], axis=1))
        if not preds:
            return np.zeros((0, 4), loc.dtype), np.zeros((0, 4), loc.dtype), np.zeros((0, 3), np.int64)
        return np.concatenate(preds), np.concatenate(targets), np.concatenate(where)

    def _prior_labels(self, gt, matches, num):
        """(N, P) the class each prior is trained to: its matched ground truth's, or background."""
        labels = np.full((num, self.num_priors), self.background, np.int64)
        for i, found in enumerate(matches):
            if not found:
                continue
            first = np.full(self.num_priors, -1, np.int64)
            for label in sorted(found, reverse=True):      # the lowest label's match wins
                index = found[label][0]
                first = np.where(index > -1, index, first)
            hit = first > -1
            labels[i, hit] = gt[i][1][first[hit]]
        return labels

    def _conf_losses(self, conf, labels):
        """Per-prior confidence loss against `labels` (ComputeConfLoss), (N, P)."""
        x = conf
        if self.p.conf_loss_type == _MB.SOFTMAX:
            shifted = x - x.max(axis=2, keepdims=True)
            e = np.exp(shifted)
            prob = np.take_along_axis(e, labels[..., None], 2)[..., 0] / e.sum(axis=2)
            return -np.log(np.maximum(prob, x.dtype.type(FLT_MIN)))
        target = np.arange(self.num_classes) == labels[..., None]
        return _logistic(x, target)[0].sum(axis=2)

    def _mine(self, loc, conf, priors, variances, gt, matches):
        """Picks negatives (MAX_NEGATIVE) or hard examples (HARD_EXAMPLE) per item; drops the
        positives HARD_EXAMPLE does not pick. Returns the negative prior indices per item."""
        p = self.p
        num = loc.shape[0]
        losses = self._conf_losses(conf, self._prior_labels(gt, matches, num))
        if p.mining_type == _MB.HARD_EXAMPLE:
            pred, target, where = self._encode_loc(loc, priors, variances, gt, matches)
            diff = pred - target
            per = _smooth_l1(diff)[0] if p.loc_loss_type == _MB.SMOOTH_L1 else 0.5 * diff * diff
            loc_loss = np.zeros((num, self.num_priors), losses.dtype)
            loc_loss[where[:, 0], where[:, 1]] = per.sum(axis=1)
            losses = losses + loc_loss
        losses = losses.astype(np.float32)
        nms = p.HasField('nms_param') and p.nms_param.nms_threshold > 0
        negatives = []
        for i, found in enumerate(matches):
            neg = []
            for label in sorted(found):
                index, overlap = found[label]
                if p.mining_type == _MB.MAX_NEGATIVE:
                    eligible = np.flatnonzero((index == -1) & (overlap < np.float32(p.neg_overlap)))
                    count = min(int(np.sum(index > -1) * np.float32(p.neg_pos_ratio)), len(eligible))
                else:
                    eligible = np.arange(self.num_priors)
                    if p.sample_size <= 0:
                        raise self.error('sample_size must be positive for HARD_EXAMPLE mining')
                    count = min(p.sample_size, len(eligible))
                if nms:
                    boxes = priors if p.use_prior_for_nms else bbox.decode(
                        priors, variances, loc[i, :, 0], p.code_type, p.encode_variance_in_target)
                    order = _nms_by_loss(boxes[eligible], losses[i, eligible], p.nms_param.nms_threshold,
                                         p.nms_param.top_k if p.nms_param.HasField('top_k') else -1)
                else:
                    order = np.argsort(-losses[i, eligible], kind='stable')
                chosen = np.zeros(self.num_priors, bool)
                chosen[eligible[order[:count]]] = True
                if p.mining_type == _MB.HARD_EXAMPLE:
                    index[(index > -1) & ~chosen] = -1
                neg.append(np.flatnonzero((index == -1) & chosen))
            negatives.append(np.concatenate(neg) if neg else np.zeros(0, np.int64))
        return negatives

    # -- forward and backward ---------------------------------------------
    def forward(self, bottom, top):
        p = self.p
        num = bottom[0].shape[0]
        loc = _host(bottom[0]).data.reshape(num, self.num_priors, self.loc_classes, 4)
        conf = _host(bottom[1]).data.reshape(num, self.num_priors, self.num_classes)
        priors, variances = _prior_boxes(bottom[2], self.num_priors)
        gt = _ground_truth(self, _host(bottom[3]).data, self.background, p.use_difficult_gt, self.num_classes)
        matches = self._match(loc, priors, variances, gt)
        negatives = self._mine(loc, conf, priors, variances, gt, matches) if self.mining else None
        pred, target, self.loc_where = self._encode_loc(loc, priors, variances, gt, matches)
        num_matches = len(pred)
        diff = pred - target
        if p.loc_loss_type == _MB.SMOOTH_L1:
            per, self.loc_grad = _smooth_l1(diff)
        else:
            per, self.loc_grad = 0.5 * diff * diff, diff
        loc_loss = per.sum()

        labels = self._prior_labels(gt, matches, num)
        if p.map_object_to_agnostic:
            labels = np.where(labels != self.background, self.background + 1, labels)
        if self.mining:                      # rows: each item's positives, then its negatives
            items, priors_at, rows = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
            for i, found in enumerate(matches):
                if i not in gt:
                    continue
                for label in sorted(found):
                    js = np.flatnonzero(found[label][0] > -1)
                    items.append(np.full(len(js), i))
                    priors_at.append(js)
                    rows.append(labels[i, js])
                items.append(np.full(len(negatives[i]), i))
                priors_at.append(negatives[i])
                rows.append(np.full(len(negatives[i]), self.background))
            self.conf_where = (np.concatenate(items).astype(np.int64), np.concatenate(priors_at).astype(np.int64))
            conf_labels = np.concatenate(rows).astype(np.int64)
        else:
            self.conf_where = np.nonzero(np.ones((num, self.num_priors), bool))
            conf_labels = labels.reshape(-1)
        x = conf[self.conf_where]                                        # (rows, classes)
        if p.conf_loss_type == _MB.SOFTMAX:
            e = np.exp(x - x.max(axis=1, keepdims=True))
            prob = e / e.sum(axis=1, keepdims=True)
            picked = prob[np.arange(len(x)), conf_labels]
            conf_loss = -np.log(np.maximum(picked, x.dtype.type(FLT_MIN))).sum()
            prob[np.arange(len(x)), conf_labels] -= 1
            self.conf_grad = prob
        else:
            target = np.arange(self.num_classes) == conf_labels[:, None]
            if not self.mining:                 # unmatched priors: all-zero targets, as the fork
                target &= conf_labels[:, None] != self.background
            losses, self.conf_grad = _logistic(x, target)
            conf_loss = losses.sum()
        self.normalizer = float(max(1, {_NORM.FULL: num * self.num_priors,
                                        _NORM.VALID: num_matches,
                                        _NORM.BATCH_SIZE: num,
                                        _NORM.NONE: 1}[self.normalization]))
        total = 0.0
        if self.use_loc:
            total += p.loc_weight * float(loc_loss) / self.normalizer
        if self.use_conf:
            total += float(conf_loss) / self.normalizer
        _host(top[0]).data[...] = total

    def backward(self, top, propagate_down, bottom):
        if len(propagate_down) > 3 and (propagate_down[2] or propagate_down[3]):
            raise self.error('Layer cannot backpropagate to prior or label inputs.')
        weight = float(_host(top[0]).diff.reshape(-1)[0]) / self.normalizer
        if propagate_down[0]:
            diff = _host(bottom[0]).diff
            num = diff.shape[0]
            view = diff.reshape(num, self.num_priors, self.loc_classes, 4)
            view[...] = 0
            w = self.loc_where
            view[w[:, 0], w[:, 1], w[:, 2]] = self.loc_grad * (self.p.loc_weight * weight)
        if propagate_down[1]:
            diff = _host(bottom[1]).diff
            num = diff.shape[0]
            view = diff.reshape(num, self.num_priors, self.num_classes)
            view[...] = 0
            view[self.conf_where] = self.conf_grad * weight


def _logistic(x, target):
    """Sigmoid cross-entropy per element (the stable form of SigmoidCrossEntropyLoss) and its
    derivative sigmoid(x) - target."""
    positive = (x >= 0).astype(x.dtype)
    target = target.astype(x.dtype)
    loss = -(x * (target - positive) - np.log1p(np.exp(x - 2 * x * positive)))
    return loss, 1 / (1 + np.exp(-x)) - target


def _nms_by_loss(boxes, losses, threshold, top_k):
    """Positions into `boxes` picked by ApplyNMS on the losses: highest first, boxes smaller than
    1e-5 skipped, at most top_k."""
    order = np.argsort(-losses, kind='stable')
    if top_k > -1:
        order = order[:top_k]
    alive = bbox.area(boxes[order]) >= 1e-5
    picked = []
    for k in range(len(order)):
        if not alive[k]:
            continue
        picked.append(order[k])
        if -1 < top_k <= len(picked):
            break
        alive[k + 1:] &= bbox.iou(boxes[order[k]], boxes[order[k + 1:]]) <= np.float32(threshold)
    return np.asarray(picked, np.int64)


@register('DetectionEvaluate')
class DetectionEvaluateLayer(Layer):
    """Scores detections (1, 1, D, 7) against ground truth (1, 1, G, 8) for mAP: top (1, 1,
    classes + detections, 5) with a row (-1, class, number of positives, -1, -1) per class, then
    (item, label, score, true positive, false positive) per detection."""
    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.detection_evaluate_param
        if not p.HasField('num_classes'):
            raise self.error('Must provide num_classes.')
        self.p = p
        self.sizes = []
        if p.HasField('name_size_file'):
            self.sizes = detection_save.read_name_sizes(p.name_size_file, self.error,
                                                        'detection_evaluate_param.name_size_file')[1]
        self.resize = p.resize_param if p.HasField('resize_param') else None
        self.count = 0

    def reshape(self, bottom, top):
        if bottom[0].shape[:2] != (1, 1) or bottom[0].shape[-1] != 7:
            raise self.error('detections must be (1, 1, D, 7), got %s' % bottom[0].shape_string())
        if bottom[1].shape[:2] != (1, 1) or bottom[1].shape[-1] != 8:
            raise self.error('ground truth must be (1, 1, G, 8), got %s' % bottom[1].shape_string())
        positive = self.p.num_classes - (0 if self.p.background_label_id == -1 else 1)
        det = _host(bottom[0]).data.reshape(-1, 7)
        top[0].reshape((1, 1, positive + int(np.sum(det[:, 1] != -1)), 5))

    def _pixels(self, boxes):
        """The boxes in pixels of the current item's original size, through resize_param (OutputBBox)."""
        height, width = self.sizes[self.count]
        return detection_save.output_boxes(boxes, height, width, self.resize)

    def forward(self, bottom, top):
        p = self.p
        det = _host(bottom[0]).data.reshape(-1, 7)
        det = det[det[:, 0].astype(np.int64) != -1]
        if (det[:, 1].astype(np.int64) == p.background_label_id).any():
            raise self.error('Found background label in the detection results.')
        rows_gt = _host(bottom[1]).data.reshape(-1, 8)
        stop = np.flatnonzero(rows_gt[:, 0].astype(np.int64) == -1)
        rows_gt = rows_gt[:stop[0] if len(stop) else len(rows_gt)]
        gt = _ground_truth(self, rows_gt.copy(), p.background_label_id, True, p.num_classes)
        out = []
        positives = {}
        for boxes, labels, difficult in gt.values():
            counted = labels if p.evaluate_difficult_gt else labels[~difficult]
            for c in counted:
                positives[int(c)] = positives.get(int(c), 0) + 1
        for c in range(p.num_classes):
            if c != p.background_label_id:
                out.append([-1, c, positives.get(c, 0), -1, -1])
        items = det[:, 0].astype(np.int64)
        for item in np.unique(items):
            mine = det[items == item]
            labels = mine[:, 1].astype(np.int64)
            for label in np.unique(labels):
                if label == -1:
                    continue
                found = mine[labels == label]
                tp = np.zeros(len(found))
                if item in gt and (gt[item][1] == label).any():
                    found = found[np.argsort(-found[:, 2], kind='stable')]
                    g_boxes, g_labels, g_diff = gt[item]
                    truth, hard = g_boxes[g_labels == label], g_diff[g_labels == label]
                    boxes = found[:, 3:7].astype(np.float32)
                    if len(self.sizes):
                        truth, boxes = self._pixels(truth.astype(np.float32)), self._pixels(boxes)
                        overlaps = _pixel_iou(boxes, truth)
                    else:
                        overlaps = bbox.iou(boxes, truth.astype(np.float32))
                    visited = np.zeros(len(truth), bool)
                    for k in range(len(found)):
                        j = int(np.argmax(overlaps[k]))
                        if overlaps[k, j] >= np.float32(p.overlap_threshold):
                            if p.evaluate_difficult_gt or not hard[j]:
                                tp[k] = 1 if not visited[j] else 0
                                visited[j] = True
                            else:
                                tp[k] = -1                     # ignored: neither true nor false
                block = np.zeros((len(found), 5))
                block[:, 0] = item
                block[:, 1] = label
                block[:, 2] = found[:, 2]
                block[:, 3] = tp == 1
                block[:, 4] = tp == 0
                out.extend(block.tolist())
            if len(self.sizes):
                self.count = (self.count + 1) % len(self.sizes)
        top[0].reshape((1, 1, len(out), 5))
        _host(top[0]).data[0, 0] = np.asarray(out, np.float64).reshape(-1, 5)

    def allow_force_backward(self, bottom_index):
        return False


def _pixel_iou(a, b):
    """Jaccard overlap of pixel boxes, sides counted inclusively (+1), as the fork's
    JaccardOverlap(normalized=false)."""
    one = np.float32(1)
    w = np.minimum(a[:, None, 2], b[:, 2]) - np.maximum(a[:, None, 0], b[:, 0]) + one
    h = np.minimum(a[:, None, 3], b[:, 3]) - np.maximum(a[:, None, 1], b[:, 1]) + one
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    inter = w * h
    return np.where((w > 0) & (h > 0), inter / (area_a[:, None] + area_b - inter), 0)
