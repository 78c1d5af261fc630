"""DeepLab v2's ImageSegData: hand cases of TransformImgAndSeg (padding, centre crop, scale
factors), labels aligned with pixels after random crop and mirror, label types, training."""
import cv2
import numpy as np
import pytest

import caffe_py as caffe
from caffe_py import TEST, TRAIN, Net, backend
from caffe_py.proto import caffe_pb2


def write_list(tmp_path, items, name='list.txt'):
    """items: (file name, image array, label) with label an array (written as a PNG) or text."""
    lines = []
    for stem, image, label in items:
        cv2.imwrite(str(tmp_path / (stem + '.png')), image)
        if isinstance(label, np.ndarray):
            cv2.imwrite(str(tmp_path / (stem + '_seg.png')), label)
            label = stem + '_seg.png'
        lines.append(('%s.png %s' % (stem, label)).strip())
    (tmp_path / name).write_text('\n'.join(lines) + '\n')
    return tmp_path / name


def data_net(tmp_path, source, params, phase=TEST, tops=('data', 'label')):
    text = ('layer { name: "data" type: "ImageSegData" %s %s image_data_param { source: "%s" root_folder: "%s/" %s } }'
            % (' '.join('top: "%s"' % t for t in tops), params.get('transform', ''), source, tmp_path,
               params.get('image', '')))
    return Net(caffe.formats.parse_text(text, caffe_pb2.NetParameter()), phase)


def test_test_phase_pads_with_mean_and_ignore_label_then_crops_the_centre(tmp_path):
    image = np.array([[1, 2], [3, 4], [5, 6]], np.uint8)
    label = np.array([[0, 1], [2, 3], [4, 5]], np.uint8)
    source = write_list(tmp_path, [('a', image, label)])
    net = data_net(tmp_path, source, {'transform': 'transform_param { crop_size: 4 mean_value: 7 scale: 2 }',
                                      'image': 'batch_size: 1 is_color: false label_type: PIXEL'},
                   tops=('data', 'label', 'dim'))
    net.forward()
    expected = np.zeros((4, 4))                 # padded below and right with the mean: 0 once subtracted
    expected[:3, :2] = (image - 7.0) * 2
    np.testing.assert_array_equal(net.blobs['data'].data[0, 0], expected)
    seg = np.full((4, 4), 255.0)
    seg[:3, :2] = label
    np.testing.assert_array_equal(net.blobs['label'].data[0, 0], seg)
    np.testing.assert_array_equal(net.blobs['dim'].data.reshape(-1), [3, 2])

    big = np.arange(20, dtype=np.uint8).reshape(5, 4)
    source = write_list(tmp_path, [('b', big, big + 1)], 'big.txt')
    net = data_net(tmp_path, source, {'transform': 'transform_param { crop_height: 3 crop_width: 2 }',
                                      'image': 'batch_size: 1 is_color: false label_type: PIXEL'},
                   tops=('data', 'label', 'dim'))
    net.forward()                               # centre: rows (5 - 3) // 2 = 1.., columns 1..
    np.testing.assert_array_equal(net.blobs['data'].data[0, 0], big[1:4, 1:3])
    np.testing.assert_array_equal(net.blobs['label'].data[0, 0], big[1:4, 1:3] + 1)
    np.testing.assert_array_equal(net.blobs['dim'].data.reshape(-1), [3, 2])


