"""Depthwise 3x3 convolutions of MobileNet's shapes: Convolution with group = channels (one GEMM per
group) against DepthwiseConvolution (one multiply-add of the whole batch per kernel tap).

    python benchmarks/bench_depthwise.py [--iters 5]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import caffe_py as caffe  # noqa: E402
from caffe_py import formats  # noqa: E402

SHAPES = [(8, 32, 112, 112, 1), (8, 128, 56, 56, 1), (8, 256, 28, 28, 2), (8, 512, 14, 14, 1), (8, 1024, 7, 7, 1)]


def net(kind, n, c, h, w, stride):
    text = ('input: "x" input_shape { dim: %d dim: %d dim: %d dim: %d }\n'
            'layer { name: "dw" type: "%s" bottom: "x" top: "y" convolution_param { num_output: %d group: %d '
            'kernel_size: 3 pad: 1 stride: %d weight_filler { type: "msra" } } }' % (n, c, h, w, kind, c, c, stride))
    param = formats.parse_net_text(text)
    param.force_backward = True
    return caffe.Net(param, caffe.TRAIN)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--iters', type=int, default=5)
    args = parser.parse_args()
    import logging
    logging.getLogger('caffe_py').setLevel(logging.ERROR)
    print('shape (N, C, H, W, stride) | Convolution f+b ms | DepthwiseConvolution f+b ms | speed-up')
    for shape in SHAPES:
        times = []
        for kind in ('Convolution', 'DepthwiseConvolution'):
            model = net(kind, *shape)
            model.blobs['x'].data[...] = np.random.default_rng(0).standard_normal(shape[:4])
            best = float('inf')
            for _ in range(args.iters):
                start = time.perf_counter()
                model.forward()
                model.backward()
                best = min(best, time.perf_counter() - start)
            times.append(best * 1000)
        print('%s | %.1f | %.1f | %.1fx' % (shape, times[0], times[1], times[0] / times[1]))


if __name__ == '__main__':
    main()
