"""Data and definitions for the data-parallel tests: a small LMDB and HDF5 file, a net reading
both, a solver, and a Python layer that kills one rank mid-run."""
import os

import numpy as np

from caffe_py.data.db import DBWriter
from caffe_py.proto import caffe_pb2

LMDB_ITEMS, HDF5_ROWS = 22, 13   # not multiples of the batch: the ranks wrap around mid-batch

NET = '''name: "dealt"
layer { name: "a" type: "Data" top: "a" top: "label"
        transform_param { scale: 0.00390625 } data_param { source: "train_lmdb" backend: LMDB batch_size: %(b)d } }
layer { name: "b" type: "HDF5Data" top: "b" hdf5_data_param { source: "train_h5.txt" batch_size: %(b)d } }
%(extra)s
layer { name: "ip_a" type: "InnerProduct" bottom: "a" top: "ip_a"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "ip_b" type: "InnerProduct" bottom: "b" top: "ip_b"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "sum" type: "Eltwise" bottom: "ip_a" bottom: "ip_b" top: "score" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "acc" include { phase: TEST } }
'''

KILLER = '''layer { name: "killer" type: "Python" bottom: "b" python_param { module: "killer" layer: "Killer"
        param_str: "%d" } include { phase: TRAIN } }'''

KILLER_MODULE = '''import os
import signal

import caffe_py as caffe
from caffe_py import parallel


class Killer(caffe.Layer):
    """SIGKILLs rank 1 in its forward pass number param_str (0-based)."""

    def setup(self, bottom, top):
        self.left = int(self.param_str)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        if parallel.solver_rank() == 1 and self.left == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        self.left -= 1

    def backward(self, top, propagate_down, bottom):
        pass
'''

SOLVER = '''net: "net.prototxt"
test_iter: 2 test_interval: 3
base_lr: 0.1 momentum: 0.9 weight_decay: 0.001 lr_policy: "fixed"
display: 1 max_iter: %(max_iter)d iter_size: %(iter_size)d
snapshot: %(snapshot)d snapshot_prefix: "%(prefix)s"
random_seed: 7
'''


def write_data(folder):
    """train_lmdb (2x2 grey images, labels 0-2) and train.h5 (3 features) in `folder`."""
    rng = np.random.default_rng(3)
    with DBWriter(os.path.join(folder, 'train_lmdb'), 'lmdb') as db:
        for i in range(LMDB_ITEMS):
            datum = caffe_pb2.Datum(channels=1, height=2, width=2, label=int(rng.integers(3)),
                                    data=rng.integers(0, 256, 4).astype(np.uint8).tobytes())
            db.put(b'%08d' % i, datum.SerializeToString())
    import h5py
    with h5py.File(os.path.join(folder, 'train.h5'), 'w') as f:
        f['b'] = rng.normal(size=(HDF5_ROWS, 3)).astype(np.float32)
    with open(os.path.join(folder, 'train_h5.txt'), 'w') as f:
        f.write('train.h5\n')
    with open(os.path.join(folder, 'killer.py'), 'w') as f:
        f.write(KILLER_MODULE)


def write_run(folder, batch, iter_size=1, max_iter=6, snapshot=3, prefix='snap', kill_at=None):
    """net.prototxt and solver.prototxt for one run; returns the solver's path."""
    extra = KILLER % kill_at if kill_at is not None else ''
    with open(os.path.join(folder, 'net.prototxt'), 'w') as f:
        f.write(NET % {'b': batch, 'extra': extra})
    path = os.path.join(folder, 'solver_%s.prototxt' % prefix)
    with open(path, 'w') as f:
        f.write(SOLVER % {'max_iter': max_iter, 'iter_size': iter_size, 'snapshot': snapshot,
                          'prefix': prefix})
    return path


# written as BVLC's python/train.py (its multi-GPU calls, without the timing option)
PYCAFFE_TRAIN = '''from multiprocessing import Process

import caffe_py as caffe


def train(solver, snapshot, gpus):
    caffe.log('Using devices %s' % str(gpus))
    uid = caffe.NCCL.new_uid()
    procs = []
    for rank in range(len(gpus)):
        p = Process(target=solve, args=(solver, snapshot, gpus, uid, rank))
        p.daemon = True
        p.start()
        procs.append(p)
    for p in procs:
        p.join()
    return [p.exitcode for p in procs]


def solve(proto, snapshot, gpus, uid, rank):
    caffe.set_mode_gpu()
    caffe.set_device(gpus[rank])
    caffe.set_solver_count(len(gpus))
    caffe.set_solver_rank(rank)
    caffe.set_multiprocess(True)

    solver = caffe.SGDSolver(proto)
    if snapshot and len(snapshot) != 0:
        solver.restore(snapshot)

    nccl = caffe.NCCL(solver, uid)
    nccl.bcast()
    solver.add_callback(nccl)

    if solver.param.layer_wise_reduce:
        solver.net.after_backward(nccl)
    solver.step(solver.param.max_iter)


if __name__ == '__main__':
    import sys
    codes = train(sys.argv[1], None, [0, 1])
    sys.exit(max(codes))
'''

SITECUSTOMIZE = '''import os
import sys

if os.environ.get('FAKECUPY_DEVICES'):   # the CuPy stand-in in every Python process of the test
    sys.path.insert(0, %r)
    import fakecupy
    from caffe_py import backend
    backend.use_device_module(fakecupy.make_module(int(os.environ['FAKECUPY_DEVICES'])))
'''
