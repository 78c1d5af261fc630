"""Element-wise layers: ReLU, Sigmoid, TanH, ELU, AbsVal, BNLL, Swish, Power, Exp, Log, Threshold,
Clip, PReLU and the YOLO ports' Mish."""
import math

from .graph import converter

SIMPLE = {'Sigmoid': 'Sigmoid', 'TanH': 'Tanh', 'AbsVal': 'Abs', 'BNLL': 'Softplus'}


@converter(*SIMPLE)
def simple(ctx):
    """BNLL is log(1 + e^x), Softplus."""
    ctx.op(SIMPLE[ctx.type], [ctx.bottoms[0]], ctx.top(0))


@converter('ReLU')
def relu(ctx):
    slope = ctx.param.relu_param.negative_slope
    if slope:
        ctx.op('LeakyRelu', [ctx.bottoms[0]], ctx.top(0), alpha=float(slope))
    else:
        ctx.op('Relu', [ctx.bottoms[0]], ctx.top(0))


@converter('ELU')
def elu(ctx):
    ctx.op('Elu', [ctx.bottoms[0]], ctx.top(0), alpha=float(ctx.param.elu_param.alpha))


@converter('Swish')
def swish(ctx):
    x, beta = ctx.bottoms[0], ctx.param.swish_param.beta
    scaled = x if beta == 1 else ctx.op('Mul', [x, ctx.const(beta, 'beta')])
    ctx.op('Mul', [x, ctx.op('Sigmoid', [scaled])], ctx.top(0))


@converter('Mish')
def mish(ctx):
    """x * tanh(softplus(x)): ONNX's Mish from opset 18, its definition before."""
    x = ctx.bottoms[0]
    if ctx.opset >= 18:
        ctx.op('Mish', [x], ctx.top(0))
    else:
        ctx.op('Mul', [x, ctx.op('Tanh', [ctx.op('Softplus', [x])])], ctx.top(0))


def _affine(ctx, x, scale, shift, out=None):
    """scale * x + shift, leaving out the identity parts."""
    if scale != 1:
        x = ctx.op('Mul', [x, ctx.const(scale, 'scale')], None if shift else out)
    if shift:
        x = ctx.op('Add', [x, ctx.const(shift, 'shift')], out)
    return x


@converter('Power')
def power(ctx):
    """(shift + scale * x) ^ power; a constant where power * scale is 0, as Caffe's."""
    p = ctx.param.power_param
    x = ctx.bottoms[0]
    if p.power * p.scale == 0:
        value = 1.0 if p.power == 0 else p.shift ** p.power
        ctx.op('Expand', [ctx.const(value, 'value'), ctx.op('Shape', [x])], ctx.top(0))
    elif p.power == 1 and p.scale == 1 and not p.shift:
        ctx.alias(0, x)
    elif p.power == 1:
        _affine(ctx, x, p.scale, p.shift, ctx.top(0))
    else:
        ctx.op('Pow', [_affine(ctx, x, p.scale, p.shift), ctx.const(p.power, 'power')], ctx.top(0))


@converter('Exp')
def exp(ctx):
    """base ^ (shift + scale * x) = base^shift * e^(ln(base) * scale * x); base -1 means e."""
    p = ctx.param.exp_param
    log_base = 1.0 if p.base == -1 else math.log(p.base)
    inner = _affine(ctx, ctx.bottoms[0], log_base * p.scale, 0)
    outer = math.exp(log_base * p.shift)
    if outer == 1:
        ctx.op('Exp', [inner], ctx.top(0))
    else:
        ctx.op('Mul', [ctx.op('Exp', [inner]), ctx.const(outer, 'outer_scale')], ctx.top(0))


@converter('Log')
def log(ctx):
    """log_base(shift + scale * x) = ln(...) / ln(base); base -1 means e."""
    p = ctx.param.log_param
    inner = _affine(ctx, ctx.bottoms[0], p.scale, p.shift)
    if p.base == -1:
        ctx.op('Log', [inner], ctx.top(0))
    else:
        ctx.op('Mul', [ctx.op('Log', [inner]), ctx.const(1.0 / math.log(p.base), 'inv_log_base')], ctx.top(0))


@converter('Threshold')
def threshold(ctx):
    above = ctx.op('Greater', [ctx.bottoms[0], ctx.const(ctx.param.threshold_param.threshold, 'threshold')])
    ctx.op('Cast', [above], ctx.top(0), to=1)


@converter('Clip')
def clip(ctx):
    p = ctx.param.clip_param
    ctx.op('Clip', [ctx.bottoms[0], ctx.const(p.min, 'min'), ctx.const(p.max, 'max')], ctx.top(0))


@converter('PReLU')
def prelu(ctx):
    """Slopes per channel (axis 1), or one shared slope."""
    shape = ctx.bottom_shapes[0]
    slopes = ctx.blob(0)
    if ctx.param.prelu_param.channel_shared:
        slope = ctx.const(slopes.reshape(1), 'slope')
    else:
        slope = ctx.const(slopes.reshape((shape[1],) + (1,) * (len(shape) - 2)), 'slope')
    ctx.op('PRelu', [ctx.bottoms[0], slope], ctx.top(0))

