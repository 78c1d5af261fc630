"""Solvers: every lr policy and every update rule against values computed by hand here,
and the mechanics of Caffe's loop (smoothing, iter_size, tests, snapshots, restore, requests)."""
import os
import re

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

import caffe_py as caffe
from caffe_py.proto import caffe_pb2
from caffe_py.solvers import (SOLVERS, AdaDeltaSolver, AdaGradSolver, AdamSolver, LearningRateError,
                              NesterovSolver, RMSPropSolver, SGDSolver, SolverError, get_solver,
                              learning_rate)


def solver_param(text):
    return text_format.Parse(text, caffe_pb2.SolverParameter())


# -- learning rate policies -------------------------------------------------------------

def rate(text, iteration, step=0):
    value, step = learning_rate(solver_param(text), iteration, step)
    return float(value), step


def test_lr_fixed():
    assert rate('lr_policy: "fixed" base_lr: 0.1', 0)[0] == pytest.approx(0.1)
    assert rate('lr_policy: "fixed" base_lr: 0.1', 12345)[0] == pytest.approx(0.1)


def test_lr_step():
    text = 'lr_policy: "step" base_lr: 0.1 gamma: 0.5 stepsize: 10'
    assert rate(text, 9) == (pytest.approx(0.1), 0)
    assert rate(text, 10) == (pytest.approx(0.05), 1)
    assert rate(text, 25) == (pytest.approx(0.025), 2)


def test_lr_exp_and_inv():
    assert rate('lr_policy: "exp" base_lr: 0.1 gamma: 0.9', 3)[0] == pytest.approx(0.0729, rel=1e-6)
    # 0.1 * (1 + 0.01 * 100) ^ -0.75 = 0.1 / 2^0.75
    assert rate('lr_policy: "inv" base_lr: 0.1 gamma: 0.01 power: 0.75', 100)[0] == \
        pytest.approx(0.0594603557, rel=1e-6)


def test_lr_multistep_advances_one_step_per_call():
    text = 'lr_policy: "multistep" base_lr: 0.1 gamma: 0.1 stepvalue: 5 stepvalue: 8'
    step, seen = 0, {}
    for it in range(11):
        seen[it], step = rate(text, it, step)
    assert seen[4] == pytest.approx(0.1) and seen[5] == pytest.approx(0.01)
    assert seen[7] == pytest.approx(0.01) and seen[8] == pytest.approx(0.001)
    assert step == 2
    # as Caffe: a jump past two stepvalues moves one step only
    assert rate(text, 10, 0) == (pytest.approx(0.01), 1)


def test_lr_poly_and_sigmoid():
    text = 'lr_policy: "poly" base_lr: 0.1 power: 2 max_iter: 100'
    assert rate(text, 50)[0] == pytest.approx(0.025)
    assert rate(text, 100)[0] == 0.0
    text = 'lr_policy: "sigmoid" base_lr: 0.1 gamma: 0.5 stepsize: 10'
    assert rate(text, 10)[0] == pytest.approx(0.05)
    assert rate(text, 12)[0] == pytest.approx(0.1 / (1 + np.exp(-1.0)), rel=1e-6)
    assert rate(text, -100000)[0] == 0.0       # exp overflow gives 0, as in C


def test_lr_multifixed_mobilenet_yolo():
    text = ('lr_policy: "multifixed" base_lr: 1 stagelr: 0.001 stagelr: 0.01 stagelr: 0.0001 '
            'stageiter: 10 stageiter: 100 stageiter: 200')
    rates = {it: rate(text, it)[0] for it in (0, 10, 11, 100, 101, 200, 201, 10 ** 6)}
    assert rates == {0: pytest.approx(0.001), 10: pytest.approx(0.001), 11: pytest.approx(0.01),
                     100: pytest.approx(0.01), 101: pytest.approx(0.0001), 200: pytest.approx(0.0001),
                     201: pytest.approx(0.0001), 10 ** 6: pytest.approx(0.0001)}
    with pytest.raises(LearningRateError, match='as many stagelr as stageiter'):
        rate('lr_policy: "multifixed" stagelr: 0.1 stageiter: 5 stageiter: 9', 0)
    with pytest.raises(LearningRateError, match='at least one'):
        rate('lr_policy: "multifixed" base_lr: 0.1', 0)


