"""Data layers: HDF5Data, MemoryData, DummyData, and Caffe's reference data cases."""
import os

import numpy as np
import pytest

import caffe_py as caffe
from caffe_py.net import NetError
from caffe_py.proto import caffe_pb2
from google.protobuf import text_format

from conftest import REFERENCE, need

DATA = os.path.join(REFERENCE, 'data')


def make_net(text, phase=caffe.TEST, dtype=np.float32):
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase, dtype=dtype)


@pytest.fixture
def in_dir(tmp_path):
    """Run in `tmp_path` (Caffe's sources are relative to the working directory)."""
    old = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(old)


# -- HDF5Data -------------------------------------------------------------------

def write_h5(path, **datasets):
    import h5py
    with h5py.File(path, 'w') as f:
        for name, value in datasets.items():
            f[name] = value


HDF5_NET = ('layer { name: "d" type: "HDF5Data" top: "data" top: "label" '
            'hdf5_data_param { source: "list.txt" batch_size: %d %s } }')


def test_hdf5_data_reads_files_in_order_and_wraps(in_dir):
    write_h5('a.h5', data=np.arange(15, dtype=np.float64).reshape(5, 3), label=np.arange(5))
    write_h5('b.h5', data=100 + np.arange(6, dtype=np.float32).reshape(2, 3), label=[10, 11])
    (in_dir / 'list.txt').write_text('a.h5\n  b.h5\n')
    net = make_net(HDF5_NET % (3, ''))
    assert net.blobs['data'].shape == (3, 3) and net.blobs['label'].shape == (3,)
    labels = []
    for _ in range(5):
        net.forward()
        labels += list(net.blobs['label'].data)
        rows = net.blobs['data'].data
        for label, row in zip(net.blobs['label'].data, rows):
            expected = (np.arange(3) + 3 * label) if label < 10 else (100 + np.arange(3) + 3 * (label - 10))
            np.testing.assert_array_equal(row, expected)
    assert labels == [0, 1, 2, 3, 4, 10, 11, 0, 1, 2, 3, 4, 10, 11, 0]


def test_hdf5_data_shuffle_is_seeded_and_covers_every_row(in_dir):
    write_h5('a.h5', data=np.arange(8, dtype=np.float32).reshape(8, 1), label=np.arange(8))
    write_h5('b.h5', data=np.arange(8, 12, dtype=np.float32).reshape(4, 1), label=np.arange(8, 12))
    (in_dir / 'list.txt').write_text('a.h5 b.h5')

    def draw():
        caffe.set_random_seed(7)
        net = make_net(HDF5_NET % (4, 'shuffle: true'))
        out = []
        for _ in range(6):
            net.forward()
            out.append(net.blobs['label'].data.copy())
        return np.concatenate(out)

    first, second = draw(), draw()
    np.testing.assert_array_equal(first, second)
    for epoch in first.reshape(2, 12):
        assert sorted(epoch) == list(range(12))
    assert not np.array_equal(first[:12], np.arange(12))


def test_hdf5_data_errors_name_the_file(in_dir):
    (in_dir / 'list.txt').write_text('missing.h5\n')
    with pytest.raises(NetError, match='missing.h5'):
        make_net(HDF5_NET % (2, ''))
    write_h5('a.h5', data=np.zeros((2, 1)))
    (in_dir / 'list.txt').write_text('a.h5\n')
    with pytest.raises(NetError, match='label'):
        make_net(HDF5_NET % (2, ''))
    os.remove('list.txt')
    with pytest.raises(NetError, match='list.txt'):
        make_net(HDF5_NET % (2, ''))


def test_hdf5_data_reads_the_solver_reference_source():
    folder = need(os.path.join(REFERENCE, 'solvers', 'sgd_fixed'))
    import h5py
    old = os.getcwd()
    os.chdir(folder)
    try:
        net = make_net('layer { name: "d" type: "HDF5Data" top: "data" top: "label" '
                       'hdf5_data_param { source: "train_h5.txt" batch_size: 16 } }')
        with h5py.File('train.h5', 'r') as f:
            data, label = f['data'][()], f['label'][()]
        net.forward()
        np.testing.assert_array_equal(net.blobs['data'].data, data[:16].astype(np.float32))
        np.testing.assert_array_equal(net.blobs['label'].data, label[:16].astype(np.float32))
    finally:
        os.chdir(old)


