"""CPU fast paths: pooling on the phase grid (bit-exact with Caffe's loops) and the split matrix products."""
import numpy as np
import pytest

from caffe_py.layers import cores, im2col
from caffe_py.layers.vision import AVE, MAX, Pool2d

FLT_MAX = np.finfo(np.float32).max


def caffe_pooling(method, x, dy, kernel, stride, pad, ceil_mode):
    """Caffe's CPU MAX/AVE pooling forward and backward, loop by loop: (top, mask, bottom diff)."""
    height, width = x.shape[2:]
    pooled = []
    for size, k, s, p in zip((height, width), kernel, stride, pad):
        span = size + 2 * p - k
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if p and (out - 1) * s >= size + p:        # the last window must start inside the image
            out -= 1
        pooled.append(out)
    shape = x.shape[:2] + tuple(pooled)
    assert Pool2d(method, kernel, stride, pad, ceil_mode).reshape(x.shape) == shape
    real = x.dtype.type
    top, mask, dx = np.zeros(shape, x.dtype), -np.ones(shape, int), np.zeros_like(x)
    for n, c, ph, pw in np.ndindex(*shape):
        h0, w0 = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
        h1, w1 = min(h0 + kernel[0], height + pad[0]), min(w0 + kernel[1], width + pad[1])
        size = real((h1 - h0) * (w1 - w0))
        rows, cols = range(max(h0, 0), min(h1, height)), range(max(w0, 0), min(w1, width))
        if method == MAX:
            best, index = real(-FLT_MAX), -1
            for h in rows:
                for w in cols:
                    if x[n, c, h, w] > best:
                        best, index = x[n, c, h, w], h * width + w
            top[n, c, ph, pw], mask[n, c, ph, pw] = best, index
            if index >= 0:
                dx[n, c, index // width, index % width] += dy[n, c, ph, pw]
        else:
            total = real(0)
            for h in rows:
                for w in cols:
                    total = real(total + x[n, c, h, w])
            top[n, c, ph, pw] = total / size
            for h in rows:
                for w in cols:
                    dx[n, c, h, w] = real(dx[n, c, h, w] + dy[n, c, ph, pw] / size)
    return top, mask, dx


GEOMETRIES = [  # kernel, stride, pad, (H, W), ceil_mode
    ((3, 3), (2, 2), (0, 0), (9, 8), True),
    ((3, 3), (2, 2), (1, 1), (7, 9), True),
    ((2, 2), (2, 2), (0, 0), (6, 6), True),
    ((3, 2), (1, 2), (1, 0), (5, 7), True),
    ((2, 2), (3, 3), (0, 0), (10, 11), True),
    ((4, 3), (2, 3), (2, 1), (8, 9), False),
    ((3, 3), (2, 2), (0, 0), (8, 8), False),
    ((1, 1), (2, 1), (0, 0), (5, 4), True),
    ((2, 2), (3, 3), (1, 1), (5, 5), True),     # ceil's last window would start in the padding: dropped
]


@pytest.mark.parametrize('kernel,stride,pad,size,ceil_mode', GEOMETRIES)
@pytest.mark.parametrize('method', [MAX, AVE])
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_pooling_is_bit_exact_with_caffe_loops(method, kernel, stride, pad, size, ceil_mode, dtype):
    rng = np.random.default_rng(sum(kernel) * 7 + sum(size))
    x = rng.standard_normal((2, 3) + size).astype(dtype)
    x[0] = np.round(x[0])                     # ties: the first maximum in row-major order wins
    if method == MAX:
        x.flat[::7] = np.nan                  # never wins
        x.flat[3::11] = -np.inf
    pool = Pool2d(method, kernel, stride, pad, ceil_mode)
    shape = pool.reshape(x.shape)
    dy = rng.standard_normal(shape).astype(dtype)
    top, mask, dx = np.empty(shape, dtype), np.empty(shape, dtype), np.full(x.shape, 5, dtype)
    with np.errstate(all='ignore'):
        pool.forward(x, top, mask if method == MAX else None)
        pool.backward(dy, dx)
        ref_top, ref_mask, ref_dx = caffe_pooling(method, x, dy, kernel, stride, pad, ceil_mode)
    np.testing.assert_array_equal(top, ref_top)
    np.testing.assert_array_equal(dx, ref_dx)
    if method == MAX:
        np.testing.assert_array_equal(mask, ref_mask)


def test_max_pooling_with_non_finite_top_diff_routes_only_to_the_maxima():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 7, 7)).astype(np.float32)
    pool = Pool2d(MAX, (3, 3), (2, 2), (1, 1))
    shape = pool.reshape(x.shape)
    dy = rng.standard_normal(shape).astype(np.float32)
    dy[0, 0, 1, 1], dy[1, 1, 2, 0] = np.inf, np.nan
    top, dx = np.empty(shape, np.float32), np.empty_like(x)
    pool.forward(x, top)
    pool.backward(dy, dx)
    ref_dx = caffe_pooling(MAX, x, dy, (3, 3), (2, 2), (1, 1), True)[2]
    np.testing.assert_array_equal(dx, ref_dx)


@pytest.mark.parametrize('m,k,n,transposed', [(300, 40, 7, False), (5, 60, 400, False), (64, 64, 64, False),
                                               (5, 60, 400, True), (64, 30, 90, True)])
def test_split_matmul_and_accumulation(monkeypatch, m, k, n, transposed):
    monkeypatch.setattr(cores, 'MIN_SPLIT_GEMM', 1)
    monkeypatch.setattr(cores, 'MIN_PARALLEL', 1)
    monkeypatch.setattr(cores, 'CORES', 3)
    monkeypatch.setattr(cores, 'ACCUMULATE_BYTES', 256)
    rng = np.random.default_rng(5)
    a = rng.standard_normal((m, k))
    b = rng.standard_normal((n, k)).T if transposed else rng.standard_normal((k, n))
    out = np.empty((n, m)).T                  # a strided view
    cores.matmul(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
    acc = np.ones((m, n))
    cores.matmul_add(a, b, acc)
    np.testing.assert_allclose(acc, 1 + a @ b, rtol=1e-12, atol=1e-12)


def test_blas_threads_are_restored_after_products():
    if cores._openblas is None:
        pytest.skip('no OpenBLAS found in this process')
    get = cores._openblas[0]
    before = get()
    a = np.ones((512, 512), np.float32)
    cores.matmul(a, a, np.empty_like(a))
    cores.matmul_add(a, a, np.zeros_like(a))
    assert get() == before


@pytest.mark.parametrize('kernel,stride,pad,dilation', [
    ((11, 11), (4, 4), (0, 0), (1, 1)), ((3, 2), (2, 3), (1, 0), (1, 1)), ((3, 3), (2, 2), (2, 1), (2, 3)),
    ((1, 1), (3, 2), (0, 0), (1, 1)), ((5, 4), (3, 1), (2, 2), (2, 1))])
def test_strided_columns_equal_the_patch_view(kernel, stride, pad, dilation):
    size = (23, 19)
    out = tuple(im2col.conv_out_size(*args) for args in zip(size, kernel, stride, pad, dilation))
    window = im2col.Window(kernel, stride, pad, dilation, size, out)
    x = np.random.default_rng(6).standard_normal((3, 2) + size).astype(np.float32)
    padded = window.padded_input(x, im2col.Buffers())
    expected = window.patches(padded, 2).transpose(1, 2, 3, 0, 4, 5)
    cols = np.full(expected.shape, np.nan, np.float32)
    im2col.strided_columns(window, padded, cols, im2col.Buffers())
    np.testing.assert_array_equal(cols, expected)
