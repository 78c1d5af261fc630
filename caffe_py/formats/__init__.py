"""Caffe's file formats: prototxt/caffemodel/solverstate/binaryproto I/O,
BlobProto <-> numpy, and the legacy upgrades Caffe applies on load."""
from .blobs import array_to_blob, blob_shape, blob_to_array
from .errors import FormatError, MissingFileError, ProtoParseError, UpgradeError
from .io import (atomic_path, looks_binary, parse_binary, parse_net_text, parse_solver_text,
                 parse_text, read_binaryproto, read_net, read_proto, read_solver,
                 read_solverstate, serialize, to_text, write_binaryproto, write_net, write_proto,
                 write_hdf5, write_solver, write_solverstate)
from .upgrade import (net_needs_upgrade, solver_needs_type_upgrade, upgrade_net,
                      upgrade_snapshot_prefix, upgrade_solver)

__all__ = [
    "FormatError", "MissingFileError", "ProtoParseError", "UpgradeError",
    "array_to_blob", "blob_shape", "blob_to_array",
    "looks_binary", "parse_binary", "parse_net_text", "parse_solver_text", "parse_text",
    "read_binaryproto", "read_net", "read_proto", "read_solver", "read_solverstate",
    "serialize", "to_text", "write_binaryproto", "write_net", "write_proto", "write_solver",
    "write_solverstate", "write_hdf5", "atomic_path",
    "net_needs_upgrade", "solver_needs_type_upgrade", "upgrade_net",
    "upgrade_snapshot_prefix", "upgrade_solver",
]
