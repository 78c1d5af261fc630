"""Fuzz targets: build one mutated case from a seed and run the real reader or data layer on it.

`prepare(reader, seed, rng, scratch)` writes the case's files under `scratch` and returns
(run, names): `run()` does what a user's command would (read the file, build the net, one
forward), `names` the file names and layer names a clean refusal may mention.
"""
import os
import re
import shutil

import numpy as np

from . import mutate

LAYER_NAME = re.compile(r'(?:name|top|bottom|input):\s*"([^"]+)"')
NET_FILE = 'data_net.prototxt'      # the net of a data-layer case (a refusal may name it)
MAX_STEP_WORK = 50      # the solver case trains 2 iterations when test_iter and iter_size stay below this


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _write(path, data):
    with open(path, 'wb') as f:
        f.write(data)
    return path


def _layer_names(text):
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    return LAYER_NAME.findall(text) + ['input']     # Caffe's upgrade names a net's input layer "input"


def _path_values(text):
    """The quoted values of a prototxt that look like paths (a refusal may name the setting's path)."""
    values = re.findall(r'"([^"\n]*)"', text.decode('utf-8', 'replace'))
    return [v for v in values if '/' in v or '.' in v]


def _run_net(path, forwards, phase=None):
    from caffe_py import TEST, Net
    net = Net(path, TEST if phase is None else phase)
    try:
        for _ in range(forwards):
            net.forward()
    finally:
        net.close()


def _data_net(rng, scratch, template, fields, mutate_net):
    """The data-layer net of a case, its numbers mutated with probability `mutate_net`."""
    text = (template % fields).encode()
    if rng.random() < mutate_net:
        text = mutate.mutate_number(rng, text)
    return _write(os.path.join(scratch, NET_FILE), text), text


def _names(*items):
    out = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out.extend(item)
        elif item:
            out.append(item)
    return out


# -- the readers -------------------------------------------------------------------------------

def net_case(seed, rng, scratch):
    _, name, path, _ = seed
    text = mutate.mutate_text(rng, _read(path))
    case = _write(os.path.join(scratch, os.path.basename(path)), text)
    generated = not name.startswith('corpus/')
    phase = int(rng.integers(2))
    return (lambda: _run_net(case, 1 if generated else 0, phase)), _names(case, _layer_names(text),
                                                                          _path_values(text))


def solver_case(seed, rng, scratch):
    from caffe_py.solvers import get_solver
    _, name, path, _ = seed
    text = mutate.mutate_text(rng, _read(path))
    case = _write(os.path.join(scratch, os.path.basename(path)), text)
    nets = [m.decode('utf-8', 'replace') for m in re.findall(rb'net:\s*"([^"]*)"', text)]
    net_layers = []
    for net in nets:
        if os.path.isfile(net):
            net_layers += _layer_names(_read(net))

    def run():
        solver = get_solver(case)
        try:
            p = solver.param
            if not name.startswith('corpus/') and max(list(p.test_iter) + [p.iter_size]) < MAX_STEP_WORK:
                solver.step(2)        # (a file asking for 2^31 test iterations is slow, not wrong)
            for it in (0, p.max_iter, 2 * p.max_iter + 1):      # the schedule, past max_iter too
                solver.iter = it
                solver.get_learning_rate()
        finally:
            solver.close()
    return run, _names(case, nets, net_layers, _path_values(text))


def caffemodel_case(seed, rng, scratch):
    from caffe_py.proto import caffe_pb2
    _, name, path, extra = seed
    data = mutate.mutate_proto_bytes(rng, _read(path), caffe_pb2.NetParameter)
    case = _write(os.path.join(scratch, 'case.caffemodel'), data)

    def run():
        from caffe_py import TEST, Net
        net = Net(extra['model'], TEST, weights=case)
        try:
            net.forward()
        finally:
            net.close()
    return run, _names(case, _layer_names(_read(extra['model'])))


def solverstate_case(seed, rng, scratch):
    from caffe_py.proto import caffe_pb2
    _, name, path, extra = seed
    data = mutate.mutate_proto_bytes(rng, _read(path), caffe_pb2.SolverState)
    case = _write(os.path.join(scratch, 'case.solverstate'), data)

    def run():
        from caffe_py.solvers import get_solver
        solver = get_solver(extra['solver'])
        try:
            solver.restore(case)
            solver.step(1)
        finally:
            solver.close()
    return run, _names(case, 'conv1', 'ip1', 'loss')


