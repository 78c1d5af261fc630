"""Bad input files end in one clear line naming the file (record, layer, blob), never a crash,
a MemoryError or a dependency's own exception. Each test makes its small reproducer itself."""
import os
import struct
import subprocess
import sys
import threading

import cv2
import h5py
import numpy as np
import pytest

from caffe_py import TEST, TRAIN, Net, formats
from caffe_py.data.db import DBWriter, Reader
from caffe_py.data.hdf5 import DataSourceError, load_hdf5_datasets
from caffe_py.data.image import image_to_datum, read_image
from caffe_py.data.lmdb_check import check_lmdb, check_meta
from caffe_py.net import NetError
from caffe_py.proto import caffe_pb2
from caffe_py.solvers import learning_rate
from caffe_py.tools import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = 4096


def _lmdb(path, values):
    with DBWriter(str(path), 'lmdb') as db:
        for key, value in values:
            db.put(key, value)
    return str(path)


def _raw_records(count=4):
    rng = np.random.default_rng(0)
    return [('%08d' % i, image_to_datum(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), i)
             .SerializeToString()) for i in range(count)]


def _patch(path, offset, data):
    with open(os.path.join(path, 'data.mdb'), 'r+b') as f:
        f.seek(offset)
        f.write(data)


def _data_net(tmp_path, source, batch=2, extra=''):
    text = ('layer { name: "data" type: "Data" top: "data" top: "label" %s '
            'data_param { source: "%s" backend: LMDB batch_size: %d } }' % (extra, source, batch))
    path = tmp_path / 'net.prototxt'
    path.write_text(text)
    return str(path)


def _one_line_error(exc_info, *names):
    message = str(exc_info.value)
    assert '\n' not in message
    for name in names:
        assert str(name) in message, (name, message)
    return message


# -- LMDB -------------------------------------------------------------------------------------------

def _big_value_lmdb(tmp_path):
    """An LMDB whose one value spans overflow pages, and the file offset of its node's size field."""
    path = _lmdb(tmp_path / 'db', [('bigkey01', b'v' * 3 * PAGE)])
    data = open(os.path.join(path, 'data.mdb'), 'rb').read()
    key_at = data.index(b'bigkey01')
    return path, key_at - 8            # node header: size lo (2), size hi (2), flags (2), key size (2)


def test_lmdb_value_running_past_the_file_is_refused_not_a_sigbus(tmp_path):
    path, node = _big_value_lmdb(tmp_path)
    _patch(path, node, struct.pack('<HH', 0, 0x4000))            # the value claims 1 GiB
    script = ('import lmdb, sys; env = lmdb.open(sys.argv[1], readonly=True, lock=False)\n'
              'with env.begin() as txn: print(len(txn.get(b"bigkey01")))')
    raw = subprocess.run([sys.executable, '-c', script, path], capture_output=True)
    assert raw.returncode < 0            # lmdb itself dies of a signal on this file
    with pytest.raises(DataSourceError) as info:
        Reader(path, 'lmdb')
    message = _one_line_error(info, 'corrupt LMDB: %s' % path)
    assert 'faults' in message


def test_lmdb_page_of_wrong_type_is_a_corrupt_lmdb_error(tmp_path):
    path = _lmdb(tmp_path / 'db', _raw_records(40))
    data = open(os.path.join(path, 'data.mdb'), 'rb').read()
    pages = len(data) // PAGE
    leaf = next(p for p in range(2, pages) if struct.unpack_from('<H', data, p * PAGE + 10)[0] == 0x02)
    _patch(path, leaf * PAGE + 10, struct.pack('<H', 0x01))     # a leaf page marked as a branch
    with pytest.raises(DataSourceError) as info:
        Reader(path, 'lmdb')
    _one_line_error(info, 'corrupt LMDB: %s' % path)


def test_truncated_lmdb_is_refused_by_the_meta_check(tmp_path):
    path = _lmdb(tmp_path / 'db', _raw_records(40))
    name = os.path.join(path, 'data.mdb')
    os.truncate(name, os.path.getsize(name) - PAGE)
    with pytest.raises(DataSourceError) as info:
        check_meta(path)
    _one_line_error(info, 'corrupt LMDB: %s' % path, 'pages')


@pytest.mark.parametrize('offset, value, what', [
    (16, b'\0\0\0\0', 'magic'), (20, b'\x07\0\0\0', 'version'), (40, b'\x03\0\0\0', 'page size')])
