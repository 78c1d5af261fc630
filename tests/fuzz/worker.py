"""A fuzz worker process: reads case requests (JSON lines) on stdin, answers outcomes on stdout.

Started by pool.Pool with a memory limit (RLIMIT_AS) set before caffe_py is imported;
each case runs in a fresh scratch folder which is also the working directory.
"""
import json
import os
import resource
import shutil
import sys

import numpy as np


def case_rng(base_seed, index):
    return np.random.default_rng([base_seed, index])


def _describe(exc):
    """Type, message and the innermost frame of an exception, on one line."""
    import traceback
    frames = traceback.extract_tb(exc.__traceback__)
    where = ' [%s:%d]' % (os.path.basename(frames[-1].filename), frames[-1].lineno) if frames else ''
    return '%s: %s%s' % (type(exc).__name__, ' '.join(str(exc).split())[:300], where)


def main():
    with open(sys.argv[1]) as f:
        config = json.load(f)
    limit = config['memory_bytes']
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.environ['CAFFE_PY_DATA_THREADS'] = '1'
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import logging

    import caffe_py  # import once, before the cases
    from fuzz import targets
    logging.getLogger('caffe_py').setLevel(logging.CRITICAL + 1)
    logging.getLogger('caffe_py').propagate = False
    seeds = config['seeds']
    out = sys.stdout
    sys.stdout = sys.stderr           # whatever the code under test prints stays off the channel
    out.write('ready\n')
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        index, seed = request['index'], seeds[request['seed']]
        scratch = os.path.join(config['scratch'], 'case%d' % index)
        os.makedirs(scratch)
        os.chdir(scratch)
        exc = None
        names = []
        caffe_py.set_random_seed(config['base_seed'] * 1000003 + index)   # a case draws the same wherever it runs
        try:
            run, names = targets.prepare(seed, case_rng(config['base_seed'], index), scratch)
            run()
        except BaseException as error:  # noqa: B036 -- every outcome is classified
            exc = error
        outcome = targets.classify(exc, names)
        detail = '' if exc is None else _describe(exc)
        os.chdir(config['scratch'])
        shutil.rmtree(scratch, ignore_errors=True)
        out.write(json.dumps({'index': index, 'outcome': outcome, 'detail': detail}) + '\n')
        out.flush()


if __name__ == '__main__':
    main()
