"""Recurrent layers: RNN, LSTM and LSTMUnit, with the numbers of Caffe's unrolled nets.

Caffe runs RNN and LSTM as an internal Net unrolled over the T time steps. Here
the recurrence runs directly: one GEMM projects the inputs of all steps at once,
then a loop over time applies the recurrent weights, and the backward pass does
the same in reverse. Parameters (order, shapes, fillers), outputs and gradients
are those of the unrolled net, including its behaviour at the edges:

- bottoms: x (T x N x ...), cont (T x N), optional x_static (N x ...), and with
  recurrent_param.expose_hidden the initial states (h_0; h_0, c_0 for LSTM),
  each 1 x N x num_output; tops: the output, then the final states if exposed.
- cont_t multiplies h_{t-1} (and, in LSTM, the forget gate), so cont_t = 0
  starts a new sequence. Without expose_hidden the initial states are the final
  states of the previous forward pass (zeros at first).
- cont takes no gradient. With expose_hidden the unrolled net shares only the
  data of the state blobs, so no gradient reaches the h_0/c_0 bottoms (their
  diffs are left as they are) and the diffs of the final-state tops are unused.
"""
import numpy as np

from .. import fillers
from ..backend import get_array_module as _module
from ..layer import Layer, register


def _sigmoid_(a):
    """In place: a = 1 / (1 + exp(-a)), written with tanh so that it never overflows."""
    a *= 0.5
    _module(a).tanh(a, out=a)
    a *= 0.5
    a += 0.5


def _tanh_backward(y, y_diff, x_diff):
    """x_diff = y_diff * (1 - y^2) for y = tanh(x), as Caffe's TanH backward."""
    xp = _module(y)
    xp.multiply(y, y, out=x_diff)
    xp.subtract(1, x_diff, out=x_diff)
    x_diff *= y_diff


class _Buffers:
    """Work arrays of a layer, reallocated only when shape, dtype or array module change."""

    def __init__(self):
        self._arrays = {}

    def get(self, name, shape, dtype, xp):
        array = self._arrays.get(name)
        if (array is None or array.shape != tuple(shape) or array.dtype != dtype
                or _module(array) is not xp):
            array = xp.empty(shape, dtype)
            self._arrays[name] = array
        return array


# -- the LSTM cell, shared by LSTMUnit and LSTM -----------------------------------

def lstm_cell_forward(gates, cont, c_prev, c, tanh_c, h):
    """One LSTM step for N streams, as Caffe's LSTMUnit.

    `gates` (N x 4H, the inputs i, f, o, g) is activated in place: sigmoid on
    i, f, o, tanh on g, f times cont. Writes c = f * c_prev + i * g,
    tanh_c = tanh(c) and h = o * tanh_c.
    """
    hidden = c.shape[-1]
    _sigmoid_(gates[:, :3 * hidden])
    tail = gates[:, 3 * hidden:]
    _module(tail).tanh(tail, out=tail)
    gates[:, hidden:2 * hidden] *= cont[:, None]
    i, f, o, g = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
    xp = _module(c)
    xp.multiply(f, c_prev, out=c)
    c += i * g
    xp.tanh(c, out=tanh_c)
    xp.multiply(o, tanh_c, out=h)


def lstm_cell_backward(gates, c_prev, tanh_c, h_diff, c_diff, gates_diff):
    """Caffe's LSTMUnit backward: the gate-input diffs into `gates_diff`; returns the c_prev diff.

    `gates` holds the activations from lstm_cell_forward (f already times cont);
    as in Caffe, the f derivative is f * (1 - f) with that scaled f.
    """
    hidden = c_prev.shape[-1]
    i, f, o, g = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
    di, df, do, dg = (gates_diff[:, k * hidden:(k + 1) * hidden] for k in range(4))
    c_term = h_diff * o
    c_term *= 1 - tanh_c * tanh_c
    c_term += c_diff
    for out, a, b, act in ((di, c_term, g, i), (df, c_term, c_prev, f)):
        _module(out).multiply(a, b, out=out)
        out *= act
        out *= 1 - act
    _module(do).multiply(h_diff, tanh_c, out=do)
    do *= o
    do *= 1 - o
    _module(dg).multiply(c_term, i, out=dg)
    dg *= 1 - g * g
    c_term *= f
    return c_term


