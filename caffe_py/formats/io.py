"""Reading and writing Caffe's protobuf files (text and binary).

Text parsing follows Caffe's ReadProtoFromTextFile (a field given twice, an
unknown field or a missing required field is an error); binary parsing has
no size limit below 2 GB. Writers are atomic: a temporary file in the target
folder replaced into place.
"""
import contextlib
import os
import tempfile

import numpy as np
from google.protobuf import message as _pb_message
from google.protobuf import text_format

from caffe_py.proto import caffe_pb2

from . import upgrade as _upgrade
from .blobs import array_to_blob, blob_to_array
from .errors import FormatError, MissingFileError, ProtoParseError
from .fork_fields import renumber_net

BINARY_EXTENSIONS = (".caffemodel", ".binaryproto", ".solverstate", ".pb", ".bin")
TEXT_EXTENSIONS = (".prototxt", ".pbtxt", ".txt", ".solver")


# ----------------------------------------------------------------- parsing

def _message(proto):
    return proto() if isinstance(proto, type) else proto


def _check_required(msg, filename):
    if not msg.IsInitialized():
        missing = ", ".join(msg.FindInitializationErrors())
        raise ProtoParseError("%s: %s is missing required fields: %s"
                              % (filename, msg.DESCRIPTOR.full_name, missing),
                              path=filename)


def parse_text(text, proto, filename="<text>"):
    """Parse protobuf text format into `proto` (a message class or instance).

    Errors raise ProtoParseError reading ``file:line:col: problem``.
    """
    msg = _message(proto)
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtoParseError("%s: not a text protobuf (byte %d is not UTF-8)"
                                  % (filename, e.start), path=filename)
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        detail = str(e)
        if line is not None:
            prefix = "%d:%d : " % (line, col) if col is not None else "%d : " % line
            if detail.startswith(prefix):
                detail = detail[len(prefix):]
            where = "%s:%d:%d" % (filename, line, col or 0)
        else:
            where = filename
        raise ProtoParseError("%s: %s" % (where, detail), path=filename,
                              line=line, column=col) from None
    _check_required(msg, filename)
    return msg


def parse_binary(data, proto, filename="<bytes>"):
    """Parse protobuf wire format into `proto` (a message class or instance)."""
    msg = _message(proto)
    if len(data) > 0x7FFFFFFF:
        raise ProtoParseError("%s: %d bytes is over the 2 GB protobuf limit"
                              % (filename, len(data)), path=filename)
    if msg.DESCRIPTOR.full_name == "caffe.NetParameter":
        data = renumber_net(data)   # forks' colliding field numbers, by layer type
    try:
        msg.ParseFromString(data)
    except (_pb_message.DecodeError, RuntimeError, ValueError) as e:
        raise ProtoParseError("%s: not a valid binary %s (%s)"
                              % (filename, msg.DESCRIPTOR.full_name, e), path=filename) from None
    _check_strings(msg, filename)
    _check_required(msg, filename)
    return msg


def _check_strings(msg, filename, where=""):
    """Refuse string fields that are not UTF-8 (protobuf only notices when they are read), naming
    the field, e.g. ``layers[3].name``; numeric arrays are not visited."""
    for field in msg.DESCRIPTOR.fields:
        if field.type not in (field.TYPE_STRING, field.TYPE_MESSAGE):
            continue
        repeated = _is_repeated(field)
        if not repeated and not msg.HasField(field.name):
            continue
        name = where + field.name
        value = getattr(msg, field.name)
        items = list(value) if repeated else [value]
        if field.type == field.TYPE_STRING:
            for i, item in enumerate(items):
                if isinstance(item, bytes):   # protobuf hands out undecodable text as bytes
                    try:
                        item.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise ProtoParseError(
                            "%s: %s%s is not UTF-8 text (byte 0x%02x at %d of %r)"
                            % (filename, name, "[%d]" % i if repeated else "", item[e.start], e.start,
                               item[:40]), path=filename) from None
        else:
            for i, item in enumerate(items):
                _check_strings(item, filename, "%s[%d]." % (name, i) if repeated else name + ".")


def _is_repeated(field):
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return repeated
    return field.label == field.LABEL_REPEATED


def _read_bytes(path, named_by=None):
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise MissingFileError(path, named_by) from None
    except IsADirectoryError:
        raise FormatError("%s: is a directory, not a file%s"
                          % (path, " (named by %s)" % named_by if named_by else ""),
                          path=path) from None
    except (OSError, ValueError) as e:  # a name too long, a NUL in it, no permission, ...
        why = "the name holds a NUL byte" if "\0" in path else getattr(e, "strerror", None) or e
        raise FormatError("%r: cannot read it (%s)%s"
                          % (path, why, " (named by %s)" % named_by if named_by else ""), path=path) from None


def looks_binary(data, path=None):
    """Guess whether `data` (the bytes of `path`) is wire format, not text."""
    head = bytes(data[:4096])
    if b"\0" in head:  # never in a prototxt, whatever the file is called
        return True
    if path is not None:
        ext = os.path.splitext(os.fspath(path))[1].lower()
        if ext in BINARY_EXTENSIONS:
            return True
        if ext in TEXT_EXTENSIONS:
            return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        # a multi-byte character cut at the 4096-byte boundary is still text
        return e.start < len(head) - 4
    return any(b < 9 or 13 < b < 32 for b in head)


