"""Inputs and data layers (graph inputs), Silence, Split, Dropout, Parameter, and the layers that move
or combine values: InnerProduct, Concat, Slice, Flatten, Reshape, Crop, Tile, Eltwise, Softmax,
Reduction, ArgMax, Embed, BatchReindex, Filter."""
import numpy as np

from ..proto import caffe_pb2
from .graph import converter

DATA_LAYERS = ('Input', 'Data', 'ImageData', 'HDF5Data', 'MemoryData', 'WindowData', 'DummyData')


@converter(*DATA_LAYERS)
def graph_inputs(ctx):
    """Each top is a graph input named as its blob, with the built net's shape."""
    for i in range(len(ctx.top_shapes)):
        ctx.graph_input(i)


@converter('Silence')
def silence(ctx):
    pass


@converter('Split', 'Dropout')
def identity(ctx):
    """Split's tops are its bottom; Dropout at test time is the identity (Caffe's scaled training)."""
    if ctx.type == 'Dropout' and ctx.layer.phase != caffe_pb2.TEST:
        raise ctx.refuse('Dropout in TRAIN draws at random')
    for i in range(len(ctx.top_shapes)):
        ctx.alias(i, ctx.bottoms[0])


@converter('Parameter')
def parameter(ctx):
    ctx.alias(0, ctx.weight(0))


@converter('InnerProduct')
def inner_product(ctx):
    p = ctx.param.inner_product_param
    axis = ctx.axis(p.axis)
    flat = ctx.op('Flatten', [ctx.bottoms[0]], axis=axis)
    inputs = [flat, ctx.weight(0, what='weight')]
    if p.bias_term:
        inputs.append(ctx.weight(1, what='bias'))
    two_d = len(ctx.top_shapes[0]) == 2 and axis == 1
    out = ctx.op('Gemm', inputs, ctx.top(0) if two_d else None, transB=0 if p.transpose else 1)
    if not two_d:
        ctx.reshape(out, ctx.top_shapes[0], ctx.top(0), keep_batch=axis > 0)


@converter('Concat')
def concat(ctx):
    p = ctx.param.concat_param
    axis = p.concat_dim if p.HasField('concat_dim') else ctx.axis(p.axis)
    ctx.op('Concat', ctx.bottoms, ctx.top(0), axis=axis)


@converter('Slice')
def slice_layer(ctx):
    p = ctx.param.slice_param
    axis = p.slice_dim if p.HasField('slice_dim') else ctx.axis(p.axis)
    sizes = [shape[axis] for shape in ctx.top_shapes]
    outs = [ctx.top(i) for i in range(len(sizes))]
    ctx.op_multi('Split', [ctx.bottoms[0], ctx.ints(sizes, 'split')], outs, axis=axis)


@converter('Flatten', 'Reshape')
def reshape(ctx):
    """To the built net's top shape; with -dynamic_batch the batch axis must stay first and whole."""
    if ctx.type == 'Flatten':
        keep = ctx.axis(ctx.param.flatten_param.axis) > 0
    else:
        p = ctx.param.reshape_param
        keep = ctx.axis(p.axis, len(ctx.bottom_shapes[0]) + 1) > 0 or (p.shape.dim and p.shape.dim[0] == 0)
    ctx.reshape(ctx.bottoms[0], ctx.top_shapes[0], ctx.top(0), keep_batch=bool(keep))


@converter('Crop')
def crop(ctx):
    p = ctx.param.crop_param
    start = ctx.axis(p.axis)
    axes = list(range(start, len(ctx.bottom_shapes[0])))
    offsets = [p.offset[0] if len(p.offset) == 1 else p.offset[i] if p.offset else 0
               for i in range(len(axes))]
    ends = [o + ctx.bottom_shapes[1][a] for o, a in zip(offsets, axes)]
    bounds = [ctx.ints(offsets, 'starts'), ctx.ints(ends, 'ends'), ctx.ints(axes, 'axes')]
    ctx.op('Slice', [ctx.bottoms[0]] + bounds, ctx.top(0))


@converter('Tile')
def tile(ctx):
    p = ctx.param.tile_param
    repeats = [1] * len(ctx.bottom_shapes[0])
    repeats[ctx.axis(p.axis)] = p.tiles
    ctx.op('Tile', [ctx.bottoms[0], ctx.ints(repeats, 'repeats')], ctx.top(0))


