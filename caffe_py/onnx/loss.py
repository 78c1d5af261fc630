"""Accuracy and SoftmaxWithLoss, so that a train_val net's TEST phase exports whole."""
from .graph import converter


def _labels(ctx, label, shape, axis):
    """The label blob as int64 indices shaped (outer, 1, inner) against scores viewed the same way."""
    outer = int(_prod(shape[:axis]))
    inner = int(_prod(shape[axis + 1:]))
    return ctx.op('Reshape', [ctx.op('Cast', [label], to=7), ctx.ints([outer, 1, inner], 'label_shape')]), \
        outer, inner


def _prod(values):
    total = 1
    for v in values:
        total *= v
    return total


@converter('Accuracy')
def accuracy(ctx):
    """Right when fewer than top_k classes score at least the label's score (ties count against)."""
    p = ctx.param.accuracy_param
    if len(ctx.top_shapes) > 1:
        raise ctx.refuse('the per-class accuracy top is not exported')
    shape = ctx.bottom_shapes[0]
    axis = ctx.axis(p.axis)
    labels, outer, inner = _labels(ctx, ctx.bottoms[1], shape, axis)
    kept = None
    if p.HasField('ignore_label'):
        # items with the ignored label count neither as right nor in the denominator
        ignored = ctx.op('Equal', [labels, ctx.ints([p.ignore_label], 'ignore')])
        kept = ctx.op('Cast', [ctx.op('Not', [ignored])], to=1)
        labels = ctx.op('Where', [ignored, ctx.ints([0], 'zero'), labels])
    scores = ctx.op('Reshape', [ctx.bottoms[0], ctx.ints([outer, shape[axis], inner], 'score_shape')])
    own = ctx.op('GatherElements', [scores, labels], axis=1)
    higher = ctx.op('Cast', [ctx.op('GreaterOrEqual', [scores, own])], to=1)
    rank = ctx.reduce('ReduceSum', higher, [1], True)
    right = ctx.op('Cast', [ctx.op('Less', [rank, ctx.const(p.top_k + 0.5, 'top_k')])], to=1)
    if kept is None:
        ctx.reduce('ReduceMean', right, [0, 1, 2], False, ctx.top(0))
        return
    total = ctx.reduce('ReduceSum', kept, [0, 1, 2], False)
    hits = ctx.reduce('ReduceSum', ctx.op('Mul', [right, kept]), [0, 1, 2], False)
    ctx.op('Div', [hits, ctx.op('Max', [total, ctx.const(1.0, 'one')])], ctx.top(0))


FLT_MIN = 1.1754943508222875e-38


@converter('SoftmaxWithLoss')
def softmax_with_loss(ctx):
    """-log(max(softmax, FLT_MIN)) at the labels, summed and divided by Caffe's normalizer."""
    p, lp = ctx.param.loss_param, ctx.param.softmax_param
    if len(ctx.top_shapes) > 1:
        raise ctx.refuse('the softmax output top is not exported (add a Softmax layer instead)')
    shape = ctx.bottom_shapes[0]
    axis = ctx.axis(lp.axis)
    labels, outer, inner = _labels(ctx, ctx.bottoms[1], shape, axis)
    kept = None
    if p.HasField('ignore_label'):
        ignored = ctx.op('Equal', [labels, ctx.ints([p.ignore_label], 'ignore')])
        kept = ctx.op('Cast', [ctx.op('Not', [ignored])], to=1)
        labels = ctx.op('Where', [ignored, ctx.ints([0], 'zero'), labels])
    scores = ctx.op('Reshape', [ctx.bottoms[0], ctx.ints([outer, shape[axis], inner], 'score_shape')])
    prob = ctx.op('GatherElements', [ctx.op('Softmax', [scores], axis=1), labels], axis=1)
    losses = ctx.op('Neg', [ctx.op('Log', [ctx.op('Max', [prob, ctx.const(FLT_MIN, 'flt_min')])])])
    if kept is not None:
        losses = ctx.op('Mul', [losses, kept])
    total = ctx.reduce('ReduceSum', losses, [0, 1, 2], False)
    mode = p.normalization
    if not p.HasField('normalization') and p.HasField('normalize'):
        mode = p.VALID if p.normalize else p.BATCH_SIZE
    if mode == p.VALID and kept is not None:
        count = ctx.op('Max', [ctx.reduce('ReduceSum', kept, [0, 1, 2], False), ctx.const(1.0, 'one')])
        ctx.op('Div', [total, count], ctx.top(0))
        return
    normalizer = {p.FULL: outer * inner, p.VALID: outer * inner, p.BATCH_SIZE: outer, p.NONE: 1}[mode]
    ctx.op('Div', [total, ctx.const(max(1.0, float(normalizer)), 'normalizer')], ctx.top(0))
