"""BatchNorm (moving-average factor folded in), MVN, Scale and Bias (broadcast from `axis`)."""
import numpy as np

from .graph import converter


def _per_channel(ctx, values, what):
    """A (C, 1, ..., 1) constant that broadcasts over bottom 0's axes after the channel axis."""
    rank = len(ctx.bottom_shapes[0])
    return ctx.const(np.asarray(values, np.float32).reshape((-1,) + (1,) * max(rank - 2, 0)), what)


@converter('BatchNorm')
def batch_norm(ctx):
    """(x - mean / factor) / sqrt(var / factor + eps) with the stored statistics, or with the batch's
    own (biased) statistics over every axis but the channels when use_global_stats is false."""
    layer = ctx.layer
    x = ctx.bottoms[0]
    if not layer.global_stats:
        axes = [a for a in range(len(ctx.bottom_shapes[0])) if a != 1]
        centred = ctx.op('Sub', [x, ctx.reduce('ReduceMean', x, axes, True)])
        var = ctx.reduce('ReduceMean', ctx.op('Mul', [centred, centred]), axes, True)
        std = ctx.op('Sqrt', [ctx.op('Add', [var, ctx.const(layer.eps, 'eps')])])
        ctx.op('Div', [centred, std], ctx.top(0))
        return
    factor = float(ctx.blob(2).reshape(-1)[0])
    factor = np.float32(0 if factor == 0 else 1 / factor)
    mean = ctx.blob(0).reshape(-1) * factor
    std = np.sqrt(ctx.blob(1).reshape(-1) * factor + np.float32(layer.eps))
    centred = ctx.op('Sub', [x, _per_channel(ctx, mean, 'mean')])
    ctx.op('Div', [centred, _per_channel(ctx, std, 'std')], ctx.top(0))


@converter('MVN')
def mvn(ctx):
    """Subtract the mean over each (n, c) plane (or each item, across_channels); with
    normalize_variance divide by the standard deviation + eps."""
    p = ctx.param.mvn_param
    rank = len(ctx.bottom_shapes[0])
    axes = list(range(1 if p.across_channels else 2, rank))
    x = ctx.bottoms[0]
    if not axes:
        raise ctx.refuse('MVN of a bottom with fewer than 3 axes (Caffe views it as 4-D)')
    centred = ctx.op('Sub', [x, ctx.reduce('ReduceMean', x, axes, True)],
                     None if p.normalize_variance else ctx.top(0))
    if p.normalize_variance:
        var = ctx.reduce('ReduceMean', ctx.op('Mul', [centred, centred]), axes, True)
        std = ctx.op('Add', [ctx.op('Sqrt', [var]), ctx.const(p.eps, 'eps')])
        ctx.op('Div', [centred, std], ctx.top(0))


def _broadcast(ctx, shape, axis):
    """The shape an operand of `shape` placed at `axis` of bottom 0 takes to broadcast against it."""
    rank = len(ctx.bottom_shapes[0])
    return tuple(shape) + (1,) * (rank - axis - len(shape))


def _operand(ctx, axis, index, what):
    """The scale or bias: a learned blob (reshaped constant) or the second bottom (Reshape node)."""
    if index is None:
        shape = ctx.bottom_shapes[1]
        target = _broadcast(ctx, shape, axis)
        if target == shape:
            return ctx.bottoms[1]
        if axis == 0:
            return ctx.reshape(ctx.bottoms[1], target)
        return ctx.op('Reshape', [ctx.bottoms[1], ctx.ints(target, 'shape')])
    value = ctx.blob(index)
    return ctx.const(value.reshape(_broadcast(ctx, value.shape, axis)), what)


@converter('Scale')
def scale(ctx):
    p = ctx.param.scale_param
    axis = ctx.axis(p.axis)
    two = len(ctx.bottoms) > 1
    factor = _operand(ctx, axis, None if two else 0, 'scale')
    if not p.bias_term:
        ctx.op('Mul', [ctx.bottoms[0], factor], ctx.top(0))
        return
    bias = _operand(ctx, axis, len(ctx.layer.blobs) - 1, 'bias')
    ctx.op('Add', [ctx.op('Mul', [ctx.bottoms[0], factor]), bias], ctx.top(0))


@converter('Bias')
def bias(ctx):
    axis = ctx.axis(ctx.param.bias_param.axis)
    operand = _operand(ctx, axis, None if len(ctx.bottoms) > 1 else 0, 'bias')
    ctx.op('Add', [ctx.bottoms[0], operand], ctx.top(0))
