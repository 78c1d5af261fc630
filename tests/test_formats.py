"""caffe_py.proto and caffe_py.formats: schema, reading, writing."""
import glob
import os

import numpy as np
import pytest

from caffe_py import formats
from caffe_py.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_generated_pb2_is_up_to_date(tmp_path):
    pytest.importorskip("grpc_tools")
    from caffe_py.proto import regen

    if not os.path.exists(regen.PROTO_FILE):
        pytest.skip("%s is absent (package installed without its sources)" % regen.PROTO_FILE)
    out = regen.generate(str(tmp_path), any_protoc=True)
    with open(out, "rb") as f:
        fresh = f.read()
    with open(os.path.join(ROOT, "caffe_py", "proto", "caffe_pb2.py"), "rb") as f:
        committed = f.read()
    stale = "caffe_py/proto/caffe_pb2.py is stale: run python -m caffe_py.proto.regen"

    def lines(blob, prefix):
        return [l for l in blob.decode().splitlines() if l.startswith(prefix)]

    # the schema itself (the serialized FileDescriptorProto) must always agree
    assert lines(fresh, "DESCRIPTOR = ") == lines(committed, "DESCRIPTOR = "), stale
    if lines(fresh, "# Protobuf Python Version") == lines(committed, "# Protobuf Python Version"):
        assert fresh == committed, stale  # same protoc: byte for byte


def test_schema_spot_checks():
    blob = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name
    assert blob["raw_data_type"].number == 10
    assert blob["raw_data"].number == 12
    assert caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name["layer"].number == 100
    assert caffe_pb2.SolverParameter().type == "SGD"
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST


# ----------------------------------------------------------------- corpus

SHARED = os.path.join(os.path.dirname(ROOT), "shared")
CORPUS = os.path.join(SHARED, "corpus")
REF_DATA = os.path.join(SHARED, "reference", "data")


def _corpus(pattern):
    return sorted(os.path.relpath(p, CORPUS) for p in glob.glob(os.path.join(CORPUS, "*", pattern)))


def _need(path):
    if not os.path.exists(path):
        pytest.skip("%s is absent (../shared is not beside the project)" % path)
    return path


@pytest.mark.parametrize("rel", _corpus("*.prototxt") or ["<none>"])
def test_corpus_prototxt_parses(rel):
    path = _need(os.path.join(CORPUS, rel))
    if os.path.basename(rel) == "lenet_stepearly_solver.prototxt":
        # uses a field that never existed in BVLC Caffe; Caffe refuses it too
        with pytest.raises(formats.ProtoParseError, match=r":18:\d+: .*stepearly"):
            formats.read_solver(path)
    elif "solver" in os.path.basename(rel):
        solver = formats.read_solver(path)
        assert solver.HasField("base_lr")
    else:
        net = formats.read_net(path)
        assert len(net.layer) > 0 and not net.layers and not net.input


@pytest.mark.parametrize("rel", _corpus("*.caffemodel") or ["<none>"])
def test_corpus_caffemodel_parses(rel):
    net = formats.read_net(_need(os.path.join(CORPUS, rel)))
    blobs = [b for l in net.layer for b in l.blobs]
    assert blobs and not net.layers
    for b in blobs:
        arr = formats.blob_to_array(b)
        assert arr.dtype == np.float32 and arr.size > 0 and np.isfinite(arr).all()


@pytest.mark.parametrize("rel", _corpus("*.solverstate") or ["<none>"])
def test_corpus_solverstate_parses(rel):
    state = formats.read_solverstate(_need(os.path.join(CORPUS, rel)))
    assert state.iter > 0 and len(state.history) > 0
    for h in state.history:
        assert formats.blob_to_array(h).size > 0


@pytest.mark.parametrize("rel", _corpus("*.binaryproto") or ["<none>"])
def test_corpus_binaryproto_parses(rel):
    mean = formats.read_binaryproto(_need(os.path.join(CORPUS, rel)))
    assert mean.ndim == 4 and mean.shape[:2] == (1, 3)
    assert 0 < mean.mean() < 255


def test_reference_mean_file():
    mean = formats.read_binaryproto(_need(os.path.join(REF_DATA, "mean.binaryproto")))
    assert mean.shape == (1, 3, 32, 32)


def test_caffemodel_detected_without_extension(tmp_path):
    src = _need(os.path.join(CORPUS, "lenet_mnist_v2_with_solverstate",
                             "lenet_iter_10000.caffemodel"))
    copy = tmp_path / "weights"
    copy.write_bytes(open(src, "rb").read())
    assert formats.read_net(str(copy)) == formats.read_net(src)


