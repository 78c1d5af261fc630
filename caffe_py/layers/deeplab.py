"""DeepLab v2's layers (deeplab-public-ver2): SegAccuracy, UniqueLabel, SpatialProduct,
BiasChannel, AdaptiveBiasChannel and WeightedSoftmaxWithLoss. Its MatRead/MatWrite are in
mat_io.py, DomainTransform in domain_transform.py, ImageSegData in image_seg_data.py and Interp
in segmentation.py."""
import numpy as np

from .. import backend
from .. import rng as caffe_rng
from ..layer import Layer, register
from .loss import FLT_MIN, _Labels, _SoftmaxLoss, normalization_mode


def _int_labels(layer, blob, ignore, classes):
    """Labels as C's int cast (toward zero) and the mask of those counted: labels in `ignore`
    are not; any other outside [0, classes) fails, as the fork's LOG(FATAL)."""
    xp = blob.xp
    label = blob.data.astype(np.int64)
    valid = ~xp.isin(label, xp.asarray(sorted(ignore), np.int64)) if ignore else xp.ones(label.shape, bool)
    bad = valid & ((label < 0) | (label >= classes))
    if bool(bad.any()):
        where = tuple(int(i) for i in np.argwhere(backend.to_numpy(bad))[0])
        raise layer.error('Unexpected label %d at %s (labels must be in [0, %d) or ignored)'
                          % (int(label[where]), where, classes))
    return label, valid


@register('SegAccuracy')
class SegAccuracyLayer(Layer):
    """Pixel labelling scores: each pixel's prediction is its highest-scoring class (ties go to
    the higher class index, as the fork's sort of (score, class) pairs), counted against its
    label in a C x C confusion matrix; labels in seg_accuracy_param.ignore_label are skipped.
    Top (1, 1, 1, 3): overall pixel accuracy, mean recall over the classes that have labels, and
    mean intersection over union over all C classes (a class with neither labels nor predictions
    counts 1). With reset false the matrix accumulates over every forward, as the fork's."""
    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.seg_accuracy_param
        self.ignore = set(param.ignore_label)
        self.matrix = np.zeros((bottom[0].shape[1],) * 2, np.int64)

    def reshape(self, bottom, top):
        scores, label = bottom
        if scores.num_axes != 4 or label.num_axes != 4:
            raise self.error('bottoms must be (N, C, H, W) scores and (N, 1, H, W) labels, got %s and %s'
                             % (scores.shape_string(), label.shape_string()))
        if label.shape[0] != scores.shape[0] or label.shape[1] != 1 or label.shape[2:] != scores.shape[2:]:
            raise self.error('the label %s must be (N, 1, H, W) of the scores %s'
                             % (label.shape_string(), scores.shape_string()))
        if scores.shape[1] != self.matrix.shape[0]:
            raise self.error('the scores have %d channels, the confusion matrix was set up for %d'
                             % (scores.shape[1], self.matrix.shape[0]))
        top[0].reshape((1, 1, 1, 3))

    def forward(self, bottom, top):
        xp = bottom[0].xp
        classes = bottom[0].shape[1]
        if self.layer_param.seg_accuracy_param.reset:
            self.matrix[...] = 0
        label, valid = _int_labels(self, bottom[1], self.ignore, classes)
        label, valid = label[:, 0], valid[:, 0]
        predicted = classes - 1 - xp.argmax(bottom[0].data[:, ::-1], axis=1)
        pairs = label[valid] * classes + predicted[valid]
        self.matrix += backend.to_numpy(xp.bincount(pairs, minlength=classes * classes)).reshape(classes, classes)
        top[0].data[...] = xp.asarray(np.array(self.scores(self.matrix), self.dtype).reshape(1, 1, 1, 3))

    @staticmethod
    def scores(matrix):
        """(accuracy, mean class recall, mean IoU) of a confusion matrix (rows: labels), as the
        fork's ConfusionMatrix accuracy(), avgRecall(false) and avgJaccard()."""
        matrix = matrix.astype(np.float64)
        diag, rows, cols = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
        total = matrix.sum()
        accuracy = diag.sum() / total if total else 0.0
        present = rows > 0
        recall = (diag[present] / rows[present]).mean() if present.any() else 0.0
        union = rows + cols - diag
        iou = np.where(union == diag, 1.0, diag / np.where(union > 0, union, 1))
        return accuracy, recall, iou.mean()

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error('SegAccuracy has no backward (the fork: not implemented)')


