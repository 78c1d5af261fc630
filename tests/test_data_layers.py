"""Data layers: HDF5Data, MemoryData, DummyData, and Caffe's reference data cases."""
import os

import numpy as np
import pytest

import caffe_py as caffe
from caffe_py import rng
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
        rng.c_srand(7)          # HDF5Data shuffles with glibc's rand(), as Caffe: set_random_seed leaves it
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


# -- Caffe's reference data cases --------------------------------------------------

@pytest.fixture
def in_reference_data():
    need(DATA)
    old = os.getcwd()
    os.chdir(DATA)
    yield DATA
    os.chdir(old)


def reference_cases():
    if not os.path.isdir(DATA):
        return []
    return sorted(name[:-9] for name in os.listdir(DATA) if name.endswith('.prototxt'))


@pytest.mark.parametrize('case', reference_cases() or ['(absent)'])
def test_reference_data_case(case, in_reference_data):
    expected = np.load(case + '.npz')
    text = open(case + '.prototxt').read()
    net = caffe.Net(case + '.prototxt', caffe.TEST)
    # list.txt names JPEGs, decoded here by another libjpeg build than Caffe's: one grey level
    atol = 1.0 + 1e-6 if 'source: "list.txt"' in text else 0.0
    try:
        k = 0
        while 'data/%d' % k in expected.files:
            net.forward()
            data, ref = net.blobs['data'].data, expected['data/%d' % k]
            assert data.shape == ref.shape
            np.testing.assert_allclose(data, ref, rtol=0, atol=atol, err_msg='%s batch %d' % (case, k))
            np.testing.assert_array_equal(net.blobs['label'].data, expected['label/%d' % k])
            k += 1
        assert k >= 2
    finally:
        net.layers[0].close()
    assert not os.path.exists(os.path.join('lmdb_raw', 'lock.mdb'))


# -- TRAIN-phase crops and mirrors ---------------------------------------------------

def write_images(folder, count, height, width, seed=0, ext='.png'):
    import cv2
    rng = np.random.default_rng(seed)
    images = []
    with open(os.path.join(folder, 'list.txt'), 'w') as listing:
        for i in range(count):
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            cv2.imwrite(os.path.join(folder, 'im%d%s' % (i, ext)), image)
            listing.write('im%d%s %d\n' % (i, ext, i))
            images.append(image)
    return images


def placements(chw, out, crop):
    """Every (h_off, w_off, mirrored) whose crop of `chw` equals `out` exactly."""
    found = []
    for h in range(chw.shape[1] - crop + 1):
        for w in range(chw.shape[2] - crop + 1):
            window = chw[:, h:h + crop, w:w + crop].astype(np.float32)
            for flip in (False, True):
                if np.array_equal(window[:, :, ::-1] if flip else window, out):
                    found.append((h, w, flip))
    return found


IMAGE_NET = ('layer { name: "d" type: "ImageData" top: "data" top: "label" '
             'transform_param { crop_size: %d mirror: %s } '
             'image_data_param { source: "list.txt" batch_size: 4 %s } }')


def draw_batches(text, phase, count, seed):
    caffe.set_random_seed(seed)
    net = make_net(text, phase)
    try:
        out = []
        for _ in range(count):
            net.forward()
            out.append((net.blobs['data'].data.copy(), net.blobs['label'].data.copy()))
        return out
    finally:
        net.layers[0].close()


def test_train_crops_and_mirrors_cover_every_placement(in_dir, monkeypatch):
    monkeypatch.setenv('CAFFE_PY_DATA_THREADS', '2')
    images = write_images(str(in_dir), 3, 6, 5)
    seen = set()
    for data, labels in draw_batches(IMAGE_NET % (4, 'true', ''), caffe.TRAIN, 60, seed=3):
        for item, label in zip(data, labels):
            chw = images[int(label)].transpose(2, 0, 1)
            found = placements(chw, item, 4)
            assert found, 'output is not a crop/flip of its source image'
            seen.update(found)
    assert len(seen) == 3 * 2 * 2