# ----------------------------------------------------------------- errors

def test_parse_error_names_file_line_column(tmp_path):
    p = tmp_path / "net.prototxt"
    p.write_text('name: "n"\nlayer {\n  name: "a"\n  type: "ReLU"\n    bogus: 1\n}\n')
    with pytest.raises(formats.ProtoParseError) as info:
        formats.read_net(str(p))
    msg = str(info.value)
    assert msg.startswith(str(p) + ":5:5: ")
    assert 'Message type "caffe.LayerParameter" has no field named "bogus"' in msg
    assert (info.value.path, info.value.line, info.value.column) == (str(p), 5, 5)


def test_parse_error_duplicate_and_bad_value():
    with pytest.raises(formats.ProtoParseError, match=r'^x\.prototxt:1:\d+: .*multiple "name"'):
        formats.parse_net_text('name: "a" name: "b"', "x.prototxt")
    with pytest.raises(formats.ProtoParseError, match=r"^s\.prototxt:2:\d+: .*base_lr"):
        formats.parse_solver_text('net: "n"\nbase_lr: "fast"', "s.prototxt")


def test_missing_required_field():
    with pytest.raises(formats.ProtoParseError, match=r"c\.prototxt.*required.*max"):
        formats.parse_net_text('layer { name: "c" type: "Clip" clip_param { min: 0 } }',
                               "c.prototxt")


def test_missing_file_names_path_and_setting(tmp_path):
    missing = str(tmp_path / "nope.prototxt")
    with pytest.raises(formats.MissingFileError) as info:
        formats.read_net(missing, named_by="solver.prototxt: net")
    assert isinstance(info.value, FileNotFoundError)
    assert missing in str(info.value) and "solver.prototxt: net" in str(info.value)


def test_garbage_binary_is_an_error(tmp_path):
    p = tmp_path / "bad.caffemodel"
    p.write_bytes(b"\xff\xff\xff\xff\x0f\x00garbage")
    with pytest.raises(formats.ProtoParseError, match="bad.caffemodel"):
        formats.read_net(str(p))


# ----------------------------------------------------------------- round trips

NET_TEXT = """
name: "rt"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
"""


def test_text_roundtrip(tmp_path):
    net = formats.parse_net_text(NET_TEXT, "rt.prototxt")
    out = tmp_path / "rt.prototxt"
    formats.write_net(str(out), net)
    assert out.read_text().startswith('name: "rt"')
    assert formats.read_net(str(out)) == net


def test_binary_roundtrip_with_blobs(tmp_path):
    net = formats.parse_net_text(NET_TEXT, "rt.prototxt")
    rng = np.random.RandomState(0)
    w, b = rng.randn(4, 3).astype(np.float32), rng.randn(4).astype(np.float32)
    net.layer[1].blobs.add().CopyFrom(formats.array_to_blob(w))
    net.layer[1].blobs.add().CopyFrom(formats.array_to_blob(b))
    out = tmp_path / "rt.caffemodel"
    formats.write_net(str(out), net)
    back = formats.read_net(str(out))
    assert back == net
    np.testing.assert_array_equal(formats.blob_to_array(back.layer[1].blobs[0]), w)
    np.testing.assert_array_equal(formats.blob_to_array(back.layer[1].blobs[1]), b)
    # explicit binary= overrides the extension
    out2 = tmp_path / "rt.prototxt"
    formats.write_net(str(out2), net, binary=True)
    assert formats.read_net(str(out2), binary=True) == net


def test_write_is_atomic_and_replaces(tmp_path):
    out = tmp_path / "n.prototxt"
    out.write_text("old contents")
    net = formats.parse_net_text(NET_TEXT, "rt")
    formats.write_net(str(out), net)
    assert formats.read_net(str(out)) == net
    assert sorted(os.listdir(tmp_path)) == ["n.prototxt"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask


def test_solver_and_solverstate_roundtrip(tmp_path):
    solver = formats.parse_solver_text('net: "n.prototxt" base_lr: 0.01 type: "Adam" '
                                       'test_iter: 5 test_interval: 10', "s.prototxt")
    formats.write_solver(str(tmp_path / "s.prototxt"), solver)
    assert formats.read_solver(str(tmp_path / "s.prototxt"), snapshot_prefix=False) == solver
    state = caffe_pb2.SolverState(iter=20, learned_net="x_iter_20.caffemodel", current_step=1)
    state.history.add().CopyFrom(formats.array_to_blob(np.ones((2, 2), np.float32)))
    formats.write_solverstate(str(tmp_path / "x.solverstate"), state)
    assert formats.read_solverstate(str(tmp_path / "x.solverstate")) == state


# ----------------------------------------------------------------- blobs

def test_binaryproto_legacy_4d(tmp_path):
    mean = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    p = str(tmp_path / "mean.binaryproto")
    formats.write_binaryproto(p, mean)
    blob = formats.read_proto(p, caffe_pb2.BlobProto, binary=True)
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 2, 3, 4)
    assert not blob.HasField("shape")
    got = formats.read_binaryproto(p)
    assert got.shape == (1, 2, 3, 4)
    np.testing.assert_array_equal(got[0], mean)
    formats.write_binaryproto(p, mean, legacy_4d=False)
    assert formats.read_binaryproto(p).shape == (2, 3, 4)