def read_proto(path, proto, binary=None, named_by=None):
    """Read a text or binary protobuf file into `proto` (class or instance).

    binary=None detects the encoding from the extension, then the content.
    """
    data = _read_bytes(path, named_by)
    path = os.fspath(path)
    if binary is None:
        binary = looks_binary(data, path)
    if binary:
        return parse_binary(data, proto, path)
    return parse_text(data, proto, path)


# ----------------------------------------------------------------- nets and solvers

def parse_net_text(text, filename="<net>", upgrade=True):
    """NetParameter from prototxt text, upgraded to the current format."""
    net = parse_text(text, caffe_pb2.NetParameter, filename)
    if upgrade:
        _upgrade.upgrade_net(net, filename)
    return net


def parse_solver_text(text, filename="<solver>", upgrade=True):
    """SolverParameter from prototxt text, with the solver_type enum upgraded."""
    solver = parse_text(text, caffe_pb2.SolverParameter, filename)
    if upgrade:
        _upgrade.upgrade_solver(solver, filename)
    return solver


def read_net(path, binary=None, upgrade=True, named_by=None):
    """NetParameter from a prototxt or a caffemodel, upgraded as Caffe does
    (V0 -> V1 -> V2 layers, data transform fields, input fields, BatchNorm).

    Legacy problems Caffe only warns about are logged to the 'caffe_py'
    logger; what Caffe refuses raises UpgradeError.
    """
    net = read_proto(path, caffe_pb2.NetParameter, binary, named_by)
    if upgrade:
        _upgrade.upgrade_net(net, os.fspath(path))
    return net


def read_solver(path, upgrade=True, snapshot_prefix=True, named_by=None):
    """SolverParameter from a solver prototxt, as Caffe's
    ReadSolverParamsFromTextFileOrDie gives it: solver_type upgraded and,
    with snapshot_prefix=True, a missing snapshot_prefix set to the solver
    file's path without extension (a folder prefix gets the file's stem
    appended; folders are resolved against the working directory)."""
    solver = read_proto(path, caffe_pb2.SolverParameter, None, named_by)
    path = os.fspath(path)
    if upgrade:
        _upgrade.upgrade_solver(solver, path)
    if snapshot_prefix:
        _upgrade.upgrade_snapshot_prefix(solver, path)
    return solver


def read_solverstate(path, named_by=None):
    """SolverState from a binary .solverstate file (history blobs included)."""
    return read_proto(path, caffe_pb2.SolverState, True, named_by)


def read_binaryproto(path, named_by=None, dtype=None):
    """The array in a BlobProto file (a mean file), shaped as Caffe shapes it:
    legacy num/channels/height/width when set, otherwise shape.dim."""
    blob = read_proto(path, caffe_pb2.BlobProto, True, named_by)
    try:
        return blob_to_array(blob, dtype=dtype)
    except FormatError as e:
        raise FormatError("%s: %s" % (os.fspath(path), e), path=os.fspath(path)) from None


# ----------------------------------------------------------------- writing

@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in `path`'s folder; on success it is renamed to `path`, on failure removed.

    A crash never leaves a truncated file under the final name.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file 0600; give it the usual permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_write(path, payload):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(payload)


def write_hdf5(path, fill):
    """Create the HDF5 file `path` atomically, its contents written by `fill(h5py.File)`."""
    import h5py
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            fill(f)


def to_text(msg):
    """Protobuf text format of `msg`, as Caffe writes prototxt."""
    return text_format.MessageToString(msg)


def write_proto(path, msg, binary=None):
    """Write `msg` atomically; binary=None picks by extension (.caffemodel,
    .binaryproto, .solverstate -> wire format, anything else -> text)."""
    if binary is None:
        binary = os.path.splitext(os.fspath(path))[1].lower() in BINARY_EXTENSIONS
    if binary:
        payload = serialize(msg)
    else:
        payload = to_text(msg).encode("utf-8")
    _atomic_write(path, payload)


def serialize(msg):
    """Wire format of `msg`; a NetParameter's fork enum values in the forks' numbering (see
    parse_binary)."""
    data = msg.SerializeToString()
    if msg.DESCRIPTOR.full_name == "caffe.NetParameter":
        data = renumber_net(data, renumber=False)
    return data


def write_net(path, net_param, binary=None):
    """Write a NetParameter as prototxt or caffemodel (see write_proto)."""
    write_proto(path, net_param, binary)


def write_solver(path, solver_param):
    """Write a SolverParameter as prototxt."""
    write_proto(path, solver_param, False)


def write_solverstate(path, state):
    """Write a SolverState in wire format."""
    write_proto(path, state, True)


def write_binaryproto(path, array, legacy_4d=None):
    """Write an array as a BlobProto file (a mean file). Arrays of up to 4
    axes use the legacy num/channels/height/width fields by default, as
    Caffe's compute_image_mean writes them; pass legacy_4d=False for shape."""
    array = np.asarray(array)
    if legacy_4d is None:
        legacy_4d = array.ndim <= 4
    write_proto(path, array_to_blob(array, legacy_4d=legacy_4d), True)