def test_lmdb_meta_page_damage_is_named(tmp_path, offset, value, what):
    path = _lmdb(tmp_path / 'db', _raw_records(2))
    _patch(path, offset, value)
    with pytest.raises(DataSourceError) as info:
        check_lmdb(path)
    _one_line_error(info, 'corrupt LMDB: %s' % path, what)


def test_a_whole_lmdb_still_reads(tmp_path):
    path = _lmdb(tmp_path / 'db', _raw_records(5))
    reader = Reader(path, 'lmdb')
    assert [k for k, _ in reader] == [b'%08d' % i for i in range(5)]
    reader.close()


def test_empty_encoded_datum_names_the_record_not_an_opencv_error(tmp_path):
    datum = caffe_pb2.Datum(label=1, encoded=True, data=b'')
    path = _lmdb(tmp_path / 'db', [('rec0', datum.SerializeToString())])
    with pytest.raises(NetError) as info:
        Net(_data_net(tmp_path, path), TEST)
    _one_line_error(info, 'layer "data"', 'record rec0', path, 'empty')


def test_datum_with_negative_sizes_names_the_record(tmp_path):
    datum = caffe_pb2.Datum(channels=-1, height=-3, width=64, data=bytes(192))
    path = _lmdb(tmp_path / 'db', [('rec7', datum.SerializeToString())])
    with pytest.raises(NetError) as info:
        Net(_data_net(tmp_path, path), TEST)
    _one_line_error(info, 'record rec7', path, '-1x-3x64')


# -- absurd shapes ----------------------------------------------------------------------------------

def test_batch_size_2_31_is_refused_naming_layer_blob_and_bytes(tmp_path):
    path = _lmdb(tmp_path / 'db', _raw_records(2))
    with pytest.raises(NetError) as info:
        Net(_data_net(tmp_path, path, batch=2 ** 31 - 1), TEST)
    message = _one_line_error(info, 'layer "data"', 'top blob "data"', '2147483647', 'bytes', 'available')
    assert str((2 ** 31 - 1) * 3 * 8 * 8 * 4) in message        # its data; the diff comes on first use


def _conv_net(tmp_path, conv):
    path = tmp_path / 'conv.prototxt'
    path.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 '
                    'dim: 8 dim: 8 } } }\nlayer { name: "conv" type: "Convolution" bottom: "x" top: "y" '
                    'convolution_param { %s } }' % conv)
    return str(path)


@pytest.mark.parametrize('conv, blob', [
    ('num_output: 2147483647 kernel_size: 3', 'weight or buffer blobs'),
    ('num_output: 4 kernel_size: 65535', 'weight or buffer blobs'),
    ('num_output: 4 kernel_size: 1 pad: 2000000000', 'top blob "y"'),
])
def test_huge_num_output_or_padding_is_refused_before_allocating(tmp_path, conv, blob):
    with pytest.raises(NetError) as info:
        Net(_conv_net(tmp_path, conv), TEST)
    _one_line_error(info, 'layer "conv"', blob, 'bytes')


def test_pooling_kernel_larger_than_its_input_is_refused(tmp_path):
    path = tmp_path / 'pool.prototxt'
    path.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 '
                    'dim: 8 dim: 8 } } }\nlayer { name: "pool" type: "Pooling" bottom: "x" top: "y" '
                    'pooling_param { kernel_size: 65535 stride: 2 } }')
    with pytest.raises(NetError) as info:
        Net(str(path), TEST)
    _one_line_error(info, 'layer "pool"', 'does not fit the 8x8 input')


@pytest.mark.parametrize('phase, available, what', [(TRAIN, 200, 'data and diffs'), (TEST, 100, 'data')])
def test_net_memory_is_compared_with_what_the_machine_has(tmp_path, monkeypatch, phase, available, what):
    """Each blob fits, their sum (Caffe's "Memory required for data", with diffs for a TRAIN net,
    whose solver runs backward; a TEST net allocates diffs only if it is run backward) does not."""
    from caffe_py import memory
    monkeypatch.setattr(memory, 'available_bytes', lambda: available << 20)
    layers = ['layer { name: "in" type: "Input" top: "x0" input_param { shape { dim: 1 dim: 1 '
              'dim: 2048 dim: 2048 } } }']                         # 16 MiB a blob
    for i in range(1, 8):
        layers.append('layer { name: "relu%d" type: "ReLU" bottom: "x%d" top: "x%d" }' % (i, i - 1, i))
    path = tmp_path / 'chain.prototxt'
    path.write_text('\n'.join(layers))
    with pytest.raises(NetError) as info:
        Net(str(path), phase)
    _one_line_error(info, 'layer "relu6"', '"x6"', 'bytes', 'for %s;' % what, 'available')