def test_scale_factors_resize_image_and_label_before_padding(tmp_path):
    image = np.tile(np.arange(10, dtype=np.uint8) * 20 + 10, (12, 1))
    label = np.tile((np.arange(10) // 2).astype(np.uint8), (12, 1))
    source = write_list(tmp_path, [('a', image, label)])
    net = data_net(tmp_path, source, {'transform': 'transform_param { crop_size: 8 scale_factors: 0.5 }',
                                      'image': 'batch_size: 1 is_color: false label_type: PIXEL'})
    net.forward()
    data, seg = net.blobs['data'].data[0, 0], net.blobs['label'].data[0, 0]
    np.testing.assert_array_equal(data[:6, :5], cv2.resize(image, (5, 6)))
    np.testing.assert_array_equal(seg[:6, :5], cv2.resize(label, (5, 6), interpolation=cv2.INTER_NEAREST))
    assert (data[6:] == 0).all() and (data[:, 5:] == 0).all()
    assert (seg[6:] == 255).all() and (seg[:, 5:] == 255).all()


def test_random_crop_and_mirror_keep_labels_aligned_with_pixels(tmp_path):
    backend.set_random_seed(1)
    rng = np.random.default_rng(0)
    items = []
    for i, size in enumerate([(12, 10), (6, 9), (9, 5)]):
        image = rng.integers(50, 250, size + (3,)).astype(np.uint8)
        items.append(('im%d' % i, image, image[:, :, 0] // 50))     # label: a function of the pixel
    source = write_list(tmp_path, items)
    net = data_net(tmp_path, source, {
        'transform': 'transform_param { crop_size: 8 mirror: true mean_value: 10 mean_value: 20 '
                     'mean_value: 30 scale: 0.5 }',
        'image': 'batch_size: 2 label_type: PIXEL'}, phase=TRAIN, tops=('data', 'label', 'dim'))
    mirrored = 0
    for step in range(12):
        net.forward()
        data, label = net.blobs['data'].data, net.blobs['label'].data[:, 0]
        assert data.shape == (2, 3, 8, 8) and label.shape == (2, 8, 8)
        pad = label == 255
        assert (data.transpose(1, 0, 2, 3)[:, pad] == 0).all()     # padding: the mean, subtracted
        np.testing.assert_array_equal(label[~pad], np.rint(data[:, 0][~pad] / 0.5 + 10) // 50)
        for k in range(2):                      # padding sits right (or left once mirrored)
            index = (2 * step + k) % 3
            h, w = items[index][1].shape[:2]
            np.testing.assert_array_equal(net.blobs['dim'].data[k].reshape(-1), [min(8, h), min(8, w)])
            if w < 8:
                right = pad[k][:, w:].all()
                mirrored += not right
                assert right or pad[k][:, :8 - w].all()
    assert mirrored > 0


def test_label_types_image_and_none(tmp_path):
    image = np.full((4, 5, 3), 9, np.uint8)
    source = write_list(tmp_path, [('a', image, '7'), ('b', image, '300')])
    net = data_net(tmp_path, source, {'image': 'batch_size: 2 label_type: IMAGE'})
    net.forward()
    np.testing.assert_array_equal(net.blobs['label'].data[:, 0], [np.full((4, 5), 7), np.full((4, 5), 255)])
    source = write_list(tmp_path, [('a', image, '')], 'none.txt')
    net = data_net(tmp_path, source, {'image': 'batch_size: 1 label_type: NONE ignore_label: 254'})
    net.forward()
    assert (net.blobs['label'].data == 254).all() and (net.blobs['data'].data == 9).all()


def test_settings_the_fork_refuses(tmp_path):
    source = write_list(tmp_path, [('a', np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))])
    with pytest.raises(Exception, match='mean file'):
        data_net(tmp_path, source, {'transform': 'transform_param { mean_file: "m.binaryproto" }'})
    with pytest.raises(Exception, match='crop_size or both crop_height and crop_width'):
        data_net(tmp_path, source, {'transform': 'transform_param { crop_size: 3 crop_height: 2 }'})
    with pytest.raises(Exception, match='list.txt'):
        data_net(tmp_path, tmp_path / 'missing' / 'list.txt', {})


def test_a_deeplab_style_net_trains_from_image_seg_data(tmp_path):
    rng = np.random.default_rng(1)
    items = []
    for i in range(4):                          # label: whether a pixel's blue channel is above the middle
        image = rng.integers(0, 256, (14, 12, 3)).astype(np.uint8)
        items.append(('im%d' % i, image, image[:, :, 0] // 128))
    source = write_list(tmp_path, items)
    net_text = (
        'layer { name: "data" type: "ImageSegData" top: "data" top: "label" include { phase: TRAIN } '
        'transform_param { crop_size: 16 mirror: true mean_value: 128 scale: 0.0078 } '
        'image_data_param { source: "%s" root_folder: "%s/" batch_size: 2 shuffle: true label_type: PIXEL } } '
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 '
        'kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } } '
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "label" top: "loss" '
        'loss_param { ignore_label: 255 } }' % (source, tmp_path))
    solver_text = ('base_lr: 0.5 momentum: 0.9 lr_policy: "fixed" max_iter: 30 display: 0 random_seed: 3 '
                   'snapshot_after_train: false solver_mode: CPU net_param { %s }' % net_text)
    (tmp_path / 'solver.prototxt').write_text(solver_text)
    solver = caffe.get_solver(str(tmp_path / 'solver.prototxt'))
    solver.step(1)
    first = float(solver.net.blobs['loss'].data)
    solver.step(29)
    losses = []
    for _ in range(4):
        solver.net.forward()
        losses.append(float(solver.net.blobs['loss'].data))
    assert np.mean(losses) < 0.5 * first


def test_on_the_cupy_stand_in_the_tops_match_the_cpu(tmp_path):
    import fakecupy
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (7, 6, 3)).astype(np.uint8)
    source = write_list(tmp_path, [('a', image, image[:, :, 1] // 64)])
    params = {'transform': 'transform_param { crop_size: 8 mean_value: 3 }', 'image': 'batch_size: 2 label_type: PIXEL'}
    host = data_net(tmp_path, source, params)
    host.forward()
    with fakecupy.fake_gpu():
        device = data_net(tmp_path, source, params)
        device.forward()
        for name in ('data', 'label'):
            np.testing.assert_array_equal(device.blobs[name].data, host.blobs[name].data)
