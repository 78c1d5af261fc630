"""The schema for fork layers: prototxts parse by name, binaries written with each fork's field
numbers are read by layer type (caffe_py.formats.fork_fields), caffe_pb2 loads on old runtimes."""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from caffe_py import TEST, Net, formats
from caffe_py.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- a hand-written wire encoder, numbering fields as each fork's caffe.proto does ---------------

def varint(value):
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def vint(number, value):
    return varint(number << 3) + varint(value)


def f32(number, value):
    return varint(number << 3 | 5) + struct.pack('<f', value)


def msg(number, *parts):
    body = b''.join(p.encode() if isinstance(p, str) else p for p in parts)
    return varint(number << 3 | 2) + varint(len(body)) + body


def layer(name, kind, *parts, bottoms=('data',), tops=None):
    return msg(100, msg(1, name), msg(2, kind), *(msg(3, b) for b in bottoms),
               *(msg(4, t) for t in (tops or (name,))), *parts)


def blob(values, shape):
    data = b''.join(struct.pack('<f', v) for v in values)
    return msg(7, msg(7, *(vint(1, d) for d in shape)), varint(5 << 3 | 2) + varint(len(data)) + data)


def filler(number, kind, value):
    return msg(number, msg(1, kind), f32(2, value))


CONV = layer('conv', 'Convolution', msg(106, vint(1, 2), vint(4, 1)), blob([1.5, -2.0], (2, 1, 1, 1)),
             blob([0.25, 0.5], (2,)))


def read(data, tmp_path):
    path = tmp_path / 'fork.caffemodel'
    path.write_bytes(data)
    return formats.read_net(str(path), binary=True, upgrade=False)


def test_deeplab_pspnet_interp_143_is_not_read_as_input_param(tmp_path):
    data = CONV + layer('interp', 'Interp', msg(143, vint(1, 65), vint(2, 33), vint(4, 2), vint(5, 0)),
                        bottoms=('conv',))
    plain = caffe_pb2.NetParameter.FromString(data)      # what a BVLC reader sees
    assert plain.layer[1].HasField('input_param') and not plain.layer[1].HasField('interp_param')
    net = read(data, tmp_path)
    interp = net.layer[1]
    assert not interp.HasField('input_param')
    assert (interp.interp_param.height, interp.interp_param.width, interp.interp_param.shrink_factor) == (65, 33, 2)
    assert interp.interp_param.HasField('pad_beg')
    np.testing.assert_array_equal(net.layer[0].blobs[0].data, [1.5, -2.0])


def test_segnet_upsample_137_bn_45_dense_image_data_138(tmp_path):
    data = (layer('data', 'DenseImageData', msg(138, msg(1, 'train.txt'), vint(2, 4), vint(4, 1)), bottoms=(),
                  tops=('data', 'label'))
            + CONV
            + layer('bn', 'BN', msg(45, filler(1, 'constant', 1.0), filler(2, 'constant', 0.001), vint(3, 1)),
                    blob([1, 1], (1, 2, 1, 1)), blob([0, 0], (1, 2, 1, 1)), bottoms=('conv',))
            + layer('up', 'Upsample', msg(137, vint(1, 2), vint(6, 90), vint(7, 120)), bottoms=('bn', 'mask'))
            + layer('embed', 'Embed', msg(137, vint(1, 10), vint(2, 5)))
            + layer('loss', 'SoftmaxWithLoss', msg(101, vint(1, 11), vint(3, 1), f32(4, 0.5), f32(4, 2.0)),
                    bottoms=('up', 'label'))
            + layer('loss2', 'SoftmaxWithLoss', msg(101, vint(3, 0)), bottoms=('up', 'label')))
    net = read(data, tmp_path)
    dense, bn, up, embed, loss, loss2 = net.layer[0], net.layer[2], net.layer[3], net.layer[4], net.layer[5], net.layer[6]
    assert not dense.HasField('tile_param')
    assert (dense.dense_image_data_param.source, dense.dense_image_data_param.batch_size,
            dense.dense_image_data_param.shuffle) == ('train.txt', 4, True)
    assert bn.bn_param.bn_mode == caffe_pb2.BNParameter.INFERENCE
    assert bn.bn_param.shift_filler.value == pytest.approx(0.001) and len(bn.blobs) == 2
    assert not up.HasField('embed_param')
    assert (up.upsample_param.scale, up.upsample_param.upsample_h, up.upsample_param.upsample_w) == (2, 90, 120)
    assert (embed.embed_param.num_output, embed.embed_param.input_dim) == (10, 5)   # BVLC's own 137 stays
    assert loss.loss_param.weight_by_label_freqs and list(loss.loss_param.class_weighting) == [0.5, 2.0]
    assert not loss.loss_param.HasField('normalization') and loss.loss_param.ignore_label == 11
    assert loss2.loss_param.normalization == caffe_pb2.LossParameter.FULL    # BVLC's own 3 stays