def test_lr_errors():
    with pytest.raises(LearningRateError, match='Unknown learning rate policy: "cosine"'):
        rate('lr_policy: "cosine" base_lr: 0.1', 0)
    with pytest.raises(LearningRateError, match='stepsize > 0'):
        rate('lr_policy: "step" base_lr: 0.1 gamma: 0.1', 0)


def test_lr_plateau_by_hand(captured_log):
    """SSD's plateau: a step when the loss made no new minimum for plateau_winsize[step] iterations."""
    param = solver_param('lr_policy: "plateau" base_lr: 1 gamma: 0.1 display: 4 '
                         'plateau_winsize: 3 plateau_winsize: 2')
    state = type('State', (), {})()
    state.minimum_loss, state.iter_last_event, step = np.float32(3.4028235e38), 0, 0
    losses = [5, 4, 3, 3, 3, 3, 2, 2, 2, 2, 2, 1]
    seen = []
    for it, loss in enumerate(losses):
        state.smoothed_loss = np.float32(loss)
        value, step = learning_rate(param, it, step, state)
        seen.append(float(value))
    # new minima at 0, 1, 2; plateau of 3 ends at 5 (step 1); minimum 2 at 6; plateau of 2 ends at 8
    # (step 2, the last window); the minimum 1 at 11 changes no more
    assert seen == pytest.approx([1, 1, 1, 1, 1, .1, .1, .1, .01, .01, .01, .01])
    assert (step, state.iter_last_event, state.minimum_loss) == (2, 11, 1)
    # at display iterations with an event in the last `display` iterations: the minimum so far
    assert lines(captured_log, 'Plateau Status') == [
        'Plateau Status: Iteration 0, current minimum_loss = 5',
        'Plateau Status: Iteration 4, current minimum_loss = 3',
        'Plateau Status: Iteration 5, step = 1', 'Plateau Status: Iteration 8, step = 2',
        'Plateau Status: Iteration 8, current minimum_loss = 2']


@pytest.mark.parametrize('snapshot_format', ['BINARYPROTO', 'HDF5'])
def test_plateau_snapshot_and_resume_continue_the_sequence(workdir, captured_log, snapshot_format):
    path = write_solver(workdir, 'display: 1\nmax_iter: 20\nsnapshot: 12\nsnapshot_prefix: "p"\n'
                                 'lr_policy: "plateau"\ngamma: 0.5\nplateau_winsize: 2\n'
                                 'plateau_winsize: 2\nplateau_winsize: 3\nplateau_winsize: 3\n'
                                 'base_lr: 0.3\nsnapshot_format: %s\n' % snapshot_format)
    straight = get_solver(path)
    straight.solve()
    rates = lines(captured_log, ', lr = ')
    losses = [np.float32(x.rsplit('= ', 1)[1]) for x in lines(captured_log, 'loss = ') if 'iter/s' in x]
    suffix = '.solverstate.h5' if snapshot_format == 'HDF5' else '.solverstate'
    resumed = get_solver(path)
    assert resumed.minimum_loss == np.float32(3.4028235e38) and resumed.iter_last_event == 0
    resumed.restore('p_iter_12' + suffix)
    state = (resumed.current_step, resumed.iter_last_event, resumed.minimum_loss)
    captured_log.seek(0)
    captured_log.truncate()
    resumed.solve()
    assert lines(captured_log, ', lr = ') == rates[12:]
    # the restored minimum and event decide when the next steps come
    assert state[1] > 0 and state[2] == pytest.approx(min(losses[:12]), rel=1e-5)
    assert (resumed.current_step, resumed.iter_last_event) == (straight.current_step, straight.iter_last_event)
    # the smoothed loss is a running sum restarted by each solve (as in Caffe): equal up to rounding
    assert resumed.minimum_loss == pytest.approx(straight.minimum_loss, rel=1e-4)
    for name, blobs in weights(straight.net).items():
        for a, b in zip(blobs, weights(resumed.net)[name]):
            np.testing.assert_array_equal(a, b)