def test_huge_input_blob_names_the_blob(tmp_path):
    path = tmp_path / 'in.prototxt'
    path.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2147483647 '
                    'dim: 3 dim: 224 dim: 224 } } }')
    with pytest.raises(NetError) as info:
        Net(str(path), TEST)
    _one_line_error(info, 'layer "in"', 'top blob "x"', 'bytes')


def test_huge_hdf5_dataset_is_refused_before_reading(tmp_path):
    path = str(tmp_path / 'big.h5')
    with h5py.File(path, 'w') as f:
        f.create_dataset('data', shape=(2 ** 31 - 1, 3, 64, 64), dtype='f4', chunks=(1, 3, 64, 64))
    with pytest.raises(DataSourceError) as info:
        load_hdf5_datasets(path, ['data'], np.float32)
    _one_line_error(info, path, 'dataset data', 'bytes')


def test_huge_resize_is_refused(tmp_path):
    path = str(tmp_path / 'im.png')
    cv2.imwrite(path, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataSourceError) as info:
        read_image(path, 2 ** 31, 2 ** 31)
    _one_line_error(info, path, 'bytes')


# -- dependency errors wrapped --------------------------------------------------------------------

def _tiny_v1_caffemodel(path, name=b'convabc'):
    net = caffe_pb2.NetParameter(name='v1')
    net.input.append('data')
    net.input_dim.extend([1, 1, 4, 4])
    layer = net.layers.add(name=name.decode(), type=caffe_pb2.V1LayerParameter.CONVOLUTION)
    layer.bottom.append('data')
    layer.top.append('out')
    layer.convolution_param.num_output = 1
    layer.convolution_param.kernel_size.append(1)
    formats.array_to_blob(np.ones((1, 1, 1, 1), np.float32), blob=layer.blobs.add())
    formats.array_to_blob(np.ones(1, np.float32), blob=layer.blobs.add())
    data = net.SerializeToString()
    with open(path, 'wb') as f:
        f.write(data)
    return data


def test_non_utf8_layer_name_in_v1_caffemodel_names_file_and_field(tmp_path):
    path = str(tmp_path / 'v1.caffemodel')
    data = _tiny_v1_caffemodel(path).replace(b'convabc', b'conv\x80bc')
    with open(path, 'wb') as f:
        f.write(data)
    with pytest.raises(formats.ProtoParseError) as info:
        formats.read_net(path)
    _one_line_error(info, path, 'layers[0].name', 'not UTF-8')


def test_hdf5_files_of_different_shapes_name_file_dataset_and_layer(tmp_path):
    files = []
    for i, width in enumerate((4, 5)):
        files.append(str(tmp_path / ('part%d.h5' % i)))
        with h5py.File(files[-1], 'w') as f:
            f['data'] = np.zeros((3, 2, width), np.float32)
            f['label'] = np.zeros(3, np.float32)
    (tmp_path / 'list.txt').write_text('\n'.join(files) + '\n')
    (tmp_path / 'net.prototxt').write_text(
        'layer { name: "h5" type: "HDF5Data" top: "data" top: "label" hdf5_data_param { source: "%s" '
        'batch_size: 2 } }' % (tmp_path / 'list.txt'))
    net = Net(str(tmp_path / 'net.prototxt'), TEST)
    net.forward()
    with pytest.raises(ValueError) as info:
        net.forward()
    _one_line_error(info, 'layer "h5"', files[1], 'dataset data', '[2, 5]', '[2, 4]')


def test_damaged_hdf5_file_is_one_line(tmp_path):
    path = str(tmp_path / 'bad.h5')
    with h5py.File(path, 'w', libver='latest') as f:
        f['data'] = np.zeros((3, 2), np.float32)
    data = bytearray(open(path, 'rb').read())
    data[data.rindex(b'OHDR') + 4] = 0x77          # the dataset's object header: unknown version
    open(path, 'wb').write(bytes(data))
    with pytest.raises(DataSourceError) as info:    # h5py says KeyError
        load_hdf5_datasets(path, ['data'], np.float32)
    _one_line_error(info, path, 'dataset data', 'object header')


