"""Loss layers and Accuracy.

Each follows Caffe's *_loss_layer.cpp: the same normalizers, clamps and
label rules (labels are truncated to int as static_cast<int> does). Work is
vectorised over the whole batch: labels become an (outer, inner) index array
that gathers from and scatters into (outer, classes, inner) views.
"""
import numpy as np

from .. import formats, gpu
from ..layer import Layer, create_layer, register
from ..proto import caffe_pb2
from .neuron import scratch

FLT_MIN = float(np.finfo(np.float32).tiny)   # SoftmaxWithLoss's clamp before the log
LOG_THRESHOLD = 1e-20                        # Caffe's kLOG_THRESHOLD (other losses)
_NORM = caffe_pb2.LossParameter


def _legacy(layer, blob, index):
    """Caffe's num()/channels()/height()/width(): blobs of more than 4 axes are refused."""
    try:
        return blob.legacy_dim(index)
    except ValueError as exc:
        raise layer.error(str(exc)) from None


class _Labels:
    """Integer labels of shape (outer, inner): `index` is safe to gather with (ignored
    entries point at class 0), `valid` masks the counted ones (None: all count)."""

    def __init__(self, layer, blob, outer, inner, classes, ignore_label):
        xp = blob.xp
        label = blob.data.reshape(outer, inner).astype(np.int64)  # truncates toward zero
        self.valid = None
        if ignore_label is not None:
            self.valid = label != ignore_label
            label = xp.where(self.valid, label, 0)
        if label.size and (int(label.min()) < 0 or int(label.max()) >= classes):
            raise layer.error('label values must be integers in [0, %d), got %d..%d'
                              % (classes, int(label.min()), int(label.max())))
        self.index = label
        self.count = int(self.valid.sum()) if self.valid is not None else outer * inner
        # advanced index picking [o, label[o, i], i] out of an (outer, classes, inner) array
        self.at = (xp.arange(outer)[:, None], label, xp.arange(inner)[None, :])

    def mask(self, array):
        """Zero the entries of `array` ((outer, inner) or (outer, classes, inner)) that are ignored."""
        if self.valid is not None:
            array *= self.valid if array.ndim == 2 else self.valid[:, None, :]


class LossLayer(Layer):
    """Bottoms (prediction, label, ...), one scalar top weighted 1 unless loss_weight says otherwise."""
    exact_num_bottom = 2
    exact_num_top = 1
    auto_top_blobs = True
    default_loss_weight = 1.0

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def set_loss_weights(self, top):
        # Caffe writes the default weight into the layer's parameter (snapshots carry it)
        if not self.layer_param.loss_weight:
            self.layer_param.loss_weight.append(self.default_loss_weight)
        super().set_loss_weights(top)

    def reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise self.error('The data and label should have the same first dimension '
                             '(%s vs %s).' % (bottom[0].shape_string(), bottom[1].shape_string()))
        top[0].reshape(())

    def refuse_backward(self, propagate_down, index=1, what='label'):
        if len(propagate_down) > index and propagate_down[index]:
            raise self.error('Layer cannot backpropagate to %s inputs.' % what)

    def ignore_label(self):
        param = self.layer_param.loss_param
        return param.ignore_label if param.HasField('ignore_label') else None

    def normalizer(self, mode, outer, inner, valid_count):
        """Caffe's get_normalizer, at least 1, in the layer's dtype (valid_count -1: all valid)."""
        if mode == _NORM.FULL:
            n = outer * inner
        elif mode == _NORM.VALID:
            n = outer * inner if valid_count == -1 else valid_count
        elif mode == _NORM.BATCH_SIZE:
            n = outer
        elif mode == _NORM.NONE:
            n = 1
        else:
            raise self.error('Unknown normalization mode: %s' % mode)
        return max(self.dtype.type(1), self.dtype.type(n))

    def scalar(self, value):
        return self.dtype.type(value)

    def internal_softmax(self, bottom, prob, axis):
        """Caffe's internal Softmax layer (no loss weights) writing into blob `prob`."""
        param = caffe_pb2.LayerParameter()
        param.CopyFrom(self.layer_param)
        param.type = 'Softmax'
        param.softmax_param.axis = axis
        del param.loss_weight[:]
        del param.blobs[:]
        layer = create_layer(param, self.dtype)
        layer.initialize([bottom[0]], [prob])
        return layer


