"""`caffe-py test`: score a model over -iterations batches, as `caffe test` (tools/caffe.cpp)."""
import numpy as np

from .. import log
from ..net import TEST, Net
from . import common
from .cli import CommandError

SUMMARY = ('Run -iterations forward passes of a model with trained weights; print every batch\'s '
           'outputs and their means.')
USED = ('model', 'weights', 'iterations', 'gpu', 'phase', 'level', 'stage')

f32 = np.float32
fmt = log.fmt


def main(command, argv):
    flags = common.model_flags(command, argv, SUMMARY, USED, 'score')
    if flags is None:
        return 0
    if not flags['weights']:
        raise CommandError('Need model weights to score (-weights).')
    phase, stages = common.model_setup(flags, TEST, show_name=True)
    weights = [name.strip() for name in flags['weights'].split(',')]
    for name in weights:
        common.require_file(name, '-weights')
    net = Net(flags['model'], phase, level=flags['level'], stages=stages)
    for name in weights:
        net.copy_from(name)
    iterations = flags['iterations']
    log.info('Running for %d iterations.', iterations)
    names, scores = [], np.zeros(0, f32)
    loss = f32(0)
    for i in range(iterations):
        loss += f32(net.forward_from_to())
        batch = [net.blobs[name].read_data().ravel() for name in net.outputs]
        batch = np.concatenate(batch).astype(f32) if batch else np.zeros(0, f32)
        batch_names = [name for name in net.outputs for _ in range(net.blobs[name].count)]
        for name, score in zip(batch_names, batch):
            log.info('Batch %d, %s = %s', i, name, fmt(score))
        if i == 0:                               # as Caffe, the first batch's outputs are averaged
            names, scores = batch_names, batch.copy()
        else:
            if len(batch) != len(scores):        # detection rows: Caffe indexes past its vector here
                log.warning('The outputs of batch %d hold %d values, the first batch\'s %d; the means '
                            'below add up the first %d of each batch', i, len(batch), len(scores),
                            min(len(batch), len(scores)))
            common_len = min(len(batch), len(scores))
            scores[:common_len] += batch[:common_len]
    loss /= f32(iterations)
    log.info('Loss: %s', fmt(loss))
    for name, score in zip(names, scores):
        weight = f32(net.blob_loss_weights[name])
        mean = score / f32(iterations)
        suffix = ' (* %s = %s loss)' % (fmt(weight), fmt(weight * mean)) if weight else ''
        log.info('%s = %s%s', name, fmt(mean), suffix)
    return 0