def test_deeplab_image_seg_data_and_rfcn_pre_fixed_normalization(tmp_path):
    L = caffe_pb2.LossParameter
    data = (layer('data', 'ImageSegData', msg(100, vint(3, 321), f32(8, 0.5), f32(8, 1.5), vint(9, 300), vint(10, 200)),
                  msg(115, vint(4, 10), vint(15, 255), vint(16, 2)), bottoms=(), tops=('data', 'label'))
            + layer('plain', 'ImageData', msg(100, vint(3, 5)), bottoms=(), tops=('data2', 'label2'))
            + layer('bbox', 'SmoothL1Loss', msg(101, vint(3, 3), f32(4, 128.0)), bottoms=('a', 'b', 'w'))
            + layer('none', 'SmoothL1Loss', msg(101, vint(3, 4), f32(4, 1.0)), bottoms=('a', 'b', 'w'))
            + layer('bvlc', 'SmoothL1Loss', msg(101, vint(3, 3)), bottoms=('a', 'b', 'w')))
    seg, plain, bbox, none, bvlc = read(data, tmp_path).layer
    t = seg.transform_param
    assert (t.crop_size, list(t.scale_factors), t.crop_width, t.crop_height) == (321, [0.5, 1.5], 300, 200)
    assert (seg.image_data_param.label_type, seg.image_data_param.ignore_label) == (2, 255)
    assert plain.transform_param.crop_size == 5
    assert (bbox.loss_param.normalization, bbox.loss_param.pre_fixed_normalizer) == (L.PRE_FIXED, 128.0)
    assert none.loss_param.normalization == L.NONE
    assert bvlc.loss_param.normalization == L.NONE       # without R-FCN's normalizer: BVLC's 3


def test_pspnet_bn_152_joins_the_bn_message(tmp_path):
    data = CONV + layer('bn', 'BN', msg(152, filler(1, 'constant', 1.0), filler(2, 'constant', 0.0),
                                         f32(3, 0.95), f32(4, 1e-5), vint(5, 1)),
                        *(blob([v, v], (1, 2, 1, 1)) for v in (1.0, 0.0, 0.5, 4.0)), bottoms=('conv',))
    bn = read(data, tmp_path).layer[1].bn_param
    assert (bn.slope_filler.value, bn.frozen) == (1.0, True)
    assert bn.momentum == pytest.approx(0.95) and bn.eps == pytest.approx(1e-5)
    assert not bn.HasField('bn_mode') and not bn.HasField('scale_filler')


def test_non_colliding_fork_numbers_read_directly(tmp_path):
    data = (CONV + layer('roi', 'ROIPooling', msg(8266711, vint(1, 7), vint(2, 6), f32(3, 0.0625)),
                         bottoms=('conv', 'rois'))
            + layer('ps', 'PSROIPooling', msg(10001, f32(1, 0.0625), vint(2, 21), vint(3, 7)), bottoms=('conv', 'rois'))
            + layer('loss', 'SmoothL1Loss', msg(8266712, f32(1, 3.0)), bottoms=('a', 'b'))
            + layer('reorg', 'Reorg', msg(149, vint(1, 2)))
            + layer('up', 'Upsample', msg(150, vint(1, 2)))
            + layer('shuffle', 'ShuffleChannel', msg(164, vint(1, 3))))
    assert formats.parse_binary(data, caffe_pb2.NetParameter) == caffe_pb2.NetParameter.FromString(data)
    net = read(data, tmp_path)
    roi, ps, loss, reorg, up, shuffle = net.layer[1:]
    assert (roi.roi_pooling_param.pooled_h, roi.roi_pooling_param.pooled_w) == (7, 6)
    assert (ps.psroi_pooling_param.output_dim, ps.psroi_pooling_param.group_size) == (21, 7)
    assert loss.smooth_l1_loss_param.sigma == 3.0
    assert (reorg.reorg_param.stride, up.upsample_param.scale, shuffle.shuffle_channel_param.group) == (2, 2, 3)


