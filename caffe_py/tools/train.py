"""`caffe-py train`: train or finetune a model, as `caffe train` (tools/caffe.cpp)."""
import os

from .. import formats, log
from ..parallel import launch
from ..parallel.sync import GradientSync
from ..proto import caffe_pb2
from ..solvers import get_solver
from . import common
from .cli import CommandError

SUMMARY = ('Train a model from a solver definition; -weights a.caffemodel[,b...] finetunes from '
           'pretrained weights, -snapshot x.solverstate resumes training (-snapshot latest: from the '
           'newest snapshot of snapshot_prefix that has both files); -nan_check stops at the first '
           'NaN or inf.')
USED = ('solver', 'weights', 'snapshot', 'gpu', 'level', 'stage', 'sigint_effect', 'sighup_effect',
        'nan_check')


def main(command, argv):
    flags = common.parse_flags(command, argv, SUMMARY, USED)
    if flags is None:
        return 0
    if not flags['solver']:
        raise CommandError('Need a solver definition to train (-solver).')
    if flags['snapshot'] and flags['weights']:
        raise CommandError('Give a snapshot to resume training or weights to finetune but not both.')
    stages = common.get_stages(flags['stage'])
    param = formats.read_solver(flags['solver'], named_by='-solver')
    param.train_state.level = flags['level']
    param.train_state.stage.extend(stages)

    gpu_flag = flags['gpu']
    if not gpu_flag and param.HasField('solver_mode') and param.solver_mode == caffe_pb2.SolverParameter.GPU:
        gpu_flag = str(param.device_id)
    gpus = common.get_gpus(gpu_flag)
    if gpus:
        log.info('Using GPUs %s', ', '.join(str(g) for g in gpus))
    rank = launch.this_rank(gpus)
    if rank is None:                 # several GPUs here: one process per GPU, started from here
        return launch.run_local(gpus, argv)
    try:
        return _train(flags, param, rank)
    except Exception as exc:
        if rank.size == 1:
            raise
        rank.fail(exc)


def _train(flags, param, rank):
    """One rank's training (the only one, or one of a data-parallel group)."""
    comm = rank.join()
    if rank.gpu is None:
        log.info('Use CPU.')
    else:
        log.info('GPU %d: %s', rank.gpu, common.device_name(rank.gpu))
        param.device_id = rank.gpu
    if rank.size > 1:
        log.info('Training data-parallel on %d ranks (%s)', rank.size,
                 'NCCL' if rank.gpu is not None else 'MPI')
    handler = common.SignalHandler(flags['sigint_effect'], flags['sighup_effect'])
    latest = flags['snapshot'] == 'latest' and not os.path.isfile('latest')
    if flags['snapshot']:
        if not latest:
            common.require_file(flags['snapshot'], '-snapshot')
        del param.weights[:]
    elif flags['weights']:
        for name in flags['weights'].split(','):
            common.require_file(name.strip(), '-weights')
        del param.weights[:]
        param.weights.append(flags['weights'])

    with handler:
        solver = get_solver(param)
        try:
            solver.set_action_function(handler)
            solver.nan_check = flags['nan_check']
            if latest:                     # every rank restores (Caffe: NCCL::Run's workers do)
                solver.restore_latest()
            elif flags['snapshot']:
                log.info('Resuming from %s', flags['snapshot'])
                restore_named(solver, flags['snapshot'])
            if rank.size > 1:
                GradientSync(solver, comm).attach().broadcast()
            log.info('Starting Optimization')
            solver.solve()
        finally:
            solver.close()
    log.info('Optimization Done.')
    return 0


def restore_named(solver, state_file):
    """solver.restore(state_file); if a file it needs is missing, the error names the newest complete snapshot."""
    try:
        solver.restore(state_file)
    except formats.MissingFileError as exc:
        pair = solver.latest_snapshot()
        if pair is None:
            raise
        raise CommandError('%s; the newest complete snapshot is %s (-snapshot latest resumes from it)'
                           % (exc, pair[0])) from None