def normalization_mode(param):
    """A LossParameter's normalization mode as Caffe's losses read it: the legacy `normalize` when
    only it is set (true: VALID, false: BATCH_SIZE), else `normalization`."""
    if not param.HasField('normalization') and param.HasField('normalize'):
        return _NORM.VALID if param.normalize else _NORM.BATCH_SIZE
    return param.normalization


class _SoftmaxLoss(LossLayer):
    """Shared by SoftmaxWithLoss and InfogainLoss: softmax over an axis, optional prob top."""
    exact_num_top = None
    min_top = 1
    max_top = 2
    softmax_axis = 1

    def setup(self, bottom, top):
        self.prob = self.make_blob(None)
        self.softmax = self.internal_softmax(bottom, self._prob_blob(top), self.softmax_axis)

    def _prob_blob(self, top):
        # Caffe shares the prob's data with top[1]; writing into top[1] directly is the same
        return top[1] if len(top) > 1 else self.prob

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        axis = self.canonical_axis(bottom[0], self.softmax_axis)
        self.outer = bottom[0].count_range(0, axis)
        self.classes = bottom[0].shape[axis]
        self.inner = bottom[0].count_range(axis + 1)
        if self.outer * self.inner != bottom[1].count:
            raise self.error('Number of labels must match number of predictions; e.g., if the '
                             'axis is 1 and prediction shape is (N, C, H, W), label count (number '
                             'of labels) must be N*H*W, with integer values in {0, 1, ..., C-1}; '
                             'got prediction %s and label %s'
                             % (bottom[0].shape_string(), bottom[1].shape_string()))
        self.softmax.reshape([bottom[0]], [self._prob_blob(top)])

    def shape3(self):
        return self.outer, self.classes, self.inner


@register('SoftmaxWithLoss')
class SoftmaxWithLossLayer(_SoftmaxLoss):
    """-log(max(softmax(x)[label], FLT_MIN)) summed over counted labels / normalizer.
    SegNet's weight_by_label_freqs weighs each term and its gradient by class_weighting[label]
    (the normalizer still counts labels). R-FCN's optional third top holds each label's term,
    shaped as the labels, not normalized, 0 where ignored; as in that fork, no gradient flows
    from it (OHEM ranks regions by it)."""
    max_top = 3

    def setup(self, bottom, top):
        self.softmax_axis = self.layer_param.softmax_param.axis
        param = self.layer_param.loss_param
        self.mode = normalization_mode(param)
        self.class_weights = (np.asarray(param.class_weighting, self.dtype)
                              if param.weight_by_label_freqs else None)
        super().setup(bottom, top)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if self.class_weights is not None and len(self.class_weights) != self.classes:
            raise self.error('Number of class weight values (%d) does not match the number of classes (%d).'
                             % (len(self.class_weights), self.classes))
        if len(top) > 2:
            top[2].reshape(bottom[1].shape)

    def _weights(self, xp):
        """class_weighting[label] per position (outer, inner)."""
        return xp.asarray(self.class_weights)[self.labels.index]

    def forward(self, bottom, top):
        xp = bottom[0].xp
        prob = self._prob_blob(top)
        self.softmax.forward([bottom[0]], [prob])
        if xp is not np and self.class_weights is None:
            self._device_forward(xp, bottom, top, prob)
            return
        p = prob.data.reshape(self.shape3())
        self.labels = labels = _Labels(self, bottom[1], self.outer, self.inner, self.classes,
                                       self.ignore_label())
        logs = xp.log(xp.maximum(p[labels.at], self.scalar(FLT_MIN)))
        if self.class_weights is not None:
            logs *= self._weights(xp)
        labels.mask(logs)
        self.norm = self.normalizer(self.mode, self.outer, self.inner, labels.count)
        top[0].data[...] = -logs.sum() / self.norm
        self._per_instance(top, logs)

    @staticmethod
    def _per_instance(top, logs):
        """R-FCN's top[2]: each label's loss, -log(prob), before normalization."""
        if len(top) > 2:
            top[2].data[...] = -logs.reshape(top[2].shape)

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down)
        if not propagate_down[0]:
            return
        if bottom[0].xp is not np and self.class_weights is None:
            ignore = self.ignore_label()
            gpu.kernel('softmax_loss.cu', 'softmax_loss_backward', self.dtype)(
                bottom[0].count, self._prob_blob(top).data, bottom[1].data, self.classes, self.inner,
                ignore is not None, ignore or 0, top[0].diff, self.norm, bottom[0].diff)
            return
        dx = bottom[0].diff.reshape(self.shape3())
        dx[...] = self._prob_blob(top).data.reshape(self.shape3())
        dx[self.labels.at] -= 1
        if self.class_weights is not None:
            dx *= self._weights(bottom[0].xp)[:, None, :]
        self.labels.mask(dx)
        dx *= top[0].diff.reshape(()) / self.norm

    def _device_forward(self, xp, bottom, top, prob):
        """The loss by kernels/softmax_loss.cu: per-position logs and flags, then two sums."""
        n, ignore = self.outer * self.inner, self.ignore_label()
        logs = scratch(self, 'logs', (n,), self.dtype, xp)
        flags = scratch(self, 'flags', (n,), self.dtype, xp)
        gpu.kernel('softmax_loss.cu', 'softmax_loss_forward', self.dtype)(
            n, prob.data, bottom[1].data, self.classes, self.inner, ignore is not None, ignore or 0,
            logs, flags)
        # one copy to the host for both: the lowest flag and the count of valid positions
        lowest, valid = xp.stack((flags.min(), flags.sum())).tolist() if n else (0, 0)
        if lowest < 0:
            # a label outside [0, classes): _Labels raises, naming the labels
            _Labels(self, bottom[1], self.outer, self.inner, self.classes, ignore)
        self.norm = self.normalizer(self.mode, self.outer, self.inner, int(valid))
        top[0].data[...] = -logs.sum() / self.norm
        self._per_instance(top, logs)


