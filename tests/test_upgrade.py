"""Legacy upgrades (V0/V1 nets, data transforms, input fields, BatchNorm,
solver_type) against what BVLC Caffe's upgrade tools made of the corpus."""
import difflib
import glob
import logging
import os

import pytest

from caffe_py import formats
from caffe_py.formats import upgrade as up
from caffe_py.proto import caffe_pb2
from caffe_py.tools import upgrade as tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
NETS_REF = os.path.join(SHARED, "reference", "nets")
CORPUS = os.path.join(SHARED, "corpus")


def _cases(suffix):
    found = sorted(glob.glob(os.path.join(NETS_REF, "*", "*" + suffix)))
    return [os.path.relpath(p, NETS_REF)[:-len(suffix)] for p in found]


UPGRADED = _cases(".upgraded.prototxt")
REFUSED = _cases(".upgrade_error.txt")


def _need_shared():
    if not os.path.isdir(NETS_REF) or not os.path.isdir(CORPUS):
        pytest.skip("../shared/reference/nets or ../shared/corpus is absent")


def _is_solver(path):
    return "solver" in os.path.basename(path)


def _diff(want, got):
    return "".join(difflib.unified_diff(
        formats.to_text(want).splitlines(True), formats.to_text(got).splitlines(True),
        "caffe", "caffe_py", n=2))


@pytest.fixture
def caffe_log(caplog):
    """Records of the 'caffe_py' logger (which may not propagate to root)."""
    logger = logging.getLogger("caffe_py")
    logger.addHandler(caplog.handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(old)


# ----------------------------------------------------------------- the corpus

def test_reference_cases_present():
    _need_shared()
    assert UPGRADED, "no *.upgraded.prototxt under %s" % NETS_REF


@pytest.mark.parametrize("rel", UPGRADED or ["<none>"])
def test_upgrade_matches_caffe(rel):
    _need_shared()
    if rel == "<none>":
        pytest.skip("no reference cases")
    src = os.path.join(CORPUS, rel)
    ref = os.path.join(NETS_REF, rel + ".upgraded.prototxt")
    if _is_solver(rel):
        # Caffe's upgrade_solver_proto_text leaves snapshot_prefix alone
        got = formats.read_solver(src, snapshot_prefix=False)
        want = formats.read_proto(ref, caffe_pb2.SolverParameter)
    else:
        got = formats.read_net(src)
        want = formats.read_proto(ref, caffe_pb2.NetParameter)
    assert got == want, "%s differs from Caffe's upgrade:\n%s" % (rel, _diff(want, got))


@pytest.mark.parametrize("rel", UPGRADED or ["<none>"])
def test_upgrade_tool_output_matches_caffe(rel, tmp_path):
    _need_shared()
    if rel == "<none>":
        pytest.skip("no reference cases")
    src = os.path.join(CORPUS, rel)
    out = str(tmp_path / "out.prototxt")
    if _is_solver(rel):
        rc = tool.upgrade_solver_proto_text(src, out)
        cls = caffe_pb2.SolverParameter
    else:
        rc = tool.upgrade_net_proto_text(src, out)
        cls = caffe_pb2.NetParameter
    assert rc in (0, 1)
    got = formats.read_proto(out, cls)
    want = formats.read_proto(os.path.join(NETS_REF, rel + ".upgraded.prototxt"), cls)
    assert got == want, _diff(want, got)


@pytest.mark.parametrize("rel", REFUSED or ["<none>"])
def test_refused_by_caffe_is_refused(rel, tmp_path):
    _need_shared()
    if rel == "<none>":
        pytest.skip("no refused cases")
    src = os.path.join(CORPUS, rel)
    reader = formats.read_solver if _is_solver(rel) else formats.read_net
    with pytest.raises(formats.FormatError) as info:
        reader(src)
    assert src in str(info.value)
    why = open(os.path.join(NETS_REF, rel + ".upgrade_error.txt")).read()
    if "has no field named" in why:
        field = why.split('has no field named "')[1].split('"')[0]
        assert 'has no field named "%s"' % field in str(info.value)
    # the tool exits 2 (parse failure) and writes nothing
    out = tmp_path / "out.prototxt"
    func = tool.upgrade_solver_proto_text if _is_solver(rel) else tool.upgrade_net_proto_text
    assert func(src, str(out)) == 2
    assert not out.exists()


# ----------------------------------------------------------------- refusals

V0_NET = """
name: "v0"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers {
  layer { name: "pad1" type: "padding" pad: 2 }
  bottom: "data" top: "pad1"
}
layers {
  layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 1
          weight_filler { type: "gaussian" std: 0.01 } blobs_lr: 1 blobs_lr: 2
          weight_decay: 1 weight_decay: 0 }
  bottom: "pad1" top: "conv1"
}
layers {
  layer { name: "relu1" type: "relu" }
  bottom: "conv1" top: "conv1"
}
layers {
  layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 }
  bottom: "conv1" top: "pool1"
}
"""


def test_v0_net_with_padding():
    net = formats.parse_net_text(V0_NET, "v0.prototxt")
    assert [l.type for l in net.layer] == ["Input", "Convolution", "ReLU", "Pooling"]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"]
    assert list(conv.convolution_param.pad) == [2]
    assert list(conv.convolution_param.kernel_size) == [3]
    assert conv.convolution_param.weight_filler.std == pytest.approx(0.01)
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    pool = net.layer[3].pooling_param
    assert pool.pool == caffe_pb2.PoolingParameter.AVE and pool.stride == 2
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]
    assert not net.input and not net.input_dim and not net.layers