def test_plateau_state_is_written_only_for_the_plateau_policy(workdir):
    get_solver(write_solver(workdir, 'display: 0\nmax_iter: 2\nsnapshot_prefix: "f"\n')).solve()
    state = caffe.formats.read_solverstate('f_iter_2.solverstate')
    assert not state.HasField('minimum_loss') and not state.HasField('iter_last_event')
    get_solver(write_solver(workdir, 'display: 0\nmax_iter: 2\nsnapshot_prefix: "q"\n'
                                     'lr_policy: "plateau"\nplateau_winsize: 1\ngamma: 0.1\n')).solve()
    state = caffe.formats.read_solverstate('q_iter_2.solverstate')
    assert state.HasField('minimum_loss') and state.iter_last_event == 1 and state.minimum_loss < 2


def test_plateau_refused_with_several_ranks(workdir):
    caffe.set_solver_count(2)
    try:
        with pytest.raises(SolverError, match='"plateau" is not supported with several solver ranks'):
            get_solver(write_solver(workdir, 'lr_policy: "plateau"\nplateau_winsize: 1\n'))
    finally:
        caffe.set_solver_count(1)


# -- update rules on a one-layer net, against formulas written out here -----------------------

UPDATE_NET = '''
  name: "u"
  layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 } } }
  layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
          param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
          inner_product_param { num_output: 2 } }
'''

W0 = np.array([[0.5, -1.0, 0.25], [2.0, 0.0, -0.75]])
B0 = np.array([0.1, -0.2])
GRADS = [(np.array([[0.3, -0.1, 0.2], [0.0, 0.4, -0.5]]), np.array([0.05, -0.02])),
         (np.array([[-0.2, 0.1, 0.6], [0.3, -0.3, 0.1]]), np.array([-0.01, 0.07])),
         (np.array([[0.1, 0.1, -0.1], [-0.4, 0.2, 0.0]]), np.array([0.02, 0.0]))]


def make_update_solver(cls, extra='', weight_decay=0.01):
    param = solver_param('net_param {%s} base_lr: 0.1 weight_decay: %g lr_policy: "fixed" '
                         'display: 0 max_iter: 10 %s' % (UPDATE_NET, weight_decay, extra))
    solver = cls(param)
    w, b = solver.net.learnable_params
    w.data[...] = W0
    b.data[...] = B0
    return solver


def run_updates(solver, grads=GRADS):
    for gw, gb in grads:
        w, b = solver.net.learnable_params
        w.diff[...] = gw
        b.diff[...] = gb
        solver.apply_update()
    return [p.data.astype(np.float64) for p in solver.net.learnable_params]


def reference_updates(step_fn, n_hist=1, grads=GRADS, lr=0.1, wd=0.01):
    """Weights after `grads`, with step_fn(g, hist, local_rate, t) -> step updating hist in place."""
    params = [W0.copy(), B0.copy()]
    lr_mults, decay_mults = [1.0, 2.0], [1.0, 0.0]
    hists = [[np.zeros_like(p) for p in params] for _ in range(n_hist)]
    for t, grad_pair in enumerate(grads, 1):
        for i, g in enumerate(grad_pair):
            g = g + wd * decay_mults[i] * params[i]
            params[i] = params[i] - step_fn(g, [h[i] for h in hists], lr * lr_mults[i], t)
    return params, hists


def check(solver, expected, hists):
    actual = run_updates(solver)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=2e-6, atol=1e-7)
    flat = [h for group in hists for h in group]
    assert len(solver.history) == len(flat)
    for a, e in zip(solver.history, flat):
        np.testing.assert_allclose(a, e, rtol=2e-6, atol=1e-7)


def test_sgd_by_hand():
    solver = make_update_solver(SGDSolver, 'momentum: 0.9')
    w, _ = solver.net.learnable_params
    w.data[...] = 1.0
    w.diff[...] = 0.5
    solver.apply_update()            # v = 0.1 * (0.5 + 0.01 * 1) = 0.051
    np.testing.assert_allclose(w.data, 0.949, rtol=1e-6)
    w.diff[...] = 0.5
    solver.apply_update()            # v = 0.9 * 0.051 + 0.1 * (0.5 + 0.01 * 0.949)
    np.testing.assert_allclose(w.data, 0.949 - 0.096849, rtol=1e-6)
    assert solver.iter == 2


def test_sgd_momentum():
    def step(g, h, local_rate, t):
        h[0][...] = 0.9 * h[0] + local_rate * g
        return h[0]
    check(make_update_solver(SGDSolver, 'momentum: 0.9'), *reference_updates(step))


