"""Where the ranks of a data-parallel run come from, and what each rank does first.

- Under mpirun / mpiexec / srun (OMPI_COMM_WORLD_SIZE, PMI_SIZE or SLURM_STEP_NUM_TASKS
  above 1) every process is a rank: on CPUs the gradients go through MPI; with -gpu the
  local rank picks the GPU and NCCL is bootstrapped through MPI (the root's unique id).
- `caffe-py train -gpu 0,1,...` on one machine: the command starts one process per GPU
  itself (`run_local`), hands them an NCCL unique id and supervises them: when one fails,
  the others are stopped within seconds and one line names the rank and the cause.
- Otherwise: one process, nothing to share.
"""
import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from .. import backend, log
from . import ParallelError, set_multiprocess, set_solver_count, set_solver_rank
from .comm import MPIComm, NCCLComm, SingleProcess, new_uid

LOCAL_RANK_ENV = 'CAFFE_PY_LOCAL_RANK'     # "rank,size,gpu" of a process started by run_local
NCCL_UID_ENV = 'CAFFE_PY_NCCL_UID'
FAILURE_ENV = 'CAFFE_PY_FAILURE_FILE'      # where such a process writes why it failed
STOP_GRACE_S = 3.0

# (size, rank, local rank) variables of Open MPI, MPICH/Intel MPI (hydra) and Slurm's srun
_MPI_ENVIRONMENTS = (('OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK'),
                     ('PMI_SIZE', 'PMI_RANK', 'MPI_LOCALRANKID'),
                     ('SLURM_STEP_NUM_TASKS', 'SLURM_PROCID', 'SLURM_LOCALID'))


def mpi_world(environ=None):
    """(size, rank, local rank) when an MPI launcher started this process among others, else None."""
    environ = os.environ if environ is None else environ
    for size, rank, local in _MPI_ENVIRONMENTS:
        if size in environ:
            count = int(environ[size])
            return (count, int(environ.get(rank, 0)), int(environ.get(local, 0))) if count > 1 else None
    return None


class Rank:
    """This process's place in a run: `rank` of `size`, on `gpu` (None: the CPU)."""

    def __init__(self, rank=0, size=1, gpu=None, via_mpi=False, uid=None):
        self.rank, self.size, self.gpu = rank, size, gpu
        self.via_mpi, self.uid = via_mpi, uid
        self.comm = self._mpi = None

    @property
    def name(self):
        return 'rank %d' % self.rank + ('' if self.gpu is None else ' (GPU %d)' % self.gpu)

    def join(self):
        """Set Caffe's rank state and the device, make the communicator; non-root ranks log warnings only."""
        set_solver_count(self.size)
        set_solver_rank(self.rank)
        set_multiprocess(self.size > 1)
        if self.rank > 0:
            log.logger.setLevel(max(log.logger.level, logging.WARNING))
        if self.size > 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        mpi_comm = self._mpi = MPIComm() if self.via_mpi else None
        if self.gpu is not None:
            backend.set_device(self.gpu)
            backend.set_mode_gpu()
        else:
            backend.set_mode_cpu()
        if self.size == 1:
            self.comm = SingleProcess()
        elif self.gpu is None:
            self.comm = mpi_comm
        else:
            uid = mpi_comm.bcast_object(new_uid() if self.rank == 0 else None) if mpi_comm else self.uid
            self.comm = NCCLComm(uid, self.size, self.rank)
        return self.comm

    def fail(self, exc):
        """After an error on this rank: make the whole run stop, naming this rank and the cause."""
        from ..tools.cli import _one_line
        failure_file = os.environ.get(FAILURE_ENV)
        if failure_file:                     # run_local reports it and stops the other ranks
            with open(failure_file, 'w') as f:
                f.write(_one_line(exc))
            raise SystemExit(1)
        line = '%s failed: %s' % (self.name, _one_line(exc))
        if self._mpi is not None and self.size > 1:   # MPI_Abort ends every rank of the job
            print('caffe-py: error: %s' % line, file=sys.stderr, flush=True)
            self._mpi.abort(1)
        raise ParallelError(line) from exc