def test_v0_unknown_layer_type_refused():
    text = 'layers { layer { name: "x" type: "fancy" } top: "x" }'
    with pytest.raises(formats.UpgradeError, match=r"bad\.prototxt.*fancy"):
        formats.parse_net_text(text, "bad.prototxt")


def test_v0_padding_into_non_conv_refused():
    text = ('input: "d" layers { layer { name: "p" type: "padding" pad: 1 } bottom: "d" top: "p" }'
            ' layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }')
    with pytest.raises(formats.UpgradeError, match=r"pad\.prototxt.*relu"):
        formats.parse_net_text(text, "pad.prototxt")


def test_v0_unknown_bottom_refused():
    text = 'layers { layer { name: "r" type: "relu" } bottom: "nowhere" top: "r" }'
    with pytest.raises(formats.UpgradeError, match=r"u\.prototxt.*nowhere"):
        formats.parse_net_text(text, "u.prototxt")


def test_v0_setting_for_wrong_type_is_logged_not_fatal(caffe_log):
    text = 'layers { layer { name: "r" type: "relu" num_output: 3 } top: "r" }'
    net = formats.parse_net_text(text, "w.prototxt")
    assert net.layer[0].type == "ReLU"
    assert "Unknown parameter num_output for layer type relu" in caffe_log.text
    assert not up.upgrade_net(formats.parse_net_text(text, "w", upgrade=False), "w")


def test_mixed_layer_and_layers_refused():
    text = ('layer { name: "a" type: "ReLU" bottom: "x" top: "x" }\n'
            'layers { name: "b" type: RELU bottom: "x" top: "x" }')
    with pytest.raises(formats.UpgradeError) as info:
        formats.parse_net_text(text, "mixed.prototxt")
    assert "mixed.prototxt" in str(info.value)
    assert "'layer'" in str(info.value) and "'layers'" in str(info.value)


def test_solver_type_and_type_both_refused():
    with pytest.raises(formats.UpgradeError, match=r"s\.prototxt.*solver_type"):
        formats.parse_solver_text('solver_type: ADAM type: "Adam"', "s.prototxt")


def test_input_dim_count_mismatch_refused():
    with pytest.raises(formats.UpgradeError, match=r"in\.prototxt.*input_dim"):
        formats.parse_net_text('input: "a" input: "b" input_dim: 1 input_dim: 2 '
                               'input_dim: 3 input_dim: 4', "in.prototxt")


# ----------------------------------------------------------------- single stages

def test_v1_to_v2_fields():
    text = """
    layers {
      name: "c" type: CONVOLUTION bottom: "x" top: "y"
      param: "w" param: "b" blob_share_mode: PERMISSIVE
      blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
      include { phase: TRAIN }
      convolution_param { num_output: 2 kernel_size: 3 }
    }
    layers { name: "l" type: SOFTMAX_LOSS bottom: "y" bottom: "t" top: "loss" loss_weight: 2 }
    """
    net = formats.parse_net_text(text, "v1.prototxt")
    c, l = net.layer
    assert c.type == "Convolution" and l.type == "SoftmaxWithLoss"
    assert [p.name for p in c.param] == ["w", "b"]
    assert c.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert not c.param[1].HasField("share_mode")
    assert [(p.lr_mult, p.decay_mult) for p in c.param] == [(1, 1), (2, 0)]
    assert c.include[0].phase == caffe_pb2.TRAIN
    assert c.convolution_param.num_output == 2
    assert list(l.loss_weight) == [2]


def test_every_v1_type_has_a_name():
    for value in caffe_pb2.V1LayerParameter.LayerType.values():
        name = caffe_pb2.V1LayerParameter.LayerType.Name(value)
        assert name in up.V1_LAYER_TYPES