def test_nesterov():
    def step(g, h, local_rate, t):
        old = h[0].copy()
        h[0][...] = 0.9 * h[0] + local_rate * g
        return 1.9 * h[0] - 0.9 * old
    check(make_update_solver(NesterovSolver, 'momentum: 0.9'), *reference_updates(step))


def test_adagrad():
    def step(g, h, local_rate, t):
        h[0][...] += g * g
        return local_rate * g / (np.sqrt(h[0]) + 1e-4)
    check(make_update_solver(AdaGradSolver, 'delta: 1e-4'), *reference_updates(step))


def test_rmsprop():
    def step(g, h, local_rate, t):
        h[0][...] = 0.95 * h[0] + 0.05 * g * g
        return local_rate * g / (np.sqrt(h[0]) + 1e-4)
    check(make_update_solver(RMSPropSolver, 'rms_decay: 0.95 delta: 1e-4'), *reference_updates(step))


def test_adadelta_two_histories():
    def step(g, h, local_rate, t):
        grad_avg, step_avg = h
        grad_avg[...] = 0.9 * grad_avg + 0.1 * g * g
        update = g * np.sqrt((step_avg + 1e-3) / (grad_avg + 1e-3))
        step_avg[...] = 0.9 * step_avg + 0.1 * update * update
        return local_rate * update
    solver = make_update_solver(AdaDeltaSolver, 'momentum: 0.9 delta: 1e-3 type: "AdaDelta"')
    check(solver, *reference_updates(step, n_hist=2))


def test_adam_bias_correction_and_history_layout():
    def step(g, h, local_rate, t):
        m, v = h
        m[...] = 0.9 * m + 0.1 * g
        v[...] = 0.999 * v + 0.001 * g * g
        return local_rate * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-8)
    solver = make_update_solver(AdamSolver, 'momentum: 0.9 momentum2: 0.999 delta: 1e-8')
    check(solver, *reference_updates(step, n_hist=2))


def test_clip_gradients_scales_the_global_norm(captured_log):
    solver = make_update_solver(SGDSolver, 'clip_gradients: 0.5', weight_decay=0)
    run_updates(solver, [(np.full((2, 3), 1.0), np.full(2, 1.0))])   # norm sqrt(8)
    scale = 0.5 / np.sqrt(8)
    np.testing.assert_allclose(solver.net.learnable_params[0].data, W0 - 0.1 * scale, rtol=1e-6)
    np.testing.assert_allclose(solver.net.learnable_params[1].data, B0 - 0.2 * scale, rtol=1e-6)
    assert 'Gradient clipping: scaling down gradients (L2 norm 2.82843 > 0.5) by scale factor 0.176777' \
        in captured_log.getvalue()


def test_l1_regularization_and_iter_size_normalization():
    solver = make_update_solver(SGDSolver, 'regularization_type: "L1" iter_size: 4')
    run_updates(solver, GRADS[:1])
    gw, gb = GRADS[0]
    np.testing.assert_allclose(solver.net.learnable_params[0].data,
                               W0 - 0.1 * (gw / 4 + 0.01 * np.sign(W0)), rtol=1e-6)
    np.testing.assert_allclose(solver.net.learnable_params[1].data, B0 - 0.2 * gb / 4, rtol=1e-6)


def test_update_rule_refusals():
    with pytest.raises(SolverError, match='Momentum cannot be used with AdaGrad'):
        make_update_solver(AdaGradSolver, 'momentum: 0.9')
    with pytest.raises(SolverError, match='Momentum cannot be used with RMSProp'):
        make_update_solver(RMSPropSolver, 'momentum: 0.9')
    with pytest.raises(SolverError, match='rms_decay should lie between 0 and 1'):
        make_update_solver(RMSPropSolver, 'rms_decay: 1.5')
    with pytest.raises(SolverError, match='Unknown regularization type: L3'):
        make_update_solver(SGDSolver, 'regularization_type: "L3"')


def test_get_solver_picks_the_type():
    for name, cls in SOLVERS.items():
        param = solver_param('net_param {%s} base_lr: 0.1 lr_policy: "fixed" type: "%s"' % (UPDATE_NET, name))
        assert type(get_solver(param)) is cls
    legacy = solver_param('net_param {%s} base_lr: 0.1 lr_policy: "fixed" solver_type: NESTEROV' % UPDATE_NET)
    assert type(get_solver(legacy)) is NesterovSolver
    with pytest.raises(SolverError, match='Unknown solver type: Foo'):
        get_solver(solver_param('net_param {%s} type: "Foo"' % UPDATE_NET))