def test_same_seed_gives_same_batches(in_dir, monkeypatch):
    write_images(str(in_dir), 5, 9, 8)
    text = IMAGE_NET % (5, 'true', 'shuffle: true')
    monkeypatch.setenv('CAFFE_PY_DATA_THREADS', '1')
    first = draw_batches(text, caffe.TRAIN, 4, seed=11)
    monkeypatch.setenv('CAFFE_PY_DATA_THREADS', '3')          # decoded on 3 threads: the same batches
    again = draw_batches(text, caffe.TRAIN, 4, seed=11)
    other = draw_batches(text, caffe.TRAIN, 4, seed=12)
    for (a, la), (b, lb) in zip(first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert any(not np.array_equal(a, b) for (a, _), (b, _) in zip(first, other))
    labels = np.concatenate([l for _, l in first])[:5]
    assert sorted(labels) == list(range(5))          # one shuffled epoch


def test_test_phase_crops_the_centre_and_mirror_still_flips(in_dir):
    images = write_images(str(in_dir), 2, 7, 6)
    flips = set()
    for data, labels in draw_batches(IMAGE_NET % (3, 'true', ''), caffe.TEST, 10, seed=0):
        for item, label in zip(data, labels):
            found = placements(images[int(label)].transpose(2, 0, 1), item, 3)
            assert all((h, w) == (2, 1) for h, w, _ in found) and found
            flips.update(flip for _, _, flip in found)
    assert flips == {False, True}                     # Caffe mirrors in TEST too when mirror: true


def test_image_data_gray_resize_scale_and_mean(in_dir):
    import cv2
    write_images(str(in_dir), 2, 10, 12)
    net = make_net('layer { name: "d" type: "ImageData" top: "data" top: "label" '
                   'transform_param { scale: 0.25 mean_value: 7 } image_data_param { source: "list.txt" '
                   'batch_size: 2 is_color: false new_height: 5 new_width: 8 } }')
    try:
        net.forward()
        for i in range(2):
            gray = cv2.resize(cv2.imread('im%d.png' % i, cv2.IMREAD_GRAYSCALE), (8, 5))
            expected = (gray.astype(np.float32) - np.float32(7)) * np.float32(0.25)
            np.testing.assert_array_equal(net.blobs['data'].data[i, 0], expected)
        assert net.blobs['data'].shape == (2, 1, 5, 8)
    finally:
        net.layers[0].close()


def test_missing_image_names_the_file(in_dir):
    write_images(str(in_dir), 2, 6, 6)
    with open('list.txt', 'a') as f:
        f.write('nowhere/lost.png 1\n')
    net = make_net(IMAGE_NET % (0, 'false', ''))
    try:
        with pytest.raises(ValueError, match='nowhere/lost.png'):
            for _ in range(3):
                net.forward()
    finally:
        net.layers[0].close()
    (in_dir / 'list.txt').write_text('gone.png 0\n')
    with pytest.raises(NetError, match='gone.png'):
        make_net(IMAGE_NET % (0, 'false', ''))


# -- Data layer on databases made here ----------------------------------------------

def write_db(path, records, backend='lmdb'):
    from caffe_py.data.db import DBWriter
    with DBWriter(path, backend) as db:
        for key, datum in records:
            db.put(key, datum if isinstance(datum, bytes) else datum.SerializeToString())


def raw_datum(array, label, as_float=False):
    datum = caffe_pb2.Datum(channels=array.shape[0], height=array.shape[1], width=array.shape[2],
                            label=label)
    if as_float:
        datum.float_data.extend(array.ravel().astype(np.float32))
    else:
        datum.data = array.astype(np.uint8).tobytes()
    return datum


DATA_NET = ('layer { name: "d" type: "Data" top: "data" top: "label" %s '
            'data_param { source: "db" backend: %s batch_size: %d } }')


@pytest.mark.parametrize('backend', ['LMDB', 'LEVELDB'])
def test_data_layer_raw_and_float_datums_in_key_order(in_dir, backend):
    if backend == 'LEVELDB':
        pytest.importorskip('plyvel')
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (2, 3, 4)) for _ in range(5)]
    records = [('%08d' % i, raw_datum(a, i, as_float=i % 2 == 1)) for i, a in enumerate(arrays)]
    write_db('db', records[::-1], backend.lower())
    net = make_net(DATA_NET % ('transform_param { scale: 0.5 mean_value: 1 mean_value: 2 }', backend, 3))
    try:
        for k in range(3):
            net.forward()
            for j in range(3):
                i = (3 * k + j) % 5
                mean = np.array([1, 2], np.float32).reshape(2, 1, 1)
                np.testing.assert_array_equal(net.blobs['data'].data[j],
                                              (arrays[i].astype(np.float32) - mean) * np.float32(0.5))
                assert net.blobs['label'].data[j] == i
    finally:
        net.layers[0].close()


