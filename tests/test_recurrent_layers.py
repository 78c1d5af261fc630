"""RNN, LSTM, LSTMUnit: Caffe's parameter layout, forward formulas, state handling, float64 gradients."""
import numpy as np
import pytest
from google.protobuf import text_format

import caffe_py as caffe
from caffe_py.proto import caffe_pb2
from harness import numeric_gradient_check

FILLERS = ('weight_filler { type: "uniform" min: -0.6 max: 0.6 } '
           'bias_filler { type: "uniform" min: -0.6 max: 0.6 }')


def inputs_text(inputs):
    return ''.join('layer { name: "in_%s" type: "Input" top: "%s" input_param { shape { %s } } }\n'
                   % (name, name, ' '.join('dim: %d' % d for d in np.shape(value)))
                   for name, value in inputs.items())


def recurrent_text(kind, inputs, tops, num_output=3, expose=False, extra=''):
    bottoms = ''.join(' bottom: "%s"' % name for name in inputs)
    return (inputs_text(inputs)
            + 'layer { name: "r" type: "%s"%s%s recurrent_param { num_output: %d %s%s } }\n'
            % (kind, bottoms, ''.join(' top: "%s"' % t for t in tops), num_output, FILLERS,
               ' expose_hidden: true' if expose else '') + extra)


def make_net(text, dtype=np.float64, phase=caffe.TEST):
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase, dtype=dtype)


def run(net, inputs):
    for name, value in inputs.items():
        net.blobs[name].reshape(np.shape(value))
        net.blobs[name].data[...] = net.blobs[name].xp.asarray(value)
    net.forward_from_to()
    return net


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def lstm_formula(x, cont, w, static=None, h=None, c=None):
    """Caffe's unrolled LSTM written out step by step; returns (h for all steps, h_T, c_T)."""
    steps, num = cont.shape
    w_x, b, w_h = w[0], w[1], w[-1]
    hidden = w_h.shape[1]
    h = np.zeros((num, hidden)) if h is None else h
    c = np.zeros((num, hidden)) if c is None else c
    out = []
    for t in range(steps):
        gates = (cont[t][:, None] * h) @ w_h.T + x[t].reshape(num, -1) @ w_x.T + b
        if static is not None:
            gates += static.reshape(num, -1) @ w[2].T
        i, f, o, g = np.split(gates, 4, axis=1)
        c = cont[t][:, None] * sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out), h, c


def rnn_formula(x, cont, w, static=None, h=None):
    """Caffe's unrolled RNN: returns (o for all steps, h_T)."""
    steps, num = cont.shape
    w_x, b, w_h, w_o, b_o = w[0], w[1], w[-3], w[-2], w[-1]
    h = np.zeros((num, w_h.shape[0])) if h is None else h
    out = []
    for t in range(steps):
        pre = (cont[t][:, None] * h) @ w_h.T + x[t].reshape(num, -1) @ w_x.T + b
        if static is not None:
            pre += static.reshape(num, -1) @ w[2].T
        h = np.tanh(pre)
        out.append(np.tanh(h @ w_o.T + b_o))
    return np.stack(out), h


def params_of(net):
    return [blob.data.copy() for blob in net.params['r']]


RNG = np.random.default_rng(7)
X = RNG.standard_normal((3, 2, 2, 2))          # T=3, N=2, D=4 (flattened from axis 2)
CONT = np.array([[0, 0], [1, 1], [0, 1]], float)
STATIC = RNG.standard_normal((2, 3))


# -- layout and forward formulas ------------------------------------------------------

@pytest.mark.parametrize('kind,shapes', [
    ('LSTM', [(12, 4), (12,), (12, 3), (12, 3)]),
    ('RNN', [(3, 4), (3,), (3, 3), (3, 3), (3, 3), (3,)]),
])
def test_parameters_in_caffes_order(kind, shapes):
    net = make_net(recurrent_text(kind, {'x': X, 'cont': CONT, 'xs': STATIC}, ['y']))
    assert [blob.shape for blob in net.params['r']] == shapes
    assert net.blobs['y'].shape == (3, 2, 3)
    without_static = make_net(recurrent_text(kind, {'x': X, 'cont': CONT}, ['y']))
    assert [blob.shape for blob in without_static.params['r']] == shapes[:2] + shapes[3:]