@register('UniqueLabel')
class UniqueLabelLayer(Layer):
    """Each image's distinct label values (bottom (N, 1, H, W)) but ignore_label, with the
    force_label values added, ascending in the top (N, max_labels, 1, 1), -1 after them."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.unique_label_param
        if not param.HasField('max_labels'):
            raise self.error('unique_label_param.max_labels is required')
        self.ignore = sorted(set(param.ignore_label))
        self.force = sorted(set(param.force_label))
        self.max_labels = param.max_labels
        if self.max_labels <= len(self.force):
            raise self.error('At least one label more than the forced ones needs to fit (max_labels %d, '
                             '%d force_label values)' % (self.max_labels, len(self.force)))

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2 or bottom[0].shape[1] != 1:
            raise self.error('Input must have one channel, got %s' % bottom[0].shape_string())
        top[0].reshape((bottom[0].shape[0], self.max_labels, 1, 1))

    def forward(self, bottom, top):
        xp = bottom[0].xp
        out = top[0].data.reshape(top[0].shape[0], -1)
        out[...] = -1
        ignore = xp.asarray(self.ignore, self.dtype)
        force = xp.asarray(self.force, self.dtype)
        for n, image in enumerate(bottom[0].data.reshape(bottom[0].shape[0], -1)):
            values = xp.unique(xp.concatenate([image[~xp.isin(image, ignore)], force]))
            if values.size > self.max_labels:
                raise self.error('Too many unique elements, increase capacity of UniqueLabelLayer: image %d has '
                                 '%d, max_labels %d' % (n, values.size, self.max_labels))
            out[n, :values.size] = values

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error('Cannot propagate down to label input')

    def allow_force_backward(self, bottom_index):
        return False


@register('SpatialProduct')
class SpatialProductLayer(Layer):
    """Every channel of bottom 0 (N, C, ...) times the one-channel map bottom 1 (N, 1, ...),
    position by position; both bottoms take a gradient."""
    exact_num_bottom = 2
    exact_num_top = 1

    def reshape(self, bottom, top):
        x, m = bottom
        if x.num_axes < 2:
            raise self.error('Number of axes of bottom blob must be >=2, got %s' % x.shape_string())
        if m.shape != (x.shape[0], 1) + x.shape[2:]:
            raise self.error('bottom 1 %s must be (N, 1, ...) of bottom 0 %s: one channel, the same num and '
                             'spatial shape' % (m.shape_string(), x.shape_string()))
        top[0].reshape(x.shape)

    def forward(self, bottom, top):
        bottom[0].xp.multiply(bottom[0].data, bottom[1].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        if propagate_down[0]:
            bottom[0].xp.multiply(dy, bottom[1].data, out=bottom[0].diff)
        if propagate_down[1]:
            bottom[1].diff[...] = (dy * bottom[0].data).sum(axis=1, keepdims=True)


@register('BiasChannel')
class BiasChannelLayer(Layer):
    """Adds biases to the scores (N, C, H, W) of the classes an image holds (bottom 1; -1 and
    ignore_label entries skipped). IMAGE labels (N, L, 1, 1): each listed class's whole channel
    gets bg_bias if it is class 0, fg_bias otherwise (once per listing). PIXEL labels
    (N, 1, H, W): at each pixel the labelled class gets fg_bias, and with a background (either
    background_label or bg_bias given) the background channel gets bg_bias (the labelled class
    only that, when it is the background). No gradient to the labels; scores pass it through."""
    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.bias_channel_param
        self.bg, self.fg = self.dtype.type(param.bg_bias), self.dtype.type(param.fg_bias)
        if self.bg < 0 or self.fg < 0:
            raise self.error('bg_bias and fg_bias must not be negative (got %g, %g)' % (self.bg, self.fg))
        self.ignore = {-1} | set(param.ignore_label)
        self.pixel = param.label_type == param.PIXEL
        self.background = (param.background_label if param.HasField('background_label') or param.HasField('bg_bias')
                           else None)

    def reshape(self, bottom, top):
        scores, label = bottom
        if scores.num_axes != 4 or label.num_axes != 4:
            raise self.error('bottoms must be (N, C, H, W) scores and 4-axis labels, got %s and %s'
                             % (scores.shape_string(), label.shape_string()))
        n, channels, height, width = scores.shape
        want = (n, 1, height, width) if self.pixel else (n, label.shape[1], 1, 1)
        if label.shape != want or label.shape[1] < 1:
            raise self.error('%s labels must be %s for the scores %s, got %s' % (
                'PIXEL' if self.pixel else 'IMAGE', '(N, 1, H, W)' if self.pixel else '(N, L >= 1, 1, 1)',
                scores.shape_string(), label.shape_string()))
        if self.pixel and self.background is not None and not 0 <= self.background < channels:
            raise self.error('background_label %d is not a channel of the scores %s'
                             % (self.background, scores.shape_string()))
        top[0].reshape(scores.shape)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        n, channels = bottom[0].shape[:2]
        label, counted = _int_labels(self, bottom[1], self.ignore, channels)
        label, counted = label.reshape(n, -1), counted.reshape(n, -1)
        classes = xp.arange(channels)
        if self.pixel:                  # (N, C, H*W)
            fg = counted if self.background is None else counted & (label != self.background)
            add = ((label[:, None, :] == classes[None, :, None]) & fg[:, None, :]) * self.fg
            if self.background is not None:
                add[:, self.background] += counted * self.bg
        else:                           # (N, C, 1): each listing of a class adds its bias
            bias = xp.where(label == 0, self.bg, self.fg) * counted
            add = ((label[:, :, None] == classes[None, None, :]) * bias[:, :, None]).sum(axis=1)[:, :, None]
        shape = (n, channels, -1)
        xp.add(bottom[0].data.reshape(shape), add.astype(self.dtype), out=top[0].data.reshape(shape))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error('Cannot propagate down to label input')
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0


@register('AdaptiveBiasChannel')
class AdaptiveBiasChannelLayer(Layer):
    """Adds to the score channels (N, C, H, W) of the classes an image lists (bottom 1,
    (N, L, 1, 1), -1 entries skipped) biases that make each class win at least a portion of
    the pixels (bg_portion for class 0, fg_portion for the others), as the fork's: with
    suppress_others the unlisted classes are first clipped to margin_others below the lowest
    listed score; then num_iter times over the listed classes (background first, the others in
    std::random_shuffle order over glibc's rand(), as HDF5Data's) a class's channel is raised by
    the (portion * H * W)-th smallest gap to the pixelwise maximum, that maximum updated; last,
    all channels shift so that the pixelwise maximum keeps its mean. A portion of 1 takes the
    largest gap (the fork reads one past its buffer). No backward (the fork's leaves the bottom's
    gradient untouched)."""
    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.adaptive_bias_channel_param
        if param.num_iter <= 0:
            raise self.error('adaptive_bias_channel_param.num_iter must be positive (got %d)' % param.num_iter)
        if param.margin_others < 0:
            raise self.error('adaptive_bias_channel_param.margin_others must not be negative')
        for name in ('bg_portion', 'fg_portion'):
            if not 0 <= getattr(param, name) <= 1:
                raise self.error('adaptive_bias_channel_param.%s needs to be in [0, 1] (got %g)'
                                 % (name, getattr(param, name)))
        self.portion = {True: self.dtype.type(param.bg_portion), False: self.dtype.type(param.fg_portion)}
        self.margin = self.dtype.type(param.margin_others)

    def reshape(self, bottom, top):
        scores, label = bottom
        if scores.num_axes != 4 or scores.shape[1] < 2:
            raise self.error('scores must be (N, C > 1, H, W), got %s' % scores.shape_string())
        if label.num_axes != 4 or label.shape[0] != scores.shape[0] or label.shape[2:] != (1, 1) or label.shape[1] < 1:
            raise self.error('labels must be (N, L >= 1, 1, 1) for the scores %s, got %s'
                             % (scores.shape_string(), label.shape_string()))
        top[0].reshape(scores.shape)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        param = self.layer_param.adaptive_bias_channel_param
        n, channels = bottom[0].shape[:2]
        scores = top[0].data.reshape(n, channels, -1)
        scores[...] = bottom[0].data.reshape(n, channels, -1)
        spatial = scores.shape[2]
        label, listed = _int_labels(self, bottom[1], {-1}, channels)
        label, listed = backend.to_numpy(label).reshape(n, -1), backend.to_numpy(listed).reshape(n, -1)
        for i in range(n):
            labels = sorted(label[i][listed[i]].tolist())
            if not labels:
                continue
            y = scores[i]
            present = np.zeros(channels, bool)
            present[labels] = True
            if param.suppress_others:
                lowest = y[xp.asarray(present)].min(axis=0)
                others = y[xp.asarray(~present)]
                y[xp.asarray(~present)] = xp.where(others > lowest, lowest - self.margin, others)
            top_score = y[xp.asarray(labels)].max(axis=0)
            mean0 = float(top_score.astype(np.float64).sum()) / spatial
            first = 1 if labels[0] == 0 else 0
            for _ in range(param.num_iter):
                tail = labels[first:]
                caffe_rng.c_rand().random_shuffle(tail)
                labels[first:] = tail
                for c in labels:
                    nth = min(int(self.portion[c == 0] * self.dtype.type(spatial)), spatial - 1)
                    gap = xp.partition(top_score - y[c], nth)[nth]
                    y[c] += gap
                    xp.maximum(top_score, y[c], out=top_score)
            mean1 = float(top_score.astype(np.float64).sum()) / spatial
            y += self.dtype.type(mean0 - mean1)

    def backward(self, top, propagate_down, bottom):
        pass

    def allow_force_backward(self, bottom_index):
        return False


@register('WeightedSoftmaxWithLoss')
class WeightedSoftmaxWithLossLayer(_SoftmaxLoss):
    """SoftmaxWithLoss whose optional third bottom (as many values as labels) weighs each
    position's term -log(max(p[label], FLT_MIN)) and its gradient; the VALID normalizer is then
    the sum of the counted weights (at least 1, as every normalizer). With two bottoms it is
    SoftmaxWithLoss (the fork's two-bottom branch, which reads a third bottom it lacks)."""
    exact_num_bottom = None
    min_bottom = 2
    max_bottom = 3

    def setup(self, bottom, top):
        self.softmax_axis = self.layer_param.softmax_param.axis
        self.mode = normalization_mode(self.layer_param.loss_param)
        super().setup(bottom, top)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if len(bottom) > 2 and bottom[2].count != self.outer * self.inner:
            raise self.error('the weights %s must hold one value per label (%d, as the label %s)'
                             % (bottom[2].shape_string(), self.outer * self.inner, bottom[1].shape_string()))

    def forward(self, bottom, top):
        xp = bottom[0].xp
        prob = self._prob_blob(top)
        self.softmax.forward([bottom[0]], [prob])
        param = self.layer_param.loss_param
        self.labels = labels = _Labels(self, bottom[1], self.outer, self.inner, self.classes,
                                       param.ignore_label if param.HasField('ignore_label') else None)
        logs = xp.log(xp.maximum(prob.data.reshape(self.shape3())[labels.at], self.dtype.type(FLT_MIN)))
        if len(bottom) > 2:
            self.weights = bottom[2].data.reshape(self.outer, self.inner).copy()
            labels.mask(self.weights)
            logs *= self.weights
            counted = self.weights.sum()
        else:
            self.weights = None
            counted = labels.count
        labels.mask(logs)
        self.norm = self.normalizer(self.mode, self.outer, self.inner, float(counted))
        top[0].data[...] = -logs.sum() / self.norm

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down)
        if not propagate_down[0]:
            return
        dx = bottom[0].diff.reshape(self.shape3())
        dx[...] = self._prob_blob(top).data.reshape(self.shape3())
        dx[self.labels.at] -= 1
        if self.weights is not None:
            dx *= self.weights[:, None, :]
        self.labels.mask(dx)
        dx *= top[0].diff.reshape(()) / self.norm

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0
