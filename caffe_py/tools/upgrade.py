"""Caffe's upgrade tools: upgrade_net_proto_text, upgrade_net_proto_binary,
upgrade_solver_proto_text.

Each reads IN, applies the upgrades Caffe would apply on load, writes OUT and
returns Caffe's exit status: 0 done, 1 done but with problems Caffe only
warns about (or bad usage), 2 IN does not parse. What Caffe refuses to
upgrade raises caffe_py.formats.UpgradeError; a missing IN raises
MissingFileError.
"""
import logging

from caffe_py import formats
from caffe_py.formats import upgrade as _up
from caffe_py.proto import caffe_pb2

log = logging.getLogger("caffe_py")


def _read(path, proto, binary, kind):
    try:
        return formats.read_proto(path, proto, binary=binary)
    except formats.MissingFileError:
        raise
    except formats.FormatError as e:
        log.error("%s", e)
        log.error("Failed to parse input %s file as %s: %s", kind,
                  proto.DESCRIPTOR.name, path)
        return None


def _upgrade_file(in_path, out_path, proto, binary, needs_upgrade, upgrade):
    """Read, upgrade if needed, write; Caffe's exit status (0 ok, 1 problems, 2 unreadable)."""
    msg = _read(in_path, proto, binary, "binary" if binary else "text")
    if msg is None:
        return 2
    ok = True
    if needs_upgrade(msg):
        ok = upgrade(msg, in_path)
        if not ok:
            log.error("Encountered error(s) while upgrading prototxt; see details above.")
    else:
        log.error("File already in latest proto format: %s", in_path)
    formats.write_proto(out_path, msg, binary=binary)
    log.info("Wrote upgraded %s %s proto to %s", proto.DESCRIPTOR.name,
             "binary" if binary else "text", out_path)
    return 0 if ok else 1


def _upgrade_net_file(in_path, out_path, binary):
    return _upgrade_file(in_path, out_path, caffe_pb2.NetParameter, binary,
                         _up.net_needs_upgrade, _up.upgrade_net)


def upgrade_net_proto_text(in_path, out_path):
    """Upgrade a V0/V1 (or otherwise legacy) net prototxt; returns the exit status."""
    return _upgrade_net_file(in_path, out_path, False)


def upgrade_net_proto_binary(in_path, out_path):
    """Upgrade a legacy binary caffemodel; returns the exit status."""
    return _upgrade_net_file(in_path, out_path, True)


def upgrade_solver_proto_text(in_path, out_path):
    """Upgrade a solver prototxt (solver_type enum -> type string); returns
    the exit status. Like Caffe's tool, snapshot_prefix is left as written."""
    return _upgrade_file(in_path, out_path, caffe_pb2.SolverParameter, False,
                         _up.solver_needs_type_upgrade, _up.upgrade_solver)


COMMANDS = {
    "upgrade_net_proto_text": upgrade_net_proto_text,
    "upgrade_net_proto_binary": upgrade_net_proto_binary,
    "upgrade_solver_proto_text": upgrade_solver_proto_text,
}


def main(name, argv):
    """Entry point for the caffe-py dispatcher: `caffe-py <name> IN OUT`."""
    func = COMMANDS[name]
    if any(a in ("-h", "-help", "--help") for a in argv) or len(argv) != 2:
        print("usage: caffe-py %s IN OUT\n  %s" % (name, func.__doc__.splitlines()[0]))
        return 0 if argv and len(argv) != 2 and any(
            a in ("-h", "-help", "--help") for a in argv) else 1
    return func(argv[0], argv[1])