@register('LSTMUnit')
class LSTMUnitLayer(Layer):
    """One LSTM step: bottoms c_prev (1 x N x H), gate inputs (1 x N x 4H), cont (1 x N); tops c, h."""
    exact_num_bottom = 3
    exact_num_top = 2

    def setup(self, bottom, top):
        self.buffers = _Buffers()

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        num = bottom[0].shape[1] if bottom[0].num_axes > 1 else None
        for i, blob in enumerate(bottom):
            axes = 2 if i == 2 else 3
            if blob.num_axes != axes or blob.shape[0] != 1 or blob.shape[1] != num:
                raise self.error('bottom %d must have shape (1, %s%s), got %s'
                                 % (i, num, '' if i == 2 else ', ...', blob.shape_string()))
        hidden = bottom[0].shape[2]
        if bottom[1].shape[2] != 4 * hidden:
            raise self.error('bottom 1 must have 4 * %d gate inputs per stream, got %d'
                             % (hidden, bottom[1].shape[2]))
        top[0].reshape(bottom[0].shape)
        top[1].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        num, hidden = bottom[0].shape[1:]
        self.gates = self.buffers.get('gates', (num, 4 * hidden), self.dtype, xp)
        self.tanh_c = self.buffers.get('tanh_c', (num, hidden), self.dtype, xp)
        self.gates[...] = bottom[1].data[0]
        lstm_cell_forward(self.gates, bottom[2].data[0], bottom[0].data[0], top[0].data[0],
                          self.tanh_c, top[1].data[0])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error('cannot backpropagate to the sequence continuation indicators (bottom 2)')
        if not (propagate_down[0] or propagate_down[1]):
            return
        gates_diff = bottom[1].diff[0] if propagate_down[1] else self.buffers.get(
            'gates_diff', self.gates.shape, self.dtype, bottom[0].xp)
        c_prev_diff = lstm_cell_backward(self.gates, bottom[0].data[0], self.tanh_c,
                                         top[1].diff[0], top[0].diff[0], gates_diff)
        if propagate_down[0]:
            bottom[0].diff[0] = c_prev_diff


# -- RNN and LSTM -----------------------------------------------------------------