def test_data_layer_single_top_and_corrupt_record(in_dir):
    write_db('db', [('a', raw_datum(np.zeros((1, 2, 2)), 0)), ('b', b'\xff\xff\xff')])
    net = make_net(DATA_NET.replace('top: "label"', '') % ('', 'LMDB', 2))
    try:
        with pytest.raises(ValueError, match='record b of db'):
            net.forward()
    finally:
        net.layers[0].close()


def test_data_layer_missing_database_is_named(in_dir):
    with pytest.raises(NetError, match='nothere'):
        make_net(DATA_NET.replace('"db"', '"nothere"') % ('', 'LMDB', 2))


def test_data_layer_encoded_force_gray(in_dir):
    import cv2
    images = write_images(str(in_dir), 2, 5, 6)
    records = [('%d' % i, caffe_pb2.Datum(data=open('im%d.png' % i, 'rb').read(), label=i, encoded=True))
               for i in range(2)]
    write_db('db', records)
    net = make_net(DATA_NET % ('transform_param { force_gray: true }', 'LMDB', 2))
    try:
        net.forward()
        for i in range(2):
            gray = cv2.cvtColor(images[i], cv2.COLOR_BGR2GRAY)
            np.testing.assert_allclose(net.blobs['data'].data[i, 0], gray, atol=1)
    finally:
        net.layers[0].close()


# -- WindowData ------------------------------------------------------------------------

def test_window_data_warps_windows_and_samples_fg_and_bg(in_dir):
    import cv2
    images = write_images(str(in_dir), 2, 12, 10)
    (in_dir / 'windows.txt').write_text(
        '# 0\nim0.png\n3 12 10\n2\n1 0.9 0 0 4 5\n0 0.1 2 3 9 11\n'
        '# 1\nim1.png\n3 12 10\n1\n2 0.8 1 1 8 6\n')
    text = ('layer { name: "w" type: "WindowData" top: "data" top: "label" '
            'transform_param { crop_size: 6 mirror: %s } window_data_param { source: "windows.txt" '
            'batch_size: 8 fg_fraction: 0.5 %s } }')
    boxes = {(1, 0): (0, 0, 4, 5), (2, 1): (1, 1, 8, 6), (0, 0): (2, 3, 9, 11)}
    caffe.set_random_seed(0)
    net = make_net(text % ('false', ''), caffe.TRAIN)
    try:
        net.forward()
        labels = net.blobs['label'].data
        assert list(labels[:4]) == [0] * 4 and set(labels[4:]) <= {1, 2}
        for item, label in zip(net.blobs['data'].data, labels):
            candidates = []
            for (lab, index), (x1, y1, x2, y2) in boxes.items():
                if lab == label:
                    warped = cv2.resize(images[index][y1:y2 + 1, x1:x2 + 1], (6, 6))
                    candidates.append(warped.transpose(2, 0, 1).astype(np.float32))
            assert any(np.array_equal(item, c) for c in candidates)
    finally:
        net.layers[0].close()
    net = make_net(text % ('true', 'context_pad: 1 crop_mode: "square"'), caffe.TRAIN)
    try:
        for _ in range(3):
            net.forward()
            assert net.blobs['data'].shape == (8, 3, 6, 6)
            assert np.isfinite(net.blobs['data'].data).all()
    finally:
        net.layers[0].close()


def test_window_data_missing_image_named(in_dir):
    (in_dir / 'windows.txt').write_text('# 0\nmissing.png\n3 12 10\n2\n1 0.9 0 0 4 5\n0 0.1 2 3 9 11\n')
    net = make_net('layer { name: "w" type: "WindowData" top: "data" top: "label" '
                   'transform_param { crop_size: 4 } window_data_param { source: "windows.txt" batch_size: 2 } }')
    try:
        with pytest.raises(ValueError, match='missing.png'):
            net.forward()
    finally:
        net.layers[0].close()


# -- parameter checks, sizes, shutdown ------------------------------------------------

