"""caffe.coord_map as pycaffe's (BVLC python/caffe/test/test_coord_map.py cases), and crop()'s
Crop layers building and aligning in a Net."""
import numpy as np
import pytest

import caffe_py as caffe
from caffe_py import layers as L, params as P
from caffe_py.coord_map import (AxisMismatchException, UndefinedMapException, compose,
                                conv_params, coord_map_from_to, crop, crop_params)


def coord_net_spec(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    """conv - pool - deconv over a 100 x 100 input (deconv kernel twice its stride)."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.aux = L.Input(shape=dict(dim=[2, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool, pad=0)
    deconv_ks = [s * 2 for s in dstride] if isinstance(dstride, list) else dstride * 2
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=deconv_ks, stride=dstride, pad=dpad)
    return n


def test_conv_pool_deconv():
    n = coord_net_spec()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert (ax, a, b) == (1, 1, 0)
    n = coord_net_spec(pool=4, dstride=4)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert (ax, a, b) == (1, 1, -1)


def test_pass_through_and_1x1_conv_are_identities():
    n = coord_net_spec()
    expected = coord_map_from_to(n.deconv, n.data)
    n.relu = L.ReLU(n.deconv)
    n.conv1x1 = L.Convolution(n.relu, num_output=10, kernel_size=1, stride=1, pad=0)
    for top in (n.relu, n.conv1x1):
        assert coord_map_from_to(top, n.data) == expected


@pytest.mark.parametrize('pad', [1, 7])
def test_padding_shifts(pad):
    _, a, b = coord_map_from_to(*_deconv_data(coord_net_spec()))
    _, a_pad, b_pad = coord_map_from_to(*_deconv_data(coord_net_spec(pad=pad)))
    assert (a_pad, b_pad) == (a, b - pad)
    _, a_pad, b_pad = coord_map_from_to(*_deconv_data(coord_net_spec(dpad=pad)))
    assert (a_pad, b_pad) == (a, b + pad)
    _, a_pad, b_pad = coord_map_from_to(*_deconv_data(coord_net_spec(pad=pad, dpad=pad)))
    assert (a_pad, b_pad) == (a, b)


def _deconv_data(n):
    return n.deconv, n.data


def test_multi_bottom_tops_map_alike():
    n = coord_net_spec()
    n.conv_data, n.conv_aux = L.Convolution(n.data, n.aux, ntop=2, num_output=10, kernel_size=5,
                                            stride=2, pad=0)
    assert coord_map_from_to(n.conv_data, n.data) == coord_map_from_to(n.conv_aux, n.aux)


def test_rect_maps_per_axis():
    maps = [coord_map_from_to(*_deconv_data(coord_net_spec(ks=ks, stride=s, pad=p)))
            for ks, s, p in ((3, 1, 0), (5, 2, 10), ([3, 5], [1, 2], [0, 10]))]
    (ax33, a33, b33), (ax55, a55, b55), (ax35, a35, b35) = maps
    assert ax33 == ax55 == ax35 == 1
    assert (a35[0], b35[0], a35[1], b35[1]) == (a33, b33, a55, b55)


def test_nd_conv():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 100, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=[3, 3, 3], stride=[1, 1, 1], pad=[0, 1, 2])
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2, pad=0)
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=4, stride=2, pad=0)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1 and len(a) == len(b) == 3 and (a == 1).all()
    assert b[0] - 1 == b[1] and b[1] - 1 == b[2]


@pytest.mark.parametrize('offset', [0, 6])
def test_crop_of_crop_adds_its_offset(offset):
    n = coord_net_spec()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=offset)
    assert coord_map_from_to(n.crop, n.data) == (ax, a, b + offset)


def test_unconnected_scale_mismatch_and_negative_crops_are_caught():
    n = coord_net_spec()
    n.ip = L.InnerProduct(n.deconv, num_output=10)
    with pytest.raises(RuntimeError, match='connected by spatial layers'):
        coord_map_from_to(n.ip, n.data)
    with pytest.raises(RuntimeError):                     # tops of two specs share nothing
        coord_map_from_to(n.deconv, coord_net_spec().data)
    with pytest.raises(AssertionError, match='scale mismatch'):
        crop(*_deconv_data(coord_net_spec(pool=3, dstride=2)))
    with pytest.raises(AssertionError, match='negative offset'):
        crop(*_deconv_data(coord_net_spec(dpad=10)))
    with pytest.raises(AssertionError, match='noninteger offset'):
        crop(*_deconv_data(coord_net_spec(ks=2)))


def test_parameters_and_errors():
    n = coord_net_spec(ks=3)
    n.dil = L.Convolution(n.data, convolution_param=dict(num_output=1, kernel_size=3, dilation=2, stride=2))
    assert [list(np.atleast_1d(v)) for v in conv_params(n.dil.fn)] == [[1], [2], [5], [0]]
    n.crop = L.Crop(n.deconv, n.data, crop_param=dict(axis=3, offset=[1]))
    assert crop_params(n.crop.fn)[0] == 3 and list(crop_params(n.crop.fn)[1]) == [1]
    with pytest.raises(AxisMismatchException):
        compose((1, 1, 0), (2, 1, 0))
    n.legacy = L.Convolution(n.data, num_output=1, kernel_h=3, kernel_w=3)
    with pytest.raises(AssertionError, match='legacy _h/_w'):
        coord_map_from_to(n.legacy, n.data)
    assert issubclass(UndefinedMapException, Exception)


def test_crop_builds_a_caffe_crop_that_aligns():
    """FCN's pattern: a padded conv, pooling by 2, upsampling by 2, cropped back to the input.
    An impulse in the input lights exactly its own 2 x 2 pooling cell in the crop."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 12, 12]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=3, pad=5, bias_term=False)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.AVE, kernel_size=2, stride=2)
    n.up = L.Deconvolution(n.pool, convolution_param=dict(num_output=1, kernel_size=2, stride=2,
                                                          bias_term=False))
    n.score = crop(n.up, n.data)
    layer = n.to_proto().layer[-1]
    assert layer.type == 'Crop' and list(layer.bottom) == ['up', 'data']
    assert layer.crop_param.axis == 2 and list(layer.crop_param.offset) == [4]
    net = caffe.Net(n.to_proto(), caffe.TEST)
    assert net.blobs['score'].shape == net.blobs['data'].shape
    net.params['conv'][0].data[...] = 0
    net.params['conv'][0].data[0, 0, 1, 1] = 1           # a delta: conv only shifts
    net.params['up'][0].data[...] = 1                      # nearest-neighbour upsampling
    image = np.zeros((1, 1, 12, 12))
    image[0, 0, 7, 2] = 4
    score = net.forward(data=image)['score'][0, 0]
    assert sorted(zip(*np.nonzero(score))) == [(6, 2), (6, 3), (7, 2), (7, 3)]
    np.testing.assert_allclose(score[6:8, 2:4], 1)


def test_reachable_as_caffe_coord_map():
    import caffe_py.coord_map as module
    assert caffe.coord_map is module and caffe.coord_map.crop is crop


def fcn32s(width=2):
    """FCN-32s as its net.py writes it (conv1_1 padded by 100, five poolings, fc6 7 x 7,
    32x upsampling), with `width` channels instead of 64..4096."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 64, 64]))
    bottom = n.data
    for stage, convs in enumerate((2, 2, 3, 3, 3), 1):
        for i in range(1, convs + 1):
            name = 'conv%d_%d' % (stage, i)
            n[name] = L.Convolution(bottom, num_output=width, kernel_size=3, stride=1,
                                    pad=100 if name == 'conv1_1' else 1,
                                    param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)])
            n['relu%d_%d' % (stage, i)] = bottom = L.ReLU(n[name], in_place=True)
        n['pool%d' % stage] = bottom = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.fc6 = L.Convolution(bottom, num_output=width, kernel_size=7, pad=0)
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7 = L.Convolution(n.drop6, num_output=width, kernel_size=1, pad=0)
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    n.score_fr = L.Convolution(n.drop7, num_output=21, kernel_size=1, pad=0)
    n.upscore = L.Deconvolution(n.score_fr, convolution_param=dict(num_output=21, kernel_size=64, stride=32,
                                                                   bias_term=False), param=[dict(lr_mult=0)])
    n.score = crop(n.upscore, n.data)
    return n


def test_fcn32s_crop_is_the_published_offset_and_builds():
    n = fcn32s()
    score = n.to_proto().layer[-1]
    assert (score.crop_param.axis, list(score.crop_param.offset)) == (2, [19])   # FCN's train.prototxt
    net = caffe.Net(n.to_proto(), caffe.TEST)
    assert net.blobs['score'].shape == (1, 21, 64, 64)
