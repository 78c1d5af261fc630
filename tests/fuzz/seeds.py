"""Seed files the fuzzer mutates: small files of every kind caffe-py reads.

`make_seeds(folder)` writes generated seeds (always available); `corpus_seeds()`
lists real Caffe files under ../shared, read in place (none when it is absent).
A seed is (reader, name, path, extra): `reader` names the target in targets.py,
`extra` holds what that target needs besides the file (a net to load weights into).
"""
import os

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), 'shared')

NET = '''name: "fuzznet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
'''

TRAIN_NET = '''name: "fuzztrain"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 }
    data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
'''

SOLVER = '''net: "%(net)s"
test_net: "%(net)s"
test_iter: 1
test_interval: 2
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "poly"
power: 0.75
gamma: 0.1
stepsize: 2
max_iter: 3
display: 1
random_seed: 1
snapshot_prefix: "snap"
solver_mode: CPU
'''

# the data-layer nets; %(source)s and %(mean)s are filled per case
DATA_NET = '''name: "fuzzdata"
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { crop_size: 6 mirror: true mean_file: "%(mean)s" scale: 0.5 }
  data_param { source: "%(source)s" backend: LMDB batch_size: 4 } }
layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }
'''

ENCODED_NET = '''name: "fuzzencoded"
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { mean_value: 10 mean_value: 20 mean_value: 30 }
  data_param { source: "%(source)s" backend: LMDB batch_size: 3 } }
'''

HDF5_NET = '''name: "fuzzhdf5"
layer { name: "h5" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param { source: "%(source)s" batch_size: 4 } }
layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }
'''

IMAGE_NET = '''name: "fuzzimages"
layer { name: "images" type: "ImageData" top: "data" top: "label"
  transform_param { crop_size: 6 mirror: true }
  image_data_param { source: "%(source)s" root_folder: "%(root)s" batch_size: 3 new_height: 8 new_width: 8 } }
'''

WINDOW_NET = '''name: "fuzzwindows"
layer { name: "windows" type: "WindowData" top: "data" top: "label"
  transform_param { crop_size: 6 mirror: true mean_value: 100 }
  window_data_param { source: "%(source)s" batch_size: 4 fg_threshold: 0.5 bg_threshold: 0.5
    context_pad: 1 } }
'''


def _write(path, text):
    with open(path, 'w') as f:
        f.write(text)
    return path


def _images(rng, count, height=8, width=8):
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def _lmdb(path, datums):
    from caffe_py.data.db import DBWriter
    with DBWriter(path, 'lmdb') as db:
        for i, datum in enumerate(datums):
            db.put('%08d' % i, datum.SerializeToString())
    return path


def _v1_caffemodel(net, path):
    """The weights of `net` as a V1 (layers:) binary caffemodel, as Caffe wrote them in 2014."""
    from caffe_py import formats
    from caffe_py.proto import caffe_pb2
    v1 = caffe_pb2.V1LayerParameter
    types = {'Convolution': v1.CONVOLUTION, 'ReLU': v1.RELU, 'Pooling': v1.POOLING,
             'InnerProduct': v1.INNER_PRODUCT, 'Softmax': v1.SOFTMAX}
    param = caffe_pb2.NetParameter(name='fuzznet_v1')
    param.input.append('data')
    param.input_dim.extend([2, 3, 8, 8])
    for name, layer in zip(net.layer_names, net.layers):
        if layer.type not in types:
            continue
        out = param.layers.add(name=name, type=types[layer.type])
        out.bottom.extend(layer.layer_param.bottom)
        out.top.extend(layer.layer_param.top)
        for blob in layer.blobs:
            formats.array_to_blob(blob.data, blob=out.blobs.add(), legacy_4d=blob.data.ndim <= 4)
    formats.write_net(path, param, binary=True)
    return path