@converter('Eltwise')
def eltwise(ctx):
    p = ctx.param.eltwise_param
    op = p.operation
    if op == p.PROD:
        out = ctx.bottoms[0]
        for i, b in enumerate(ctx.bottoms[1:], 2):
            out = ctx.op('Mul', [out, b], ctx.top(0) if i == len(ctx.bottoms) else None)
    elif op == p.MAX:
        ctx.op('Max', ctx.bottoms, ctx.top(0))
    else:
        coeffs = list(p.coeff) or [1.0] * len(ctx.bottoms)
        terms = [b if c == 1 else ctx.op('Mul', [b, ctx.const(c, 'coeff%d' % i)])
                 for i, (b, c) in enumerate(zip(ctx.bottoms, coeffs))]
        ctx.op('Sum', terms, ctx.top(0))


@converter('Softmax')
def softmax(ctx):
    ctx.op('Softmax', [ctx.bottoms[0]], ctx.top(0), axis=ctx.axis(ctx.param.softmax_param.axis))


@converter('Reduction')
def reduction(ctx):
    """SUM, ASUM, SUMSQ or MEAN over every axis from `axis` on, times coeff."""
    p = ctx.param.reduction_param
    axis = ctx.axis(p.axis)
    ops = {p.SUM: 'ReduceSum', p.ASUM: 'ReduceL1', p.SUMSQ: 'ReduceSumSquare', p.MEAN: 'ReduceMean'}
    axes = list(range(axis, len(ctx.bottom_shapes[0])))
    if p.coeff == 1:
        ctx.reduce(ops[p.operation], ctx.bottoms[0], axes, False, ctx.top(0))
    else:
        reduced = ctx.reduce(ops[p.operation], ctx.bottoms[0], axes, False)
        ctx.op('Mul', [reduced, ctx.const(p.coeff, 'coeff')], ctx.top(0))


@converter('ArgMax')
def argmax(ctx):
    """TopK on the reversed axis: Caffe breaks ties toward the larger index, TopK toward the smaller."""
    p = ctx.param.argmax_param
    shape, k = ctx.bottom_shapes[0], p.top_k
    if p.HasField('axis'):
        axis = ctx.axis(p.axis)
        rows = ctx.bottoms[0]
    else:
        axis = 1
        rows = ctx.reshape(ctx.bottoms[0], (shape[0], int(np.prod(shape[1:]))))
    dim = ctx.bottom_shapes[0][axis] if p.HasField('axis') else int(np.prod(shape[1:]))
    flipped = ctx.op('Slice', [rows, ctx.ints([-1], 'starts'), ctx.ints([-dim - 1], 'ends'),
                               ctx.ints([axis], 'axes'), ctx.ints([-1], 'steps')])
    values, order = ctx.tmp('values'), ctx.tmp('order')
    ctx.op_multi('TopK', [flipped, ctx.ints([k], 'k')], [values, order], axis=axis, largest=1, sorted=1)
    index = ctx.op('Sub', [ctx.const(dim - 1, 'last'), ctx.op('Cast', [order], to=1)])
    if p.HasField('axis'):
        if p.out_max_val:
            ctx.alias(0, values)
        else:
            ctx.alias(0, index)
        return
    parts = [index, values] if p.out_max_val else [index]
    stacked = ctx.op('Concat', [ctx.op('Unsqueeze', [t, ctx.ints([1], 'axis1')]) for t in parts], axis=1)
    ctx.reshape(stacked, ctx.top_shapes[0], ctx.top(0))


@converter('Embed')
def embed(ctx):
    p = ctx.param.embed_param
    indices = ctx.op('Cast', [ctx.bottoms[0]], to=7)
    if not p.bias_term:
        ctx.op('Gather', [ctx.weight(0, what='weight'), indices], ctx.top(0), axis=0)
        return
    rows = ctx.op('Gather', [ctx.weight(0, what='weight'), indices], axis=0)
    ctx.op('Add', [rows, ctx.weight(1, what='bias')], ctx.top(0))


@converter('BatchReindex')
def batch_reindex(ctx):
    indices = ctx.op('Cast', [ctx.bottoms[1]], to=7)
    ctx.op('Gather', [ctx.bottoms[0], indices], ctx.top(0), axis=0)


@converter('Filter')
def filter_layer(ctx):
    """Items (along axis 0) whose selector, the last bottom, is non-zero: Compress. The number kept
    depends on the data, so the outputs' first dimension is symbolic."""
    selector = ctx.op('Cast', [ctx.reshape(ctx.bottoms[-1], (ctx.bottom_shapes[-1][0],))], to=9)
    for i, bottom in enumerate(ctx.bottoms[:-1]):
        ctx.op('Compress', [bottom, selector], ctx.top(i), axis=0)