def test_legacy_dims_win_over_shape():
    # Caffe's Blob::FromProto uses num/channels/height/width whenever one is set
    blob = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=2)
    blob.shape.dim.extend([4])
    blob.data.extend([1, 2, 3, 4])
    assert formats.blob_shape(blob) == (1, 1, 2, 2)
    assert formats.blob_to_array(blob).shape == (1, 1, 2, 2)


def test_double_data_and_diff():
    a = np.linspace(0, 1, 6).reshape(2, 3)
    blob = formats.array_to_blob(a, diff=-a)
    assert len(blob.double_data) == 6 and len(blob.data) == 0
    got = formats.blob_to_array(blob)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, a)
    np.testing.assert_array_equal(formats.blob_to_array(blob, diff=True), -a)
    assert formats.blob_to_array(blob, dtype=np.float32).dtype == np.float32


def test_half_raw_data():
    a = (np.arange(12, dtype=np.float32) / 7).reshape(3, 4).astype(np.float16)
    blob = formats.array_to_blob(a)
    assert blob.raw_data_type == caffe_pb2.FLOAT16 and len(blob.raw_data) == 24
    assert len(blob.data) == 0
    back = caffe_pb2.BlobProto.FromString(blob.SerializeToString())
    got = formats.blob_to_array(back)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, a)
    # a hand-made NVCaffe blob: little-endian halves
    nv = caffe_pb2.BlobProto(raw_data_type=caffe_pb2.FLOAT16,
                             raw_data=np.array([1.5, -2], "<f2").tobytes())
    nv.shape.dim.append(2)
    assert formats.blob_to_array(nv, dtype=np.float32).tolist() == [1.5, -2.0]


@pytest.mark.parametrize("dtype,code", [(np.float32, caffe_pb2.FLOAT),
                                        (np.float64, caffe_pb2.DOUBLE)])
def test_raw_float_and_double(dtype, code):
    a = np.array([[1, 2], [3, 4]], dtype=dtype)
    blob = formats.array_to_blob(a, raw=True)
    assert blob.raw_data_type == code
    got = formats.blob_to_array(blob)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, a)


def test_blob_count_mismatch_is_an_error():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2, 2])
    blob.data.extend([1, 2, 3])
    with pytest.raises(formats.FormatError, match="3 data values.*needs 4"):
        formats.blob_to_array(blob)
    with pytest.raises(formats.FormatError, match="no diff"):
        formats.blob_to_array(formats.array_to_blob(np.ones(2, np.float32)), diff=True)


def test_unpacked_float_encoding_is_read():
    # old writers may emit `data` unpacked (one tag per value); both are valid
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.append(3)
    wire = blob.SerializeToString()
    for v in (1.0, 2.0, 3.0):
        wire += bytes([5 << 3 | 5]) + np.float32(v).tobytes()
    got = formats.blob_to_array(caffe_pb2.BlobProto.FromString(wire))
    assert got.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.slow
def test_large_caffemodel_600mb(tmp_path):
    n = 600 * 1024 * 1024 // 4
    w = np.arange(n, dtype=np.float32)
    w[::7] *= -1
    net = caffe_pb2.NetParameter(name="big")
    layer = net.layer.add(name="ip", type="InnerProduct")
    layer.blobs.add().CopyFrom(formats.array_to_blob(w.reshape(-1, 1024)))
    del w
    path = str(tmp_path / "big.caffemodel")
    formats.write_net(path, net)
    del net, layer
    assert os.path.getsize(path) > 600 * 1024 * 1024
    back = formats.read_net(path)
    got = formats.blob_to_array(back.layer[0].blobs[0])
    assert got.shape == (n // 1024, 1024)
    flat = got.reshape(-1)
    assert flat[1] == 1 and flat[7] == -7 and flat[-1] == (n - 1) * (1 if (n - 1) % 7 else -1)
