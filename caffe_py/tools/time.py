"""`caffe-py time`: time each layer's forward and backward pass, as `caffe time` (tools/caffe.cpp)."""
from .. import log
from ..net import TRAIN, Net
from ..solvers.timer import Timer
from . import common
from .cli import CommandError

SUMMARY = ('Benchmark a model: -iterations forward and backward passes, timed per layer. '
           'The net must feed itself (data layers, no inputs).')
USED = ('model', 'iterations', 'gpu', 'phase', 'level', 'stage')

fmt = log.fmt


def main(command, argv):
    flags = common.model_flags(command, argv, SUMMARY, USED, 'time')
    if flags is None:
        return 0
    phase, stages = common.model_setup(flags, TRAIN, show_name=False)
    iterations = flags['iterations']
    if iterations <= 0:
        raise CommandError('-iterations must be positive for time (got %d)' % iterations)
    net = Net(flags['model'], phase, level=flags['level'], stages=stages)

    # one untimed pass so that buffers are allocated before the benchmark
    log.info('Performing Forward')
    log.info('Initial loss: %s', fmt(net.forward_from_to()))
    log.info('Performing Backward')
    net.backward_from_to()

    layers, bottoms, tops = net.layers, net.bottom_vecs, net.top_vecs
    log.info('*** Benchmark begins ***')
    log.info('Testing for %d iterations.', iterations)
    total_timer, forward_timer, backward_timer, timer = Timer(), Timer(), Timer(), Timer()
    total_timer.start()
    forward_per_layer = [0.0] * len(layers)
    backward_per_layer = [0.0] * len(layers)
    forward_time = backward_time = 0.0
    for j in range(iterations):
        iter_timer = Timer()
        iter_timer.start()
        forward_timer.start()
        for i, layer in enumerate(layers):
            timer.start()
            layer.run_forward(bottoms[i], tops[i])
            forward_per_layer[i] += timer.microseconds()
        forward_time += forward_timer.microseconds()
        backward_timer.start()
        for i in range(len(layers) - 1, -1, -1):
            timer.start()
            layers[i].run_backward(tops[i], net.bottom_need_backward[i], bottoms[i])
            backward_per_layer[i] += timer.microseconds()
        backward_time += backward_timer.microseconds()
        log.info('Iteration: %d forward-backward time: %s ms.', j + 1, fmt(iter_timer.milliseconds()))
    log.info('Average time per layer: ')
    for i, name in enumerate(net.layer_names):
        log.info('%10s\tforward: %s ms.', name, fmt(forward_per_layer[i] / 1000 / iterations))
        log.info('%10s\tbackward: %s ms.', name, fmt(backward_per_layer[i] / 1000 / iterations))
    total_timer.stop()
    total = total_timer.milliseconds()
    log.info('Average Forward pass: %s ms.', fmt(forward_time / 1000 / iterations))
    log.info('Average Backward pass: %s ms.', fmt(backward_time / 1000 / iterations))
    log.info('Average Forward-Backward: %s ms.', fmt(total / iterations))
    log.info('Total Time: %s ms.', fmt(total))
    log.info('*** Benchmark ends ***')
    return 0