def mean_case(seed, rng, scratch):
    from caffe_py import formats
    from caffe_py.proto import caffe_pb2
    from . import seeds
    _, name, path, extra = seed
    data = mutate.mutate_proto_bytes(rng, _read(path), caffe_pb2.BlobProto)
    case = _write(os.path.join(scratch, 'case.binaryproto'), data)
    lmdb_path = os.path.join(os.path.dirname(path), 'raw_lmdb')
    generated = not name.startswith('corpus/')
    net, _ = _data_net(rng, scratch, seeds.DATA_NET, {'source': lmdb_path, 'mean': case}, 0.0)

    def run():
        formats.read_binaryproto(case)
        if generated:
            _run_net(net, 1)
    return run, _names(case, 'data')


def lmdb_case(seed, rng, scratch):
    import lmdb
    from caffe_py.data.db import DBWriter
    from caffe_py.proto import caffe_pb2
    _, name, path, extra = seed
    case = os.path.join(scratch, 'case_lmdb')
    if rng.random() < 0.5:
        os.makedirs(case)
        data = mutate.mutate_bytes(rng, _read(os.path.join(path, 'data.mdb')))
        _write(os.path.join(case, 'data.mdb'), data)
    else:
        env = lmdb.open(path, readonly=True, lock=False, subdir=True)
        with env.begin() as txn:
            records = list(txn.cursor())
        env.close()
        for _ in range(int(rng.integers(1, 3))):
            i = int(rng.integers(len(records)))
            datum = caffe_pb2.Datum()
            datum.ParseFromString(records[i][1])
            mutate.mutate_datum(rng, datum)
            records[i] = (records[i][0], datum.SerializeToString())
        with DBWriter(case, 'lmdb') as db:
            for key, value in records:
                db.put(key, value)
    fields = {'source': case, 'mean': extra.get('mean', '')}
    net, text = _data_net(rng, scratch, extra['net'], fields, 0.2)
    return (lambda: _run_net(net, 2)), _names(case, 'data', extra.get('mean'))


_H5_SHAPES = [
    ('data', (5, 3, 4, 5), 'f4'), ('data', (5, 3, 4), 'f4'), ('data', (0, 3, 4, 4), 'f4'),
    ('label', (5, 2), 'f4'), ('label', (4,), 'f4'), ('data', (5, 3, 4, 4), 'S3'),
    ('data', (), 'f4'), ('data', (5, 3, 4, 4), 'f8'), ('label', (5,), 'i8'),
]


def _h5_structural(rng, path):
    """Rewrite `path` with one dataset of another shape or type, missing, or absurdly large."""
    import h5py
    choice = int(rng.integers(len(_H5_SHAPES) + 3))
    with h5py.File(path, 'r') as f:
        arrays = {k: f[k][()] for k in f}
    with h5py.File(path, 'w') as f:
        for key, value in arrays.items():
            if choice < len(_H5_SHAPES) and key == _H5_SHAPES[choice][0]:
                _, shape, dtype = _H5_SHAPES[choice]
                if dtype == 'S3':
                    f[key] = np.full(shape, b'abc', dtype='S3')
                else:
                    f[key] = np.ones(shape, dtype=dtype)
            elif choice == len(_H5_SHAPES) and key == 'label':
                continue                                    # dataset missing
            elif choice == len(_H5_SHAPES) + 1 and key == 'data':
                f.create_group(key)                         # a group, not a dataset
            elif choice == len(_H5_SHAPES) + 2 and key == 'data':
                rows = int(mutate._pick(rng, [2 ** 31 - 1, 2 ** 20, 10 ** 9]))
                f.create_dataset(key, shape=(rows, 3, 64, 64), dtype='f4', chunks=(1, 3, 64, 64))
            else:
                f[key] = value


def hdf5_case(seed, rng, scratch):
    _, name, path, extra = seed
    case = os.path.join(scratch, 'case.h5')
    shutil.copyfile(path, case)
    if rng.random() < 0.5:
        _write(case, mutate.mutate_bytes(rng, _read(case)))
    else:
        _h5_structural(rng, case)
    other = [line for line in _read(extra['list']).decode().split() if line != path]
    listing = _write(os.path.join(scratch, 'list.txt'), ('%s\n%s\n' % (case, other[0])).encode())
    net, _ = _data_net(rng, scratch, extra['net'], {'source': listing}, 0.1)
    return (lambda: _run_net(net, 3)), _names(case, listing, other[0], 'h5')


