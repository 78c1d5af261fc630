"""Data-parallel training over several processes, as Caffe 1.0's multi-GPU training (parallel.cpp).

One process and one solver per rank, each with the net's own batch size; the root's
parameters are broadcast at the start; after each iteration's backward passes the
gradients are summed over the ranks and scaled by 1/N (Caffe's on_gradients_ready), and
every rank applies the same update. Data and HDF5Data layers in TRAIN deal items
round-robin (rank r keeps item k when k % N == r); only the root tests, displays and
snapshots; the root decides the signal actions for everyone.

This package keeps Caffe's process-wide rank state (Caffe::solver_count, solver_rank,
multiprocess); the communicators live in caffe_py.parallel.comm, the solver's side in
caffe_py.parallel.sync, the launchers in caffe_py.parallel.launch and pycaffe's
caffe.NCCL in caffe_py.parallel.nccl.
"""

INSTALL_MPI = 'pip install caffe-py[mpi]'

_state = {'count': 1, 'rank': 0, 'multiprocess': False}


class ParallelError(RuntimeError):
    """Asking for several ranks or devices without what it takes, or a rank that failed."""


def set_solver_count(count):
    _state['count'] = int(count)


def set_solver_rank(rank):
    _state['rank'] = int(rank)


def set_multiprocess(multiprocess):
    _state['multiprocess'] = bool(multiprocess)


def solver_count():
    return _state['count']


def solver_rank():
    return _state['rank']


def multiprocess():
    return _state['multiprocess']


def root_solver():
    """Whether this process is the root (rank 0): it tests, displays and snapshots."""
    return _state['rank'] == 0


def deal(phase):
    """(rank, count) by which a TRAIN data layer deals its items; (0, 1) in TEST (only the root tests)."""
    from ..proto import caffe_pb2
    if phase == caffe_pb2.TEST:
        return 0, 1
    return _state['rank'], _state['count']


def has_nccl():
    """Whether CuPy with NCCL is importable (pycaffe's caffe.has_nccl)."""
    try:
        from cupy.cuda import nccl
    except Exception:  # ImportError, or CuPy without its NCCL bindings
        return False
    return bool(getattr(nccl, 'available', True))
