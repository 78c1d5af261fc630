"""DeepLab v2's fields: prototxts parse by name, a binary written with DeepLab's numbers (144-151)
reads by layer type, and BVLC's own fields at those numbers stay BVLC's."""
from google.protobuf import text_format

from caffe_py import formats
from caffe_py.proto import caffe_pb2
from test_fork_schema import f32, layer, msg, read, vint


def test_deeplab_numbered_binary_reads_by_layer_type(tmp_path):
    data = (layer('acc', 'SegAccuracy', msg(144, vint(2, 255), vint(2, 0), vint(3, 0)), bottoms=('fc8', 'label'))
            + layer('mw', 'MatWrite', msg(145, msg(1, 'feat/'), msg(2, 'list.txt'), vint(3, 4), vint(4, 2)),
                    tops=())
            + layer('crf', 'DenseCRF', msg(146, vint(1, 10), f32(2, 3.0)), bottoms=('fc8', 'dim', 'data'))
            + layer('dt', 'DomainTransform', msg(147, vint(1, 2), f32(2, 30.0)), bottoms=('fc8', 'edge', 'dim'))
            + layer('abc', 'AdaptiveBiasChannel', msg(148, vint(1, 3), f32(2, 0.4)), bottoms=('fc8', 'labels'))
            + layer('bc', 'BiasChannel', msg(149, f32(1, 5.0), vint(4, 2)), bottoms=('fc8', 'label'))
            + layer('ul', 'UniqueLabel', msg(150, vint(1, 4), vint(2, 255), f32(3, 0.0)), bottoms=('label',))
            + layer('mr', 'MatRead', msg(151, msg(1, 'in/'), vint(4, 3)), bottoms=())
            + layer('crop', 'Crop', msg(144, vint(1, 2)), bottoms=('a', 'b'))
            + layer('clip', 'Clip', msg(148, f32(1, -1.0), f32(2, 1.0))))
    acc, mw, crf, dt, abc, bc, ul, mr, crop, clip = read(data, tmp_path).layer
    assert list(acc.seg_accuracy_param.ignore_label) == [255, 0] and not acc.seg_accuracy_param.reset
    assert not acc.HasField('crop_param') and not mw.HasField('parameter_param')
    p = mw.mat_write_param
    assert (p.prefix, p.source, p.strip, p.period) == ('feat/', 'list.txt', 4, 2)
    assert crf.dense_crf_param.max_iter == 10 and list(crf.dense_crf_param.pos_xy_std) == [3.0]
    assert dt.domain_transform_param.num_iter == 2 and not dt.HasField('swish_param')
    assert abc.adaptive_bias_channel_param.num_iter == 3 and not abc.HasField('clip_param')
    assert bc.bias_channel_param.bg_bias == 5.0 and bc.bias_channel_param.label_type == bc.bias_channel_param.PIXEL
    assert not bc.HasField('reorg_param') and not ul.HasField('upsample_param')
    assert (ul.unique_label_param.max_labels, list(ul.unique_label_param.ignore_label)) == (4, [255])
    assert (mr.mat_read_param.prefix, mr.mat_read_param.batch_size) == ('in/', 3)
    assert crop.crop_param.axis == 2 and (clip.clip_param.min, clip.clip_param.max) == (-1.0, 1.0)


def test_mat_read_151_needs_no_renumbering():
    data = layer('mr', 'MatRead', msg(151, msg(1, 'in/')), bottoms=())
    assert formats.parse_binary(data, caffe_pb2.NetParameter) == caffe_pb2.NetParameter.FromString(data)


def test_deeplab_prototxt_fields_parse_by_name():
    net = text_format.Parse(
        'layer { type: "SegAccuracy" seg_accuracy_param { ignore_label: 255 } }'
        'layer { type: "MatWrite" mat_write_param { prefix: "f/" source: "l.txt" strip: 0 period: 1 } }'
        'layer { type: "BiasChannel" bias_channel_param { bg_bias: 1 fg_bias: 2 label_type: PIXEL } }'
        'layer { type: "DenseCRF" dense_crf_param { max_iter: 10 pos_xy_std: 3 bi_w: 4 } }',
        caffe_pb2.NetParameter())
    assert net.layer[0].seg_accuracy_param.reset and net.layer[1].mat_write_param.period == 1


def test_build_fork_models_fills_deeplab_templates(tmp_path, capsys):
    import importlib.util
    import logging
    import os
    logger = logging.getLogger('caffe_py')
    level = logger.level      # the tool quiets caffe-py's log: other tests read it
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location('build_fork_models',
                                                  os.path.join(root, 'benchmarks', 'build_fork_models.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    path = tmp_path / 'test.prototxt'
    path.write_text('name: "${NET_ID}"\ninput: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
                    'layer { name: "fc8" type: "Convolution" bottom: "data" top: "fc8" '
                    'convolution_param { num_output: ${NUM_LABELS} kernel_size: 1 } }\n')
    try:
        tool.main(['--shapes', '--define', 'NUM_LABELS=21', '--define', 'NET_ID=deeplab', str(path)])
        assert 'fc8 (1, 21, 4, 4)' in capsys.readouterr().out
        tool.main([str(path)])
        assert 'PARSE FAIL' in capsys.readouterr().out
    finally:
        logger.setLevel(level)
