"""Solvers: every lr policy and every update rule against values computed by hand here,
and the mechanics of Caffe's loop (smoothing, iter_size, tests, snapshots, restore, requests)."""
import io
import logging
import os

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

from caffe_py import log
from caffe_py.proto import caffe_pb2
from caffe_py.solvers import (SOLVERS, AdaDeltaSolver, AdaGradSolver, AdamSolver, LearningRateError,
                              NesterovSolver, RMSPropSolver, SGDSolver, SolverError, get_solver,
                              learning_rate)
from caffe_py.solvers.solver import SNAPSHOT, STOP


def solver_param(text):
    return text_format.Parse(text, caffe_pb2.SolverParameter())


@pytest.fixture
def captured_log():
    """The caffe_py log written during the test, as text."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log.GlogFormatter())
    log.logger.addHandler(handler)
    old_level = log.logger.level
    log.logger.setLevel(logging.INFO)
    yield stream
    log.logger.removeHandler(handler)
    log.logger.setLevel(old_level)


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


def test_lr_errors():
    with pytest.raises(LearningRateError, match='Unknown learning rate policy: "cosine"'):
        rate('lr_policy: "cosine" base_lr: 0.1', 0)
    with pytest.raises(LearningRateError, match='stepsize > 0'):
        rate('lr_policy: "step" base_lr: 0.1 gamma: 0.1', 0)


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