def test_transform_parameter_refusals(in_dir):
    write_images(str(in_dir), 2, 6, 6)
    with pytest.raises(NetError, match='mean_file and mean_value'):
        make_net(IMAGE_NET.replace('mirror: %s', 'mirror: %s mean_file: "m.binaryproto" mean_value: 1')
                 % (0, 'false', ''))
    with pytest.raises(NetError, match='m.binaryproto'):
        make_net(IMAGE_NET.replace('mirror: %s', 'mirror: %s mean_file: "m.binaryproto"') % (0, 'false', ''))
    with pytest.raises(NetError, match='1 mean_value or as many as channels'):
        make_net(IMAGE_NET.replace('mirror: %s', 'mirror: %s mean_value: 1 mean_value: 2') % (0, 'false', ''))
    with pytest.raises(NetError, match='smaller than crop_size'):
        make_net(IMAGE_NET % (7, 'false', ''))
    with pytest.raises(NetError, match='does not transform'):
        make_net('layer { name: "d" type: "HDF5Data" top: "data" transform_param { scale: 2 } '
                 'hdf5_data_param { source: "list.txt" batch_size: 1 } }')


def test_mean_file_crop_train_matches_formula(in_dir):
    from caffe_py import formats
    images = write_images(str(in_dir), 2, 6, 7)
    mean = np.random.default_rng(3).uniform(0, 255, (1, 3, 6, 7)).astype(np.float32)
    formats.write_binaryproto('m.binaryproto', mean)
    text = IMAGE_NET.replace('mirror: %s', 'mirror: %s mean_file: "m.binaryproto" scale: 0.125')
    for data, labels in draw_batches(text % (4, 'true', ''), caffe.TRAIN, 5, seed=1):
        for item, label in zip(data, labels):
            chw = images[int(label)].transpose(2, 0, 1).astype(np.float32)
            hits = []
            for h in range(3):
                for w in range(4):
                    window = (chw[:, h:h + 4, w:w + 4] - mean[0, :, h:h + 4, w:w + 4]) * np.float32(0.125)
                    hits += [np.array_equal(item, window), np.array_equal(item, window[:, :, ::-1])]
            assert any(hits)


def test_image_sizes_must_agree_within_a_batch(in_dir):
    import cv2
    write_images(str(in_dir), 2, 6, 6)
    cv2.imwrite('im1.png', np.zeros((5, 6, 3), np.uint8))
    net = make_net(IMAGE_NET % (0, 'false', ''))
    try:
        with pytest.raises(ValueError, match='im1.png'):
            net.forward()
    finally:
        net.layers[0].close()


def test_rand_skip_starts_inside_the_source(in_dir):
    write_images(str(in_dir), 6, 4, 4)
    firsts = set()
    for seed in range(12):
        caffe.set_random_seed(seed)
        net = make_net(IMAGE_NET.replace('batch_size: 4', 'batch_size: 1') % (0, 'false', 'rand_skip: 5'))
        try:
            net.forward()
            firsts.add(int(net.blobs['label'].data[0]))
        finally:
            net.layers[0].close()
    assert firsts <= set(range(5)) and len(firsts) > 1


def test_closed_layer_refuses_forward(in_dir):
    write_images(str(in_dir), 2, 4, 4)
    net = make_net(IMAGE_NET % (0, 'false', ''))
    net.layers[0].close()
    with pytest.raises(Exception, match='closed'):
        net.forward()


def test_interpreter_exits_with_prefetching_running(in_dir):
    import subprocess
    import sys
    write_images(str(in_dir), 4, 30, 30)
    script = ('import caffe_py as caffe\n'
              'from google.protobuf import text_format\n'
              'p = text_format.Parse(%r, caffe.net.caffe_pb2.NetParameter())\n'
              'net = caffe.Net(p, caffe.TRAIN)\n'
              'net.forward()\n' % (IMAGE_NET % (20, 'true', 'shuffle: true')))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, GLOG_minloglevel='2')
    done = subprocess.run([sys.executable, '-c', script], env=env, timeout=60, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_two_nets_read_the_same_lmdb(in_reference_data):
    first = caffe.Net('data_lmdb_crop_mean_file.prototxt', caffe.TEST)
    second = caffe.Net('data_lmdb_crop_mean_file.prototxt', caffe.TEST)
    try:
        first.forward()
        first.forward()
        second.forward()
        np.testing.assert_array_equal(first.blobs['label'].data, [4, 0, 1, 2])
        np.testing.assert_array_equal(second.blobs['label'].data, [0, 1, 2, 3])
        first.layers[0].close()
        second.forward()
        np.testing.assert_array_equal(second.blobs['label'].data, [4, 0, 1, 2])
    finally:
        first.layers[0].close()
        second.layers[0].close()
