"""Accuracy and the loss layers, so that a train_val net's TEST phase exports whole.

Normalizers are written as means over the batch where Caffe divides by a count that follows it, so
that the graphs also take a dynamic batch."""
import numpy as np

from .graph import converter

FLT_MIN = 1.1754943508222875e-38
LOG_THRESHOLD = 1e-20


def _scores_and_labels(ctx):
    """Scores viewed (outer, classes, inner) and int64 labels (outer, 1, inner), outer led by the batch."""
    shape = ctx.bottom_shapes[0]
    axes = {'Accuracy': ctx.param.accuracy_param.axis, 'InfogainLoss': ctx.param.infogain_loss_param.axis}
    axis = ctx.axis(axes.get(ctx.type, ctx.param.softmax_param.axis))
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    scores = ctx.reshape(ctx.bottoms[0], (outer, shape[axis], inner), keep_batch=axis == 1)
    labels = ctx.reshape(ctx.op('Cast', [ctx.bottoms[1]], to=7), (outer, 1, inner), keep_batch=axis == 1)
    return scores, labels


def _ignoring(ctx, labels, ignore_label):
    """(labels with the ignored ones set to 0, float mask of the kept ones)."""
    ignored = ctx.op('Equal', [labels, ctx.ints([ignore_label], 'ignore')])
    kept = ctx.op('Cast', [ctx.op('Not', [ignored])], to=1)
    return ctx.op('Where', [ignored, ctx.ints([0], 'zero'), labels]), kept


def _valid_mean(ctx, values, kept, out):
    """sum(values * kept) / max(1, sum(kept)): Caffe's VALID normalization with an ignore_label."""
    total = ctx.reduce('ReduceSum', ctx.op('Mul', [values, kept]), [0, 1, 2], False)
    count = ctx.op('Max', [ctx.reduce('ReduceSum', kept, [0, 1, 2], False), ctx.const(1.0, 'one')])
    return ctx.op('Div', [total, count], out)


@converter('Accuracy')
def accuracy(ctx):
    """Right when fewer than top_k classes score at least the label's score (ties count against);
    the optional second top is the accuracy of each class (0 for a class without items)."""
    p = ctx.param.accuracy_param
    scores, labels = _scores_and_labels(ctx)
    kept = None
    if p.HasField('ignore_label'):
        # items with the ignored label count neither as right nor in the denominator
        labels, kept = _ignoring(ctx, labels, p.ignore_label)
    own = ctx.op('GatherElements', [scores, labels], axis=1)
    higher = ctx.op('Cast', [ctx.op('GreaterOrEqual', [scores, own])], to=1)
    rank = ctx.reduce('ReduceSum', higher, [1], True)
    right = ctx.op('Cast', [ctx.op('Less', [rank, ctx.const(p.top_k + 0.5, 'top_k')])], to=1)
    if kept is None:
        ctx.reduce('ReduceMean', right, [0, 1, 2], False, ctx.top(0))
    else:
        _valid_mean(ctx, right, kept, ctx.top(0))
    if len(ctx.top_shapes) > 1:
        classes = ctx.top_shapes[1][0]
        classes = ctx.const(np.arange(classes).reshape(1, -1, 1), 'classes', np.int64)
        members = ctx.op('Cast', [ctx.op('Equal', [labels, classes])], to=1)
        if kept is not None:
            members = ctx.op('Mul', [members, kept])
        count = ctx.reduce('ReduceSum', members, [0, 2], False)
        hits = ctx.reduce('ReduceSum', ctx.op('Mul', [members, right]), [0, 2], False)
        ratio = ctx.op('Div', [hits, ctx.op('Max', [count, ctx.const(1.0, 'one')])])
        ctx.op('Where', [ctx.op('Greater', [count, ctx.const(0.0, 'zero')]), ratio, ctx.const(0.0, 'zero')],
               ctx.top(1))


@converter('SoftmaxWithLoss')
def softmax_with_loss(ctx):
    """-log(max(softmax, FLT_MIN)) at the labels, summed and divided by Caffe's normalizer."""
    p = ctx.param.loss_param
    scores, labels, kept = _softmax_loss_inputs(ctx, p)
    prob = ctx.op('GatherElements', [ctx.op('Softmax', [scores], axis=1), labels], axis=1)
    losses = ctx.op('Neg', [ctx.op('Log', [ctx.op('Max', [prob, ctx.const(FLT_MIN, 'flt_min')])])])
    _normalized(ctx, losses, kept, _mode(p, p.VALID), ctx.top(0))