@register('InfogainLoss')
class InfogainLossLayer(_SoftmaxLoss):
    """-sum_l H[label, l] * log(max(softmax(x)_l, 1e-20)) / normalizer; H from bottom 2 or a file."""
    exact_num_bottom = None
    min_bottom = 2
    max_bottom = 3

    def allow_force_backward(self, bottom_index):
        # Caffe allows force_backward to H, then dies in Backward; here H simply takes no gradient
        return bottom_index == 0

    def setup(self, bottom, top):
        param = self.layer_param
        self.softmax_axis = param.infogain_loss_param.axis
        if param.loss_param.HasField('normalize'):
            raise self.error('normalize is deprecated. use "normalization"')
        self.mode = param.loss_param.normalization
        self.infogain = None
        if len(bottom) < 3:
            if not param.infogain_loss_param.HasField('source'):
                raise self.error('Infogain matrix source must be specified.')
            source = param.infogain_loss_param.source
            array = formats.read_binaryproto(
                source, named_by='infogain_loss_param.source of layer "%s"' % self.name)
            self.infogain = self.make_blob(array.shape)
            self.infogain.data[...] = self.infogain.xp.asarray(array)
        super().setup(bottom, top)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        h = self._h(bottom)
        if h.count != self.classes * self.classes:
            raise self.error('H must be %dx%d, got %s'
                             % (self.classes, self.classes, h.shape_string()))

    def _h(self, bottom):
        return bottom[2] if len(bottom) > 2 else self.infogain

    def forward(self, bottom, top):
        xp = bottom[0].xp
        prob = self._prob_blob(top)
        self.softmax.forward([bottom[0]], [prob])
        p = prob.data.reshape(self.shape3())
        h = self._h(bottom).data.reshape(self.classes, self.classes)
        self.labels = labels = _Labels(self, bottom[1], self.outer, self.inner, self.classes,
                                       self.ignore_label())
        weights = h[labels.index].transpose(0, 2, 1)           # (outer, classes, inner)
        terms = weights * xp.log(xp.maximum(p, self.scalar(LOG_THRESHOLD)))
        labels.mask(terms)
        self.norm = self.normalizer(self.mode, self.outer, self.inner, labels.count)
        top[0].data[...] = -terms.sum() / self.norm

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down)
        self.refuse_backward(propagate_down, 2, 'infogain')
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        h = self._h(bottom).data.reshape(self.classes, self.classes)
        index = self.labels.index
        dx = bottom[0].diff.reshape(self.shape3())
        xp.multiply(self._prob_blob(top).data.reshape(self.shape3()),
                    h.sum(axis=1)[index][:, None, :], out=dx)
        dx -= h[index].transpose(0, 2, 1)
        self.labels.mask(dx)
        dx *= top[0].diff.reshape(()) / self.norm