@pytest.mark.parametrize('where', ['image list', 'hdf5 list', 'mean file'])
def test_embedded_nul_byte_in_a_named_path(tmp_path, where):
    if where == 'image list':
        (tmp_path / 'list.txt').write_bytes(b'im\x00g.png 0\n')
        layer = ('layer { name: "images" type: "ImageData" top: "data" top: "label" image_data_param '
                 '{ source: "%s" batch_size: 1 } }' % (tmp_path / 'list.txt'))
    elif where == 'hdf5 list':
        (tmp_path / 'list.txt').write_bytes(b'pa\x00rt.h5\n')
        layer = ('layer { name: "h5" type: "HDF5Data" top: "data" hdf5_data_param '
                 '{ source: "%s" batch_size: 1 } }' % (tmp_path / 'list.txt'))
    else:
        path = _lmdb(tmp_path / 'db', _raw_records(2))
        layer = ('layer { name: "data" type: "Data" top: "data" transform_param { mean_file: "me\\000an" } '
                 'data_param { source: "%s" backend: LMDB batch_size: 1 } }' % path)
    (tmp_path / 'net.prototxt').write_text(layer)
    with pytest.raises(ValueError) as info:
        net = Net(str(tmp_path / 'net.prototxt'), TEST)
        net.forward()
    message = _one_line_error(info)
    assert 'embedded null' not in message and ('NUL' in message or 'not found' in message), message


def test_prefetch_thread_that_cannot_start_names_the_layer(tmp_path, monkeypatch):
    path = _lmdb(tmp_path / 'db', _raw_records(2))

    def refuse(self):
        raise RuntimeError("can't start new thread")
    monkeypatch.setattr(threading.Thread, 'start', refuse)
    with pytest.raises(NetError) as info:
        Net(_data_net(tmp_path, path), TEST)
    _one_line_error(info, 'layer "data"', "can't start new thread", 'prefetching thread')


def test_failed_net_build_stops_its_data_threads(tmp_path):
    path = _lmdb(tmp_path / 'db', _raw_records(2))
    (tmp_path / 'net.prototxt').write_text(
        'layer { name: "data" type: "Data" top: "data" data_param { source: "%s" backend: LMDB '
        'batch_size: 1 } }\nlayer { name: "bad" type: "InnerProduct" bottom: "nothere" top: "y" }' % path)
    before = threading.active_count()
    for _ in range(30):                  # many test nets that fail to build
        with pytest.raises(NetError):
            Net(str(tmp_path / 'net.prototxt'), TEST)
    assert threading.active_count() <= before + 1


def test_poly_lr_past_max_iter_is_nan_not_a_type_error():
    param = caffe_pb2.SolverParameter(lr_policy='poly', base_lr=0.01, power=0.75, max_iter=10)
    assert np.isnan(learning_rate(param, 11)[0])
    param.power = 2
    assert learning_rate(param, 20)[0] == np.float32(0.01)


def test_blobproto_count_mismatch_names_file_layer_and_blob(tmp_path):
    model = tmp_path / 'net.prototxt'
    model.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 '
                     'dim: 4 dim: 4 } } }\nlayer { name: "convabc" type: "Convolution" bottom: "x" top: "y" '
                     'convolution_param { num_output: 1 kernel_size: 1 } }')
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name='convabc', type='Convolution')
    blob = layer.blobs.add()
    blob.shape.dim.extend([1, 1, 1, 1])
    blob.data.extend([1.0, 2.0, 3.0])
    layer.blobs.add().CopyFrom(formats.array_to_blob(np.ones(1, np.float32)))
    weights = str(tmp_path / 'w.caffemodel')
    formats.write_net(weights, net, binary=True)
    with pytest.raises(NetError) as info:
        Net(str(model), TEST, weights=weights)
    _one_line_error(info, weights, "layer 'convabc'", 'param blob 0', 'BlobProto has 3 data values')