def _exit_on_sigterm(signum, frame):
    """A rank told to stop unwinds (a snapshot being written is removed, never left half-written)."""
    raise SystemExit(128 + signum)


def this_rank(gpus):
    """The Rank of this process for the devices of -gpu ([]: the CPU), or None when this process
    must start the ranks itself (several GPUs on one machine: see run_local)."""
    local = os.environ.get(LOCAL_RANK_ENV)
    if local:
        rank, size, gpu = (int(v) for v in local.split(','))
        return Rank(rank, size, gpu, uid=os.environ[NCCL_UID_ENV])
    world = mpi_world()
    if world is not None:
        size, rank, local_rank = world
        gpu = None
        if gpus:
            if local_rank >= len(gpus):
                raise ParallelError('rank %d is local rank %d on its machine but -gpu names %d device(s)'
                                    % (rank, local_rank, len(gpus)))
            gpu = gpus[local_rank]
        return Rank(rank, size, gpu, via_mpi=True)
    if len(gpus) > 1:
        return None
    return Rank(gpu=gpus[0] if gpus else None)


def _die_with_parent():
    """In a child before exec: SIGKILL when the launcher dies (Linux), so no rank is orphaned."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_local(gpus, argv):
    """Start `caffe-py train argv` once per GPU and supervise the ranks; the exit code of the run.

    SIGINT and SIGHUP reach the root only (the ranks run in their own sessions): the root
    decides the action and every rank follows it. When a rank fails, the others are stopped.
    """
    repeated = sorted({g for g in gpus if gpus.count(g) > 1})
    if repeated:
        raise ParallelError('-gpu names GPU %s more than once (one process per device)' % repeated[0])
    uid = new_uid()
    log.info('Starting %d ranks on GPUs %s', len(gpus), ', '.join(map(str, gpus)))
    folder = tempfile.mkdtemp(prefix='caffe_py_ranks_')
    procs, failures = [], []
    forward = {}

    def to_root(signum, frame):
        if procs and procs[0].poll() is None:
            procs[0].send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGHUP):
        forward[signum] = signal.signal(signum, to_root)
    try:
        for rank, gpu in enumerate(gpus):
            failures.append(os.path.join(folder, 'rank%d' % rank))
            env = dict(os.environ, **{LOCAL_RANK_ENV: '%d,%d,%d' % (rank, len(gpus), gpu),
                                      NCCL_UID_ENV: uid, FAILURE_ENV: failures[-1]})
            procs.append(subprocess.Popen([sys.executable, '-m', 'caffe_py', 'train'] + list(argv), env=env,
                                          start_new_session=True, preexec_fn=_die_with_parent))
        return _supervise(procs, gpus, failures)
    finally:
        _stop(procs)
        for signum, previous in forward.items():
            signal.signal(signum, previous)
        for path in failures:
            if os.path.exists(path):
                os.remove(path)
        os.rmdir(folder)


def _supervise(procs, gpus, failures):
    while True:
        codes = [p.poll() for p in procs]
        failed = [rank for rank, code in enumerate(codes) if code]
        if failed:
            # a rank killed by a signal is the cause; the others' errors (lost peers) follow from it
            rank = min(failed, key=lambda r: (codes[r] > 0, r))
            _stop(procs)
            raise ParallelError('%s; stopped the other ranks' % _cause(rank, gpus[rank], codes[rank], failures[rank]))
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.05)


def _cause(rank, gpu, code, failure_file):
    if os.path.exists(failure_file):
        with open(failure_file) as f:
            return 'rank %d (GPU %d) failed: %s' % (rank, gpu, f.read().strip())
    what = ('killed by %s' % signal.Signals(-code).name) if code < 0 else 'exited with status %d' % code
    return 'rank %d (GPU %d) %s' % (rank, gpu, what)


def _stop(procs):
    """SIGTERM to the ranks still running, SIGKILL to those left after STOP_GRACE_S; reap all."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for p in running:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