@register('Accuracy')
class AccuracyLayer(Layer):
    """Fraction of counted labels whose score has fewer than top_k scores >= it (ties count
    against); optional second top: the accuracy per class."""
    exact_num_bottom = 2
    min_top = 1
    max_top = 2

    def setup(self, bottom, top):
        param = self.layer_param.accuracy_param
        self.top_k = param.top_k
        self.ignore = param.ignore_label if param.HasField('ignore_label') else None

    def reshape(self, bottom, top):
        if bottom[1].count and self.top_k > bottom[0].count // bottom[1].count:
            raise self.error('top_k must be less than or equal to the number of classes '
                             '(top_k %d, %d classes).'
                             % (self.top_k, bottom[0].count // bottom[1].count))
        axis = self.canonical_axis(bottom[0], self.layer_param.accuracy_param.axis)
        self.outer = bottom[0].count_range(0, axis)
        self.classes = bottom[0].shape[axis]
        self.inner = bottom[0].count_range(axis + 1)
        if self.outer * self.inner != bottom[1].count:
            raise self.error('Number of labels must match number of predictions; e.g., if label '
                             'axis == 1 and prediction shape is (N, C, H, W), label count (number '
                             'of labels) must be N*H*W, with integer values in {0, 1, ..., C-1}; '
                             'got prediction %s and label %s'
                             % (bottom[0].shape_string(), bottom[1].shape_string()))
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.classes,))

    def forward(self, bottom, top):
        xp = bottom[0].xp
        scores = bottom[0].data.reshape(self.outer, self.classes, self.inner)
        labels = _Labels(self, bottom[1], self.outer, self.inner, self.classes, self.ignore)
        truth = scores[labels.at]
        # the true class itself counts among those scoring >= truth (unless it is NaN)
        at_least = (scores >= truth[:, None, :]).sum(axis=1)
        right = at_least <= self.top_k
        if labels.valid is not None:
            right &= labels.valid
        hits = int(right.sum())
        count = labels.count
        top[0].data[...] = self.dtype.type(hits) / self.dtype.type(count) if count else 0
        if len(top) > 1:
            counted = labels.index if labels.valid is None else labels.index[labels.valid]
            totals = xp.bincount(counted.ravel(), minlength=self.classes).astype(self.dtype)
            correct = xp.bincount(labels.index[right], minlength=self.classes).astype(self.dtype)
            # a class without labels has no hits either: 0 / 1
            xp.divide(correct, xp.maximum(totals, 1), out=top[1].data)

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error('Accuracy has no backward: it cannot be used as a loss '
                             '(Caffe: not implemented).')


@register('EuclideanLoss')
class EuclideanLossLayer(LossLayer):
    """sum((a - b)^2) / num / 2; both bottoms take a gradient."""

    def allow_force_backward(self, bottom_index):
        return True

    def setup(self, bottom, top):
        self.diff = self.make_blob(None)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count_range(1) != bottom[1].count_range(1):
            raise self.error('Inputs must have the same dimension (%s vs %s).'
                             % (bottom[0].shape_string(), bottom[1].shape_string()))
        self.diff.reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        d = self.diff.data
        xp.subtract(bottom[0].data, bottom[1].data.reshape(d.shape), out=d)
        flat = d.reshape(-1)
        top[0].data[...] = xp.dot(flat, flat) / self.scalar(bottom[0].shape[0]) / self.scalar(2)

    def backward(self, top, propagate_down, bottom):
        xp = bottom[0].xp
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                alpha = self.scalar(sign) * top[0].diff.reshape(()) / self.scalar(bottom[i].shape[0])
                xp.multiply(self.diff.data.reshape(bottom[i].shape), alpha, out=bottom[i].diff)


