"""What Caffe's brew commands (train, test, time, device_query) share: their flags,
GPU selection, phase and stages, and the SIGINT/SIGHUP solver actions."""
import os
import signal
import threading

from .. import backend, formats, log
from ..proto import caffe_pb2
from ..solvers import NONE, SNAPSHOT, STOP
from .cli import CommandError
from .flags import parse, wants_help

# Caffe's flags are global: every command accepts all of them (and ignores the ones it does not use)
FLAGS = {
    'solver': '', 'model': '', 'weights': '', 'snapshot': '', 'gpu': '', 'phase': '',
    'level': 0, 'stage': '', 'iterations': 50, 'sigint_effect': 'stop', 'sighup_effect': 'snapshot',
    'nan_check': False,
}

FLAG_HELP = {
    'solver': 'the solver definition (prototxt)',
    'model': 'the model definition (prototxt)',
    'weights': 'pretrained weights (caffemodel or .h5), separated by \',\' for train',
    'snapshot': "a solver state (.solverstate or .solverstate.h5) to resume training from, or 'latest': "
                'the newest snapshot of snapshot_prefix that has its caffemodel and solverstate',
    'gpu': "GPU ids ('N', 'N,M' or 'all'): train runs one process per GPU, the others use the first",
    'phase': 'network phase, TRAIN or TEST',
    'level': 'network level',
    'stage': "network stages, separated by ','",
    'iterations': 'the number of iterations to run',
    'sigint_effect': 'what SIGINT does while training: snapshot, stop or none',
    'sighup_effect': 'what SIGHUP does while training: snapshot, stop or none',
    'nan_check': 'stop training at the first NaN or inf, naming the iteration, layer and blob',
}


def parse_flags(command, argv, summary, used):
    """The flags dict, or None after printing help for -help/--help."""
    if wants_help(argv):
        print('usage: caffe-py %s -flag value ...\n\n%s\n\nflags:' % (command, summary))
        for name in used:
            print('  -%-15s %s (default: %r)' % (name, FLAG_HELP[name], FLAGS[name]))
        return None
    flags, positional = parse(argv, FLAGS)
    if positional:
        raise CommandError('%s: unexpected argument(s) %s; flags are given as -flag value'
                           % (command, ' '.join(positional)))
    return flags


def model_flags(command, argv, summary, used, verb):
    """parse_flags for a command that needs -model (test, time): None after -help."""
    flags = parse_flags(command, argv, summary, used)
    if flags is not None and not flags['model']:
        raise CommandError('Need a model definition to %s (-model).' % verb)
    return flags


def model_setup(flags, default_phase, show_name):
    """(phase, stages) of the flags, with the CPU or GPU selected and -model checked."""
    phase = get_phase(flags['phase'], default_phase)
    stages = get_stages(flags['stage'])
    select_mode(flags['gpu'], show_name=show_name)
    require_file(flags['model'], '-model')
    return phase, stages


def require_file(path, flag):
    """Raise a clear error naming `flag` unless `path` is a file."""
    if not os.path.isfile(path):
        raise formats.MissingFileError(path, flag)


def get_gpus(flag):
    """Device ids from -gpu: '' -> [], 'all' -> every device, 'N,M' -> [N, M]."""
    if not flag:
        return []
    if flag == 'all':
        return list(range(backend.device_module().cuda.runtime.getDeviceCount()))
    try:
        return [int(part) for part in flag.split(',')]
    except ValueError:
        raise CommandError("-gpu expects device ids separated by ',' or 'all', got '%s'" % flag) from None


def use_gpu(gpus):
    """Switch to the GPU mode on the first of `gpus` (test and time run on one device, as Caffe's)."""
    if len(gpus) > 1:
        log.warning('this command runs on one GPU: using GPU %d, ignoring %s',
                    gpus[0], ', '.join(str(g) for g in gpus[1:]))
    backend.set_device(gpus[0])
    backend.set_mode_gpu()


def select_mode(gpu_flag, show_name=False):
    """CPU or the first GPU of -gpu, logged as `caffe test`/`caffe time` log it."""
    gpus = get_gpus(gpu_flag)
    if gpus:
        log.info('Use GPU with device ID %d', gpus[0])
        use_gpu(gpus)
        if show_name:
            log.info('GPU device name: %s', device_name(gpus[0]))
    else:
        log.info('Use CPU.')
        backend.set_mode_cpu()


# cudaDeviceAttr numbers of the properties that CUDA 13 dropped from cudaDeviceProp (CuPy 14 then
# leaves them out of getDeviceProperties); they are read from cudaDeviceGetAttribute instead
DROPPED_PROPERTIES = {'memPitch': 11, 'clockRate': 13, 'deviceOverlap': 15, 'kernelExecTimeoutEnabled': 17}


def device_properties(device_id):
    """cudaGetDeviceProperties of a device as a dict, complete also under CUDA 13."""
    runtime = backend.device_module().cuda.runtime
    prop = dict(runtime.getDeviceProperties(device_id))
    for key, attribute in DROPPED_PROPERTIES.items():
        if key not in prop:
            prop[key] = runtime.deviceGetAttribute(attribute, device_id)
    return prop


def device_name(device_id):
    name = device_properties(device_id)['name']
    return name.decode() if isinstance(name, bytes) else str(name)


def get_phase(flag, default):
    if not flag:
        return default
    if flag == 'TRAIN':
        return caffe_pb2.TRAIN
    if flag == 'TEST':
        return caffe_pb2.TEST
    raise CommandError('phase must be "TRAIN" or "TEST", got "%s"' % flag)


def get_stages(flag):
    """The -stage list split at ',' as Caffe splits it (an empty flag gives one empty stage)."""
    return flag.split(',')


_EFFECTS = {'stop': STOP, 'snapshot': SNAPSHOT, 'none': NONE}


class SignalHandler:
    """Caffe's SignalHandler: SIGINT and SIGHUP only set flags; the solver asks for the
    requested action after each update and test batch (SIGHUP first; each signal is consumed)."""

    def __init__(self, sigint_effect, sighup_effect):
        self.actions = {}
        for name, effect in (('SIGINT', sigint_effect), ('SIGHUP', sighup_effect)):
            if effect not in _EFFECTS:
                raise CommandError('Invalid signal effect "%s" was specified for %s (use snapshot, stop '
                                   'or none)' % (effect, name))
            self.actions[name] = _EFFECTS[effect]
        self._got = {'SIGINT': False, 'SIGHUP': False}
        self._previous = {}

    def _handle(self, signum, frame):
        self._got[signal.Signals(signum).name] = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in self.actions:
                signum = getattr(signal, name, None)
                if signum is not None:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __call__(self):
        for name in ('SIGHUP', 'SIGINT'):
            if self._got[name]:
                self._got[name] = False
                return self.actions[name]
        return NONE
