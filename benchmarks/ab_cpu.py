"""Paired CPU timing of this checkout against another one, for differences below the machine's drift.

    python benchmarks/ab_cpu.py OTHER_CHECKOUT [--iters N] [--nets LeNet,CIFAR10-quick] [--phase TRAIN]

On shared machines the time of one iteration drifts by 10-20% over minutes, so two
separate benchmark runs cannot tell a 3% change from noise. Here each checkout builds
the same benchmark net (bench_cpu_nets.build: same weights, same input) in its own
worker process; the parent asks the two workers for one forward+backward iteration
in turn (ABBA order), so that both see the same state of the machine. Reported per
net: the median time of each and the median of the per-pair ratios other / this.
With --phase TRAIN the nets are built in TRAIN (Dropout draws a mask at each forward).
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def worker(root, name, phase):
    """Build net `name` with the caffe_py of `root`; answer each input line with one timed iteration."""
    import time
    sys.path.insert(0, root)
    import caffe_py  # this checkout's package, before bench_cpu_nets imports one
    sys.path.insert(1, HERE)
    import bench_cpu_nets
    path, batch = next((p, b) for n, p, b in bench_cpu_nets.NETS if n == name)
    net = bench_cpu_nets.build(path, batch, caffe_py.TRAIN if phase == 'TRAIN' else caffe_py.TEST)
    net.forward_backward()
    for _ in sys.stdin:
        start = time.perf_counter()
        net.forward_backward()
        print('%.6f' % ((time.perf_counter() - start) * 1000), flush=True)


def start(root, name, phase):
    env = dict(os.environ, GLOG_minloglevel='2')
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), '--worker', root, name, phase],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def step(process):
    process.stdin.write('\n')
    process.stdin.flush()
    line = process.stdout.readline()
    if not line:
        raise SystemExit('a worker stopped (%s)' % process.args)
    return float(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('other', nargs='?', help='root of the other caffe-py checkout')
    parser.add_argument('--iters', type=int, default=30, help='timed pairs per net')
    parser.add_argument('--nets', default='LeNet,CIFAR10-quick,CaffeNet')
    parser.add_argument('--phase', default='TEST', choices=('TEST', 'TRAIN'))
    parser.add_argument('--worker', nargs=3, metavar=('ROOT', 'NET', 'PHASE'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    if not args.other:
        parser.error('the other checkout is required')
    print('%-14s %14s %14s %16s' % ('net', 'this (ms)', 'other (ms)', 'other / this'))
    for name in args.nets.split(','):
        this, other = start(ROOT, name, args.phase), start(os.path.abspath(args.other), name, args.phase)
        try:
            mine, theirs = [], []
            for i in range(args.iters):
                order = ((this, mine), (other, theirs)) if i % 2 else ((other, theirs), (this, mine))
                for process, times in order:
                    times.append(step(process))
        finally:
            for process in (this, other):
                process.stdin.close()
                process.wait()
        ratio = statistics.median(b / a for a, b in zip(mine, theirs))
        print('%-14s %14.1f %14.1f %16.3f' % (name, statistics.median(mine), statistics.median(theirs), ratio))


if __name__ == '__main__':
    main()
