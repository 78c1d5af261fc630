"""Learning-rate policies, as SGDSolver::GetLearningRate computes them.

`learning_rate(param, iteration, current_step)` returns (rate, current_step):
the rate as a float32 (Caffe's Dtype) and the step counter that the step and
multistep policies keep in the solver state.

    fixed      base_lr
    step       base_lr * gamma ^ floor(iter / stepsize)
    exp        base_lr * gamma ^ iter
    inv        base_lr * (1 + gamma * iter) ^ -power
    multistep  base_lr * gamma ^ (number of stepvalues passed)
    poly       base_lr * (1 - iter / max_iter) ^ power
    sigmoid    base_lr / (1 + exp(-gamma * (iter - stepsize)))
    plateau    base_lr * gamma ^ (number of plateaus so far; SSD's weiliu89/caffe): a plateau ends
               when the smoothed loss has made no new minimum for plateau_winsize[step] iterations
    multifixed stagelr[k] for the first k with iter <= stageiter[k], the last stagelr past them all
               (eric612/MobileNet-YOLO)

The plateau policy reads and updates a `state` holding smoothed_loss, minimum_loss and
iter_last_event (the solver, which snapshots the last two).

The arithmetic keeps Caffe's types: parameters are floats, powers with an
integer exponent run in double precision, the others in float.
"""
import numpy as np

from .. import log

f32 = np.float32


class LearningRateError(ValueError):
    """An lr_policy that is unknown or lacks the settings it needs."""


def _need(condition, message):
    if not condition:
        raise LearningRateError(message)


def _fixed(param, it, step):
    return float(f32(param.base_lr)), step


def _step(param, it, step):
    _need(param.stepsize > 0, 'lr_policy "step" needs stepsize > 0 (got %d)' % param.stepsize)
    _need(param.gamma >= 0, 'lr_policy "step" needs gamma >= 0 (got %s)' % log.fmt(param.gamma))
    step = it // param.stepsize
    return float(f32(param.base_lr)) * float(f32(param.gamma)) ** step, step


def _exp(param, it, step):
    _need(param.gamma >= 0, 'lr_policy "exp" needs gamma >= 0 (got %s)' % log.fmt(param.gamma))
    return float(f32(param.base_lr)) * float(f32(param.gamma)) ** it, step


def _inv(param, it, step):
    _need(param.gamma >= 0, 'lr_policy "inv" needs gamma >= 0 (got %s)' % log.fmt(param.gamma))
    base = f32(1) + f32(param.gamma) * f32(it)
    return float(f32(param.base_lr) * f32(float(base) ** -float(f32(param.power)))), step


def _multistep(param, it, step):
    if step < len(param.stepvalue) and it >= param.stepvalue[step]:
        step += 1
        log.info('MultiStep Status: Iteration %d, step = %d', it, step)
    _need(param.gamma >= 0, 'lr_policy "multistep" needs gamma >= 0 (got %s)' % log.fmt(param.gamma))
    return float(f32(param.base_lr)) * float(f32(param.gamma)) ** step, step


def _poly(param, it, step):
    _need(param.max_iter > 0, 'lr_policy "poly" needs max_iter > 0 (got %d)' % param.max_iter)
    base = f32(1) - f32(it) / f32(param.max_iter)
    # past max_iter the base is negative: C's pow gives NaN for a fractional power (not a complex)
    with np.errstate(invalid='ignore', over='ignore'):
        factor = np.float64(base) ** np.float64(f32(param.power))
    return float(f32(param.base_lr) * f32(factor)), step


def _sigmoid(param, it, step):
    _need(param.gamma >= 0, 'lr_policy "sigmoid" needs gamma >= 0 (got %s)' % log.fmt(param.gamma))
    _need(param.stepsize > 0, 'lr_policy "sigmoid" needs stepsize > 0 (got %d)' % param.stepsize)
    exponent = -f32(param.gamma) * (f32(it) - f32(param.stepsize))
    with np.errstate(over='ignore'):
        denominator = f32(1) + f32(np.exp(np.float64(exponent)))
    return float(f32(param.base_lr) * (f32(1) / denominator)), step


def _multifixed(param, it, step):
    _need(len(param.stagelr) == len(param.stageiter) and len(param.stagelr) > 0,
          'lr_policy "multifixed" needs as many stagelr as stageiter, at least one (got %d and %d)'
          % (len(param.stagelr), len(param.stageiter)))
    stage = next((k for k, last in enumerate(param.stageiter) if it <= last), len(param.stagelr) - 1)
    return float(f32(param.stagelr[stage])), step


def _plateau(param, it, step, state):
    _need(state is not None, 'lr_policy "plateau" needs the solver\'s loss history')
    _need(param.gamma >= 0, 'lr_policy "plateau" needs gamma >= 0 (got %s)' % log.fmt(param.gamma))
    loss = f32(state.smoothed_loss)
    if loss < f32(state.minimum_loss):
        state.minimum_loss = loss
        state.iter_last_event = it
    if step < len(param.plateau_winsize) and it >= state.iter_last_event + param.plateau_winsize[step]:
        step += 1
        state.iter_last_event = it
        log.info('Plateau Status: Iteration %d, step = %d', it, step)
    if param.display and it % param.display == 0 and state.iter_last_event > it - param.display:
        log.info('Plateau Status: Iteration %d, current minimum_loss = %s', it,
                 log.fmt(f32(state.minimum_loss)))
    return float(f32(param.base_lr)) * float(f32(param.gamma)) ** step, step


POLICIES = {
    'fixed': _fixed, 'step': _step, 'exp': _exp, 'inv': _inv,
    'multistep': _multistep, 'poly': _poly, 'sigmoid': _sigmoid, 'plateau': _plateau,
    'multifixed': _multifixed,
}


def learning_rate(param, iteration, current_step=0, state=None):
    """(rate, current_step) for SolverParameter `param` at `iteration`; `state` for "plateau"."""
    policy = POLICIES.get(param.lr_policy)
    if policy is None:
        raise LearningRateError('Unknown learning rate policy: "%s" (known: %s)'
                                % (param.lr_policy, ', '.join(POLICIES)))
    if policy is _plateau:
        rate, step = policy(param, iteration, current_step, state)
    else:
        rate, step = policy(param, iteration, current_step)
    return f32(rate), step