def make_seeds(folder):
    """Write the generated seeds into `folder` (quietly); returns the list of seeds."""
    import logging

    import caffe_py  # noqa: F401  (its import sets the log level: quiet it afterwards)
    logger = logging.getLogger('caffe_py')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _make_seeds(folder)
    finally:
        logger.setLevel(level)


def _make_seeds(folder):
    from caffe_py import TEST, Net, formats, get_solver
    from caffe_py.data.image import image_to_datum
    from caffe_py.proto import caffe_pb2
    rng = np.random.default_rng(0)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    seeds = []
    net_path = _write(p('net.prototxt'), NET)
    train_path = _write(p('train.prototxt'), TRAIN_NET)
    solver_path = _write(p('solver.prototxt'), SOLVER % {'net': train_path})
    seeds += [('net', 'net.prototxt', net_path, {}), ('net', 'train.prototxt', train_path, {}),
              ('solver', 'solver.prototxt', solver_path, {})]

    net = Net(net_path, TEST)
    net.save(p('net.caffemodel'))
    seeds.append(('caffemodel', 'net.caffemodel', p('net.caffemodel'), {'model': net_path}))
    seeds.append(('caffemodel', 'net_v1.caffemodel', _v1_caffemodel(net, p('net_v1.caffemodel')),
                  {'model': net_path}))

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        solver = get_solver(solver_path)
        solver.step(1)
        solver.snapshot()
        solver.close()
    finally:
        os.chdir(cwd)
    state = [f for f in os.listdir(folder) if f.endswith('.solverstate')][0]
    snapshot = formats.read_solverstate(p(state))
    snapshot.learned_net = p(snapshot.learned_net)      # absolute: cases run in other folders
    formats.write_solverstate(p(state), snapshot)
    seeds.append(('solverstate', state, p(state), {'solver': solver_path}))

    mean = rng.uniform(0, 255, (3, 8, 8)).astype(np.float32)
    formats.write_binaryproto(p('mean.binaryproto'), mean)
    seeds.append(('mean', 'mean.binaryproto', p('mean.binaryproto'), {}))

    labels = list(range(6))
    raw = [image_to_datum(np.ascontiguousarray(im), label) for im, label in zip(_images(rng, 6), labels)]
    _lmdb(p('raw_lmdb'), raw)
    encoded = []
    for im, label in zip(_images(rng, 5), labels):
        datum = caffe_pb2.Datum(label=label, encoded=True)
        datum.data = cv2.imencode('.png', im)[1].tobytes()
        encoded.append(datum)
    _lmdb(p('encoded_lmdb'), encoded)
    seeds += [('lmdb', 'raw_lmdb', p('raw_lmdb'), {'net': DATA_NET, 'mean': p('mean.binaryproto')}),
              ('lmdb', 'encoded_lmdb', p('encoded_lmdb'), {'net': ENCODED_NET})]

    import h5py
    for i in range(2):
        with h5py.File(p('part%d.h5' % i), 'w') as f:
            f['data'] = rng.normal(size=(5, 3, 4, 4)).astype(np.float32)
            f['label'] = np.arange(5, dtype=np.float32)
    _write(p('h5list.txt'), '%s\n%s\n' % (p('part0.h5'), p('part1.h5')))
    seeds += [('hdf5', 'part0.h5', p('part0.h5'), {'list': p('h5list.txt'), 'net': HDF5_NET}),
              ('hdf5_list', 'h5list.txt', p('h5list.txt'), {'net': HDF5_NET})]

    os.makedirs(p('images'))
    names = []
    for i, im in enumerate(_images(rng, 4, 10, 9)):
        name = 'img%d.%s' % (i, 'png' if i % 2 else 'jpg')
        cv2.imwrite(os.path.join(folder, 'images', name), im)
        names.append('%s %d' % (name, i))
    _write(p('images.txt'), '\n'.join(names) + '\n')
    entries = []
    for i in range(2):
        entries.append('# %d\n%s\n3\n10\n9\n3\n1 0.8 1 1 6 7\n2 0.6 0 2 8 9\n0 0.1 2 0 5 5\n'
                       % (i, os.path.join(folder, 'images', 'img%d.%s' % (i, 'png' if i % 2 else 'jpg'))))
    _write(p('windows.txt'), ''.join(entries))
    seeds.append(('window_file', 'windows.txt', p('windows.txt'), {'net': WINDOW_NET}))
    seeds += [('image_list', 'images.txt', p('images.txt'), {'net': IMAGE_NET, 'root': p('images') + '/'}),
              ('image', 'img1.png', p('images/img1.png'), {'net': IMAGE_NET, 'root': p('images') + '/',
                                                            'list': p('images.txt')}),
              ('image', 'img0.jpg', p('images/img0.jpg'), {'net': IMAGE_NET, 'root': p('images') + '/',
                                                           'list': p('images.txt')})]
    return seeds


