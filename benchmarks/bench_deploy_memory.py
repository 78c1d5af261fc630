"""Memory of a deploy net built and run forward once: peak resident and virtual size, blob data, and
how many diffs were allocated (none, now that diffs are allocated on first use, as in Caffe).

    python benchmarks/bench_deploy_memory.py NET.prototxt [--batch N] [--root OTHER_CHECKOUT]

--root imports caffe_py from another checkout, to compare; each run is its own process, so the
peaks are this net's alone.
"""
import argparse
import logging
import os
import resource
import sys
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('net')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--root', default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = parser.parse_args()
    sys.path.insert(0, args.root)
    import caffe_py
    logging.getLogger('caffe_py').setLevel(logging.ERROR)
    start = time.perf_counter()
    net = caffe_py.Net(args.net, caffe_py.TEST)
    for name in net.inputs:
        blob = net.blobs[name]
        blob.reshape(args.batch, *blob.shape[1:])
        blob.data[...] = np.random.default_rng(0).random(blob.shape)
    net.reshape()
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    net.forward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    blobs = list(net.blobs.values()) + [p for params in net.params.values() for p in params]
    diffs = sum(blob._diff_mem.head != 'uninitialized' for blob in blobs)
    with open('/proc/self/status') as f:
        status = dict(line.split(':', 1) for line in f)
    print('%s batch %d (%s): peak RSS %.0f MiB after building, %.0f MiB after forward; VmPeak %.0f MiB; '
          'blob data %.0f MiB; %d diffs allocated; %.1f s'
          % (os.path.basename(args.net), args.batch, os.path.dirname(caffe_py.__file__), built / 1024, peak / 1024,
             int(status['VmPeak'].split()[0]) / 1024, sum(b.count for b in net.blobs.values()) * 4 / 2 ** 20,
             diffs, time.perf_counter() - start))


if __name__ == '__main__':
    main()
