"""SGD with momentum and Nesterov's accelerated gradient (Caffe's SGDSolver, NesterovSolver).

SGDSolver also holds what every Caffe solver shares: the learning rate,
gradient clipping, iter_size normalization, L2/L1 weight decay, and the
solver state (history blobs) that snapshots write and restores read.
In GPU mode the parameters and histories stay on the device; each update
rule is one fused kernel there (kernels/solver_updates.cu) that rounds as
the CPU path does.
"""
import os

import numpy as np

from .. import backend, formats, gpu, log, parallel
from ..proto import caffe_pb2
from . import snapshots
from .lr_policies import learning_rate
from .solver import Solver, SolverError

f32 = np.float32


class SGDSolver(Solver):
    """history = momentum * history + local_rate * gradient; weights -= history."""

    type = 'SGD'
    histories_per_param = 1   # AdaDelta and Adam keep a second history after the first

    def __init__(self, param):
        self.source = None if isinstance(param, caffe_pb2.SolverParameter) else os.fspath(param)
        super().__init__(param)

    def check_param(self):
        if self.param.regularization_type not in ('L2', 'L1') and self.param.weight_decay:
            raise SolverError('Unknown regularization type: %s (known: L2, L1)'
                              % self.param.regularization_type)
        if self._plateau() and parallel.solver_count() > 1:   # each rank would follow its own loss
            raise SolverError('lr_policy "plateau" is not supported with several solver ranks (%d)'
                              % parallel.solver_count())

    def pre_solve(self):
        params = self.net.learnable_params
        self.history = [blob.xp.zeros(blob.shape, blob.dtype)
                        for _ in range(self.histories_per_param) for blob in params]
        self._scratch = {}
        # lr_policy "plateau" (SSD): the smallest smoothed loss so far and when it or the rate last changed
        self.minimum_loss = f32(np.finfo(np.float32).max)
        self.iter_last_event = 0

    def buffer(self, kind, param_id):
        """A scratch array shaped like parameter `param_id` (Caffe's update_ / temp_ blobs)."""
        key = (kind, param_id)
        if key not in self._scratch:
            blob = self.net.learnable_params[param_id]
            self._scratch[key] = blob.xp.zeros(blob.shape, blob.dtype)
        return self._scratch[key]

    # -- one update ----------------------------------------------------------------
    def get_learning_rate(self):
        try:
            rate, self.current_step = learning_rate(self.param, self.iter, self.current_step, self)
        except ValueError as exc:      # LearningRateError: name the solver file that holds the setting
            if not self.source:
                raise
            raise type(exc)('%s: %s' % (self.source, exc)) from None
        return rate

    @property
    def lr(self):
        """pycaffe's solver.lr: the rate at the current iteration (GetLearningRate)."""
        return self.get_learning_rate()

    def apply_update(self):
        """Rate, clipping, then per parameter normalize, regularize, update; data -= diff; iter += 1."""
        rate = self.get_learning_rate()
        if self.param.display and self.iter % self.param.display == 0:
            log.info('Iteration %d, lr = %s', self.iter, log.fmt(rate))
        self.clip_gradients()
        for param_id in range(len(self.net.learnable_params)):
            self.normalize(param_id)
            self.regularize(param_id)
            self.compute_update_value(param_id, rate)
        self.net.update()
        self.iter += 1

    def clip_gradients(self):
        clip = f32(self.param.clip_gradients)
        if clip < 0:
            return
        params = self.net.learnable_params
        sumsq = f32(0)
        for blob in params:
            diff = blob.diff.ravel()
            sumsq += f32(float(diff.dot(diff)))
        l2norm = f32(np.sqrt(sumsq))
        if l2norm > clip:
            scale = clip / l2norm
            log.info('Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale factor %s',
                     log.fmt(l2norm), log.fmt(clip), log.fmt(scale))
            for blob in params:
                blob.diff[...] *= scale

    def normalize(self, param_id):
        """Divide the accumulated gradient by iter_size."""
        if self.param.iter_size == 1:
            return
        self.net.learnable_params[param_id].diff[...] *= f32(1) / f32(self.param.iter_size)

    def regularize(self, param_id):
        """Add weight_decay * decay_mult * (w for L2, sign(w) for L1) to the gradient."""
        blob = self.net.learnable_params[param_id]
        local_decay = f32(self.param.weight_decay) * f32(self.net.params_weight_decay[param_id])
        if not local_decay:
            return
        temp = self.buffer('temp', param_id)
        if self.param.regularization_type == 'L2':
            blob.xp.multiply(blob.data, local_decay, out=temp)
        elif self.param.regularization_type == 'L1':
            blob.xp.sign(blob.data, out=temp)
            temp *= local_decay
        else:
            raise SolverError('Unknown regularization type: %s' % self.param.regularization_type)
        blob.diff[...] += temp

    def local_rate(self, param_id, rate):
        return f32(rate) * f32(self.net.params_lr[param_id])

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        history = self.history[param_id]
        if blob.xp is not np:
            device_update('sgd_update', blob, history, f32(self.param.momentum),
                          self.local_rate(param_id, rate))
            return
        diff = blob.diff
        diff *= self.local_rate(param_id, rate)
        history *= f32(self.param.momentum)
        history += diff
        diff[...] = history

    # -- solver state --------------------------------------------------------------
    def snapshot_solver_state(self, model_filename, path):
        if self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5:
            snapshots.write_hdf5(path, lambda f: self._fill_hdf5_state(f, model_filename))
            return
        state = caffe_pb2.SolverState(iter=self.iter, learned_net=model_filename,
                                      current_step=self.current_step)
        if self._plateau():
            state.minimum_loss = self.minimum_loss
            state.iter_last_event = self.iter_last_event
        for history in self.history:
            formats.array_to_blob(backend.to_numpy(history), blob=state.history.add())
        snapshots.write_bytes(path, state.SerializeToString())

    def _fill_hdf5_state(self, f, model_filename):
        f.create_dataset('iter', data=np.array([self.iter], np.int32))
        _hdf5_string(f, 'learned_net', model_filename)
        f.create_dataset('current_step', data=np.array([self.current_step], np.int32))
        if self._plateau():
            f.create_dataset('iter_last_event', data=np.array([self.iter_last_event], np.int32))
            f.create_dataset('minimum_loss', data=np.array([self.minimum_loss], np.float32))
        group = f.create_group('history')
        for i, history in enumerate(self.history):
            group.create_dataset(str(i), data=backend.to_numpy(history))

    def restore_solver_state_from_binary_proto(self, path):
        state = formats.read_solverstate(path)
        self.iter = state.iter
        if state.HasField('learned_net'):
            self._restore_weights(state.learned_net, path)
        self.current_step = state.current_step
        self.minimum_loss = f32(state.minimum_loss)
        self.iter_last_event = state.iter_last_event
        self._check_history_count(len(state.history), path)
        log.info('SGDSolver: restoring history')
        for i, proto in enumerate(state.history):
            try:
                array = formats.blob_to_array(proto)
            except formats.FormatError as exc:
                raise SolverError('%s: history blob %d: %s' % (path, i, exc)) from None
            self._set_history(i, array, path)

    def restore_solver_state_from_hdf5(self, path):
        import h5py
        with h5py.File(path, 'r') as f:
            for name in ('iter', 'current_step', 'history'):
                if name not in f:
                    raise SolverError('%s: not a solver state (no "%s" in it)' % (path, name))
            self.iter = int(np.asarray(f['iter']).ravel()[0])
            if 'learned_net' in f:
                learned_net = f['learned_net'][()]
                self._restore_weights(learned_net.decode() if isinstance(learned_net, bytes)
                                      else str(learned_net), path)
            self.current_step = int(np.asarray(f['current_step']).ravel()[0])
            # SSD's plateau state; Caffe's files lack it: the defaults of the binary SolverState
            default = caffe_pb2.SolverState()
            self.minimum_loss = f32(np.asarray(f['minimum_loss']).ravel()[0] if 'minimum_loss' in f
                                    else default.minimum_loss)
            self.iter_last_event = int(np.asarray(f['iter_last_event']).ravel()[0] if 'iter_last_event' in f
                                       else default.iter_last_event)
            group = f['history']
            self._check_history_count(len(group), path)
            for i in range(len(self.history)):
                if str(i) not in group:
                    raise SolverError('%s: history/%d is missing' % (path, i))
                self._set_history(i, np.asarray(group[str(i)]), path)

    def _plateau(self):
        """Whether snapshots hold the plateau state (SSD writes it always; Caffe's files lack it)."""
        return self.param.lr_policy == 'plateau'

    def _restore_weights(self, learned_net, state_path):
        if not os.path.isfile(learned_net):
            raise formats.MissingFileError(learned_net, 'learned_net in %s' % state_path)
        self.net.copy_from(learned_net)

    def _check_history_count(self, count, path):
        if count != len(self.history):
            raise SolverError('Incorrect length of history blobs: %s holds %d, the %s solver keeps %d '
                              'for this net' % (path, count, self.type, len(self.history)))

    def _set_history(self, i, array, path):
        history = self.history[i]
        if array.size != history.size:
            raise SolverError('%s: history blob %d has %d values, its parameter has %d (shape %s)'
                              % (path, i, array.size, history.size, tuple(history.shape)))
        history[...] = backend.get_array_module(history).asarray(array.reshape(history.shape))


