"""RNN and LSTM unrolled over their T steps, as Caffe's own unrolled nets compute them; LSTMUnit.

Only with `expose_hidden`: without it Caffe starts each forward pass from the previous pass's final
state, which a stateless ONNX graph cannot carry, so those layers are refused.
"""
from .graph import converter


def _step_inputs(ctx):
    """(T, N, x_t projections (N x rows) per step, static projection or None, cont_t (N x 1) per step,
    initial states (N x H each))."""
    layer = ctx.layer
    if not layer.expose_hidden:
        raise ctx.refuse('without expose_hidden each forward pass starts from the previous pass\'s final '
                         'state, which a stateless ONNX graph cannot carry')
    if ctx.dynamic_batch:
        raise ctx.refuse('it is unrolled over its %d time steps (axis 0), which cannot be dynamic'
                         % ctx.bottom_shapes[0][0])
    steps, num = ctx.bottom_shapes[0][:2]
    rows = layer.gate_factor * layer.hidden
    x = ctx.op('Reshape', [ctx.bottoms[0], ctx.ints([steps * num, layer.input_dim], 'x_shape')])
    proj = ctx.op('Gemm', [x, ctx.weight(0, what='w_x'), ctx.weight(1, what='b')], transB=1)
    proj = ctx.op('Reshape', [proj, ctx.ints([steps, num, rows], 'proj_shape')])
    static = None
    if layer.static_input:
        xs = ctx.op('Reshape', [ctx.bottoms[2], ctx.ints([num, layer.static_dim], 'static_shape')])
        static = ctx.op('Gemm', [xs, ctx.weight(2, what='w_static')], transB=1)
    first = 2 + layer.static_input
    state_shape = ctx.ints([num, layer.hidden], 'state_shape')
    initial = [ctx.op('Reshape', [b, state_shape]) for b in ctx.bottoms[first:first + layer.num_states]]
    cont = ctx.op('Unsqueeze', [ctx.bottoms[1], ctx.ints([2], 'axis2')])
    per_step = [ctx.op('Gather', [proj, ctx.ints([t], 't%d' % t)], axis=0) for t in range(steps)]
    conts = [ctx.op('Gather', [cont, ctx.ints([t], 't%d' % t)], axis=0) for t in range(steps)]
    squeeze = ctx.ints([0], 'axis0')
    per_step = [ctx.op('Squeeze', [p, squeeze]) for p in per_step]
    conts = [ctx.op('Squeeze', [c, squeeze]) for c in conts]
    return steps, num, per_step, static, conts, initial


def _recurrent_input(ctx, h_prev, cont, w_t, projected, static):
    """projected_t + (cont_t * h_prev) W^T [+ static], summed in caffe-py's order."""
    total = ctx.op('Add', [ctx.op('MatMul', [ctx.op('Mul', [h_prev, cont]), w_t]), projected])
    return ctx.op('Add', [total, static]) if static is not None else total


def _stack(ctx, states, out=None):
    return ctx.op('Concat', [ctx.op('Unsqueeze', [s, ctx.ints([0], 'axis0')]) for s in states], out, axis=0)


def _final(ctx, i, state):
    ctx.op('Unsqueeze', [state, ctx.ints([0], 'axis0')], ctx.top(i))


@converter('RNN')
def rnn(ctx):
    """h_t = tanh(W_xh x_t + b_h [+ W_s x_s] + W_hh (cont_t h_{t-1})), o_t = tanh(W_ho h_t + b_o)."""
    layer = ctx.layer
    steps, num, per_step, static, conts, (h,) = _step_inputs(ctx)
    w_hh = ctx.const(ctx.blob(layer.recurrent_weight).T, 'w_hh_t')
    hs = []
    for t in range(steps):
        h = ctx.op('Tanh', [_recurrent_input(ctx, h, conts[t], w_hh, per_step[t], static)])
        hs.append(h)
    w_ho = ctx.const(ctx.blob(len(layer.blobs) - 2).T, 'w_ho_t')
    b_o = ctx.weight(len(layer.blobs) - 1, what='b_o')
    out = ctx.op('Add', [ctx.op('MatMul', [_stack(ctx, hs), w_ho]), b_o])
    ctx.op('Tanh', [out], ctx.top(0))
    _final(ctx, 1, h)


def _lstm_step(ctx, gates, cont, c_prev, hidden, c_out=None, h_out=None):
    """One LSTMUnit step on gate inputs (N x 4H): returns (c, h)."""
    names = [ctx.tmp(g) for g in ('i', 'f', 'o', 'g')]
    i, f, o, g = ctx.op_multi('Split', [gates, ctx.ints([hidden] * 4, 'gate_sizes')], names, axis=1)
    i, f, o, g = (ctx.op('Sigmoid', [i]), ctx.op('Sigmoid', [f]), ctx.op('Sigmoid', [o]), ctx.op('Tanh', [g]))
    f = ctx.op('Mul', [f, cont])
    c = ctx.op('Add', [ctx.op('Mul', [f, c_prev]), ctx.op('Mul', [i, g])], c_out)
    return c, ctx.op('Mul', [o, ctx.op('Tanh', [c])], h_out)


@converter('LSTM')
def lstm(ctx):
    """Gates i, f, o (sigmoid) and g (tanh); f times cont_t; c = f c_prev + i g; h = o tanh(c)."""
    layer = ctx.layer
    steps, num, per_step, static, conts, (h, c) = _step_inputs(ctx)
    w_hc = ctx.const(ctx.blob(layer.recurrent_weight).T, 'w_hc_t')
    hs = []
    for t in range(steps):
        gates = _recurrent_input(ctx, h, conts[t], w_hc, per_step[t], static)
        c, h = _lstm_step(ctx, gates, conts[t], c, layer.hidden)
        hs.append(h)
    _stack(ctx, hs, ctx.top(0))
    _final(ctx, 1, h)
    _final(ctx, 2, c)


@converter('LSTMUnit')
def lstm_unit(ctx):
    """One step: bottoms c_prev (1 x N x H), gate inputs (1 x N x 4H), cont (1 x N); tops c, h."""
    hidden = ctx.bottom_shapes[0][2]
    squeeze = ctx.ints([0], 'axis0')
    c_prev, gates, cont = (ctx.op('Squeeze', [b, squeeze]) for b in ctx.bottoms)
    cont = ctx.op('Unsqueeze', [cont, ctx.ints([1], 'axis1')])
    c, h = _lstm_step(ctx, gates, cont, c_prev, hidden)
    _final(ctx, 0, c)
    _final(ctx, 1, h)
