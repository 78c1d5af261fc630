"""Accuracy and SoftmaxWithLoss, so that a train_val net's TEST phase exports whole."""
import numpy as np

from .graph import converter


def _scores_and_labels(ctx):
    """Scores viewed (outer, classes, inner) and int64 labels (outer, 1, inner), outer led by the batch."""
    shape = ctx.bottom_shapes[0]
    axis = ctx.axis(ctx.param.accuracy_param.axis if ctx.type == 'Accuracy' else ctx.param.softmax_param.axis)
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
    """Right when fewer than top_k classes score at least the label's score (ties count against)."""
    p = ctx.param.accuracy_param
    if len(ctx.top_shapes) > 1:
        raise ctx.refuse('the per-class accuracy top is not exported')
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


FLT_MIN = 1.1754943508222875e-38


@converter('SoftmaxWithLoss')
def softmax_with_loss(ctx):
    """-log(max(softmax, FLT_MIN)) at the labels, summed and divided by Caffe's normalizer."""
    p = ctx.param.loss_param
    if len(ctx.top_shapes) > 1:
        raise ctx.refuse('the softmax output top is not exported (add a Softmax layer instead)')
    scores, labels = _scores_and_labels(ctx)
    kept = None
    if p.HasField('ignore_label'):
        labels, kept = _ignoring(ctx, labels, p.ignore_label)
    prob = ctx.op('GatherElements', [ctx.op('Softmax', [scores], axis=1), labels], axis=1)
    losses = ctx.op('Neg', [ctx.op('Log', [ctx.op('Max', [prob, ctx.const(FLT_MIN, 'flt_min')])])])
    mode = p.normalization
    if not p.HasField('normalization') and p.HasField('normalize'):
        mode = p.VALID if p.normalize else p.BATCH_SIZE
    if mode == p.VALID and kept is not None:
        _valid_mean(ctx, losses, kept, ctx.top(0))
        return
    if kept is not None:
        losses = ctx.op('Mul', [losses, kept])
    # normalizers as means, so that they follow a dynamic batch: FULL (and VALID with every label
    # counted) divide by outer * inner, BATCH_SIZE by outer, NONE by 1
    if mode == p.NONE:
        ctx.reduce('ReduceSum', losses, [0, 1, 2], False, ctx.top(0))
    elif mode == p.BATCH_SIZE:
        ctx.reduce('ReduceMean', ctx.reduce('ReduceSum', losses, [1, 2], False), [0], False, ctx.top(0))
    else:
        ctx.reduce('ReduceMean', losses, [0, 1, 2], False, ctx.top(0))