@converter('InfogainLoss')
def infogain_loss(ctx):
    """-sum_l H[label, l] log(max(softmax_l, 1e-20)) over the normalizer; H the third bottom or the
    matrix read from infogain_loss_param.source."""
    p = ctx.param.loss_param
    scores, labels, kept = _softmax_loss_inputs(ctx, p)
    classes = ctx.bottom_shapes[0][ctx.axis(ctx.param.infogain_loss_param.axis)]
    if len(ctx.bottoms) > 2:
        h = ctx.op('Reshape', [ctx.bottoms[2], ctx.ints([classes, classes], 'h_shape')])
    else:
        h = ctx.const(np.asarray(ctx.layer.infogain.read_data(), np.float32).reshape(classes, classes), 'h')
    rows = ctx.op('Gather', [h, ctx.op('Squeeze', [labels, ctx.ints([1], 'axis1')])], axis=0)
    weights = ctx.op('Transpose', [rows], perm=[0, 2, 1])             # (outer, classes, inner)
    logs = ctx.op('Log', [ctx.op('Max', [ctx.op('Softmax', [scores], axis=1),
                                         ctx.const(LOG_THRESHOLD, 'threshold')])])
    terms = ctx.reduce('ReduceSum', ctx.op('Mul', [weights, logs]), [1], True)
    _normalized(ctx, ctx.op('Neg', [terms]), kept, _mode(p, p.VALID), ctx.top(0))


def _softmax_loss_inputs(ctx, p):
    """(scores, labels, kept) of a softmax loss: kept is the mask of labels other than
    loss_param.ignore_label, None without one. Its optional softmax output top is refused."""
    if len(ctx.top_shapes) > 1:
        raise ctx.refuse('the softmax output top is not exported (add a Softmax layer instead)')
    scores, labels = _scores_and_labels(ctx)
    kept = None
    if p.HasField('ignore_label'):
        labels, kept = _ignoring(ctx, labels, p.ignore_label)
    return scores, labels, kept


def _mode(p, default):
    """The LossParameter's normalization, the legacy `normalize` flag mapped as Caffe maps it."""
    if p.HasField('normalization'):
        return p.normalization
    if p.HasField('normalize'):
        return p.VALID if p.normalize else p.BATCH_SIZE
    return default


def _normalized(ctx, losses, kept, mode, out):
    """The sum of `losses` (outer, 1, inner), masked by `kept`, over Caffe's normalizer: FULL (and
    VALID when every label counts) outer * inner, BATCH_SIZE outer, NONE 1, VALID the kept count."""
    p = ctx.param.loss_param
    if mode == p.VALID and kept is not None:
        return _valid_mean(ctx, losses, kept, out)
    if kept is not None:
        losses = ctx.op('Mul', [losses, kept])
    if mode == p.NONE:
        return ctx.reduce('ReduceSum', losses, [0, 1, 2], False, out)
    if mode == p.BATCH_SIZE:
        return ctx.reduce('ReduceMean', ctx.reduce('ReduceSum', losses, [1, 2], False), [0], False, out)
    return ctx.reduce('ReduceMean', losses, [0, 1, 2], False, out)


def _per_item(ctx, x):
    """x viewed (num, 1, rest): Caffe's losses below count `num` items along axis 0."""
    shape = ctx.bottom_shapes[0]
    return ctx.reshape(x, (shape[0], 1, int(np.prod(shape[1:], dtype=np.int64))))


def _half_mean(ctx, values, out):
    """sum(values) / num / 2 for values of shape (num,)."""
    mean = ctx.reduce('ReduceMean', values, [0], False)
    return ctx.op('Mul', [mean, ctx.const(0.5, 'half')], out)


@converter('EuclideanLoss')
def euclidean_loss(ctx):
    """sum((a - b)^2) / num / 2."""
    b = ctx.reshape(ctx.bottoms[1], ctx.bottom_shapes[0])
    diff = _per_item(ctx, ctx.op('Sub', [ctx.bottoms[0], b]))
    _half_mean(ctx, ctx.reduce('ReduceSumSquare', diff, [1, 2], False), ctx.top(0))


