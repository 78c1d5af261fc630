"""The solver's side of data-parallel training (Caffe's NCCL<Dtype> callbacks in parallel.cpp).

`GradientSync(solver, comm)` ties a solver to a group of ranks: `broadcast()` gives every
rank the root's parameters (after -weights / -snapshot); as a solver callback,
`on_gradients_ready()` (after the iter_size backward passes, before the update) leaves in
every gradient its mean over the ranks, so that all ranks apply the same update; the solver
asks `agree(action)` so that every rank follows the root's stop/snapshot requests.
`attach()` makes all these connections (pycaffe scripts make them one by one).

As an after_backward hook of the net (`net.after_backward(sync)`, Caffe's
layer_wise_reduce, its default), on the GPU, each layer's gradients are reduced on a side
stream as soon as that layer's backward pass is done, overlapping the reduction with the
backward pass of the layers below; `on_gradients_ready` then waits for that stream. On the
CPU (MPI), with iter_size > 1 or with shared weights the gradients are reduced in one fused
call once the backward passes are done.
"""
from .. import backend, log


class GradientSync:
    def __init__(self, solver, comm):
        self.solver, self.comm = solver, comm
        net = solver.net
        self.params = list(net.learnable_params)
        self._owned = {id(b) for b in self.params}
        self._reduced_layers = False
        self.stream = None
        shared = any(owner >= 0 for owner in net.param_owners)
        if (backend.mode() == 'gpu' and comm.size > 1 and solver.param.layer_wise_reduce
                and solver.param.iter_size == 1 and not shared):
            self.stream = backend.device_module().cuda.Stream(non_blocking=True)

    def attach(self):
        """Reduce this solver's gradients every iteration and follow the root's requests."""
        self.solver.add_callback(self)
        if self.stream is not None:
            self.solver.net.after_backward(self)
        log.info('Reducing gradients over %d ranks %s', self.comm.size,
                 'layer by layer during the backward pass' if self.stream is not None
                 else 'in one call after the backward passes')
        self.solver.sync = self
        return self

    def broadcast(self):
        """Every rank takes the root's parameter values (Caffe's NCCL::Broadcast)."""
        self.comm.bcast([blob.data for blob in self.params])

    def on_start(self):
        self._reduced_layers = False

    def __call__(self, layer_id):
        """After layer `layer_id`'s backward: reduce its gradients on the side stream."""
        if self.stream is None:
            return
        blobs = [b for b in self.solver.net.layers[layer_id].blobs if id(b) in self._owned]
        if not blobs:
            return
        xp = backend.device_module()
        done = xp.cuda.Event()
        done.record(xp.cuda.get_current_stream())   # the gradients are computed ...
        self.stream.wait_event(done)                 # ... before the side stream reduces them
        self.comm.allreduce_mean([b.diff for b in blobs], self.stream)
        self._reduced_layers = True

    def on_gradients_ready(self):
        if self._reduced_layers:
            self.stream.synchronize()
        else:
            self.comm.allreduce_mean([blob.diff for blob in self.params])

    def agree(self, action):
        return self.comm.agree(action)