# -- MemoryData -----------------------------------------------------------------

MEMORY_NET = ('layer { name: "m" type: "MemoryData" top: "data" top: "label" '
              'memory_data_param { batch_size: 2 channels: 3 height: 2 width: 1 } }')


def test_memory_data_serves_batches_and_wraps():
    net = make_net(MEMORY_NET)
    assert net.blobs['data'].shape == (2, 3, 2, 1) and net.blobs['label'].shape == (2,)
    data = np.random.default_rng(0).standard_normal((6, 3, 2, 1)).astype(np.float32)
    labels = np.arange(6, dtype=np.float32)
    layer = net.layers[0]
    layer.set_input_arrays(data, labels)
    for k in range(4):
        net.forward()
        i = (2 * k) % 6
        np.testing.assert_array_equal(net.blobs['data'].data, data[i:i + 2])
        np.testing.assert_array_equal(net.blobs['label'].data.ravel(), labels[i:i + 2])
    assert net.blobs['label'].shape == (2, 1, 1, 1)
    layer.set_input_arrays(data[:2], labels[:2, None, None, None])     # reset starts over
    net.forward()
    np.testing.assert_array_equal(net.blobs['data'].data, data[:2])


def test_memory_data_refuses_bad_arrays():
    layer = make_net(MEMORY_NET).layers[0]
    with pytest.raises(ValueError, match='before|set_input_arrays'):
        layer.forward([], [caffe.Blob((2, 3, 2, 1)), caffe.Blob((2,))])
    with pytest.raises(ValueError, match='N x 3 x 2 x 1'):
        layer.set_input_arrays(np.zeros((2, 3, 2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match='multiple of batch size'):
        layer.set_input_arrays(np.zeros((3, 3, 2, 1)), np.zeros(3))
    with pytest.raises(ValueError, match='same first dimension'):
        layer.set_input_arrays(np.zeros((2, 3, 2, 1)), np.zeros(4))
    with pytest.raises(NetError, match='must be specified and positive'):
        make_net(MEMORY_NET.replace('width: 1', 'width: 0'))


# -- DummyData ------------------------------------------------------------------

def test_dummy_data_shapes_and_fillers():
    net = make_net('layer { name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                   'shape { dim: 2 dim: 3 } shape { dim: 4 } '
                   'data_filler { type: "constant" value: 5 } data_filler { type: "uniform" min: 1 max: 2 } } }')
    assert net.blobs['a'].shape == (2, 3) and net.blobs['b'].shape == (4,)
    net.forward()
    assert (net.blobs['a'].data == 5).all()
    first = net.blobs['b'].data.copy()
    assert ((first >= 1) & (first <= 2)).all()
    net.forward()
    assert not np.array_equal(first, net.blobs['b'].data)


def test_dummy_data_legacy_dims_and_one_filler():
    net = make_net('layer { name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                   'num: 2 channels: 3 channels: 1 height: 4 width: 5 } }')
    assert net.blobs['a'].shape == (2, 3, 4, 5) and net.blobs['b'].shape == (2, 1, 4, 5)
    assert not net.blobs['a'].data.any()
    with pytest.raises(NetError, match='Both shape and legacy'):
        make_net('layer { name: "d" type: "DummyData" top: "a" dummy_data_param { num: 2 shape { dim: 1 } } }')
    with pytest.raises(NetError, match="'shape' once"):
        make_net('layer { name: "d" type: "DummyData" top: "a" top: "b" top: "c" dummy_data_param { '
                 'shape { dim: 1 } shape { dim: 1 } } }')
    with pytest.raises(NetError, match='data fillers'):
        make_net('layer { name: "d" type: "DummyData" top: "a" top: "b" top: "c" dummy_data_param { '
                 'shape { dim: 1 } data_filler { } data_filler { } } }')