@converter('SigmoidCrossEntropyLoss')
def sigmoid_cross_entropy_loss(ctx):
    """-sum(x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0]))) over the normalizer (BATCH_SIZE)."""
    p = ctx.param.loss_param
    x = _per_item(ctx, ctx.bottoms[0])
    t = _per_item(ctx, ctx.reshape(ctx.bottoms[1], ctx.bottom_shapes[0]))
    positive = ctx.op('Cast', [ctx.op('GreaterOrEqual', [x, ctx.const(0.0, 'zero')])], to=1)
    linear = ctx.op('Mul', [x, ctx.op('Sub', [t, positive])])
    exponent = ctx.op('Sub', [x, ctx.op('Mul', [ctx.op('Mul', [x, positive]), ctx.const(2.0, 'two')])])
    softplus = ctx.op('Log', [ctx.op('Add', [ctx.const(1.0, 'one'), ctx.op('Exp', [exponent])])])
    losses = ctx.op('Sub', [softplus, linear])
    kept = None
    if p.HasField('ignore_label'):
        _, kept = _ignoring(ctx, ctx.op('Cast', [t], to=7), p.ignore_label)
    _normalized(ctx, losses, kept, _mode(p, p.BATCH_SIZE), ctx.top(0))


def _items(ctx, index):
    """Bottom `index` viewed (num, -1)."""
    shape = ctx.bottom_shapes[index]
    return ctx.reshape(ctx.bottoms[index], (shape[0], int(np.prod(shape[1:], dtype=np.int64))))


def _label_column(ctx):
    """The labels as int64 (num, 1)."""
    labels = ctx.op('Cast', [ctx.bottoms[1]], to=7)
    return ctx.reshape(labels, (ctx.bottom_shapes[0][0], 1))


@converter('HingeLoss')
def hinge_loss(ctx):
    """sum over items and classes of max(0, 1 - y x), y = +1 at the label and -1 elsewhere (L2:
    squared), / num."""
    x = _items(ctx, 0)
    classes = ctx.ints(np.arange(int(np.prod(ctx.bottom_shapes[0][1:], dtype=np.int64))), 'classes')
    at_label = ctx.op('Equal', [_label_column(ctx), classes])
    signed = ctx.op('Where', [at_label, ctx.op('Neg', [x]), x])
    margins = ctx.op('Relu', [ctx.op('Add', [signed, ctx.const(1.0, 'one')])])
    if ctx.param.hinge_loss_param.norm == ctx.param.hinge_loss_param.L2:
        margins = ctx.op('Mul', [margins, margins])
    ctx.reduce('ReduceMean', ctx.reduce('ReduceSum', margins, [1], False), [0], False, ctx.top(0))



@converter('MultinomialLogisticLoss')
def multinomial_logistic_loss(ctx):
    """-log(max(p[label], 1e-20)) averaged over num; the bottom holds probabilities."""
    prob = ctx.op('GatherElements', [_items(ctx, 0), _label_column(ctx)], axis=1)
    losses = ctx.op('Neg', [ctx.op('Log', [ctx.op('Max', [prob, ctx.const(LOG_THRESHOLD, 'threshold')])])])
    ctx.reduce('ReduceMean', losses, [0, 1], False, ctx.top(0))


@converter('ContrastiveLoss')
def contrastive_loss(ctx):
    """d^2 for similar pairs, max(margin - d, 0)^2 for the others (legacy_version: max(margin - d^2,
    0)); summed / num / 2."""
    p = ctx.param.contrastive_loss_param
    diff = ctx.op('Sub', [_items(ctx, 0), _items(ctx, 1)])
    dist_sq = ctx.reduce('ReduceSumSquare', diff, [1], False)
    flags = ctx.op('Cast', [ctx.reshape(ctx.bottoms[2], (ctx.bottom_shapes[0][0],))], to=7)
    similar = ctx.op('Not', [ctx.op('Equal', [flags, ctx.ints([0], 'zero')])])
    margin = ctx.const(p.margin, 'margin')
    if p.legacy_version:
        apart = ctx.op('Relu', [ctx.op('Sub', [margin, dist_sq])])
    else:
        apart = ctx.op('Relu', [ctx.op('Sub', [margin, ctx.op('Sqrt', [dist_sq])])])
        apart = ctx.op('Mul', [apart, apart])
    _half_mean(ctx, ctx.op('Where', [similar, dist_sq, apart]), ctx.top(0))
