"""Convolution, Deconvolution, Pooling and LRN as ONNX operators, with Caffe's exact geometry."""
import numpy as np

from ..layers.vision import pooled_extent
from ..proto import caffe_pb2
from .graph import converter

PoolingParameter = caffe_pb2.PoolingParameter


def _convolve(ctx, op_type):
    """One Conv/ConvTranspose per bottom, all with the layer's weights."""
    layer = ctx.layer
    if layer.axis != 1:
        raise ctx.refuse('convolution over axis %d (ONNX convolves from axis 1)' % layer.axis)
    params = [ctx.weight(0, what='weight')] + ([ctx.weight(1, what='bias')] if layer.bias_term else [])
    for i, bottom in enumerate(ctx.bottoms):
        ctx.op(op_type, [bottom] + params, ctx.top(i), kernel_shape=list(layer.kernel),
               strides=list(layer.stride), pads=list(layer.pad) * 2, dilations=list(layer.dilation),
               group=layer.group)


@converter('Convolution')
def convolution(ctx):
    _convolve(ctx, 'Conv')


@converter('Deconvolution')
def deconvolution(ctx):
    """Caffe's weights (in, out/group, *k) are ConvTranspose's layout; the output sizes agree."""
    _convolve(ctx, 'ConvTranspose')


def pool_extents(ctx, size, kernel, stride, pad, ceil_mode):
    """(Caffe's output size, padding after the end) for one spatial axis.

    The output size is the pooling layer's (pooled_extent); the end padding makes ONNX's
    floor-mode count equal Caffe's and is less than the kernel.
    """
    out = pooled_extent(size, kernel, stride, pad, ceil_mode)
    if (out - 1) * stride - pad >= size:
        raise ctx.refuse('its last window lies wholly outside the input (size %d, kernel %d, stride %d): '
                         'Caffe pools it to -FLT_MAX or 0, ONNX has no such window' % (size, kernel, stride))
    return out, max(0, (out - 1) * stride + kernel - size - pad)


def _zero_padded(ctx, x, pads):
    """x with `pads` (h_begin, w_begin, h_end, w_end) zeros around its planes (no node if none)."""
    if not any(pads):
        return x
    return ctx.op('Pad', [x, ctx.ints([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], 'pads')])


def ave_divisors(sizes, outs, kernel, stride, pad):
    """Caffe's AVE divisor per output cell: the window clipped to the padded extent [-pad, size + pad)."""
    counts = []
    for size, out, k, s, p in zip(sizes, outs, kernel, stride, pad):
        start = np.arange(out) * s - p
        counts.append(np.minimum(start + k, size + p) - start)
    return np.outer(counts[0], counts[1]).astype(np.float64)


@converter('Pooling')
def pooling(ctx):
    layer = ctx.layer
    x = ctx.bottoms[0]
    if len(ctx.top_shapes) > 1:
        _max_with_mask(ctx, x)
        return
    if layer.global_pooling and layer.method in (PoolingParameter.MAX, PoolingParameter.AVE):
        op = 'GlobalMaxPool' if layer.method == PoolingParameter.MAX else 'GlobalAveragePool'
        ctx.op(op, [x], ctx.top(0))
        return
    if layer.method == PoolingParameter.STOCHASTIC and layer.phase != caffe_pb2.TEST:
        raise ctx.refuse('STOCHASTIC pooling in TRAIN draws at random')
    pool(ctx, x, layer.method, list(layer.kernel), list(layer.stride), list(layer.pad), layer.ceil_mode,
         ctx.top(0))


def _max_with_mask(ctx, x):
    """MAX pooling and its mask top: Caffe's mask is the index within the plane (h * W + w) of the first
    maximum; MaxPool's Indices count over the whole (N, C, H, W) tensor, so take them modulo H * W."""
    layer = ctx.layer
    if layer.global_pooling:
        kernel, stride, pad = list(ctx.bottom_shapes[0][2:]), [1, 1], [0, 0]
    else:
        kernel, stride, pad = list(layer.kernel), list(layer.stride), list(layer.pad)
    sizes = ctx.bottom_shapes[0][2:]
    ends = [pool_extents(ctx, n, k, s, p, layer.ceil_mode)[1]
            for n, k, s, p in zip(sizes, kernel, stride, pad)]
    indices = ctx.tmp('indices')
    ctx.op_multi('MaxPool', [x], [ctx.top(0), indices], kernel_shape=kernel, strides=stride, pads=pad + ends)
    plane = ctx.op('Mod', [indices, ctx.ints([sizes[0] * sizes[1]], 'plane')])
    ctx.op('Cast', [plane], ctx.top(1), to=1)


