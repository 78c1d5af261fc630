"""DeepLab v2's MatWrite/MatRead: MAT v5 files as the fork's matio calls write them (variable
"data", single for float nets, MATLAB size W x H x C x N), list naming, period, errors."""
import numpy as np
import pytest
import scipy.io

from harness import layer_net


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_mat_write_files_as_matlab_sees_them(tmp_path):
    (tmp_path / 'list.txt').write_text('2007_000033.jpg extra\n2007_000042.jpg\n')
    x, s = rand(2, 3, 4, 5), rand(2, 1, 1, 1, seed=1)
    layer = ('type: "MatWrite" mat_write_param { prefix: "%s/" source: "%s/list.txt" strip: 4 }'
             % (tmp_path, tmp_path))
    net = layer_net({'x': x, 's': s}, layer, dtype=np.float32, tops=())
    net.forward()
    raw = scipy.io.loadmat(str(tmp_path / '2007_000033_blob_0.mat'))
    assert set(k for k in raw if not k.startswith('__')) == {'data'}     # no 'diff'
    data = raw['data']
    assert data.dtype == np.float32 and data.shape == (5, 4, 3, 2)     # MATLAB: W x H x C x N
    n, c, h, w = 1, 2, 3, 0
    assert data[w, h, c, n] == x[n, c, h, w]
    np.testing.assert_array_equal(data, x.transpose(3, 2, 1, 0))
    second = scipy.io.loadmat(str(tmp_path / '2007_000033_blob_1.mat'))['data']
    assert second.shape == (1, 1, 1, 2) and second.ravel().tolist() == s.ravel().tolist()
    net.blobs['x'].data[...] = 7
    net.forward()
    assert (scipy.io.loadmat(str(tmp_path / '2007_000042_blob_0.mat'))['data'] == 7).all()
    with pytest.raises(ValueError, match='more iterations than it was supposed to: forward 2, '
                                         'mat_write_param.source .*list.txt lists 2 files'):
        net.forward()


def test_mat_write_period_and_iteration_names_in_double(tmp_path):
    layer = 'type: "MatWrite" mat_write_param { prefix: "%s/fc8_" period: 2 }' % tmp_path
    net = layer_net({'x': rand(1, 2, 3, 3).astype(np.float64)}, layer, tops=())
    for _ in range(3):
        net.forward()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['fc8_iter_0_blob_0.mat', 'fc8_iter_2_blob_0.mat']
    assert scipy.io.loadmat(str(tmp_path / 'fc8_iter_2_blob_0.mat'))['data'].dtype == np.float64


def test_mat_read_reads_what_mat_write_and_matlab_write(tmp_path):
    (tmp_path / 'ids.txt').write_text('a\nb\n')
    x = rand(2, 3, 4, 5)
    for i, name in enumerate('ab'):
        layer_net({'x': x[i:i + 1]}, 'type: "MatWrite" mat_write_param { prefix: "%s/%s" }' % (tmp_path, name),
                  dtype=np.float32, tops=()).forward()
        (tmp_path / (name + 'iter_0_blob_0.mat')).rename(tmp_path / (name + '_blob_0.mat'))
    layer = ('type: "MatRead" mat_read_param { prefix: "%s/" source: "%s/ids.txt" batch_size: 3 }'
             % (tmp_path, tmp_path))
    net = layer_net({}, layer, dtype=np.float32)
    net.forward()
    np.testing.assert_array_equal(net.blobs['y'].data, x[[0, 1, 0]])      # the list starts over
    net.forward()
    np.testing.assert_array_equal(net.blobs['y'].data, x[[1, 0, 1]])
    # a MATLAB-style H x W x C single array (size(data) == [5 4 3]) is one (1, 3, 4, 5) blob
    scipy.io.savemat(str(tmp_path / 'iter_0_blob_0.mat'), {'data': x[0].transpose(2, 1, 0)})
    net = layer_net({}, 'type: "MatRead" mat_read_param { prefix: "%s/" }' % tmp_path, dtype=np.float32)
    net.forward()
    np.testing.assert_array_equal(net.blobs['y'].data, x[:1])


def test_mat_files_fail_with_path_and_setting(tmp_path):
    scipy.io.savemat(str(tmp_path / 'd_blob_0.mat'), {'data': np.ones((5, 4, 3))})    # MATLAB's double
    scipy.io.savemat(str(tmp_path / 'e_blob_0.mat'), {'other': np.ones((5, 4), np.float32)})
    read = 'type: "MatRead" mat_read_param { prefix: "%s/%s" }'
    (tmp_path / 'l.txt').write_text('d\n')
    with pytest.raises(ValueError, match=r"MatRead layer \"L\": Field 'data' must be of the right class "
                                         r"\(single for this float32 net\) in MAT file .*d_blob_0.mat"):
        layer_net({}, 'type: "MatRead" mat_read_param { prefix: "%s/" source: "%s/l.txt" }' % (tmp_path, tmp_path),
                  dtype=np.float32)
    (tmp_path / 'l.txt').write_text('e\n')
    with pytest.raises(ValueError, match="Field 'data' not present in MAT file .*e_blob_0.mat"):
        layer_net({}, 'type: "MatRead" mat_read_param { prefix: "%s/" source: "%s/l.txt" }' % (tmp_path, tmp_path))
    with pytest.raises(ValueError, match='Error opening MAT file .*nothere_iter_0_blob_0.mat'):
        layer_net({}, read % (tmp_path, 'nothere_'))
    with pytest.raises(ValueError, match='mat_read_param.prefix is required'):
        layer_net({}, 'type: "MatRead"')
    with pytest.raises(ValueError, match='Too much stripping: .*l.txt line 1 .* mat_write_param.strip 4'):
        layer_net({'x': rand(1, 1, 1, 1)}, 'type: "MatWrite" mat_write_param { prefix: "p" source: "%s/l.txt" '
                  'strip: 4 }' % tmp_path, tops=())
    with pytest.raises(ValueError, match='Error creating MAT file .*no/such/dir/iter_0_blob_0.mat'):
        layer_net({'x': rand(1, 1, 1, 1)}, 'type: "MatWrite" mat_write_param { prefix: "%s/no/such/dir/" }'
                  % tmp_path, tops=()).forward()


def test_mat_io_in_gpu_mode_on_the_cupy_stand_in(tmp_path):
    import fakecupy
    x = rand(1, 2, 3, 4)
    with fakecupy.fake_gpu():
        layer_net({'x': x}, 'type: "MatWrite" mat_write_param { prefix: "%s/" }' % tmp_path,
                  dtype=np.float32, tops=()).forward()
        net = layer_net({}, 'type: "MatRead" mat_read_param { prefix: "%s/" }' % tmp_path, dtype=np.float32)
        net.forward()
        np.testing.assert_array_equal(net.blobs['y'].data, x)
