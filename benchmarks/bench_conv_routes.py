"""Both CPU routes for every unit-stride convolution of LeNet, CIFAR10-quick and CaffeNet.

    python benchmarks/bench_conv_routes.py [--iters N]

Times forward and forward+backward of each layer as im2col + GEMM and as the spectral
product (caffe_py.layers.spectral), next to the cost ratio the route choice uses; the
choice should fall on the faster route. This is what BYTE_COST and ADVANTAGE were fitted to.
"""
import argparse
import statistics

import numpy as np

from bench_cpu_nets import NETS, build, timed
from caffe_py.layers import spectral, vision


def median_ms(fn, iters):
    return statistics.median(timed(fn, iters))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print('%-24s %17s %17s %10s %10s  %s' % ('layer', 'GEMM f / f+b', 'spectral f / f+b', 'measured',
                                            'modelled', 'chosen'))
    for name, path, batch in NETS:
        net = build(path, batch)
        for layer in net.layers:
            window = getattr(getattr(layer, 'core', None), 'window', None)
            if window is None or window.stride != (1,) * len(window.stride):
                continue
            im = rng.standard_normal(layer.bottom_shape, dtype=np.float32)
            top_diff = rng.standard_normal(layer.top_shape, dtype=np.float32)
            weight = layer.blobs[0].data
            out, weight_diff, im_diff = np.empty_like(top_diff), np.zeros_like(weight), np.empty_like(im)
            times = []
            for route in (vision._GemmConv, spectral.SpectralConv):
                core = route(window, layer.group, layer.conv_in, layer.conv_out)

                def both():
                    core.forward(im, weight, out)
                    core.backward(im, top_diff, weight, weight_diff, im_diff)
                forward = median_ms(lambda: core.forward(im, weight, out), args.iters)
                times.append((forward, median_ms(both, args.iters)))
            gemm, spectral_cost = spectral.costs(window, layer.group, layer.conv_in, layer.conv_out, layer.num)
            chosen = spectral.worthwhile(window, layer.group, layer.conv_in, layer.conv_out, layer.num)
            print('%-24s %8.1f / %6.1f %8.1f / %6.1f %10.2f %10.2f  %s' % (
                '%s %s' % (name, layer.layer_param.name), times[0][0], times[0][1], times[1][0], times[1][1],
                times[1][1] / times[0][1], spectral_cost / gemm, 'spectral' if chosen else 'GEMM'))


if __name__ == '__main__':
    main()
