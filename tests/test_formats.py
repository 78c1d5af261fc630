"""caffe_py.proto and caffe_py.formats: schema, reading, writing."""
import os

import pytest

from caffe_py.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_generated_pb2_is_up_to_date(tmp_path):
    pytest.importorskip("grpc_tools")
    from caffe_py.proto import regen

    out = regen.generate(str(tmp_path))
    with open(out, "rb") as f:
        fresh = f.read()
    with open(os.path.join(ROOT, "caffe_py", "proto", "caffe_pb2.py"), "rb") as f:
        committed = f.read()
    assert fresh == committed, (
        "caffe_py/proto/caffe_pb2.py is stale: run python -m caffe_py.proto.regen")


def test_schema_spot_checks():
    blob = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name
    assert blob["raw_data_type"].number == 10
    assert blob["raw_data"].number == 12
    assert caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name["layer"].number == 100
    assert caffe_pb2.SolverParameter().type == "SGD"
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST
