"""pycaffe's multi-GPU surface, as BVLC's python/train.py uses it:

    uid = caffe.NCCL.new_uid()                # in the parent, handed to one process per GPU
    caffe.set_mode_gpu(); caffe.set_device(gpus[rank])
    caffe.set_solver_count(len(gpus)); caffe.set_solver_rank(rank); caffe.set_multiprocess(True)
    solver = caffe.SGDSolver(proto)
    nccl = caffe.NCCL(solver, uid); nccl.bcast()
    solver.add_callback(nccl)
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(nccl)
    solver.step(solver.param.max_iter)
"""
from . import solver_count, solver_rank
from .comm import NCCLComm, new_uid
from .sync import GradientSync


class NCCL(GradientSync):
    """One rank's NCCL communicator for `solver`, among solver_count() ranks sharing `uid`."""

    def __init__(self, solver, uid):
        super().__init__(solver, NCCLComm(uid, solver_count(), solver_rank()))
        solver.sync = self      # every rank follows the root's stop/snapshot requests

    new_uid = staticmethod(new_uid)

    def bcast(self):
        """The root's parameters to every rank."""
        self.broadcast()
