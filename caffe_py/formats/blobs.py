"""BlobProto <-> numpy.

Values are moved as raw little-endian bytes (no per-element Python objects),
so multi-hundred-megabyte blobs convert in about the time of a memcpy.
"""
import numpy as np

from caffe_py.proto import caffe_pb2

from .errors import FormatError
from .wire import WireError, encode_varint, fields

# BlobProto field numbers (see proto/caffe.proto)
_DATA, _DIFF, _DOUBLE_DATA, _DOUBLE_DIFF = 5, 6, 8, 9
_RAW_DATA, _RAW_DIFF = 12, 13

_RAW_DTYPES = {
    caffe_pb2.DOUBLE: np.dtype("<f8"),
    caffe_pb2.FLOAT: np.dtype("<f4"),
    caffe_pb2.FLOAT16: np.dtype("<f2"),
    caffe_pb2.INT: np.dtype("<i4"),
    caffe_pb2.UINT: np.dtype("<u4"),
    caffe_pb2.BOOL: np.dtype("u1"),
}
_RAW_TYPE_OF = {
    np.dtype("float64"): caffe_pb2.DOUBLE,
    np.dtype("float32"): caffe_pb2.FLOAT,
    np.dtype("float16"): caffe_pb2.FLOAT16,
}


def _accepts_bytearray():
    try:
        caffe_pb2.BlobShape().MergeFromString(bytearray(b"\x0a\x01\x01"))
        return True
    except TypeError:
        return False


_ACCEPTS_BYTEARRAY = _accepts_bytearray()


def _length_delimited(buf, wanted):
    """Payloads of the top-level length-delimited fields numbered `wanted`.

    Returns {field_number: [memoryview, ...]}; other fields are skipped.
    """
    view = memoryview(buf)
    found = {}
    try:
        for number, wire, _, _, body, end in fields(view):
            if wire == 2 and number in wanted:
                found.setdefault(number, []).append(view[body:end])
    except WireError as exc:
        raise FormatError('corrupt BlobProto (%s)' % exc)
    return found


def blob_shape(blob):
    """The shape Caffe gives a BlobProto: the legacy num/channels/height/width
    when any of them is set, otherwise shape.dim."""
    if (blob.HasField("num") or blob.HasField("channels")
            or blob.HasField("height") or blob.HasField("width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(int(d) for d in blob.shape.dim)


def _values(blob, diff):
    """(dtype, [chunks]) of whichever storage holds the values, or None."""
    if diff:
        packed = ((_DOUBLE_DIFF, "<f8"), (_DIFF, "<f4"))
        raw_field, raw_type, has_raw = _RAW_DIFF, blob.raw_diff_type, blob.HasField("raw_diff")
    else:
        packed = ((_DOUBLE_DATA, "<f8"), (_DATA, "<f4"))
        raw_field, raw_type, has_raw = _RAW_DATA, blob.raw_data_type, blob.HasField("raw_data")
    buf = blob.SerializeToString()
    fields = _length_delimited(buf, {f for f, _ in packed} | {raw_field})
    # Caffe prefers double storage over float when both are present
    for number, dtype in packed:
        if fields.get(number):
            return np.dtype(dtype), fields[number]
    if has_raw:
        if raw_type not in _RAW_DTYPES:
            raise FormatError("BlobProto raw storage has unknown type %d" % raw_type)
        return _RAW_DTYPES[raw_type], fields.get(raw_field, [])
    return None


def blob_to_array(blob, diff=False, dtype=None):
    """The values (or diffs) of a BlobProto as a numpy array of blob_shape(blob).

    The array keeps the stored precision (float32 `data`, float64
    `double_data`, or the raw_data_type of NVCaffe's raw storage) unless
    `dtype` is given. Raises FormatError when the blob holds no values of that
    kind or their count disagrees with the shape.
    """
    shape = blob_shape(blob)
    count = int(np.prod(shape, dtype=np.int64))
    found = _values(blob, diff)
    what = "diff" if diff else "data"
    if found is None:
        if count == 0:
            return np.zeros(shape, dtype=dtype or np.float32)
        raise FormatError("BlobProto of shape %s holds no %s" % (list(shape), what))
    src_dtype, chunks = found
    raw = b"".join(chunks) if len(chunks) != 1 else chunks[0]
    if len(raw) % src_dtype.itemsize:
        raise FormatError("BlobProto %s is %d bytes, not a whole number of %s values"
                          % (what, len(raw), src_dtype.name))
    arr = np.frombuffer(raw, dtype=src_dtype)
    if arr.size != count:
        raise FormatError("BlobProto has %d %s values but its shape %s needs %d"
                          % (arr.size, what, list(shape), count))
    arr = arr.reshape(shape).astype(dtype or src_dtype.newbyteorder("="), copy=True)
    return arr


def _store(blob, arr, diff, raw):
    arr = np.asarray(arr)
    if raw:
        raw_type = _RAW_TYPE_OF.get(arr.dtype)
        if raw_type is None:
            arr = arr.astype(np.float32)
            raw_type = caffe_pb2.FLOAT
        payload = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        if diff:
            blob.raw_diff_type = raw_type
            blob.raw_diff = payload
        else:
            blob.raw_data_type = raw_type
            blob.raw_data = payload
        return
    if arr.dtype == np.float64:
        number, dtype = (_DOUBLE_DIFF if diff else _DOUBLE_DATA), np.dtype("<f8")
    else:
        number, dtype = (_DIFF if diff else _DATA), np.dtype("<f4")
    if arr.size == 0:
        return
    # one packed field, built in a single buffer: key, length, values
    nbytes = arr.size * dtype.itemsize
    head = encode_varint(number << 3 | 2) + encode_varint(nbytes)
    wire = bytearray(len(head) + nbytes)
    wire[:len(head)] = head
    np.frombuffer(wire, dtype=dtype, offset=len(head)).reshape(arr.shape)[...] = arr
    blob.MergeFromString(bytes(wire) if not _ACCEPTS_BYTEARRAY else wire)


def array_to_blob(data, diff=None, blob=None, legacy_4d=False, raw=None):
    """A BlobProto holding `data` (and `diff` when given).

    float64 arrays go to double_data/double_diff, other arrays to float32
    data/diff, as Caffe's Blob::ToProto writes them. float16 arrays (or
    raw=True) use NVCaffe's raw_data with raw_data_type FLOAT16/FLOAT/DOUBLE.
    legacy_4d=True writes num/channels/height/width instead of shape (the
    old format, e.g. for mean files read by old tools); the shape must then
    have at most 4 axes and is padded on the left with 1s.
    `blob`, when given, is cleared and filled instead of a new message.
    """
    data = np.asarray(data)
    if blob is None:
        blob = caffe_pb2.BlobProto()
    else:
        blob.Clear()
    if raw is None:
        raw = data.dtype == np.float16
    if legacy_4d:
        if data.ndim > 4:
            raise FormatError("legacy 4-d BlobProto cannot hold shape %s" % (data.shape,))
        n, c, h, w = (1,) * (4 - data.ndim) + tuple(data.shape)
        blob.num, blob.channels, blob.height, blob.width = n, c, h, w
    else:
        blob.shape.dim.extend(int(d) for d in data.shape)
        if data.ndim == 0:
            blob.shape.SetInParent()
    _store(blob, data, False, raw)
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != data.shape:
            raise FormatError("diff shape %s differs from data shape %s" % (diff.shape, data.shape))
        _store(blob, diff, True, raw)
    return blob
