"""Regenerate caffe_pb2.py from proto/caffe.proto (needs grpcio-tools).

    python -m caffe_py.proto.regen [OUT_DIR]

OUT_DIR defaults to this package's folder.

The committed caffe_pb2.py must import on every protobuf runtime from 4.21 to 7.x. Code generated
by protoc 3.20-3.21 (grpcio-tools 1.48-1.49: `pip install grpcio-tools==1.49.1`) does; newer protoc
writes a runtime-version check that refuses older runtimes. generate() therefore asks for protoc
3.20/3.21 unless `any_protoc` is set (tests comparing the schema itself pass it).
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), "proto")
PROTO_FILE = os.path.join(PROTO_DIR, "caffe.proto")


PORTABLE_PROTOC = ("3.20.", "3.21.")


def protoc_version():
    """The version of protoc bundled with grpcio-tools, e.g. '3.21.6'."""
    done = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "--version"],
                          capture_output=True, text=True, check=True)
    return done.stdout.split()[-1]


def generate(out_dir=HERE, any_protoc=False):
    """Run protoc on proto/caffe.proto, writing caffe_pb2.py into out_dir."""
    from grpc_tools import protoc  # imported late: optional dependency

    if not any_protoc and not protoc_version().startswith(PORTABLE_PROTOC):
        raise RuntimeError("grpcio-tools bundles protoc %s, whose caffe_pb2.py refuses protobuf runtimes "
                           "older than itself; run `pip install grpcio-tools==1.49.1` (protoc 3.21) first"
                           % protoc_version())
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
