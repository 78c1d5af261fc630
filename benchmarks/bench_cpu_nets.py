"""CPU forward and forward+backward time per iteration of LeNet, CIFAR10-quick and CaffeNet.

    python benchmarks/bench_cpu_nets.py [--iters N] [--rounds R] [--torch]

Each deploy net gets loss_weight 1 on its output so that backward runs through
every layer and parameter, as in training. With --torch (PyTorch importable,
e.g. from a separate benchmark venv with caffe_py on PYTHONPATH) the same
architecture with the same weights runs in torch in the same process, and the
outputs are compared. Threads: whatever OMP/OpenBLAS use (2 on a 2-core box).

Shared machines drift by 10-20% over minutes, so the measurement runs in rounds: each round
times every net for --iters iterations in caffe-py and then (with --torch) in PyTorch, one
right after the other. The table gives the median and the fastest of all iterations of all rounds.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import caffe_py  # noqa: E402
from caffe_py import formats  # noqa: E402

NETS = [  # name, deploy prototxt, batch
    ('LeNet', 'models/lenet/lenet.prototxt', 64),
    ('CIFAR10-quick', 'models/cifar10_quick/cifar10_quick.prototxt', 100),
    ('CaffeNet', 'models/bvlc_reference_caffenet/deploy.prototxt', 10),
]
CAFFE_MS = {'LeNet': 39, 'CIFAR10-quick': 297, 'CaffeNet': 692}   # BVLC Caffe, OpenBLAS, 2 cores
TORCH_MS = {'LeNet': 25, 'CIFAR10-quick': 107, 'CaffeNet': 630}   # PyTorch 2.13 CPU, 2 cores


def build(path, batch, phase=caffe_py.TEST):
    """The deploy net with a loss on its output; in TRAIN, Dropout draws its masks at each forward."""
    param = formats.read_net(os.path.join(ROOT, path))
    param.layer[-1].loss_weight.append(1.0)
    param.state.phase = phase
    net = caffe_py.Net(param, phase)
    data = net.inputs[0]
    net.blobs[data].reshape((batch,) + net.blobs[data].shape[1:])
    net.reshape()
    net.blobs[data].data[...] = np.random.default_rng(0).standard_normal(net.blobs[data].shape)
    return net


def timed(fn, iters):
    """Milliseconds of each of `iters` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def torch_model(net):
    """A torch function computing the same deploy net with the same weights (simple sequential nets)."""
    import torch
    import torch.nn.functional as F
    ops = []
    for layer in net.layers:
        lp = layer.layer_param
        if lp.type == 'Convolution':
            cp = lp.convolution_param
            w = torch.from_numpy(layer.blobs[0].data.copy()).requires_grad_()
            b = torch.from_numpy(layer.blobs[1].data.copy()).requires_grad_()
            ops.append(lambda x, w=w, b=b, cp=cp: F.conv2d(
                x, w, b, stride=cp.stride[0] if cp.stride else 1, padding=cp.pad[0] if cp.pad else 0,
                groups=cp.group))
        elif lp.type == 'Pooling':
            pp = lp.pooling_param
            pool = F.max_pool2d if pp.pool == pp.MAX else F.avg_pool2d
            ops.append(lambda x, pp=pp, pool=pool: pool(x, pp.kernel_size, pp.stride, pp.pad, ceil_mode=True))
        elif lp.type == 'ReLU':
            ops.append(F.relu)
        elif lp.type == 'LRN':
            rp = lp.lrn_param
            ops.append(lambda x, rp=rp: F.local_response_norm(x, rp.local_size, rp.alpha, rp.beta, rp.k))
        elif lp.type == 'InnerProduct':
            w = torch.from_numpy(layer.blobs[0].data.copy()).requires_grad_()
            b = torch.from_numpy(layer.blobs[1].data.copy()).requires_grad_()
            ops.append(lambda x, w=w, b=b: F.linear(x.flatten(1), w, b))
        elif lp.type == 'Softmax':
            ops.append(lambda x: F.softmax(x, 1))
        elif lp.type in ('Input', 'Dropout'):
            continue
        else:
            raise ValueError('no torch equivalent for %s' % lp.type)

    def run(x):
        for op in ops:
            x = op(x)
        return x
    return run


def torch_steps(net):
    """(forward, forward+backward) closures of the torch twin of `net`, after checking its output."""
    import torch
    model = torch_model(net)
    x = torch.from_numpy(net.blobs[net.inputs[0]].data.copy())
    with torch.no_grad():
        ref = model(x).numpy()
    out = net.forward()[net.outputs[0]]
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-5)

    def forward():
        with torch.no_grad():
            model(x)

    def step():
        model(x).sum().backward()
    return forward, step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=10, help='timed iterations per net and round')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--torch', action='store_true', help='also time PyTorch in this process')
    args = parser.parse_args()
    runs = []       # per net: (name, batch, {column: [ms, ...]}, [(column, function), ...])
    for name, path, batch in NETS:
        net = build(path, batch)
        steps = [('fwd', net.forward_from_to), ('fwd+bwd', net.forward_backward)]
        if args.torch:
            steps += zip(('torch fwd', 'torch fwd+bwd'), torch_steps(net))
        runs.append((name, batch, {column: [] for column, _ in steps}, steps))
    for _ in range(args.rounds):
        for _, _, times, steps in runs:
            for column, fn in steps:
                times[column] += timed(fn, args.iters)
    columns = list(runs[0][2])
    print('ms per iteration, median (fastest) of %d rounds x %d iterations; Caffe and PyTorch 2.13 as '
          'given in the issue for a 2-core machine' % (args.rounds, args.iters))
    print('%-14s %5s' % ('net', 'batch') + ''.join('%17s' % c for c in columns) + '%10s%10s' % (
        'Caffe f+b', 'torch f+b'))
    for name, batch, times, _ in runs:
        cells = ''.join('%17s' % ('%.1f (%.1f)' % (statistics.median(t), min(t))) for t in times.values())
        print('%-14s %5d' % (name, batch) + cells + '%10d%10d' % (CAFFE_MS[name], TORCH_MS[name]))
    if args.torch:
        for name, _, times, _ in runs:
            print('%s: caffe-py / PyTorch fwd+bwd = %.2f (medians)' % (
                name, statistics.median(times['fwd+bwd']) / statistics.median(times['torch fwd+bwd'])))


if __name__ == '__main__':
    main()
