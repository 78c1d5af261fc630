"""An SSD detector at 300 x 300 on the CPU: caffe-py's forward next to OpenCV dnn's, same run.

    python benchmarks/bench_ssd.py [--iters 20] [--model deploy.prototxt (--weights w.caffemodel | --random-weights)]

Defaults to models/tiny_ssd (300 x 300 input, three heads, 1944 priors). Any SSD deploy net can be
given instead (MobileNet-SSD, VGG SSD300, the OpenCV face detector ...), with its caffemodel or with
random weights (scaled by fan-in, BatchNorm statistics 0 / 1) written to a temporary caffemodel.
Both libraries see the same input; the detections of the last round are compared.
"""
import argparse
import logging
import os
import sys
import tempfile

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bench_cpu_nets import timed  # noqa: E402

import caffe_py as caffe  # noqa: E402


def canonical(rows):
    rows = rows[rows[:, 2] > 0]
    return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]


def randomize(net, rng):
    """Weights that keep activations in range: convolutions scaled by fan-in, identity BatchNorm/Scale."""
    for layer in net.layers:
        blobs = layer.blobs
        if layer.type == 'BatchNorm':
            for blob, value in zip(blobs, (0, 1, 1)):
                blob.data[...] = value
        elif layer.type == 'Scale':
            for blob, value in zip(blobs, (1, 0)):
                blob.data[...] = value
        elif layer.type in ('Convolution', 'InnerProduct'):
            weight = blobs[0]
            weight.data[...] = rng.standard_normal(weight.shape) / np.sqrt(weight.count // weight.shape[0])
            for bias in blobs[1:]:
                bias.data[...] = rng.standard_normal(bias.shape) * 0.1
        for blob in blobs:
            if blob.num_axes == 0:           # OpenCV cannot read 0-d blobs (channel-shared Normalize scale)
                blob.reshape((1,))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tiny = os.path.join(ROOT, 'models', 'tiny_ssd')
    parser.add_argument('--model', default=os.path.join(tiny, 'deploy.prototxt'))
    parser.add_argument('--weights', default=os.path.join(tiny, 'tiny_ssd.caffemodel'))
    parser.add_argument('--random-weights', action='store_true')
    parser.add_argument('--iters', type=int, default=20)
    args = parser.parse_args(argv)
    caffe.log.init(logging.WARNING)
    if args.random_weights:
        net = caffe.Net(args.model, caffe.TEST)
        randomize(net, np.random.default_rng(0))
        args.weights = os.path.join(tempfile.mkdtemp(), 'random.caffemodel')
        net.save(args.weights)
    else:
        net = caffe.Net(args.model, caffe.TEST, weights=args.weights)
    shape = net.blobs[net.inputs[0]].shape
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    net.blobs[net.inputs[0]].data[...] = x
    cv = cv2.dnn.readNetFromCaffe(args.model, args.weights)
    cv.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    out = net.outputs[0]

    def opencv():
        cv.setInput(x)
        return cv.forward(out)

    rounds = {'caffe-py': [], 'OpenCV dnn': []}
    for _ in range(args.iters):          # alternate, so that drift hits both alike
        rounds['caffe-py'] += timed(net.forward, 1)
        rounds['OpenCV dnn'] += timed(opencv, 1)
    print('%s, input %s, %d rounds, OpenCV %s with %d threads, NumPy %s'
          % (os.path.basename(args.model), 'x'.join(map(str, shape)), args.iters, cv2.__version__,
             cv2.getNumThreads(), np.__version__))
    for name, times in rounds.items():
        print('  %-10s median %7.2f ms  min %7.2f ms' % (name, np.median(times), np.min(times)))
    mine, theirs = canonical(net.blobs[out].data[0, 0]), canonical(opencv()[0, 0])
    same = mine.shape == theirs.shape and np.allclose(mine, theirs, atol=1e-4)
    print('  detections: caffe-py %d, OpenCV %d, %s' % (len(mine), len(theirs), 'equal' if same else 'DIFFERENT'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