def test_solver_definition_errors(tmp_path):
    with pytest.raises(SolverError, match='must specify a train net'):
        get_solver(solver_param('base_lr: 0.1'))
    with pytest.raises(SolverError, match='more than one'):
        get_solver(solver_param('net: "a" net_param {%s}' % UPDATE_NET))
    with pytest.raises(SolverError, match='test_iter must be specified for each test network'):
        get_solver(solver_param('train_net_param {%s} test_net_param {%s} test_interval: 1'
                                % (UPDATE_NET, UPDATE_NET)))
    with pytest.raises(SolverError, match='test_interval must be > 0'):
        get_solver(solver_param('net_param {%s} test_iter: 1' % UPDATE_NET))
    with pytest.raises(SolverError, match='test_state must be unspecified or specified once per test net'):
        get_solver(solver_param('net_param {%s} test_iter: 1 test_interval: 1 test_state {} test_state {}'
                                % UPDATE_NET))
    with pytest.raises(FileNotFoundError, match=r"missing\.prototxt \(named by the solver's net field\)"):
        get_solver(solver_param('net: "%s"' % (tmp_path / 'missing.prototxt')))
    with pytest.raises(SolverError, match='Cannot write to snapshot prefix'):
        get_solver(solver_param('net_param {%s} snapshot: 5 snapshot_prefix: "%s"'
                                % (UPDATE_NET, tmp_path / 'no' / 'such' / 'dir')))
    with pytest.raises(SolverError, match='average_loss'):
        get_solver(solver_param('net_param {%s} average_loss: 0' % UPDATE_NET))


# -- the loop on a small classifier (HDF5Data, InnerProduct, ReLU, SoftmaxWithLoss, Accuracy) -----

CLASSIFIER = '''name: "small"
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN }
        hdf5_data_param { source: "train_list.txt" batch_size: %(batch)d } }
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TEST }
        hdf5_data_param { source: "test_list.txt" batch_size: 8 } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        inner_product_param { num_output: 12 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "%(last)s" type: "InnerProduct" bottom: "ip1" top: "ip2"
        param { lr_mult: %(lr_w)g } param { lr_mult: %(lr_b)g }
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
'''


def make_classifier(folder, batch=8, last='ip2', lr_w=1, lr_b=2, name='net.prototxt', seed=0):
    """Write a 3-class data set (32 train rows, 16 test rows, 6 features) and a classifier net."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.5, (3, 6))
    for split, rows in (('train', 32), ('test', 16)):
        label = np.arange(rows) % 3
        data = centers[label] + rng.normal(0, 0.7, (rows, 6))
        with h5py.File(os.path.join(folder, split + '.h5'), 'w') as f:
            f['data'] = data.astype(np.float32)
            f['label'] = label.astype(np.float32)
        with open(os.path.join(folder, split + '_list.txt'), 'w') as f:
            f.write(split + '.h5\n')
    with open(os.path.join(folder, name), 'w') as f:
        f.write(CLASSIFIER % dict(batch=batch, last=last, lr_w=lr_w, lr_b=lr_b))
    return os.path.join(folder, name)


SOLVER_BASE = ('net: "net.prototxt"\nbase_lr: 0.1\nmomentum: 0.9\nweight_decay: 0.001\n'
               'lr_policy: "fixed"\nrandom_seed: 3\nsolver_mode: CPU\n')


def write_solver(folder, text, name='solver.prototxt'):
    """A solver file: SOLVER_BASE with the fields `text` gives replacing the base's."""
    given = {line.split(':')[0] for line in text.splitlines()}
    base = [line for line in SOLVER_BASE.splitlines() if line.split(':')[0] not in given]
    path = os.path.join(folder, name)
    with open(path, 'w') as f:
        f.write('\n'.join(base) + '\n' + text)
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_classifier(str(tmp_path))
    return tmp_path


def lines(stream, text):
    """The messages of the log lines that contain `text`."""
    return [line.split('] ', 1)[1] for line in stream.getvalue().splitlines()
            if text in line and re.match(r'[IWEF]\d{4} ', line)]


def weights(net):
    return {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}


