"""CaffeNet and GoogLeNet inference: onnxruntime on the exported files next to caffe-py's own forward.

    python benchmarks/bench_onnx.py [--iters N] [--rounds R] [--batches 1,32] [--ort-threads T]

Each deploy net (models/, random weights from its fillers) is exported with a dynamic batch, then
timed at each batch size in caffe-py (Net.forward) and in onnxruntime (CPU provider; intra-op
threads --ort-threads, 0: its default, all cores, with spinning workers), alternating in rounds
because shared machines drift. The outputs are checked to agree within 1e-4 of their scale.
Prints milliseconds per batch, median (fastest), and images/s.
"""
import argparse
import os
import statistics
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import caffe_py  # noqa: E402
from caffe_py.onnx import export  # noqa: E402
from bench_cpu_nets import timed  # noqa: E402

NETS = [('CaffeNet', 'models/bvlc_reference_caffenet/deploy.prototxt'),
        ('GoogLeNet', 'models/bvlc_googlenet/deploy.prototxt')]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--batches', default='1,32')
    parser.add_argument('--ort-threads', type=int, default=0)
    args = parser.parse_args()
    import onnxruntime
    caffe_py.log.init(40)
    batches = [int(b) for b in args.batches.split(',')]
    print('| net | batch | caffe-py forward ms | onnxruntime ms | caffe-py img/s | onnxruntime img/s '
          '| caffe-py ms / onnxruntime ms |')
    print('|---|---|---|---|---|---|---|')
    for name, path in NETS:
        net = caffe_py.Net(os.path.join(ROOT, path), caffe_py.TEST)
        with tempfile.TemporaryDirectory() as folder:
            onnx_path = os.path.join(folder, 'model.onnx')
            export(net, onnx_path, dynamic_batch=True)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = args.ort_threads
            session = onnxruntime.InferenceSession(onnx_path, options, providers=['CPUExecutionProvider'])
        data = net.inputs[0]
        output = net.outputs[0]
        for batch in batches:
            shape = (batch,) + net.blobs[data].shape[1:]
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            net.blobs[data].reshape(x.shape)
            net.reshape()
            net.blobs[data].data[...] = x

            def caffe_forward():
                net.forward()

            def ort_forward():
                return session.run([output], {data: x})[0]

            caffe_forward()
            want = net.blobs[output].data
            error = np.abs(ort_forward() - want).max() / max(np.abs(want).max(), 1e-6)
            assert error <= 1e-4, (name, batch, error)
            caffe_ms, ort_ms = [], []
            for _ in range(args.rounds):
                caffe_ms += timed(caffe_forward, args.iters)
                ort_ms += timed(ort_forward, args.iters)
            c, o = statistics.median(caffe_ms), statistics.median(ort_ms)
            print('| %s | %d | %.1f (%.1f) | %.1f (%.1f) | %.0f | %.0f | %.2f |'
                  % (name, batch, c, min(caffe_ms), o, min(ort_ms), 1000 * batch / c, 1000 * batch / o,
                     c / o))
            sys.stdout.flush()


if __name__ == '__main__':
    main()