def hdf5_list_case(seed, rng, scratch):
    _, name, path, extra = seed
    text = mutate.mutate_text(rng, _read(path))
    listing = _write(os.path.join(scratch, 'list.txt'), text)
    net, _ = _data_net(rng, scratch, extra['net'], {'source': listing}, 0.1)
    files = text.decode('utf-8', 'replace').split()
    return (lambda: _run_net(net, 3)), _names(listing, files, 'h5')


def image_list_case(seed, rng, scratch):
    _, name, path, extra = seed
    text = mutate.mutate_text(rng, _read(path))
    listing = _write(os.path.join(scratch, 'list.txt'), text)
    fields = {'source': listing, 'root': extra['root']}
    net, _ = _data_net(rng, scratch, extra['net'], fields, 0.2)
    files = [extra['root'] + line.rpartition(' ')[0] for line in text.decode('utf-8', 'replace').split('\n')]
    return (lambda: _run_net(net, 2)), _names(listing, files, 'images')


def image_case(seed, rng, scratch):
    _, name, path, extra = seed
    case = _write(os.path.join(scratch, 'case' + os.path.splitext(path)[1]),
                  mutate.mutate_bytes(rng, _read(path)))
    lines = [line.split() for line in _read(extra['list']).decode().splitlines()]
    rows = ['%s %s' % (extra['root'] + image, label) for image, label in lines]
    rows.insert(int(rng.integers(len(rows) + 1)) % 3, '%s 7' % case)
    listing = _write(os.path.join(scratch, 'list.txt'), ('\n'.join(rows) + '\n').encode())
    fields = {'source': listing, 'root': ''}
    net, _ = _data_net(rng, scratch, extra['net'], fields, 0.0)
    return (lambda: _run_net(net, 2)), _names(case, listing, 'images')


def window_file_case(seed, rng, scratch):
    _, name, path, extra = seed
    text = mutate.mutate_text(rng, _read(path))
    listing = _write(os.path.join(scratch, 'windows.txt'), text)
    net, _ = _data_net(rng, scratch, extra['net'], {'source': listing}, 0.2)
    files = [token for token in text.decode('utf-8', 'replace').split() if os.sep in token]
    return (lambda: _run_net(net, 2)), _names(listing, files, 'windows')


READERS = {
    'net': net_case, 'solver': solver_case, 'caffemodel': caffemodel_case,
    'solverstate': solverstate_case, 'mean': mean_case, 'lmdb': lmdb_case, 'hdf5': hdf5_case,
    'hdf5_list': hdf5_list_case, 'image_list': image_list_case, 'image': image_case,
    'window_file': window_file_case,
}


def prepare(seed, rng, scratch):
    return READERS[seed[0]](seed, rng, scratch)


# -- outcomes --------------------------------------------------------------------------------------

LOADED, REFUSED, VAGUE, INTERNAL, MEMORY, CRASH, HANG = (
    'loaded', 'refused', 'vague refusal', 'internal error', 'memory blow-up', 'crash', 'hang')
OUTCOMES = (LOADED, REFUSED, VAGUE, INTERNAL, MEMORY, CRASH, HANG)
FAILURES = (VAGUE, INTERNAL, MEMORY, CRASH, HANG)


def is_project_error(exc):
    """An exception class of caffe-py's own (FormatError, DataSourceError, NetError, ...)."""
    return any(cls.__module__.startswith('caffe_py') for cls in type(exc).__mro__)


def names_something(message, names):
    """Whether `message` names one of the case's files (its path or base name) or layers."""
    for name in list(names) + [NET_FILE]:
        if not name:
            continue
        if os.sep in name or '.' in name:
            if name in message or os.path.basename(name) in message:
                return True
        elif re.search(r'(?<![\w])%s(?![\w])' % re.escape(name), message):
            return True
    return False


def classify(exc, names):
    """The outcome of a case that raised `exc` (None: it loaded)."""
    if exc is None:
        return LOADED
    if isinstance(exc, MemoryError):
        return MEMORY
    message = str(exc)
    if is_project_error(exc) and '\n' not in message and names_something(message, names):
        return REFUSED
    if is_project_error(exc):
        return VAGUE
    return INTERNAL