def test_weights_of_a_fork_caffemodel_load_by_layer_name(tmp_path):
    data = (layer('interp', 'Interp', msg(143, vint(3, 2)))
            + layer('bn', 'BN', msg(152, f32(3, 0.9), vint(5, 1)),
                    *(blob([v] * 3, (1, 3, 1, 1)) for v in (2.0, 1.0, 0.5, 4.0)), bottoms=('interp',)))
    path = tmp_path / 'psp.caffemodel'
    path.write_bytes(data)
    text = ('input: "data" input_shape { dim: 1 dim: 3 dim: 2 dim: 2 }\n'
            'layer { name: "interp" type: "Interp" bottom: "data" top: "interp" interp_param { zoom_factor: 2 } }\n'
            'layer { name: "bn" type: "BN" bottom: "interp" top: "bn" bn_param { frozen: true } }\n')
    proto = tmp_path / 'psp.prototxt'
    proto.write_text(text)
    net = Net(str(proto), TEST, weights=str(path))
    out = net.forward(data=np.ones((1, 3, 2, 2), np.float32))['bn']
    assert out.shape == (1, 3, 3, 3)
    np.testing.assert_allclose(out, 2 * (1 - 0.5) / np.sqrt(4 + 1e-5) + 1, rtol=1e-6)


def test_malformed_bytes_are_left_to_the_parser():
    from caffe_py.formats.fork_fields import renumber_net
    assert renumber_net(b'\x0a\xff') == b'\x0a\xff'
    with pytest.raises(formats.ProtoParseError):
        formats.parse_binary(b'\x0a\xff', caffe_pb2.NetParameter)


def test_generated_code_needs_no_runtime_version_and_loads_fresh():
    text = open(os.path.join(ROOT, 'caffe_py', 'proto', 'caffe_pb2.py'), encoding='utf-8').read()
    assert 'ValidateProtobufRuntimeVersion' not in text, 'caffe_pb2.py must come from protoc 3.20/3.21'
    code = ('from caffe_py.proto import caffe_pb2 as p; '
            'assert p.LayerParameter.DESCRIPTOR.fields_by_name["interp_param"].number == 100143')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT)


def test_rfcn_pre_fixed_survives_a_round_trip_through_our_own_files(tmp_path):
    """What caffe-py writes reads back the same, here and in R-FCN: SmoothL1Loss's normalization is
    written in R-FCN's numbering (PRE_FIXED 3) whenever its pre_fixed_normalizer is there."""
    L = caffe_pb2.LossParameter
    net = caffe_pb2.NetParameter()
    for name, mode in (('fixed', L.PRE_FIXED), ('none', L.NONE), ('valid', L.VALID)):
        lay = net.layer.add(name=name, type='SmoothL1Loss', bottom=['a', 'b'])
        lay.loss_param.normalization = mode
        lay.loss_param.pre_fixed_normalizer = 64.0
    path = str(tmp_path / 'own.caffemodel')
    formats.write_net(path, net)
    back = formats.read_net(path, binary=True, upgrade=False)
    assert [lay.loss_param.normalization for lay in back.layer] == [L.PRE_FIXED, L.NONE, L.VALID]
    rfcn_numbering = caffe_pb2.NetParameter.FromString(open(path, 'rb').read())
    assert [lay.loss_param.normalization for lay in rfcn_numbering.layer] == [L.NONE, L.PRE_FIXED, L.VALID]
