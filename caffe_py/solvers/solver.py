"""Solver: Caffe's training loop (Solver::Init, Step, Solve, TestAll, Snapshot, Restore).

The arithmetic of one update and the solver state live in the subclasses
(caffe_py.solvers.sgd, caffe_py.solvers.adaptive). Losses, smoothed losses
and test scores are kept in float32, as Caffe keeps them in Dtype.
"""
import os

import numpy as np

from .. import backend, formats, log, parallel
from ..detection_eval import AP_VERSIONS
from ..net import Net
from ..proto import caffe_pb2
from . import detection_test, nan_check, snapshots
from .timer import Timer

f32 = np.float32
fmt = log.fmt

# what the action function (signals, pycaffe users) may request between iterations
NONE, STOP, SNAPSHOT = 'none', 'stop', 'snapshot'
ACTIONS = (NONE, STOP, SNAPSHOT)

_TRAIN_NET_FIELDS = ('net', 'net_param', 'train_net', 'train_net_param')


class SolverError(ValueError):
    """A solver definition Caffe refuses, or a solver state that does not fit the net."""


def solver_parameter(source):
    """A SolverParameter from a prototxt path (read as Caffe reads it) or a copy of a message."""
    if isinstance(source, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(source)
        if formats.solver_needs_type_upgrade(param):
            formats.upgrade_solver(param)
        return param
    return formats.read_solver(source)


def _read_net_field(path, field):
    return formats.read_net(path, named_by="the solver's %s field" % field)


def load_weights(net, model_list, named_by="the solver's weights field"):
    """Copy weights from a comma-separated list of caffemodels (Caffe's LoadNetWeights)."""
    for name in model_list.split(','):
        name = name.strip()
        log.info('Finetuning from %s', name)
        if not os.path.isfile(name):
            raise formats.MissingFileError(name, named_by)
        net.copy_from(name)


class Solver:
    """Base of the solvers: builds the train and test nets and runs Caffe's loop.

    Construct from a solver prototxt path or a SolverParameter. pycaffe's
    surface: `net`, `test_nets`, `iter`, `param`, `step(n)`, `solve(resume=None)`,
    `restore(path)`, `snapshot()`, `add_callback(...)`.
    """

    type = None

    def __init__(self, param):
        param = solver_parameter(param)
        log.info('Initializing solver from parameters: \n%s', param)
        self.param = param
        if param.average_loss < 1:
            raise SolverError('average_loss must be at least 1 (got %d)' % param.average_loss)
        self.check_param()
        self.iter = 0
        self.current_step = 0
        self._check_snapshot_prefix()
        if parallel.root_solver():   # only the root writes snapshots, so only it tidies them
            snapshots.recover(param.snapshot_prefix)
        # stop at the first NaN or inf (caffe-py train -nan_check); Caffe trains on
        self.nan_check = False
        if param.random_seed >= 0:   # each rank its own stream (Caffe: random_seed + solver_rank)
            backend.set_random_seed(param.random_seed + parallel.solver_rank())
        self._action_function = None
        self._callbacks = []
        self.sync = None   # set by caffe_py.parallel: makes every rank follow the root's requests
        self.requested_early_exit = False
        self.losses = []
        self.smoothed_loss = f32(0)
        self._iterations_last = 0
        self._iteration_timer = Timer()
        self.net = self._init_train_net()
        self.test_nets = self._init_test_nets() if parallel.root_solver() else []   # only the root tests
        log.info('Solver scaffolding done.')
        self.pre_solve()

    # -- hooks for the update rules -----------------------------------------------
    def check_param(self):
        """Refuse settings the update rule cannot use (Caffe's constructor checks)."""

    def pre_solve(self):
        """Allocate the solver state once the nets exist."""

    def apply_update(self):
        raise NotImplementedError

    def snapshot_solver_state(self, model_filename, path):
        """Write the solver state of the snapshot whose weights are `model_filename` to `path`."""
        raise NotImplementedError

    def restore_solver_state_from_binary_proto(self, path):
        raise NotImplementedError

    def restore_solver_state_from_hdf5(self, path):
        raise NotImplementedError

    # -- scaffolding ----------------------------------------------------------------
    def _check_snapshot_prefix(self):
        if not self.param.snapshot or not parallel.root_solver():
            return
        if not self.param.HasField('snapshot_prefix'):
            raise SolverError('In solver params, snapshot is specified but snapshot_prefix is not')
        probe = self.snapshot_filename('.tempfile')
        try:
            with open(probe, 'w'):
                pass
            os.remove(probe)
        except OSError:
            raise SolverError("Cannot write to snapshot prefix '%s'.  Make sure that the directory "
                              'exists and is writable.' % self.param.snapshot_prefix) from None

    def _build_net(self, net_param):
        state = net_param.state
        return Net(net_param, state.phase, level=state.level)

    def _init_train_net(self):
        p = self.param
        given = [f for f in _TRAIN_NET_FIELDS if p.HasField(f)]
        if not given:
            raise SolverError('SolverParameter must specify a train net using one of these fields: '
                              + ', '.join(_TRAIN_NET_FIELDS))
        if len(given) > 1:
            raise SolverError('SolverParameter must not contain more than one of these fields '
                              'specifying a train_net: %s (it has %s)'
                              % (', '.join(_TRAIN_NET_FIELDS), ', '.join(given)))
        field = given[0]
        if field == 'train_net_param':
            log.info('Creating training net specified in train_net_param.')
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(p.train_net_param)
        elif field == 'train_net':
            log.info('Creating training net from train_net file: %s', p.train_net)
            net_param = _read_net_field(p.train_net, 'train_net')
        elif field == 'net_param':
            log.info('Creating training net specified in net_param.')
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(p.net_param)
        else:
            log.info('Creating training net from net file: %s', p.net)
            net_param = _read_net_field(p.net, 'net')
        # precedence: the solver's default phase, then the net's own state, then train_state
        state = caffe_pb2.NetState(phase=caffe_pb2.TRAIN)
        state.MergeFrom(net_param.state)
        state.MergeFrom(p.train_state)
        net_param.state.CopyFrom(state)
        net = self._build_net(net_param)
        for model_list in p.weights:
            load_weights(net, model_list)
        return net

    def _test_net_sources(self):
        """[(description, NetParameter)] for every test net instance, in Caffe's order."""
        p = self.param
        if p.HasField('net_param') and p.HasField('net'):
            raise SolverError('Both net_param and net_file may not be specified.')
        generic = p.HasField('net_param') or p.HasField('net')
        num_specific = len(p.test_net_param) + len(p.test_net)
        if (len(p.test_iter) < num_specific) if generic else (len(p.test_iter) != num_specific):
            raise SolverError('test_iter must be specified for each test network (%d test_iter for '
                              '%d test net(s))' % (len(p.test_iter), num_specific))
        sources = [('test_net_param', param) for param in p.test_net_param]
        sources += [('test_net file: ' + path, _read_net_field(path, 'test_net'))
                    for path in p.test_net]
        remaining = len(p.test_iter) - len(sources)
        if remaining and p.HasField('net_param'):
            sources += [('net_param', p.net_param)] * remaining
        elif remaining:
            sources += [('net file: ' + p.net, _read_net_field(p.net, 'net'))] * remaining
        return sources

    def _init_test_nets(self):
        p = self.param
        sources = self._test_net_sources()
        if p.test_state and len(p.test_state) != len(sources):
            raise SolverError('test_state must be unspecified or specified once per test net '
                              '(%d test_state for %d test net(s))' % (len(p.test_state), len(sources)))
        if sources and p.test_interval <= 0:
            raise SolverError('test_interval must be > 0 when there are test nets (got %d)'
                              % p.test_interval)
        if sources and p.eval_type not in detection_test.EVAL_TYPES:   # the fork stops at the first test
            raise SolverError('Unknown evaluation type: %s (eval_type; known: %s)'
                              % (p.eval_type, ', '.join(detection_test.EVAL_TYPES)))
        if sources and p.eval_type == 'detection' and p.ap_version not in AP_VERSIONS:
            raise SolverError('Unknown ap_version: %s (known: %s)'
                              % (p.ap_version, ', '.join(AP_VERSIONS)))
        nets = []
        for i, (description, source) in enumerate(sources):
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(source)
            state = caffe_pb2.NetState(phase=caffe_pb2.TEST)
            state.MergeFrom(net_param.state)
            if p.test_state:
                state.MergeFrom(p.test_state[i])
            net_param.state.CopyFrom(state)
            log.info('Creating test net (#%d) specified by %s', i, description)
            net = self._build_net(net_param)
            net.debug_info = p.debug_info
            for model_list in p.weights:
                load_weights(net, model_list)
            nets.append(net)
        return nets

    # -- requests and callbacks -------------------------------------------------------
    def set_action_function(self, function):
        """`function()` returns 'none', 'stop' or 'snapshot'; asked after every update and test batch."""
        self._action_function = function

    def requested_action(self):
        if self._action_function is None:
            return NONE
        action = self._action_function()
        if action not in ACTIONS:
            raise SolverError('the action function returned %r; expected one of %s' % (action, ACTIONS))
        return action

    def share_weights(self, net):
        """pycaffe's solver.share_weights(net): `net` uses the training net's parameters."""
        net.share_with(self.net)

    def add_callback(self, on_start, on_gradients_ready=None):
        """Call on_start() before each iteration's forward passes, on_gradients_ready() before the update.

        As pycaffe, one object with on_start and on_gradients_ready methods (caffe.NCCL) also does."""
        if on_gradients_ready is None:
            on_start, on_gradients_ready = on_start.on_start, on_start.on_gradients_ready
        self._callbacks.append((on_start, on_gradients_ready))

    def _agreed_action(self):
        """The root's requested action, the same on every rank (the root decides for all)."""
        action = self.requested_action() if parallel.root_solver() else NONE
        return action if self.sync is None else self.sync.agree(action)

    # -- the loop ------------------------------------------------------------------
    def step(self, iters):
        """Run `iters` iterations (Caffe's Solver::Step)."""
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + iters
        self.losses = []
        self.smoothed_loss = f32(0)
        self._iteration_timer.start()
        check = self.nan_check
        if check:
            nan_check.check_params(self.net, self.iter, 'starts with')
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if (p.test_interval and self.iter % p.test_interval == 0
                    and (self.iter > 0 or p.test_initialization)):
                if parallel.root_solver():
                    self.test_all()
                if self.sync is not None:   # a stop asked for while the root tested stops every rank
                    self.requested_early_exit = self.sync.agree(
                        STOP if self.requested_early_exit else NONE) == STOP
                if self.requested_early_exit:
                    break
            for on_start, _ in self._callbacks:
                on_start()
            display = bool(p.display) and self.iter % p.display == 0 and parallel.root_solver()
            self.net.debug_info = display and p.debug_info
            loss = f32(0)
            for _ in range(p.iter_size):
                loss += f32(nan_check.forward_backward(self.net, self.iter) if check
                            else self.net.forward_backward())
            loss /= f32(p.iter_size)
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            if display:
                self._display()
            for _, on_gradients_ready in self._callbacks:
                on_gradients_ready()
            self.apply_update()
            if check:
                nan_check.check_params(self.net, self.iter - 1)
            request = self._agreed_action()
            due = (p.snapshot and self.iter % p.snapshot == 0) or request == SNAPSHOT
            if due and parallel.root_solver():
                self.snapshot()
            if request == STOP:
                self.requested_early_exit = True
                break

    def _display(self):
        lapse = f32(self._iteration_timer.seconds())
        per_s = f32(self.iter - self._iterations_last) / (lapse if lapse else f32(1))
        log.info('Iteration %d (%s iter/s, %ss/%d iters), loss = %s', self.iter, fmt(per_s),
                 fmt(lapse), self.param.display, fmt(self.smoothed_loss))
        self._iteration_timer.start()
        self._iterations_last = self.iter
        index = 0
        for name in self.net.outputs:
            weight = f32(self.net.blob_loss_weights[name])
            for value in self.net.blobs[name].read_data().ravel():
                log.info('    Train net output #%d: %s = %s%s', index, name, fmt(value),
                         _loss_suffix(weight, value))
                index += 1

    def _update_smoothed_loss(self, loss, start_iter, average_loss):
        """Mean of the last `average_loss` losses, updated in place (Caffe's UpdateSmoothedLoss)."""
        if len(self.losses) < average_loss:
            self.losses.append(loss)
            size = len(self.losses)
            self.smoothed_loss = (self.smoothed_loss * f32(size - 1) + loss) / f32(size)
        else:
            idx = (self.iter - start_iter) % average_loss
            self.smoothed_loss += (loss - self.losses[idx]) / f32(average_loss)
            self.losses[idx] = loss

    def solve(self, resume=None):
        """Train to max_iter, first restoring the solver state file `resume` if given (Caffe's Solve)."""
        p = self.param
        log.info('Solving %s', self.net.name)
        log.info('Learning Rate Policy: %s', p.lr_policy)
        self.requested_early_exit = False
        if resume:
            log.info('Restoring previous solver status from %s', resume)
            self.restore(resume)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if (p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0)
                and parallel.root_solver()):
            self.snapshot()
        if self.requested_early_exit:
            log.info('Optimization stopped early.')
            return
        # one more forward pass to show the final loss (no update), then the final test
        if p.display and self.iter % p.display == 0:
            loss = f32(self.net.forward_from_to())
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            log.info('Iteration %d, loss = %s', self.iter, fmt(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info('Optimization Done.')

    # -- testing ---------------------------------------------------------------------
    def test_all(self):
        for test_net_id in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(test_net_id)

    def test(self, test_net_id=0):
        """Mean outputs of test net `test_net_id` over test_iter batches, logged as Caffe logs them;
        with eval_type "detection", their mean average precision (SSD's TestDetection)."""
        p = self.param
        log.info('Iteration %d, Testing net (#%d)', self.iter, test_net_id)
        test_net = self.test_nets[test_net_id]
        test_net.share_with(self.net)
        test_iter = p.test_iter[test_net_id]
        detections = detection_test.DetectionRows(test_net) if p.eval_type == 'detection' else None
        scores = None
        loss = f32(0)
        for _ in range(test_iter):
            request = self.requested_action()
            while request != NONE:
                if request == SNAPSHOT:
                    self.snapshot()
                elif request == STOP:
                    self.requested_early_exit = True
                request = self.requested_action()
            if self.requested_early_exit:
                break
            iter_loss = test_net.forward_from_to()
            if p.test_compute_loss:
                loss += f32(iter_loss)
            if detections is not None:
                detections.add()
                continue
            values = [test_net.blobs[name].read_data().ravel() for name in test_net.outputs]
            batch = np.concatenate(values).astype(f32) if values else np.zeros(0, f32)
            if scores is None:
                scores = batch
            else:
                scores += batch
        if self.requested_early_exit:
            log.info('Test interrupted.')
            return
        if p.test_compute_loss and test_iter:
            loss /= f32(test_iter)
            log.info('Test loss: %s', fmt(loss))
        if detections is not None:
            detections.report(p.ap_version, p.show_per_class_result)
            return
        if scores is None:
            return
        names = [name for name in test_net.outputs for _ in range(test_net.blobs[name].count)]
        for i, (name, score) in enumerate(zip(names, scores)):
            weight = f32(test_net.blob_loss_weights[name])
            mean = score / f32(test_iter)
            log.info('    Test net output #%d: %s = %s%s', i, name, fmt(mean), _loss_suffix(weight, mean))

    # -- snapshots -------------------------------------------------------------------
    def snapshot_filename(self, extension):
        return '%s_iter_%d%s' % (self.param.snapshot_prefix, self.iter, extension)

    def close(self):
        """Stop the nets' background work (data prefetching threads)."""
        for net in [self.net] + list(self.test_nets):
            net.close()

    def snapshot(self):
        """Write the weights and the solver state (Caffe's Solver::Snapshot); returns the model file.

        The two files are published together (see caffe_py.solvers.snapshots).
        """
        p = self.param
        if p.snapshot_format == caffe_pb2.SolverParameter.BINARYPROTO:
            kind, model_ext, state_ext = 'binary proto', '.caffemodel', '.solverstate'

            def write_model(path):
                snapshots.write_bytes(path, formats.serialize(self.net.to_proto(p.snapshot_diff)))
        elif p.snapshot_format == caffe_pb2.SolverParameter.HDF5:
            kind, model_ext, state_ext = 'HDF5', '.caffemodel.h5', '.solverstate.h5'

            def write_model(path):
                snapshots.write_hdf5(path, lambda f: self.net.fill_hdf5(f, p.snapshot_diff))
        else:
            raise SolverError('Unsupported snapshot format %d.' % p.snapshot_format)
        model_filename = self.snapshot_filename(model_ext)
        state_filename = self.snapshot_filename(state_ext)

        def write_state(path):
            log.info('Snapshotting solver state to %s file %s', kind, state_filename)
            self.snapshot_solver_state(model_filename, path)
        log.info('Snapshotting to %s file %s', kind, model_filename)
        snapshots.publish([(model_filename, write_model), (state_filename, write_state)],
                          self.snapshot_filename('.snapshot-journal'))
        return model_filename

    def latest_snapshot(self):
        """(solverstate, caffemodel) of the newest snapshot of snapshot_prefix that has both, or None."""
        return snapshots.latest_pair(self.param.snapshot_prefix)

    def restore_latest(self):
        """Restore the newest complete snapshot of snapshot_prefix; returns its solverstate path."""
        pair = self.latest_snapshot()
        if pair is None:
            raise SolverError("no snapshot to resume from: no %s_iter_N.solverstate with its caffemodel"
                              % self.param.snapshot_prefix)
        log.info('Resuming from the newest complete snapshot: %s (weights %s)', *pair)
        self.restore(pair[0])
        return pair[0]

    def restore(self, state_file):
        """Continue from a .solverstate (binary) or .solverstate.h5 written by Caffe or caffe-py."""
        state_file = os.fspath(state_file)
        if not os.path.isfile(state_file):
            raise formats.MissingFileError(state_file, 'the solver state to restore')
        if state_file.endswith('.h5'):
            self.restore_solver_state_from_hdf5(state_file)
        else:
            self.restore_solver_state_from_binary_proto(state_file)


def _loss_suffix(weight, value):
    if not weight:
        return ''
    return ' (* %s = %s loss)' % (fmt(weight), fmt(weight * f32(value)))