def test_data_transformation_moved():
    text = ('layers { name: "d" type: DATA top: "d" data_param { source: "s" scale: 0.5 '
            'mean_file: "m" crop_size: 3 mirror: true batch_size: 2 } }')
    net = formats.parse_net_text(text, "t.prototxt")
    d = net.layer[0]
    assert d.transform_param.scale == 0.5 and d.transform_param.mean_file == "m"
    assert d.transform_param.crop_size == 3 and d.transform_param.mirror
    for f in ("scale", "mean_file", "crop_size", "mirror"):
        assert not d.data_param.HasField(f)
    assert d.data_param.batch_size == 2


def test_input_shape_becomes_first_layer():
    text = ('input: "a" input_shape { dim: 1 dim: 2 } input: "b" input_shape { dim: 3 }\n'
            'layer { name: "r" type: "ReLU" bottom: "a" top: "a" }')
    net = formats.parse_net_text(text, "i.prototxt")
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["a", "b"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 2], [3]]
    assert net.layer[1].name == "r"
    assert not net.input and not net.input_shape


def test_input_without_shape_is_dropped():
    net = caffe_pb2.NetParameter()
    net.input.append("data")
    up.upgrade_net(net, "old.caffemodel")
    assert not net.input and not net.layer


def test_batchnorm_param_specs_zeroed():
    text = ('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" '
            'param { lr_mult: 1 name: "m" } param { lr_mult: 1 } param { lr_mult: 1 decay_mult: 3 } }'
            'layer { name: "bn2" type: "BatchNorm" bottom: "x" top: "x" param { lr_mult: 1 } }')
    net = formats.parse_net_text(text, "bn.prototxt")
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [(0, 0)] * 3
    assert net.layer[0].param[0].name == "m"
    assert net.layer[1].param[0].lr_mult == 1  # only three-spec layers change


@pytest.mark.parametrize("enum,name", [("SGD", "SGD"), ("NESTEROV", "Nesterov"),
                                       ("ADAGRAD", "AdaGrad"), ("RMSPROP", "RMSProp"),
                                       ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")])
def test_solver_type_enum(enum, name):
    s = formats.parse_solver_text("base_lr: 0.1 solver_type: %s" % enum, "s.prototxt")
    assert s.type == name and not s.HasField("solver_type")


def test_upgrade_logs_like_caffe(caffe_log):
    formats.parse_net_text('layers { name: "r" type: RELU bottom: "x" top: "x" }', "n.prototxt")
    assert ("Attempting to upgrade input file specified using deprecated V1LayerParameter: "
            "n.prototxt") in caffe_log.text
    assert "Successfully upgraded file specified using deprecated V1LayerParameter" in caffe_log.text


def test_snapshot_prefix_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("snaps")
    (tmp_path / "solver.prototxt").write_text('net: "n.prototxt"')
    (tmp_path / "other.prototxt").write_text('snapshot_prefix: "snaps"')
    assert formats.read_solver("solver.prototxt").snapshot_prefix == "solver"
    assert formats.read_solver("other.prototxt").snapshot_prefix == os.path.join("snaps", "other")
    assert not formats.read_solver("solver.prototxt", snapshot_prefix=False).HasField(
        "snapshot_prefix")


# ----------------------------------------------------------------- the tools

def test_tool_already_current(tmp_path, caffe_log):
    src = tmp_path / "n.prototxt"
    src.write_text('name: "n" layer { name: "r" type: "ReLU" bottom: "x" top: "x" }')
    out = tmp_path / "o.prototxt"
    assert tool.upgrade_net_proto_text(str(src), str(out)) == 0
    assert "File already in latest proto format" in caffe_log.text
    assert formats.read_net(str(out)) == formats.read_net(str(src))


def test_tool_binary_roundtrip(tmp_path):
    net = caffe_pb2.NetParameter(name="b")
    v1 = net.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    v1.blobs.add().CopyFrom(formats.array_to_blob([[1.0, 2.0]], legacy_4d=True))
    src, out = tmp_path / "old.caffemodel", tmp_path / "new.caffemodel"
    src.write_bytes(net.SerializeToString())
    assert tool.upgrade_net_proto_binary(str(src), str(out)) == 0
    new = caffe_pb2.NetParameter.FromString(out.read_bytes())
    assert new.layer[0].type == "InnerProduct" and not new.layers
    assert formats.blob_to_array(new.layer[0].blobs[0]).tolist() == [[[[1.0, 2.0]]]]


def test_tool_main_usage():
    assert tool.main("upgrade_net_proto_text", []) == 1
    assert tool.main("upgrade_net_proto_text", ["--help"]) == 0


def test_tool_missing_input(tmp_path):
    with pytest.raises(formats.MissingFileError, match="nothere"):
        tool.upgrade_net_proto_text(str(tmp_path / "nothere"), str(tmp_path / "o"))
