"""Per-weight adaptive update rules: AdaGrad, RMSProp, AdaDelta, Adam.

Each follows the CPU branch of Caffe's ComputeUpdateValue operation by
operation, in float32. `g` is the gradient after clipping, normalization
and weight decay; the result is left in the parameter diff.
"""
import numpy as np

from .sgd import SGDSolver, device_update
from .solver import SolverError

f32 = np.float32


def _average_square(history, x, decay, scratch):
    """history = decay * history + (1 - decay) * x^2, in Caffe's order of operations (scratch: x's shape)."""
    np.multiply(x, x, out=scratch)
    scratch *= f32(1) - decay
    history *= decay
    history += scratch


class _RMSScaledSolver(SGDSolver):
    """Shared by AdaGrad and RMSProp: no momentum; step = local_rate * g / (sqrt(history) + delta)."""

    def check_param(self):
        super().check_param()
        if self.param.momentum != 0:
            raise SolverError('Momentum cannot be used with %s (momentum is %s).'
                              % (self.type, self.param.momentum))

    def _step_by_rms(self, blob, history, update, param_id, rate):
        xp, g = blob.xp, blob.diff
        xp.sqrt(history, out=update)
        update += f32(self.param.delta)
        xp.divide(g, update, out=update)
        xp.multiply(update, self.local_rate(param_id, rate), out=g)


class AdaGradSolver(_RMSScaledSolver):
    """history += g^2; step = local_rate * g / (sqrt(history) + delta)."""

    type = 'AdaGrad'

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        xp, g = blob.xp, blob.diff
        history = self.history[param_id]
        if xp is not np:
            device_update('adagrad_update', blob, history, f32(self.param.delta),
                          self.local_rate(param_id, rate))
            return
        update = self.buffer('update', param_id)
        xp.multiply(g, g, out=update)
        history += update
        self._step_by_rms(blob, history, update, param_id, rate)


class RMSPropSolver(_RMSScaledSolver):
    """history = rms_decay * history + (1 - rms_decay) * g^2; step = local_rate * g / (sqrt(history) + delta)."""

    type = 'RMSProp'

    def check_param(self):
        super().check_param()
        if not 0 <= self.param.rms_decay < 1:
            raise SolverError('rms_decay should lie between 0 and 1 (got %s).' % self.param.rms_decay)

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        xp, g = blob.xp, blob.diff
        history = self.history[param_id]
        rms_decay = f32(self.param.rms_decay)
        if xp is not np:
            device_update('rmsprop_update', blob, history, rms_decay, f32(1) - rms_decay,
                          f32(self.param.delta), self.local_rate(param_id, rate))
            return
        update = self.buffer('update', param_id)
        _average_square(history, g, rms_decay, update)
        self._step_by_rms(blob, history, update, param_id, rate)


class AdaDeltaSolver(SGDSolver):
    """Zeiler's AdaDelta with Caffe's layout: history[i] averages g^2, history[n + i] averages step^2.

    step = g * sqrt((E[step^2] + delta) / (E[g^2] + delta)), then scaled by local_rate.
    """

    type = 'AdaDelta'
    histories_per_param = 2

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        xp, g = blob.xp, blob.diff
        grad_history = self.history[param_id]
        step_history = self.history[len(self.net.learnable_params) + param_id]
        momentum = f32(self.param.momentum)
        delta = f32(self.param.delta)
        if xp is not np:
            device_update('adadelta_update', blob, grad_history, step_history, momentum,
                          f32(1) - momentum, delta, self.local_rate(param_id, rate))
            return
        update = self.buffer('update', param_id)
        temp = self.buffer('temp', param_id)
        _average_square(grad_history, g, momentum, update)
        xp.add(step_history, delta, out=update)
        xp.add(grad_history, delta, out=temp)
        update /= temp
        xp.sqrt(update, out=update)
        g *= update
        _average_square(step_history, g, momentum, update)
        g *= self.local_rate(param_id, rate)


class AdamSolver(SGDSolver):
    """Kingma & Ba's Adam with Caffe's layout: history[i] is m, history[n + i] is v.

    step = local_rate * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + delta), t = iter + 1.
    """

    type = 'Adam'
    histories_per_param = 2

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        xp, g = blob.xp, blob.diff
        m = self.history[param_id]
        v = self.history[len(self.net.learnable_params) + param_id]
        beta1, beta2 = f32(self.param.momentum), f32(self.param.momentum2)
        t = self.iter + 1
        # pow(float, int) runs in double in C++; the quotient is stored as float
        correction = f32(np.sqrt(1.0 - float(beta2) ** t) / (1.0 - float(beta1) ** t))
        if xp is not np:
            device_update('adam_update', blob, m, v, beta1, f32(1) - beta1, beta2, f32(1) - beta2,
                          f32(self.param.delta), self.local_rate(param_id, rate) * correction)
            return
        temp = self.buffer('temp', param_id)
        xp.multiply(g, f32(1) - beta1, out=temp)
        m *= beta1
        m += temp
        _average_square(v, g, beta2, temp)
        xp.sqrt(v, out=temp)
        temp += f32(self.param.delta)
        xp.divide(m, temp, out=temp)
        xp.multiply(temp, self.local_rate(param_id, rate) * correction, out=g)