@register('SigmoidCrossEntropyLoss')
class SigmoidCrossEntropyLossLayer(LossLayer):
    """Cross entropy of sigmoid(x) against targets in the overflow-free form; normalization
    defaults to BATCH_SIZE here (Caffe's own default for this layer)."""

    def setup(self, bottom, top):
        param = self.layer_param.loss_param
        if param.HasField('normalization'):
            self.mode = param.normalization
        elif param.HasField('normalize'):
            self.mode = _NORM.VALID if param.normalize else _NORM.BATCH_SIZE
        else:
            self.mode = _NORM.BATCH_SIZE
        self.sigmoid = self.make_blob(None)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.error('SIGMOID_CROSS_ENTROPY_LOSS layer inputs must have the same count '
                             '(%s vs %s).' % (bottom[0].shape_string(), bottom[1].shape_string()))
        self.sigmoid.reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].data
        t = bottom[1].data.reshape(x.shape)
        s = self.sigmoid.data
        xp.multiply(x, self.scalar(0.5), out=s)
        xp.tanh(s, out=s)
        s *= self.scalar(0.5)
        s += self.scalar(0.5)
        positive = (x >= 0).astype(self.dtype)
        terms = x * (t - positive) - xp.log(1 + xp.exp(x - 2 * x * positive))
        ignore = self.ignore_label()
        self.valid = None if ignore is None else t.astype(np.int64) != ignore
        if self.valid is not None:
            terms *= self.valid
        count = int(self.valid.sum()) if self.valid is not None else x.size
        self.norm = self.normalizer(self.mode, bottom[0].shape[0], bottom[0].count_range(1), count)
        top[0].data[...] = -terms.sum() / self.norm

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down)
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        dx = bottom[0].diff
        xp.subtract(self.sigmoid.data, bottom[1].data.reshape(dx.shape), out=dx)
        if self.valid is not None:
            dx *= self.valid
        dx *= top[0].diff.reshape(()) / self.norm


@register('HingeLoss')
class HingeLossLayer(LossLayer):
    """One-vs-all hinge: sum of max(0, 1 -+ x) (L1) or its squares (L2) / num."""

    def setup(self, bottom, top):
        self.norm_type = self.layer_param.hinge_loss_param.norm
        if self.norm_type not in (caffe_pb2.HingeLossParameter.L1, caffe_pb2.HingeLossParameter.L2):
            raise self.error('Unknown Norm')

    def _signed(self, bottom, values):
        """values (num, dim) with the label entry of each row negated, in place."""
        xp = bottom[0].xp
        num, dim = values.shape
        label = bottom[1].data.reshape(-1)[:num].astype(np.int64)
        if num and (int(label.min()) < 0 or int(label.max()) >= dim):
            raise self.error('label values must be integers in [0, %d), got %d..%d'
                             % (dim, int(label.min()), int(label.max())))
        rows = xp.arange(num)
        values[rows, label] *= -1
        return values

    def forward(self, bottom, top):
        xp = bottom[0].xp
        num = _legacy(self, bottom[0], 0)
        margins = self._signed(bottom, bottom[0].data.reshape(num, -1).copy())
        margins += 1
        xp.maximum(margins, 0, out=margins)
        self.margins = margins
        flat = margins.reshape(-1)
        if self.norm_type == caffe_pb2.HingeLossParameter.L1:
            total = xp.abs(flat).sum()
        else:
            total = xp.dot(flat, flat)
        top[0].data[...] = total / self.scalar(num)

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down)
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        num = self.margins.shape[0]
        dx = bottom[0].diff.reshape(self.margins.shape)
        dx[...] = self.margins
        self._signed(bottom, dx)
        weight = top[0].diff.reshape(())
        if self.norm_type == caffe_pb2.HingeLossParameter.L1:
            xp.sign(dx, out=dx)
            dx *= weight / self.scalar(num)
        else:
            dx *= weight * self.scalar(2) / self.scalar(num)