# real Caffe files read in place: small enough that a case stays fast
_CORPUS = [
    ('net', 'lenet/lenet.prototxt', {}),
    ('net', 'lenet/lenet_train_test.prototxt', {}),
    ('net', 'cifar10_quick/cifar10_quick.prototxt', {}),
    ('net', 'legacy_v0_lenet/lenet.prototxt', {}),
    ('net', 'legacy_v1_2014_03_cifar10_quick/cifar10_quick.prototxt', {}),
    ('net', 'mnist_siamese/mnist_siamese.prototxt', {}),
    ('net', 'hdf5_classification/nonlinear_train_val.prototxt', {}),
    ('solver', 'lenet/lenet_solver_adam.prototxt', {}),
    ('solver', 'cifar10_full/cifar10_full_solver_lr2.prototxt', {}),
    ('solver', 'solvers_legacy_solver_type_enum/lenet_solver_rmsprop.prototxt', {}),
    ('caffemodel', 'lenet_mnist_v2_with_solverstate/lenet_iter_10000.caffemodel',
     {'model': 'lenet_mnist_v2_with_solverstate/lenet.prototxt'}),
    ('caffemodel', 'cifar10_quick_v1_2014_opencl_caffe/cifar10_quick_iter_5000.caffemodel',
     {'model': 'cifar10_quick_v1_2014_opencl_caffe/cifar10_quick.prototxt'}),
    ('mean', 'cifar10_quick_v1_2014_opencl_caffe/mean.binaryproto', {}),
]


def corpus_seeds():
    """Seeds from ../shared/corpus and ../shared/reference/data (read in place), if present."""
    corpus = os.path.join(SHARED, 'corpus')
    seeds = []
    for reader, rel, extra in _CORPUS:
        path = os.path.join(corpus, rel)
        if not os.path.isfile(path):
            continue
        extra = {k: os.path.join(corpus, v) for k, v in extra.items()}
        if 'model' in extra and not os.path.isfile(extra['model']):
            continue
        seeds.append((reader, 'corpus/' + rel, path, extra))
    data = os.path.join(SHARED, 'reference', 'data')
    for name in ('lmdb_raw', 'lmdb_encoded'):  # the generated mean (3x8x8) fits a crop of 8: use the shared one
        if os.path.isdir(os.path.join(data, name)):
            net = DATA_NET if name == 'lmdb_raw' else ENCODED_NET
            extra = {'net': net, 'mean': os.path.join(data, 'mean.binaryproto')}
            if name == 'lmdb_raw':
                extra['net'] = net.replace('crop_size: 6', 'crop_size: 28')
            seeds.append(('lmdb', 'reference/' + name, os.path.join(data, name), extra))
    if os.path.isfile(os.path.join(data, 'list.txt')):
        seeds.append(('image_list', 'reference/list.txt', os.path.join(data, 'list.txt'),
                      {'net': IMAGE_NET, 'root': os.path.join(data, 'images') + '/'}))
    return seeds