class RecurrentLayer(Layer):
    """Caffe's RecurrentLayer: bottoms, shapes, parameters and the hidden state carried across batches.

    Subclasses set `num_states` and `gate_factor` (rows of the projections per
    output) and implement `recur` / `recur_backward` over the projected inputs.
    """
    num_states = 1
    gate_factor = 1

    def __init__(self, layer_param, dtype=np.float32):
        super().__init__(layer_param, dtype)
        exposed = self.num_states if layer_param.recurrent_param.expose_hidden else 0
        self.min_bottom = 2 + exposed
        self.max_bottom = 3 + exposed
        self.exact_num_top = 1 + exposed

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def setup(self, bottom, top):
        rp = self.layer_param.recurrent_param
        # x and x_static feed InnerProducts over axes 2 and 1 in Caffe's unrolled net
        if bottom[0].num_axes < 3:
            raise self.error('bottom[0] must have at least 3 axes -- (#timesteps, #streams, ...), got %s'
                             % bottom[0].shape_string())
        self.steps = bottom[0].shape[0]
        if rp.num_output <= 0:
            raise self.error('num_output must be positive')
        self.hidden = rp.num_output
        self.expose_hidden = rp.expose_hidden
        self.static_input = len(bottom) > 2 + self.num_states * self.expose_hidden
        num = bottom[0].shape[1]
        self._check_cont(bottom, num)
        if self.static_input and (bottom[2].num_axes < 2 or bottom[2].shape[0] != num):
            raise self.error('the static input (bottom 2) must have shape (%d, ...), 2 axes or more; got %s'
                             % (num, bottom[2].shape_string()))
        self.input_dim = bottom[0].count_range(2)
        self.static_dim = bottom[2].count_range(1) if self.static_input else 0
        rows = self.gate_factor * self.hidden
        shapes = [((rows, self.input_dim), rp.weight_filler), ((rows,), rp.bias_filler)]
        if self.static_input:
            shapes.append(((rows, self.static_dim), rp.weight_filler))
        shapes.append(((rows, self.hidden), rp.weight_filler))
        shapes.extend(self.extra_params(rp))
        # Caffe drops blobs given in the layer definition and fills fresh ones
        self.blobs = []
        for shape, filler in shapes:
            blob = self.make_blob(shape)
            fillers.fill(blob, filler)
            self.blobs.append(blob)
        self.recurrent_weight = 2 + self.static_input
        # Caffe's unrolled net has one layer per time step for the recurrent (and RNN's output)
        # weights, sharing the first step's: each later step still draws its fill from the stream
        for _ in range(self.steps - 1):
            for shape, filler in shapes[self.recurrent_weight:]:
                fillers.fill(self.make_blob(shape), filler)
        self.states = [self.make_blob((1, num, self.hidden)) for _ in range(self.num_states)]
        self.buffers = _Buffers()

    def extra_params(self, rp):
        """(shape, filler) of parameters after the recurrent weight (RNN's output projection)."""
        return []

    def _check_cont(self, bottom, num):
        if bottom[1].num_axes != 2 or bottom[1].shape != (self.steps, num):
            raise self.error('bottom[1] must have exactly 2 axes -- (#timesteps, #streams) = (%d, %d), got %s'
                             % (self.steps, num, bottom[1].shape_string()))

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 3:
            raise self.error('bottom[0] must have at least 3 axes -- (#timesteps, #streams, ...), got %s'
                             % bottom[0].shape_string())
        if bottom[0].shape[0] != self.steps:
            raise self.error('input number of timesteps changed (%d, set up with %d)'
                             % (bottom[0].shape[0], self.steps))
        num = bottom[0].shape[1]
        self._check_cont(bottom, num)
        if bottom[0].count_range(2) != self.input_dim:
            raise self.error('input size incompatible with the parameters: %d inputs per step, expected %d'
                             % (bottom[0].count_range(2), self.input_dim))
        if self.static_input and (bottom[2].shape[0] != num or bottom[2].count_range(1) != self.static_dim):
            raise self.error('the static input (bottom 2) must have %d rows of %d values, got %s'
                             % (num, self.static_dim, bottom[2].shape_string()))
        state_shape = (1, num, self.hidden)
        for state in self.states:
            state.reshape(state_shape)
        if self.expose_hidden:
            first = 2 + self.static_input
            for j, blob in enumerate(bottom[first:]):
                if blob.shape != state_shape:
                    raise self.error('shape mismatch - initial state %d must be %s, bottom[%d] is %s'
                                     % (j, state_shape, first + j, blob.shape_string()))
            for blob in top[1:]:
                blob.reshape(state_shape)
        top[0].reshape((self.steps, num, self.hidden))

    def buffer(self, name, shape, xp):
        return self.buffers.get(name, shape, self.dtype, xp)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        steps, num, rows = self.steps, bottom[0].shape[1], self.gate_factor * self.hidden
        x = bottom[0].data.reshape(steps * num, self.input_dim)
        proj = self.buffer('proj', (steps, num, rows), xp)
        xp.matmul(x, self.blobs[0].data.T, out=proj.reshape(steps * num, rows))
        proj += self.blobs[1].data
        static = None
        if self.static_input:
            static = self.buffer('static', (num, rows), xp)
            xp.matmul(bottom[2].data.reshape(num, self.static_dim), self.blobs[2].data.T, out=static)
        if self.expose_hidden:
            initial = [blob.data[0] for blob in bottom[2 + self.static_input:]]
        else:
            initial = [state.data[0] for state in self.states]
        final = self.recur(proj, static, bottom[1].data, initial, top[0].data)
        targets = top[1:] if self.expose_hidden else self.states
        for blob, value in zip(targets, final):
            blob.data[0] = value

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error('cannot backpropagate to the sequence continuation indicators (bottom 1)')
        xp = bottom[0].xp
        steps, num, rows = self.steps, bottom[0].shape[1], self.gate_factor * self.hidden
        proj_diff = self.recur_backward(top[0].diff, bottom[1].data, xp)
        flat_diff = proj_diff.reshape(steps * num, rows)
        x = bottom[0].data.reshape(steps * num, self.input_dim)
        if self.param_needs_backward(0):
            self.blobs[0].diff += flat_diff.T @ x
        if self.param_needs_backward(1):
            self.blobs[1].diff += flat_diff.sum(axis=0)
        if self.param_needs_backward(self.recurrent_weight):
            self.blobs[self.recurrent_weight].diff += flat_diff.T @ self.conted.reshape(steps * num, -1)
        if self.static_input and (self.param_needs_backward(2) or propagate_down[2]):
            static_diff = proj_diff.sum(axis=0)
            if self.param_needs_backward(2):
                self.blobs[2].diff += static_diff.T @ bottom[2].data.reshape(num, self.static_dim)
            if propagate_down[2]:
                xp.matmul(static_diff, self.blobs[2].data,
                          out=bottom[2].diff.reshape(num, self.static_dim))
        if propagate_down[0]:
            xp.matmul(flat_diff, self.blobs[0].data, out=bottom[0].diff.reshape(steps * num, -1))