def test_lstm_forward_matches_formula_with_static_input_and_soft_cont():
    cont = np.array([[0, 0.5], [1, 0.25], [0, 1]])
    net = run(make_net(recurrent_text('LSTM', {'x': X, 'cont': cont, 'xs': STATIC}, ['y'])),
              {'x': X, 'cont': cont, 'xs': STATIC})
    expected, _, _ = lstm_formula(X, cont, params_of(net), STATIC)
    np.testing.assert_allclose(net.blobs['y'].data, expected, rtol=1e-12, atol=1e-12)


def test_rnn_forward_matches_formula_with_static_input():
    net = run(make_net(recurrent_text('RNN', {'x': X, 'cont': CONT, 'xs': STATIC}, ['y'])),
              {'x': X, 'cont': CONT, 'xs': STATIC})
    expected, _ = rnn_formula(X, CONT, params_of(net), STATIC)
    np.testing.assert_allclose(net.blobs['y'].data, expected, rtol=1e-12, atol=1e-12)


def test_exposed_states_in_and_out():
    h0, c0 = RNG.standard_normal((2, 1, 2, 3))
    cont = np.ones((3, 2))
    inputs = {'x': X, 'cont': cont, 'h0': h0, 'c0': c0}
    net = run(make_net(recurrent_text('LSTM', inputs, ['y', 'hT', 'cT'], expose=True)), inputs)
    y, h_t, c_t = lstm_formula(X, cont, params_of(net), h=h0[0], c=c0[0])
    for name, value in (('y', y), ('hT', h_t[None]), ('cT', c_t[None])):
        np.testing.assert_allclose(net.blobs[name].data, value, rtol=1e-12, atol=1e-12)
    inputs = {'x': X, 'cont': cont, 'h0': h0}
    net = run(make_net(recurrent_text('RNN', inputs, ['y', 'hT'], expose=True)), inputs)
    y, h_t = rnn_formula(X, cont, params_of(net), h=h0[0])
    np.testing.assert_allclose(net.blobs['y'].data, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.blobs['hT'].data, h_t[None], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('kind', ['LSTM', 'RNN'])
def test_hidden_state_carries_to_the_next_batch(kind):
    x = RNG.standard_normal((4, 2, 3))
    cont = np.array([[0, 0], [1, 1], [1, 0], [1, 1]], float)
    whole = run(make_net(recurrent_text(kind, {'x': x, 'cont': cont}, ['y'])), {'x': x, 'cont': cont})
    halves = make_net(recurrent_text(kind, {'x': x[:2], 'cont': cont[:2]}, ['y']))
    halves.copy_from_proto(whole.to_proto())
    first = run(halves, {'x': x[:2], 'cont': cont[:2]}).blobs['y'].data.copy()
    second = run(halves, {'x': x[2:], 'cont': cont[2:]}).blobs['y'].data
    np.testing.assert_allclose(np.concatenate([first, second]), whole.blobs['y'].data, rtol=1e-12)


# -- gradients ------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['LSTM', 'RNN'])
@pytest.mark.parametrize('static', [False, True], ids=['plain', 'static'])
def test_gradient(kind, static):
    inputs = {'x': X[:, :, :1], 'cont': CONT}
    if static:
        inputs['xs'] = STATIC
    numeric_gradient_check(recurrent_text(kind, inputs, ['y'], num_output=2), inputs,
                           no_grad=('cont',), rtol=1e-6)


@pytest.mark.parametrize('kind', ['LSTM', 'RNN'])
def test_gradient_with_exposed_states(kind):
    inputs = {'x': X[:, :, :1], 'cont': np.array([[1, 0], [1, 1], [0, 1]], float),
              'h0': RNG.standard_normal((1, 2, 2))}
    tops = ['y', 'hT']
    if kind == 'LSTM':
        inputs['c0'] = RNG.standard_normal((1, 2, 2))
        tops.append('cT')
    silence = 'layer { name: "s" type: "Silence"%s }\n' % ''.join(' bottom: "%s"' % t for t in tops[1:])
    numeric_gradient_check(recurrent_text(kind, inputs, tops, num_output=2, expose=True, extra=silence),
                           inputs, no_grad=('cont', 'h0', 'c0'), rtol=1e-6)


def test_exposed_states_take_no_gradient_as_in_caffe():
    """Caffe's unrolled net shares only the data of h_0/c_0 and h_T/c_T with the layer's blobs."""
    inputs = {'x': X, 'cont': np.ones((3, 2)), 'h0': np.ones((1, 2, 3)), 'c0': np.ones((1, 2, 3))}
    net = run(make_net('force_backward: true\n'
                       + recurrent_text('LSTM', inputs, ['y', 'hT', 'cT'], expose=True)), inputs)
    net.blobs['y'].diff[...] = 1
    grads = []
    for final_diff in (0.0, 5.0):
        net.clear_param_diffs()
        for name in ('h0', 'c0'):
            net.blobs[name].diff[...] = -7
        for name in ('hT', 'cT'):
            net.blobs[name].diff[...] = final_diff
        net.backward_from_to()
        assert np.all(net.blobs['h0'].diff == -7) and np.all(net.blobs['c0'].diff == -7)
        grads.append([blob.diff.copy() for blob in net.params['r']] + [net.blobs['x'].diff.copy()])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_lstm_unit_forward_and_gradient():
    rng = np.random.default_rng(1)
    inputs = {'c_prev': rng.standard_normal((1, 3, 2)), 'gates': rng.standard_normal((1, 3, 8)),
              'cont': np.array([[1, 0, 1]], float)}
    text = (inputs_text(inputs) + 'layer { name: "u" type: "LSTMUnit" bottom: "c_prev" bottom: "gates" '
            'bottom: "cont" top: "c" top: "h" }\n')
    numeric_gradient_check(text, inputs, no_grad=('cont',), rtol=1e-6)
    soft = dict(inputs, cont=np.array([[0.5, 0, 1]]))
    net = run(make_net(text), soft)
    i, f, o, g = np.split(soft['gates'][0], 4, axis=1)
    c = soft['cont'][0][:, None] * sigmoid(f) * soft['c_prev'][0] + sigmoid(i) * np.tanh(g)
    np.testing.assert_allclose(net.blobs['c'].data[0], c, rtol=1e-12)
    np.testing.assert_allclose(net.blobs['h'].data[0], sigmoid(o) * np.tanh(c), rtol=1e-12)


# -- refusals -------------------------------------------------------------------------

def test_refuses_backward_to_cont_and_bad_shapes():
    inputs = {'x': X, 'cont': CONT}
    net = run(make_net(recurrent_text('LSTM', inputs, ['y'])), inputs)
    layer = net.layer_dict['r']
    with pytest.raises(caffe.layer.LayerError, match='sequence continuation'):
        layer.backward(net.top_vecs[-1], [True, True], net.bottom_vecs[-1])
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)
    net = make_net(recurrent_text('RNN', inputs, ['y']))
    net.blobs['x'].reshape(4, 2, 2, 2)
    net.blobs['cont'].reshape(4, 2)
    with pytest.raises(caffe.layer.LayerError, match='number of timesteps changed'):
        net.forward_from_to()
    with pytest.raises(ValueError, match='num_output must be positive'):
        make_net(recurrent_text('LSTM', inputs, ['y'], num_output=0))
    with pytest.raises(ValueError, match='bottom\\[1\\] must have exactly 2 axes'):
        make_net(recurrent_text('LSTM', {'x': X, 'cont': CONT[:2]}, ['y']))
    with pytest.raises(ValueError, match='initial state'):
        make_net(recurrent_text('RNN', {'x': X, 'cont': CONT, 'h0': np.zeros((1, 2, 4))}, ['y', 'hT'],
                                expose=True))


