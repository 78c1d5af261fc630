"""Communicators of a data-parallel run: the same four collectives over MPI, NCCL or nothing.

- `SingleProcess`: one rank, every collective a no-op.
- `MPIComm`: ranks are MPI processes (mpi4py); arrays live on the host and each collective
  is one MPI call on one flat buffer (a fused all-reduce of every gradient).
- `NCCLComm`: ranks are processes with one CUDA device each; arrays stay on the device and
  NCCL (CuPy's cupy.cuda.nccl) reduces them there, every blob in place, grouped in one launch.

`allreduce_mean(arrays)` leaves in each array the mean over the ranks (sum, then 1/N as
Caffe's caffe_gpu_scal); `bcast(arrays)` the root's values; `agree(action)` the root's
solver action (Caffe's SolverAction names); `abort()` ends every rank after a failure.
"""
import numpy as np

from .. import backend
from ..solvers.solver import ACTIONS
from . import INSTALL_MPI, ParallelError


class SingleProcess:
    rank, size = 0, 1

    def allreduce_mean(self, arrays, stream=None):
        pass

    def bcast(self, arrays):
        pass

    def agree(self, action):
        return action

    def abort(self, code=1):
        pass


def mpi():
    """mpi4py's MPI module (initialising MPI), or a ParallelError saying what to install."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ParallelError('training on several ranks over MPI needs mpi4py and an MPI runtime '
                            '(%s): %s' % (INSTALL_MPI, exc)) from None
    return MPI


class MPIComm:
    """Collectives over an MPI communicator (COMM_WORLD by default) on host arrays."""

    def __init__(self, comm=None):
        self.MPI = mpi()
        self.comm = comm if comm is not None else self.MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self._flat = {}

    def _buffer(self, arrays):
        """The arrays copied into one flat float buffer (kept between calls)."""
        dtype = np.result_type(*[a.dtype for a in arrays]) if arrays else np.float32
        total = sum(a.size for a in arrays)
        flat = self._flat.get(dtype)
        if flat is None or flat.size != total:
            flat = self._flat[dtype] = np.empty(total, dtype)
        np.concatenate([a.reshape(-1) for a in arrays], out=flat)
        return flat

    @staticmethod
    def _scatter(flat, arrays, scale=1.0):
        """The flat buffer's values, times `scale`, back into the arrays (one pass)."""
        start = 0
        for a in arrays:
            np.multiply(flat[start:start + a.size].reshape(a.shape), scale, out=a, casting='unsafe')
            start += a.size

    def allreduce_mean(self, arrays, stream=None):
        if self.size == 1 or not arrays:
            return
        flat = self._buffer(arrays)
        self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        self._scatter(flat, arrays, flat.dtype.type(1.0 / self.size))

    def bcast(self, arrays):
        if self.size == 1 or not arrays:
            return
        flat = self._buffer(arrays)
        self.comm.Bcast(flat, root=0)
        self._scatter(flat, arrays)

    def agree(self, action):
        return self.comm.bcast(action, root=0)

    def bcast_object(self, value):
        return self.comm.bcast(value, root=0)

    def abort(self, code=1):
        self.comm.Abort(code)


def nccl_module():
    """CuPy's NCCL bindings (cupy.cuda.nccl, or a stand-in's), or a ParallelError saying what is missing."""
    module = backend.device_module()
    nccl = getattr(module.cuda, 'nccl', None)
    if nccl is None:
        try:
            from cupy.cuda import nccl
        except ImportError as exc:
            raise ParallelError('training on several GPUs needs CuPy with NCCL '
                                '(pip install caffe-py[gpu]): %s' % exc) from None
    if not getattr(nccl, 'available', True):
        raise ParallelError('training on several GPUs needs NCCL, which this CuPy build lacks '
                            '(pip install caffe-py[gpu])')
    return nccl


def new_uid():
    """A fresh NCCL unique id, as a hex string (to hand to the other ranks)."""
    return bytes(v & 0xff for v in nccl_module().get_unique_id()).hex()


def _uid_tuple(uid):
    if isinstance(uid, str):
        uid = bytes.fromhex(uid)
    return tuple(b - 256 if b > 127 else b for b in bytes(uid))


class NCCLComm:
    """Collectives over NCCL among `size` processes, this one `rank` on the current device."""

    def __init__(self, uid, size, rank):
        self.nccl = nccl_module()
        self.xp = backend.device_module()
        self.rank, self.size = rank, size
        self.comm = self.nccl.NcclCommunicator(size, _uid_tuple(uid), rank)
        self._types = {np.dtype(np.float32): self.nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): self.nccl.NCCL_FLOAT64,
                       np.dtype(np.int32): self.nccl.NCCL_INT32}

    def _stream(self, stream):
        return (stream or self.xp.cuda.get_current_stream()).ptr

    def allreduce_mean(self, arrays, stream=None):
        if self.size == 1 or not arrays:
            return
        ptr = self._stream(stream)
        self.nccl.groupStart()
        for a in arrays:
            self.comm.allReduce(a.data.ptr, a.data.ptr, a.size, self._types[a.dtype], self.nccl.NCCL_SUM, ptr)
        self.nccl.groupEnd()
        with stream or self.xp.cuda.get_current_stream():
            for a in arrays:
                a *= a.dtype.type(1.0 / self.size)

    def bcast(self, arrays):
        if self.size == 1 or not arrays:
            return
        ptr = self._stream(None)
        self.nccl.groupStart()
        for a in arrays:
            self.comm.broadcast(a.data.ptr, a.data.ptr, a.size, self._types[a.dtype], 0, ptr)
        self.nccl.groupEnd()

    def agree(self, action):
        code = self.xp.asarray(np.array([ACTIONS.index(action)], np.int32))
        self.bcast([code])
        return ACTIONS[int(code.get()[0])]

    def abort(self, code=1):
        self.comm.abort()