def test_smoothed_loss_is_the_running_mean(workdir, captured_log):
    solver = get_solver(write_solver(workdir, 'display: 1\nmax_iter: 9\naverage_loss: 3\n'))
    solver.solve()
    shown = [float(x.rsplit('= ', 1)[1]) for x in lines(captured_log, 'loss = ') if 'iter/s' in x]
    raw = [float(x.split('= ')[1].split(' ')[0]) for x in lines(captured_log, 'Train net output #0')]
    assert len(shown) == len(raw) == 9
    for i in range(9):
        window = raw[max(0, i - 2):i + 1]
        assert shown[i] == pytest.approx(np.mean(window), rel=2e-5)


def test_iter_size_accumulates_like_a_bigger_batch(workdir):
    solver = get_solver(write_solver(workdir, 'display: 0\nmax_iter: 6\niter_size: 2\n'))
    solver.solve()
    accumulated = weights(solver.net)
    make_classifier(str(workdir), batch=16)
    solver = get_solver(write_solver(workdir, 'display: 0\nmax_iter: 6\n'))
    solver.solve()
    for name, blobs in weights(solver.net).items():
        for a, b in zip(accumulated[name], blobs):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_events_order_tests_and_shared_weights(workdir, captured_log):
    solver = get_solver(write_solver(workdir, 'display: 4\nmax_iter: 10\ntest_iter: 2\ntest_interval: 5\n'
                                              'snapshot: 4\nsnapshot_prefix: "s"\ntest_compute_loss: true\n'))
    solver.solve()
    events = [x for x in captured_log.getvalue().splitlines()
              if 'Testing net' in x or 'iter/s' in x or 'Snapshotting to' in x or ', loss = ' in x
              or 'Optimization Done' in x]
    events = [re.sub(r' \(\S+ iter/s.*', '', x.split('] ', 1)[1]) for x in events]
    assert events == ['Iteration 0, Testing net (#0)', 'Iteration 0',
                      'Snapshotting to binary proto file s_iter_4.caffemodel', 'Iteration 4',
                      'Iteration 5, Testing net (#0)',
                      'Snapshotting to binary proto file s_iter_8.caffemodel', 'Iteration 8',
                      'Snapshotting to binary proto file s_iter_10.caffemodel',
                      'Iteration 10, Testing net (#0)', 'Optimization Done.']
    assert len(lines(captured_log, 'Test loss: ')) == 3
    outputs = lines(captured_log, 'Test net output')
    assert outputs[0].startswith('    Test net output #0: accuracy = ')
    assert outputs[1].startswith('    Test net output #1: loss = ') and outputs[1].endswith(' loss)')
    for blob, test_blob in zip(solver.net.params['ip1'], solver.test_nets[0].params['ip1']):
        assert np.shares_memory(blob.data, test_blob.data)
    assert sorted(os.listdir(workdir)) == sorted(
        ['net.prototxt', 'solver.prototxt', 'train.h5', 'test.h5', 'train_list.txt', 'test_list.txt']
        + ['s_iter_%d.%s' % (i, ext) for i in (4, 8, 10) for ext in ('caffemodel', 'solverstate')])


def test_several_test_nets_with_states(workdir, captured_log):
    text = ('display: 0\nmax_iter: 2\ntest_interval: 2\ntest_iter: 1\ntest_iter: 2\n'
            'test_state { stage: "a" }\ntest_state { stage: "b" level: 3 }\n')
    solver = get_solver(write_solver(workdir, text))
    assert len(solver.test_nets) == 2
    solver.solve()
    assert lines(captured_log, 'Testing net') == ['Iteration 0, Testing net (#0)', 'Iteration 0, Testing net (#1)',
                                                 'Iteration 2, Testing net (#0)', 'Iteration 2, Testing net (#1)']
    assert 'Creating test net (#1) specified by net file: net.prototxt' in captured_log.getvalue()


def test_requested_stop_and_snapshot(workdir, captured_log):
    solver = get_solver(write_solver(workdir, 'display: 0\nmax_iter: 10\nsnapshot_prefix: "r"\n'))
    requests = iter(['none', 'snapshot', 'none', 'stop'])
    solver.set_action_function(lambda: next(requests, 'none'))
    solver.solve()
    assert solver.iter == 4
    assert 'Optimization stopped early.' in captured_log.getvalue()
    assert sorted(f for f in os.listdir(workdir) if f.startswith('r_')) == \
        ['r_iter_2.caffemodel', 'r_iter_2.solverstate', 'r_iter_4.caffemodel', 'r_iter_4.solverstate']