def test_float32_runs_in_float32():
    inputs = {'x': X, 'cont': CONT, 'xs': STATIC}
    for kind in ('LSTM', 'RNN'):
        net = run(make_net(recurrent_text(kind, inputs, ['y']), dtype=np.float32), inputs)
        net.blobs['y'].diff[...] = 1
        net.backward_from_to()
        assert net.blobs['y'].data.dtype == np.float32
        assert all(blob.diff.dtype == np.float32 for blob in net.params['r'])


@pytest.mark.gpu
@pytest.mark.parametrize('kind', ['LSTM', 'RNN'])
def test_gpu_matches_cpu(kind):
    from caffe_py import backend
    inputs = {'x': X, 'cont': CONT, 'xs': STATIC}
    text = 'force_backward: true\n' + recurrent_text(kind, inputs, ['y'])
    results = []
    cpu = run(make_net(text), inputs)
    try:
        caffe.set_mode_gpu()
        gpu = make_net(text)
        gpu.copy_from_proto(cpu.to_proto())
        run(gpu, inputs)
    finally:
        caffe.set_mode_cpu()
    for net in (cpu, gpu):
        net.clear_param_diffs()
        net.blobs['y'].diff[...] = net.blobs['y'].xp.asarray(np.linspace(-1, 1, 18).reshape(3, 2, 3))
        net.backward_from_to()
        results.append([backend.to_numpy(a) for a in [net.blobs['y'].data, net.blobs['x'].diff,
                                                       net.blobs['xs'].diff]
                        + [blob.diff for blob in net.params['r']]])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
