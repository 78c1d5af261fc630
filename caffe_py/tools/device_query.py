"""`caffe-py device_query`: the CUDA properties of the -gpu devices, as Caffe::DeviceQuery prints them."""
from .. import backend, log
from . import common
from .cli import CommandError

SUMMARY = 'Show diagnostic information about GPU devices (-gpu N, N,M or all).'
USED = ('gpu',)


def main(command, argv):
    flags = common.parse_flags(command, argv, SUMMARY, USED)
    if flags is None:
        return 0
    if not flags['gpu']:
        raise CommandError('Give the device(s) to query with -gpu N, -gpu N,M or -gpu all.')
    log.info('Querying GPUs %s', flags['gpu'])
    for device_id in common.get_gpus(flags['gpu']):
        backend.set_device(device_id)
        query(device_id)
    return 0


def _yes_no(value):
    return 'Yes' if value else 'No'


def query(device_id):
    prop = common.device_properties(device_id)
    name = prop['name'].decode() if isinstance(prop['name'], bytes) else prop['name']
    lines = [
        ('Device id:                     ', device_id),
        ('Major revision number:         ', prop['major']),
        ('Minor revision number:         ', prop['minor']),
        ('Name:                          ', name),
        ('Total global memory:           ', prop['totalGlobalMem']),
        ('Total shared memory per block: ', prop['sharedMemPerBlock']),
        ('Total registers per block:     ', prop['regsPerBlock']),
        ('Warp size:                     ', prop['warpSize']),
        ('Maximum memory pitch:          ', prop['memPitch']),
        ('Maximum threads per block:     ', prop['maxThreadsPerBlock']),
        ('Maximum dimension of block:    ', ', '.join(str(d) for d in prop['maxThreadsDim'])),
        ('Maximum dimension of grid:     ', ', '.join(str(d) for d in prop['maxGridSize'])),
        ('Clock rate:                    ', prop['clockRate']),
        ('Total constant memory:         ', prop['totalConstMem']),
        ('Texture alignment:             ', prop['textureAlignment']),
        ('Concurrent copy and execution: ', _yes_no(prop['deviceOverlap'])),
        ('Number of multiprocessors:     ', prop['multiProcessorCount']),
        ('Kernel execution timeout:      ', _yes_no(prop['kernelExecTimeoutEnabled'])),
    ]
    for label, value in lines:
        log.info('%s%s', label, value)