def pool(ctx, x, method, kernel, stride, pad, ceil_mode, out):
    """Caffe's 2-D pooling of bottom 0's planes into `out`, output sizes and divisors exactly as Caffe's."""
    sizes = ctx.bottom_shapes[0][2:]
    extents = [pool_extents(ctx, n, k, s, p, ceil_mode) for n, k, s, p in zip(sizes, kernel, stride, pad)]
    outs, ends = [e[0] for e in extents], [e[1] for e in extents]
    if method == PoolingParameter.MAX:
        # MaxPool's padding never wins a max, as Caffe's clipped windows
        return ctx.op('MaxPool', [x], out, kernel_shape=kernel, strides=stride, pads=pad + ends)
    padded = _zero_padded(ctx, x, pad + ends)
    if method == PoolingParameter.AVE:
        # a plain average of whole windows over the zero-padded input is sum / (kh * kw); rescale to
        # Caffe's divisor where its window was clipped at the padded extent
        ratio = np.prod(kernel) / ave_divisors(sizes, outs, kernel, stride, pad)
        if np.all(ratio == 1):
            return ctx.op('AveragePool', [padded], out, kernel_shape=kernel, strides=stride)
        mean = ctx.op('AveragePool', [padded], kernel_shape=kernel, strides=stride)
        return ctx.op('Mul', [mean, ctx.const(ratio.reshape(1, 1, *outs), 'divisor_ratio')], out)
    # STOCHASTIC at test time: sum(x^2) / sum(x) over each window, 0 where the sum is not positive
    squares = ctx.op('Mul', [padded, padded])
    sum_sq = ctx.op('AveragePool', [squares], kernel_shape=kernel, strides=stride)
    total = ctx.op('AveragePool', [padded], kernel_shape=kernel, strides=stride)
    zero = ctx.const(0.0, 'zero')
    positive = ctx.op('Greater', [total, zero])
    safe = ctx.op('Where', [positive, total, ctx.const(1.0, 'one')])
    return ctx.op('Where', [positive, ctx.op('Div', [sum_sq, safe]), zero], out)


@converter('SPP')
def spp(ctx):
    """Level l pools into 2^l x 2^l bins (kernel = stride = ceil(size / bins), centred padding);
    the levels are flattened and concatenated."""
    p = ctx.param.spp_param
    if p.pool == PoolingParameter.STOCHASTIC:
        raise ctx.refuse("STOCHASTIC pooling inside SPP runs in TRAIN mode (Caffe's inner layers): random")
    n, c, h, w = ctx.bottom_shapes[0]
    levels = []
    for level in range(p.pyramid_height):
        bins = 2 ** level
        kernel = [-(-h // bins), -(-w // bins)]
        pad = [(kernel[0] * bins - h + 1) // 2, (kernel[1] * bins - w + 1) // 2]
        last = p.pyramid_height == 1
        pooled = pool(ctx, ctx.bottoms[0], p.pool, kernel, kernel, pad, True, ctx.top(0) if last else None)
        if not last:
            levels.append(ctx.reshape(pooled, (n, c * bins * bins)))
    if levels:
        ctx.op('Concat', levels, ctx.top(0), axis=1)


@converter('Im2col')
def im2col(ctx):
    """A convolution with one-hot filters: output channel (c * kh + i) * kw + j takes x[c] at kernel
    offset (i, j), Caffe's column order (a product with 1 and sums of zeros: exact)."""
    layer = ctx.layer
    if layer.axis != 1 or layer.num_spatial != 2:
        raise ctx.refuse('only 2-D im2col over axis 1 is exported')
    channels = ctx.bottom_shapes[0][1]
    kh, kw = layer.kernel
    weight = np.zeros((channels, kh, kw, 1, kh, kw), np.float32)
    i, j = np.meshgrid(np.arange(kh), np.arange(kw), indexing='ij')
    weight[:, i, j, 0, i, j] = 1
    ctx.op('Conv', [ctx.bottoms[0], ctx.const(weight.reshape(channels * kh * kw, 1, kh, kw), 'one_hot')],
           ctx.top(0), kernel_shape=[kh, kw], strides=list(layer.stride), pads=list(layer.pad) * 2,
           dilations=list(layer.dilation), group=channels)


@converter('LRN')
def lrn(ctx):
    layer = ctx.layer
    x = ctx.bottoms[0]
    if layer.across:
        ctx.op('LRN', [x], ctx.top(0), size=layer.size, alpha=float(layer.alpha), beta=float(layer.beta),
               bias=float(layer.k))
        return
    # WITHIN_CHANNEL: x * (1 + alpha * mean of x^2 over size x size, padded cells counted)^-beta
    pre = layer.pre_pad
    squares = _zero_padded(ctx, ctx.op('Mul', [x, x]), [pre] * 4)
    mean = ctx.op('AveragePool', [squares], kernel_shape=[layer.size] * 2, strides=[1, 1])
    base = ctx.op('Add', [ctx.op('Mul', [mean, ctx.const(layer.alpha, 'alpha')]), ctx.const(1.0, 'one')])
    scale = ctx.op('Pow', [base, ctx.const(-layer.beta, 'minus_beta')])
    ctx.op('Mul', [x, scale], ctx.top(0))