@pytest.mark.parametrize('snapshot_format', ['BINARYPROTO', 'HDF5'])
@pytest.mark.parametrize('kind', ['SGD', 'Adam', 'AdaDelta'])
def test_restore_continues_exactly(workdir, kind, snapshot_format):
    path = write_solver(workdir, 'display: 0\nmax_iter: 8\nsnapshot: 4\nsnapshot_prefix: "k"\n'
                                 'lr_policy: "step"\nstepsize: 3\ngamma: 0.5\ndelta: 1e-6\n'
                                 'type: "%s"\nsnapshot_format: %s\n' % (kind, snapshot_format))
    straight = get_solver(path)
    straight.solve()
    suffix = '.solverstate.h5' if snapshot_format == 'HDF5' else '.solverstate'
    resumed = get_solver(path)
    resumed.solve('k_iter_4' + suffix)
    assert resumed.iter == 8 and resumed.current_step == straight.current_step == 2
    for name, blobs in weights(straight.net).items():
        for a, b in zip(blobs, weights(resumed.net)[name]):
            np.testing.assert_array_equal(a, b)


def test_hdf5_snapshot_layout(workdir):
    solver = get_solver(write_solver(workdir, 'display: 0\nmax_iter: 2\nsnapshot_format: HDF5\n'
                                              'snapshot_prefix: "h"\ntype: "Adam"\n'))
    solver.solve()
    with h5py.File('h_iter_2.solverstate.h5', 'r') as f:
        assert f['iter'].dtype == np.int32 and list(f['iter'][...]) == [2]
        assert list(f['current_step'][...]) == [0]
        assert f['learned_net'][()] == b'h_iter_2.caffemodel.h5'
        assert f['learned_net'].id.get_type().get_strpad() == h5py.h5t.STR_NULLTERM
        assert sorted(f['history'], key=int) == [str(i) for i in range(8)]
        assert f['history/0'].shape == (12, 6) and f['history/4'].shape == (12, 6)
    with h5py.File('h_iter_2.caffemodel.h5', 'r') as f:
        assert sorted(f['data']) == sorted(['data', 'ip1', 'relu1', 'ip2', 'loss'])
        assert f['data/ip2/0'].shape == (3, 12)


def test_default_snapshot_prefix_is_the_solver_file_name(workdir):
    solver = get_solver(write_solver(workdir, 'display: 0\nmax_iter: 1\n', name='my_solver.prototxt'))
    solver.solve()
    assert os.path.exists('my_solver_iter_1.caffemodel') and os.path.exists('my_solver_iter_1.solverstate')


def test_random_seed_and_weights_field(workdir):
    first = get_solver(write_solver(workdir, 'display: 0\nmax_iter: 3\nsnapshot_prefix: "w"\n'))
    second = get_solver(write_solver(workdir, 'display: 0\nmax_iter: 0\n'))
    for name, blobs in weights(first.net).items():
        for a, b in zip(blobs, weights(second.net)[name]):
            np.testing.assert_array_equal(a, b)
    first.solve()
    third = get_solver(write_solver(workdir, 'display: 0\nmax_iter: 0\ntest_iter: 1\ntest_interval: 9\n'
                                             'weights: "w_iter_3.caffemodel"\n'))
    for name, blobs in weights(first.net).items():
        for a, b, c in zip(blobs, weights(third.net)[name], weights(third.test_nets[0])[name]):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)


def test_pycaffe_solver_lr_and_share_weights(workdir):
    solver = get_solver(write_solver(workdir, 'display: 0\nmax_iter: 2\nlr_policy: "step"\ngamma: 0.5\n'
                                              'stepsize: 1\n'))
    assert solver.lr == pytest.approx(0.1)
    solver.step(1)
    assert solver.lr == pytest.approx(0.05)
    other = caffe.Net(os.path.join(str(workdir), 'net.prototxt'), caffe.TEST)
    solver.share_weights(other)
    solver.step(1)
    shared = weights(other)
    assert shared and set(shared) <= set(weights(solver.net))
    for name, blobs in shared.items():
        for a, b in zip(weights(solver.net)[name], blobs):
            np.testing.assert_array_equal(a, b)