@register('RNN')
class RNNLayer(RecurrentLayer):
    """Elman RNN: h_t = tanh(W_xh x_t + b_h [+ W_xh_static x_static] + W_hh (cont_t h_{t-1})),
    o_t = tanh(W_ho h_t + b_o).

    Parameters, in Caffe's order: W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o. Top: o.
    """
    num_states = 1

    def extra_params(self, rp):
        return [((self.hidden, self.hidden), rp.weight_filler), ((self.hidden,), rp.bias_filler)]

    def recur(self, proj, static, cont, initial, out):
        xp = _module(proj)
        steps, num, hidden = proj.shape
        self.h = self.buffer('h', proj.shape, xp)
        self.conted = self.buffer('conted', proj.shape, xp)
        w_hh = self.blobs[self.recurrent_weight].data
        h_prev = initial[0]
        for t in range(steps):
            xp.multiply(h_prev, cont[t][:, None], out=self.conted[t])
            h = self.h[t]
            xp.matmul(self.conted[t], w_hh.T, out=h)
            h += proj[t]
            if static is not None:
                h += static
            xp.tanh(h, out=h)
            h_prev = h
        flat_out = out.reshape(steps * num, hidden)
        xp.matmul(self.h.reshape(steps * num, hidden), self.blobs[-2].data.T, out=flat_out)
        flat_out += self.blobs[-1].data
        xp.tanh(out, out=out)
        self.out = out
        return [self.h[-1]]

    def recur_backward(self, out_diff, cont, xp):
        steps, num, hidden = out_diff.shape
        flat = steps * num, hidden
        out_pre_diff = self.buffer('out_pre_diff', out_diff.shape, xp)
        _tanh_backward(self.out, out_diff, out_pre_diff)
        if self.param_needs_backward(len(self.blobs) - 2):
            self.blobs[-2].diff += out_pre_diff.reshape(flat).T @ self.h.reshape(flat)
        if self.param_needs_backward(len(self.blobs) - 1):
            self.blobs[-1].diff += out_pre_diff.reshape(flat).sum(axis=0)
        h_diff = self.buffer('h_diff', out_diff.shape, xp)
        xp.matmul(out_pre_diff.reshape(flat), self.blobs[-2].data, out=h_diff.reshape(flat))
        pre_diff = self.buffer('pre_diff', out_diff.shape, xp)
        w_hh = self.blobs[self.recurrent_weight].data
        recurrent_diff = self.buffer('recurrent_diff', (num, hidden), xp)
        for t in range(steps - 1, -1, -1):
            dh = h_diff[t]
            if t < steps - 1:
                dh += recurrent_diff
            _tanh_backward(self.h[t], dh, pre_diff[t])
            if t > 0:
                xp.matmul(pre_diff[t], w_hh, out=recurrent_diff)
                recurrent_diff *= cont[t][:, None]
        return pre_diff


@register('LSTM')
class LSTMLayer(RecurrentLayer):
    """Long short-term memory over T steps, gates i, f, o, g as Caffe's LSTMUnit; top: h.

    Parameters, in Caffe's order: W_xc (4H x D), b_c (4H), [W_xc_static (4H x D_static)],
    W_hc (4H x H). Exposed states: bottoms h_0, c_0; tops h_T, c_T.
    """
    num_states = 2
    gate_factor = 4

    def recur(self, proj, static, cont, initial, out):
        xp = _module(proj)
        steps, num = proj.shape[:2]
        hidden = self.hidden
        self.gates = proj                     # pre-activations, activated in place step by step
        self.conted = self.buffer('conted', (steps, num, hidden), xp)
        self.cells = self.buffer('cells', (steps, num, hidden), xp)
        self.tanh_c = self.buffer('tanh_c', (steps, num, hidden), xp)
        self.c_initial = self.buffer('c_initial', (num, hidden), xp)
        self.c_initial[...] = initial[1]
        recurrent = self.buffer('recurrent', (num, 4 * hidden), xp)
        w_hc = self.blobs[self.recurrent_weight].data
        h_prev, c_prev = initial[0], self.c_initial
        for t in range(steps):
            xp.multiply(h_prev, cont[t][:, None], out=self.conted[t])
            xp.matmul(self.conted[t], w_hc.T, out=recurrent)
            gates = proj[t]
            gates += recurrent
            if static is not None:
                gates += static
            lstm_cell_forward(gates, cont[t], c_prev, self.cells[t], self.tanh_c[t], out[t])
            h_prev, c_prev = out[t], self.cells[t]
        return [out[-1], self.cells[-1]]

    def recur_backward(self, out_diff, cont, xp):
        steps, num, hidden = out_diff.shape
        gates_diff = self.buffer('gates_diff', self.gates.shape, xp)
        h_diff = self.buffer('h_diff', (num, hidden), xp)
        c_diff = self.buffer('c_diff', (num, hidden), xp)
        c_diff[...] = 0
        w_hc = self.blobs[self.recurrent_weight].data
        for t in range(steps - 1, -1, -1):
            if t == steps - 1:
                h_diff[...] = out_diff[t]
            else:
                h_diff += out_diff[t]
            c_prev = self.cells[t - 1] if t > 0 else self.c_initial
            c_prev_diff = lstm_cell_backward(self.gates[t], c_prev, self.tanh_c[t], h_diff, c_diff,
                                             gates_diff[t])
            if t > 0:
                c_diff[...] = c_prev_diff
                xp.matmul(gates_diff[t], w_hc, out=h_diff)
                h_diff *= cont[t][:, None]
        return gates_diff
