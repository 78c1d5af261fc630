"""Regenerate caffe_pb2.py from proto/caffe.proto (needs grpcio-tools).

    python -m caffe_py.proto.regen [OUT_DIR]

OUT_DIR defaults to this package's folder.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), "proto")
PROTO_FILE = os.path.join(PROTO_DIR, "caffe.proto")


def generate(out_dir=HERE):
    """Run protoc on proto/caffe.proto, writing caffe_pb2.py into out_dir."""
    from grpc_tools import protoc  # imported late: optional dependency

    if not os.path.exists(PROTO_FILE):
        raise FileNotFoundError("schema not found: %s" % PROTO_FILE)
    # relative input path, so the generated file says `source: caffe.proto`
    args = ["protoc", "-I" + PROTO_DIR, "--python_out=" + out_dir, "caffe.proto"]
    old = os.getcwd()
    os.chdir(PROTO_DIR)
    try:
        rc = protoc.main(args)
    finally:
        os.chdir(old)
    if rc != 0:
        raise RuntimeError("protoc failed (exit %d) on %s" % (rc, PROTO_FILE))
    return os.path.join(out_dir, "caffe_pb2.py")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = generate(argv[0] if argv else HERE)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
