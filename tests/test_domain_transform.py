"""DeepLab's DomainTransform: the fork's loops written out (forward and its backward), float64
gradients, per-image regions, GPU mode on CuPy's stand-in."""
import math

import numpy as np
import pytest

from caffe_py import TRAIN
from harness import layer_gradient_check, layer_net, rand


def fork_domain_transform(x, ref, dims, top_diff, num_iter, spatial, rng_sigma, min_weight):
    """The fork's Forward_cpu and Backward_cpu, loop by loop, in float64."""
    num, channels, height, width = x.shape
    sigma = [spatial * math.sqrt(3.0) * 2.0 ** (num_iter - (i + 1.0)) / math.sqrt(4.0 ** num_iter - 1.0)
             for i in range(num_iter)]
    y, dx, dref = x.copy(), top_diff.copy(), np.zeros_like(ref)
    for n in range(num):
        ih, iw = int(dims[n, 0, 0, 0]), int(dims[n, 0, 0, 1])

        def weights(i):
            a = np.ones((height, width))
            for h in range(ih):
                for w in range(iw):
                    v = math.exp(-math.sqrt(2.0) / sigma[i] * (1 + ref[n, 0, h, w] * spatial / rng_sigma))
                    a[h, w] = min(max(v, min_weight), 1.0)
            return a

        inter = {}
        for i in range(num_iter):
            a = weights(i)
            for c in range(channels):
                o = y[n, c]
                r = [np.zeros((height, width)) for _ in range(4)]
                for h in range(ih):
                    for w in range(1, iw):
                        r[0][h, w] = o[h, w - 1] - o[h, w]
                        o[h, w] += a[h, w] * r[0][h, w]
                for h in range(ih):
                    for w in range(iw - 2, -1, -1):
                        r[1][h, w] = o[h, w + 1] - o[h, w]
                        o[h, w] += a[h, w + 1] * r[1][h, w]
                for w in range(iw):
                    for h in range(1, ih):
                        r[2][h, w] = o[h - 1, w] - o[h, w]
                        o[h, w] += a[h, w] * r[2][h, w]
                for w in range(iw):
                    for h in range(ih - 2, -1, -1):
                        r[3][h, w] = o[h + 1, w] - o[h, w]
                        o[h, w] += a[h + 1, w] * r[3][h, w]
                inter[i, c] = r
        for i in reversed(range(num_iter)):
            a = weights(i)
            wd = np.zeros((height, width))
            for c in range(channels):
                g, r = dx[n, c], inter[i, c]
                for w in range(iw):
                    for h in range(ih - 1):
                        wd[h + 1, w] += g[h, w] * r[3][h, w]
                        g[h + 1, w] += a[h + 1, w] * g[h, w]
                        g[h, w] *= 1 - a[h + 1, w]
                for w in range(iw):
                    for h in range(ih - 1, 0, -1):
                        wd[h, w] += g[h, w] * r[2][h, w]
                        g[h - 1, w] += a[h, w] * g[h, w]
                        g[h, w] *= 1 - a[h, w]
                for h in range(ih):
                    for w in range(iw - 1):
                        wd[h, w + 1] += g[h, w] * r[1][h, w]
                        g[h, w + 1] += a[h, w + 1] * g[h, w]
                        g[h, w] *= 1 - a[h, w + 1]
                for h in range(ih):
                    for w in range(iw - 1, 0, -1):
                        wd[h, w] += g[h, w] * r[0][h, w]
                        g[h, w - 1] += a[h, w] * g[h, w]
                        g[h, w] *= 1 - a[h, w]
            dref[n, 0, :ih, :iw] += (-math.sqrt(2.0) / sigma[i] * spatial / rng_sigma * wd * a)[:ih, :iw]
    return y, dx, dref


DT = 'type: "DomainTransform" domain_transform_param { num_iter: 2 spatial_sigma: 3 range_sigma: 0.5 %s }'


def inputs(seed=0):
    x = rand(2, 3, 5, 6, seed=seed)
    ref = np.abs(rand(2, 1, 5, 6, seed=seed + 1))     # gradient magnitudes: the weights are not clipped
    dims = np.array([5, 6, 3, 4], np.float64).reshape(2, 1, 1, 2)
    return {'x': x, 'ref': ref, 'dims': dims}


@pytest.mark.parametrize('extra', ['', 'min_weight: 0.3'])
def test_domain_transform_against_the_forks_loops(extra):
    data = inputs()
    net = layer_net(data, DT % extra, phase=TRAIN)
    net.forward()
    top_diff = rand(2, 3, 5, 6, seed=7)
    net.blobs['y'].diff[...] = top_diff
    net.backward_from_to()
    y, dx, dref = fork_domain_transform(data['x'], data['ref'], data['dims'], top_diff, 2, 3.0, 0.5,
                                        float(np.float32(0.3)) if extra else 0.0)   # a float field
    np.testing.assert_allclose(net.blobs['y'].data, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.blobs['x'].diff, dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.blobs['ref'].diff, dref, rtol=1e-10, atol=1e-12)
    # outside each image's region the features pass through
    np.testing.assert_array_equal(net.blobs['y'].data[1, :, 3:], data['x'][1, :, 3:])


def test_domain_transform_gradient():
    layer_gradient_check(inputs(3), DT % '', no_grad=('dims',))


def test_domain_transform_checks_regions_and_runs_on_the_cupy_stand_in():
    import fakecupy
    data = inputs()
    bad = dict(data, dims=np.array([6, 6, 3, 4], np.float64).reshape(2, 1, 1, 2))
    with pytest.raises(ValueError, match='input_height should be less than or equal to height'):
        layer_net(bad, DT % '').forward()
    host = layer_net(data, DT % '', phase=TRAIN)
    host.forward()
    host.blobs['y'].diff[...] = 1
    host.backward_from_to()
    with fakecupy.fake_gpu():
        dev = layer_net(data, DT % '', phase=TRAIN)
        dev.forward()
        dev.blobs['y'].diff[...] = 1
        dev.backward_from_to()
        for name in ('y', 'x', 'ref'):
            np.testing.assert_allclose(dev.blobs[name].data, host.blobs[name].data, rtol=1e-12)
            np.testing.assert_allclose(dev.blobs[name].diff, host.blobs[name].diff, rtol=1e-12, atol=1e-14)
    only = layer_net(data, DT.replace('"DomainTransform"', '"DomainTransformForwardOnly"') % '')
    only.forward()
    np.testing.assert_allclose(only.blobs['y'].data, host.blobs['y'].data)
