"""convert_imageset, compute_image_mean, extract_features against Caffe's reference data."""
import os

import cv2
import numpy as np
import pytest

import caffe_py as caffe
from caffe_py import formats
from caffe_py.data.db import Reader
from caffe_py.data.image import DataSourceError
from caffe_py.proto import caffe_pb2
from caffe_py.tools import cli

from conftest import REFERENCE, need

DATA = os.path.join(REFERENCE, 'data')


def records(path, backend='lmdb'):
    reader = Reader(path, backend)
    try:
        return [(key, caffe_pb2.Datum.FromString(value)) for key, value in reader]
    finally:
        reader.close()


def pixels(datum):
    if datum.encoded:
        return cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_UNCHANGED).astype(int)
    return np.frombuffer(datum.data, np.uint8).astype(int)


@pytest.mark.parametrize('reference, extra', [('lmdb_raw', []), ('lmdb_encoded', ['-encoded', '-encode_type=png'])])
def test_convert_imageset_matches_caffe(tmp_path, reference, extra):
    need(DATA)
    out = str(tmp_path / 'db')
    argv = ['convert_imageset', '-resize_height=32', '-resize_width=32', '-backend', 'lmdb'] + extra + [
        os.path.join(DATA, 'images') + '/', os.path.join(DATA, 'list.txt'), out]
    assert cli.main(argv) == 0
    mine, theirs = records(out), records(os.path.join(DATA, reference))
    assert [k for k, _ in mine] == [k for k, _ in theirs]
    for (key, a), (_, b) in zip(mine, theirs):
        assert (a.channels, a.height, a.width, a.label, a.encoded) == \
            (b.channels, b.height, b.width, b.label, b.encoded), key
        tolerance = 1 if key.endswith(b'.jpg') else 0     # libjpeg builds differ by a grey level
        assert np.abs(pixels(a) - pixels(b)).max() <= tolerance, key
    assert not [n for n in os.listdir(tmp_path) if n != 'db']      # no temporary folder left
    assert cli.main(argv) == 1                                     # refuses to overwrite


def test_convert_imageset_leveldb_gray_shuffle_and_missing_files(tmp_path):
    pytest.importorskip('plyvel')
    os.makedirs(tmp_path / 'im')
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(tmp_path / 'im' / ('%d.png' % i)), rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    (tmp_path / 'list.txt').write_text('0.png 0\n1.png 1\nmissing.png 9\n2.png 2\n3.png 3\n')
    out = str(tmp_path / 'db')
    assert cli.main(['convert_imageset', '-gray', '-shuffle', '-backend=leveldb', '-check_size',
                     str(tmp_path / 'im') + '/', str(tmp_path / 'list.txt'), out]) == 0
    got = records(out, 'leveldb')
    assert len(got) == 4
    for key, datum in got:
        name = key.decode().split('_', 1)[1]
        gray = cv2.imread(str(tmp_path / 'im' / name), cv2.IMREAD_GRAYSCALE)
        assert (datum.channels, datum.height, datum.width) == (1, 5, 7)
        assert datum.data == gray.tobytes() and datum.label == int(name[0])


def test_convert_imageset_encoded_keeps_file_bytes(tmp_path):
    need(DATA)
    out = str(tmp_path / 'db')
    assert cli.main(['convert_imageset', '-encoded', os.path.join(DATA, 'images') + '/',
                     os.path.join(DATA, 'same_size_list.txt'), out]) == 0
    for key, datum in records(out):
        name = key.decode().split('_', 1)[1]
        assert datum.encoded and datum.data == open(os.path.join(DATA, 'images', name), 'rb').read()


def test_compute_image_mean_reproduces_caffes_mean(tmp_path):
    need(DATA)
    out = str(tmp_path / 'mean.binaryproto')
    assert cli.main(['compute_image_mean', os.path.join(DATA, 'lmdb_raw'), out]) == 0
    mine = formats.read_binaryproto(out)
    theirs = formats.read_binaryproto(os.path.join(DATA, 'mean.binaryproto'))
    assert mine.shape == theirs.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(mine, theirs, atol=1e-3, rtol=0)
    encoded = str(tmp_path / 'mean_enc.binaryproto')
    assert cli.main(['compute_image_mean', '-backend', 'lmdb', os.path.join(DATA, 'lmdb_encoded'), encoded]) == 0
    np.testing.assert_allclose(formats.read_binaryproto(encoded), theirs, atol=1e-3, rtol=0)


def test_compute_image_mean_errors(tmp_path):
    assert cli.main(['compute_image_mean']) == 1
    assert cli.main(['compute_image_mean', str(tmp_path / 'absent')]) == 1
    with pytest.raises(DataSourceError, match='absent'):
        from caffe_py.tools.compute_image_mean import compute_image_mean
        compute_image_mean(str(tmp_path / 'absent'))


def test_extract_features_writes_float_datums(tmp_path, monkeypatch):
    need(DATA)
    monkeypatch.chdir(DATA)
    model = tmp_path / 'net.prototxt'
    model.write_text(
        'layer { name: "d" type: "Data" top: "data" top: "label" '
        'data_param { source: "lmdb_raw" backend: LMDB batch_size: 5 } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        'inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.01 } } }\n')
    net = caffe.Net(str(model), caffe.TEST)
    weights = str(tmp_path / 'w.caffemodel')
    net.save(weights)
    w = net.params['ip'][0].data.copy()
    b = net.params['ip'][1].data.copy()
    net.layers[0].close()
    outs = [str(tmp_path / 'f_ip'), str(tmp_path / 'f_label')]
    assert cli.main(['extract_features', weights, str(model), 'ip,label', ','.join(outs), '3', 'lmdb', 'CPU']) == 0
    ip, label = records(outs[0]), records(outs[1])
    assert [k for k, _ in ip] == [b'%010d' % i for i in range(15)]
    raw = records('lmdb_raw')
    for i, (_, datum) in enumerate(ip):
        source = raw[i % 12][1]
        x = np.frombuffer(source.data, np.uint8).astype(np.float32)
        assert (datum.channels, datum.height, datum.width) == (3, 1, 1)
        np.testing.assert_allclose(datum.float_data, w @ x + b, rtol=1e-4, atol=1e-3)
        assert label[i][1].float_data == [source.label]
    assert cli.main(['extract_features', weights, str(model), 'nope', str(tmp_path / 'x'), '1', 'lmdb']) == 1
    assert not os.path.exists(tmp_path / 'x')