class NesterovSolver(SGDSolver):
    """Nesterov's momentum: history as SGD; the step is (1 + momentum) * history - momentum * old history."""

    type = 'Nesterov'

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        history = self.history[param_id]
        momentum = f32(self.param.momentum)
        if blob.xp is not np:
            device_update('nesterov_update', blob, history, momentum, f32(1) + momentum,
                          self.local_rate(param_id, rate))
            return
        previous = self.buffer('update', param_id)
        diff = blob.diff
        previous[...] = history
        diff *= self.local_rate(param_id, rate)
        history *= momentum
        history += diff
        blob.xp.multiply(history, f32(1) + momentum, out=diff)
        previous *= momentum
        diff -= previous


def device_update(name, blob, *args):
    """Run the fused update kernel `name` of kernels/solver_updates.cu on a parameter's diff."""
    gpu.kernel('solver_updates.cu', name, blob.dtype)(blob.count, blob.diff, *args)


def _hdf5_string(group, name, text):
    """A scalar null-terminated fixed-length string dataset, as HDF5's H5LTmake_dataset_string writes."""
    import h5py
    data = text.encode() + b'\0'
    string_type = h5py.h5t.C_S1.copy()
    string_type.set_size(len(data))
    string_type.set_strpad(h5py.h5t.STR_NULLTERM)
    dataset = h5py.h5d.create(group.id, name.encode(), string_type, h5py.h5s.create(h5py.h5s.SCALAR))
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(data, dtype='S%d' % len(data)), mtype=string_type)