def test_solverstate_history_mismatch_names_the_file(tmp_path):
    from caffe_py.solvers import SolverError, get_solver
    (tmp_path / 'train.prototxt').write_text(
        'layer { name: "d" type: "DummyData" top: "x" top: "l" dummy_data_param { shape { dim: 2 dim: 3 } '
        'shape { dim: 2 } } }\nlayer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
        'inner_product_param { num_output: 2 } }\nlayer { name: "loss" type: "SoftmaxWithLoss" '
        'bottom: "y" bottom: "l" top: "loss" }')
    (tmp_path / 'solver.prototxt').write_text('net: "%s" base_lr: 0.1 lr_policy: "fixed" max_iter: 1 '
                                              'solver_mode: CPU' % (tmp_path / 'train.prototxt'))
    state = caffe_pb2.SolverState(iter=1)
    for _ in range(2):
        blob = state.history.add()
        blob.shape.dim.extend([2, 3])
        blob.data.extend([0.5])
    path = str(tmp_path / 'bad.solverstate')
    formats.write_solverstate(path, state)
    solver = get_solver(str(tmp_path / 'solver.prototxt'))
    with pytest.raises(SolverError) as info:
        solver.restore(path)
    _one_line_error(info, path, 'history blob 0', 'BlobProto has 1 data values')


def test_cli_prints_one_line_and_exits_nonzero(tmp_path, capsys):
    model = tmp_path / 'net.prototxt'
    model.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 '
                     'dim: 4 dim: 4 } } }')
    weights = str(tmp_path / 'v1.caffemodel')
    data = _tiny_v1_caffemodel(weights).replace(b'convabc', b'conv\xffbc')
    with open(weights, 'wb') as f:
        f.write(data)
    code = cli.main(['test', '-model', str(model), '-weights', weights, '-iterations', '1'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err[-1].startswith('caffe-py: error: ') and weights in err[-1] and 'not UTF-8' in err[-1]


def _window_net(tmp_path, window, context_pad=0):
    image = str(tmp_path / 'im.png')
    cv2.imwrite(image, np.full((10, 9, 3), 128, np.uint8))
    (tmp_path / 'windows.txt').write_text('# 0\n%s\n3\n10\n9\n1\n1 0.9 %s\n' % (image, window))
    (tmp_path / 'net.prototxt').write_text(
        'layer { name: "w" type: "WindowData" top: "data" top: "label" transform_param { crop_size: 6 } '
        'window_data_param { source: "%s" batch_size: 2 fg_fraction: 1 context_pad: %d } }'
        % (tmp_path / 'windows.txt', context_pad))
    return str(tmp_path / 'net.prototxt'), image


def test_window_outside_its_image_names_window_and_image(tmp_path):
    """OpenCV's "!ssize.empty()" assertion before; now the window and the image file."""
    model, image = _window_net(tmp_path, '5 5 40 40')
    net = Net(model, TEST)
    with pytest.raises(ValueError) as info:
        net.forward()
    net.close()
    _one_line_error(info, 'layer "w"', image, 'outside')


def test_context_pad_eating_the_crop_is_refused(tmp_path):
    """A division by zero (then int(inf)) before; now a refusal at setup naming the layer."""
    model, _ = _window_net(tmp_path, '1 1 6 7', context_pad=3)
    with pytest.raises(NetError) as info:
        Net(model, TEST)
    _one_line_error(info, 'layer "w"', 'context_pad 3')


def test_decoding_threads_that_cannot_start_fall_back_to_one_thread(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from caffe_py.data.prefetch import ItemPool
    real_submit = ThreadPoolExecutor.submit
    calls = []

    def submit(self, fn, *args):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("can't start new thread")
        return real_submit(self, fn, *args)
    monkeypatch.setattr(ThreadPoolExecutor, 'submit', submit)
    pool = ItemPool(workers=4)
    done = np.zeros(10, int)

    def work(i):
        done[i] += 1
    pool.run(10, work)
    pool.run(10, work)
    pool.close()
    assert (done == 2).all() and pool.workers == 1


def test_prototxt_blob_whose_values_do_not_fill_its_shape_names_layer_and_blob(tmp_path):
    path = tmp_path / 'net.prototxt'
    path.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }\n'
                    'layer { name: "ipw" type: "InnerProduct" bottom: "x" top: "y" '
                    'inner_product_param { num_output: 1 } blobs { shape { dim: 1 dim: 2 } data: 1 } }')
    with pytest.raises(NetError) as info:
        Net(str(path), TEST)
    _one_line_error(info, 'layer "ipw"', 'param blob 0', 'BlobProto has 1 data values')
