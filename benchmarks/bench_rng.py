"""Caffe's random streams (caffe_py.rng) against NumPy's generator: values per second.

    python benchmarks/bench_rng.py [--sizes 1000000,100000000] [--rounds 5]

For each size, each distribution is drawn in float32 (bernoulli: Dropout's double
threshold) by caffe_py.rng.CaffeStream and by numpy.random.Generator (MT19937, the
same engine), alternating the two `rounds` times (half as many above 10M values); the
best round of each is reported, in millions of values per second, with the ratio of
their times.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from caffe_py import rng  # noqa: E402


def contenders():
    caffe = rng.CaffeStream(1701)
    numpy = np.random.Generator(np.random.MT19937(1701))
    return {
        'uniform': (lambda n: caffe.uniform(n, -1, 1), lambda n: numpy.uniform(-1, 1, n).astype(np.float32)),
        'uniform (float32 path)': (lambda n: caffe.uniform(n, 0, 1), lambda n: numpy.random(n, np.float32)),
        'gaussian': (lambda n: caffe.gaussian(n, 0, 1), lambda n: numpy.standard_normal(n, np.float32)),
        'bernoulli': (lambda n: caffe.bernoulli(n, 0.5, np.float64), lambda n: numpy.random(n, np.float32) < 0.5),
    }


def seconds(fn, n):
    start = time.perf_counter()
    fn(n)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', default='1000000,100000000', help='values per draw, comma-separated')
    parser.add_argument('--rounds', type=int, default=5)
    args = parser.parse_args()
    print('%-24s %12s %14s %14s %16s' % ('distribution', 'values', 'caffe (M/s)', 'numpy (M/s)',
                                         'caffe time / numpy'))
    for n in (int(s) for s in args.sizes.split(',')):
        rounds = args.rounds if n <= 10 ** 7 else max(1, args.rounds // 2)
        for name, (caffe, numpy) in contenders().items():
            caffe(1000), numpy(1000)
            ours, theirs = float('inf'), float('inf')
            for _ in range(rounds):
                ours = min(ours, seconds(caffe, n))
                theirs = min(theirs, seconds(numpy, n))
            print('%-24s %12d %14.1f %14.1f %16.2f' % (name, n, n / ours / 1e6, n / theirs / 1e6, ours / theirs))


if __name__ == '__main__':
    main()