@register('ContrastiveLoss')
class ContrastiveLossLayer(LossLayer):
    """Pairs (a, b) with a similarity flag: d^2 for similar pairs, max(margin - d, 0)^2 for
    dissimilar ones (legacy_version: max(margin - d^2, 0)); summed / num / 2."""
    exact_num_bottom = 3

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def setup(self, bottom, top):
        param = self.layer_param.contrastive_loss_param
        self.margin = self.scalar(param.margin)
        self.legacy = param.legacy_version
        dims = [[_legacy(self, b, k) for k in range(4)] for b in bottom]
        if dims[0][1] != dims[1][1]:
            raise self.error('a and b must have the same channels (%d vs %d)'
                             % (dims[0][1], dims[1][1]))
        for b, checks in ((0, (2, 3)), (1, (2, 3)), (2, (1, 2, 3))):
            for k in checks:
                if dims[b][k] != 1:
                    raise self.error('bottom %d must have size 1 on axis %d (shape %s)'
                                     % (b, k, bottom[b].shape_string()))

    def forward(self, bottom, top):
        xp = bottom[0].xp
        num = _legacy(self, bottom[0], 0)
        channels = _legacy(self, bottom[0], 1)
        self.diff = bottom[0].data.reshape(num, channels) - bottom[1].data.reshape(num, channels)
        self.dist_sq = xp.einsum('ij,ij->i', self.diff, self.diff)
        self.similar = bottom[2].data.reshape(-1)[:num].astype(np.int64) != 0
        if self.legacy:
            apart = xp.maximum(self.margin - self.dist_sq, 0)
        else:
            apart = xp.maximum(self.margin - xp.sqrt(self.dist_sq), 0)
            apart *= apart
        loss = xp.where(self.similar, self.dist_sq, apart).sum()
        top[0].data[...] = loss / self.scalar(num) / self.scalar(2)

    def backward(self, top, propagate_down, bottom):
        xp = bottom[0].xp
        num = self.diff.shape[0]
        for i, sign in ((0, 1), (1, -1)):
            if not propagate_down[i]:
                continue
            alpha = self.scalar(sign) * top[0].diff.reshape(()) / self.scalar(num)
            if self.legacy:
                mdist = self.margin - self.dist_sq
                beta = xp.full_like(mdist, -alpha)
            else:
                dist = xp.sqrt(self.dist_sq)
                mdist = self.margin - dist
                beta = -alpha * mdist / (dist + self.scalar(1e-4))
            factor = xp.where(self.similar, alpha, xp.where(mdist > 0, beta, 0))
            xp.multiply(self.diff, factor.astype(self.dtype)[:, None],
                        out=bottom[i].diff.reshape(self.diff.shape))


@register('MultinomialLogisticLoss')
class MultinomialLogisticLossLayer(LossLayer):
    """-log(max(p[label], 1e-20)) averaged over num; the bottom holds probabilities."""

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if any(_legacy(self, bottom[1], k) != 1 for k in (1, 2, 3)):
            raise self.error('the label must have one value per item (shape %s)'
                             % bottom[1].shape_string())

    def _picked(self, bottom):
        xp = bottom[0].xp
        num = _legacy(self, bottom[0], 0)
        p = bottom[0].data.reshape(num, -1)
        label = bottom[1].data.reshape(-1).astype(np.int64)
        if num and (int(label.min()) < 0 or int(label.max()) >= p.shape[1]):
            raise self.error('label values must be integers in [0, %d), got %d..%d'
                             % (p.shape[1], int(label.min()), int(label.max())))
        index = (xp.arange(num), label)
        return index, xp.maximum(p[index], self.scalar(LOG_THRESHOLD))

    def forward(self, bottom, top):
        xp = bottom[0].xp
        _, prob = self._picked(bottom)
        top[0].data[...] = -xp.log(prob).sum() / self.scalar(prob.shape[0])

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down)
        if not propagate_down[0]:
            return
        index, prob = self._picked(bottom)
        dx = bottom[0].diff.reshape(prob.shape[0], -1)
        dx[...] = 0
        dx[index] = -top[0].diff.reshape(()) / self.scalar(prob.shape[0]) / prob
