"""Data-parallel training on this machine: CPU ranks over MPI, and the cost of one all-reduce.

    python benchmarks/bench_parallel.py [--iters 20] [--batch 50] [--rounds 3]

1. Training throughput of CIFAR10-quick (random data, SGD) with 1 rank and with 2 MPI ranks
   (mpiexec over loopback), each rank with the same batch: images per second of the whole job.
   1 rank runs with the machine's BLAS threads (2 on a 2-core box) and with 1 thread; 2 ranks
   with 1 thread each (one core per rank), so "2 ranks / 1 rank" compares the same cores.
2. One all-reduce of CaffeNet's 61M gradients (float32, 233 MiB) between 2 ranks, as the MPI
   path does it (fused: gather into one flat buffer, MPI_Allreduce, scale, scatter back) and
   the bare MPI_Allreduce, over TCP on loopback and over shared memory; on a machine with 2+ GPUs
   also NCCL on the devices.
Rounds alternate the configurations (shared machines drift); the median of the rounds is shown.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# MPI transports between the ranks of this machine: TCP over loopback (as the tests), shared memory
TRANSPORTS = {'tcp': ['--mca', 'btl', 'self,tcp', '--mca', 'btl_tcp_if_include', 'lo'],
              'sm': ['--mca', 'btl', 'self,sm']}


def train_param(batch):
    """CIFAR10-quick fed by DummyData (gaussian images, labels 0), with its softmax loss."""
    from caffe_py import formats
    from caffe_py.proto import caffe_pb2
    net = formats.read_net(os.path.join(ROOT, 'models/cifar10_quick/cifar10_quick.prototxt'))
    del net.layer[0]
    data = caffe_pb2.LayerParameter(name='data', type='DummyData', top=['data', 'label'])
    data.dummy_data_param.shape.add(dim=[batch, 3, 32, 32])
    data.dummy_data_param.shape.add(dim=[batch])
    data.dummy_data_param.data_filler.add(type='gaussian', std=1)
    data.dummy_data_param.data_filler.add(type='constant', value=0)
    net.layer.insert(0, data)
    net.layer[-1].type = 'SoftmaxWithLoss'
    net.layer[-1].bottom.append('label')
    net.layer[-1].top[0] = 'loss'
    return caffe_pb2.SolverParameter(net_param=net, base_lr=0.001, momentum=0.9, lr_policy='fixed',
                                     max_iter=100000, display=0, random_seed=1, type='SGD')


def worker_train(args):
    """Under mpiexec (or alone): time `iters` training iterations; rank 0 prints images/s."""
    from caffe_py.parallel import launch
    from caffe_py.parallel.sync import GradientSync
    from caffe_py.solvers import get_solver
    rank = launch.this_rank([])
    comm = rank.join()
    solver = get_solver(train_param(args.batch))
    GradientSync(solver, comm).attach().broadcast()
    solver.step(2)                                    # warm-up
    comm.allreduce_mean([np.zeros(1, np.float32)])    # everyone starts together
    start = time.perf_counter()
    solver.step(args.iters)
    seconds = time.perf_counter() - start
    if rank.rank == 0:
        print(json.dumps({'images_per_s': rank.size * args.batch * args.iters / seconds}))


def worker_allreduce(args):
    """Under mpiexec with 2 ranks: seconds of one all-reduce of CaffeNet's gradients."""
    from caffe_py import formats
    from caffe_py.parallel import launch
    net = formats.read_net(os.path.join(ROOT, 'models/bvlc_reference_caffenet/deploy.prototxt'))
    import caffe_py
    shapes = [b.shape for blobs in caffe_py.Net(net, caffe_py.TEST).params.values() for b in blobs]
    rank = launch.this_rank([0, 1] if args.gpu else [])
    comm = rank.join()
    xp = np
    if args.gpu:
        import cupy as xp
    grads = [xp.ones(shape, np.float32) for shape in shapes]
    result = {'count': int(sum(np.prod(s) for s in shapes))}
    timings = {'fused': lambda: comm.allreduce_mean(grads)}
    if args.gpu:
        timings['fused'] = lambda: (comm.allreduce_mean(grads), xp.cuda.Device().synchronize())
    else:
        flat = np.ones(result['count'], np.float32)
        timings['bare'] = lambda: comm.comm.Allreduce(comm.MPI.IN_PLACE, flat, op=comm.MPI.SUM)
    for name, run in timings.items():
        run()
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        result[name] = statistics.median(times)
    if rank.rank == 0:
        print(json.dumps(result))


def launch_job(ranks, threads, worker_args, timeout=900, transport='tcp'):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1', GLOG_minloglevel='1')
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    mpiexec = shutil.which('mpiexec', path=os.path.dirname(sys.executable)) or shutil.which('mpiexec')
    command = [sys.executable, os.path.abspath(__file__)] + worker_args
    if ranks > 1 or worker_args[1] == 'allreduce':
        command = [mpiexec, '-n', str(ranks), '--oversubscribe'] + TRANSPORTS[transport] + command
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise SystemExit('%s failed:\n%s' % (' '.join(command), out.stderr[-3000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--batch', type=int, default=50)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--worker', choices=['train', 'allreduce'])
    parser.add_argument('--gpu', action='store_true')
    args = parser.parse_args()
    if args.worker == 'train':
        return worker_train(args)
    if args.worker == 'allreduce':
        return worker_allreduce(args)

    common = ['--iters', str(args.iters), '--batch', str(args.batch), '--repeat', str(args.repeat)]
    configs = [('1 rank, BLAS threads as installed', 1, None), ('1 rank, 1 thread', 1, 1),
               ('2 ranks (MPI), 1 thread each', 2, 1)]
    rates = {name: [] for name, _, _ in configs}
    for _ in range(args.rounds):
        for name, ranks, threads in configs:
            rates[name].append(launch_job(ranks, threads, ['--worker', 'train'] + common)['images_per_s'])
    print('CIFAR10-quick training, batch %d per rank, %d iterations, median of %d rounds (images/s):'
          % (args.batch, args.iters, args.rounds))
    for name, _, _ in configs:
        print('  %-36s %8.1f' % (name, statistics.median(rates[name])))
    two, one = statistics.median(rates[configs[2][0]]), statistics.median(rates[configs[1][0]])
    print('  2 ranks / 1 rank (same threads per rank): %.2f (scaling efficiency %.0f%%)' % (two / one, 50 * two / one))
    print('  2 ranks / 1 rank with the installed threads: %.2f' % (two / statistics.median(rates[configs[0][0]])))

    for transport in TRANSPORTS:
        reduce = launch_job(2, None, ['--worker', 'allreduce'] + common, transport=transport)
        print('One all-reduce of CaffeNet\'s %d gradients (%.0f MiB) between 2 MPI ranks, %s:'
              % (reduce['count'], reduce['count'] * 4 / 2 ** 20, transport))
        print('  fused (gather, MPI_Allreduce, 1/N, scatter): %.3f s; bare MPI_Allreduce: %.3f s (%.2f GB/s)'
              % (reduce['fused'], reduce['bare'], reduce['count'] * 4 / reduce['bare'] / 1e9))
    try:
        import cupy
        devices = cupy.cuda.runtime.getDeviceCount()
    except Exception:
        devices = 0
    if devices >= 2:
        nccl = launch_job(2, None, ['--worker', 'allreduce', '--gpu'] + common)
        print('  NCCL on 2 GPUs: %.4f s' % nccl['fused'])
    else:
        print('  NCCL: not measured (needs 2 GPUs; this machine has %d)' % devices)


if __name__ == '__main__':
    main()
