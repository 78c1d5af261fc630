"""Mutations of seed files, each drawn from a numpy Generator (so a case is reproducible).

Byte-level: bit flips, truncation, insertion, deletion, duplication, runs of 0x00/0xFF.
Text-level (prototxts, list files): a number replaced by an extreme value, a string value
replaced by a long, non-UTF-8 or NUL-holding one, lines duplicated, deleted or swapped.
Structure-level (protobuf, Datum, HDF5): fields of the parsed message or the arrays set to
absurd sizes, negative or zero, counts that disagree with the shapes.
"""
import re

import numpy as np

EXTREME_INTS = [0, -1, 1, 2, 3, 7, 255, 65535, 2 ** 31 - 1, -2 ** 31, 2 ** 32 - 1, 2 ** 32,
                2 ** 40, 2 ** 63 - 1, 10 ** 30]
EXTREME_FLOATS = ['0', '-0', '1e38', '-1e38', '3.5e39', 'nan', 'inf', '-inf', '1e-45', '0.5', '-2.5']
ODD_STRINGS = [b'', b'\xff\xfe', b'a\x00b', b'\xc3\x28', b'x' * 5000, b'../../../../etc/passwd',
               b'/nonexistent/path', b'\xe2\x82', b'\xed\xa0\x80']
NUMBER = re.compile(rb'(?<![\w.])-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?')
STRING = re.compile(rb'"([^"\n]*)"')


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


# -- bytes ------------------------------------------------------------------------------------

def flip_bits(rng, data):
    data = bytearray(data)
    if data:
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(len(data)))
            data[i] ^= 1 << int(rng.integers(8))
    return bytes(data)


def truncate(rng, data):
    return data[:int(rng.integers(len(data) + 1))]


def insert_bytes(rng, data):
    i = int(rng.integers(len(data) + 1))
    junk = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
    return data[:i] + junk + data[i:]


def delete_range(rng, data):
    if not data:
        return data
    i = int(rng.integers(len(data)))
    return data[:i] + data[i + int(rng.integers(1, 65)):]


def duplicate_range(rng, data):
    if not data:
        return data
    i = int(rng.integers(len(data)))
    j = min(len(data), i + int(rng.integers(1, 257)))
    return data[:j] + data[i:j] + data[j:]


def overwrite_run(rng, data):
    if not data:
        return data
    data = bytearray(data)
    i = int(rng.integers(len(data)))
    n = min(len(data) - i, int(rng.integers(1, 33)))
    data[i:i + n] = bytes([_pick(rng, [0, 0xFF, 0x7F, 0x80])]) * n
    return bytes(data)


def set_bytes(rng, data):
    """A few bytes set to values that mean something to parsers (varint continuation, tags)."""
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        if data:
            data[int(rng.integers(len(data)))] = _pick(rng, [0x00, 0xFF, 0x80, 0x08, 0x0A, 0x12, 0x7F])
    return bytes(data)


BYTE_MUTATIONS = [flip_bits, truncate, insert_bytes, delete_range, duplicate_range, overwrite_run, set_bytes]


# -- text -------------------------------------------------------------------------------------

def _replace_match(data, match, new):
    return data[:match.start()] + new + data[match.end():]


def mutate_number(rng, data):
    matches = list(NUMBER.finditer(data))
    if not matches:
        return insert_bytes(rng, data)
    match = _pick(rng, matches)
    if rng.random() < 0.7:
        new = str(_pick(rng, EXTREME_INTS)).encode()
    else:
        new = _pick(rng, EXTREME_FLOATS).encode()
    return _replace_match(data, match, new)


def mutate_string(rng, data):
    matches = list(STRING.finditer(data))
    if not matches:
        return insert_odd(rng, data)
    match = _pick(rng, matches)
    return _replace_match(data, match, b'"' + _pick(rng, ODD_STRINGS) + b'"')


def insert_odd(rng, data):
    """Non-UTF-8 bytes or a NUL at a random place."""
    i = int(rng.integers(len(data) + 1))
    return data[:i] + _pick(rng, [b'\xff', b'\x00', b'\xc3', b'\x80\x80', b'\x00\x00\x00']) + data[i:]


def _lines(data):
    return data.split(b'\n')


def duplicate_line(rng, data):
    lines = _lines(data)
    i = int(rng.integers(len(lines)))
    times = _pick(rng, [1, 2, 50])
    return b'\n'.join(lines[:i + 1] + [lines[i]] * times + lines[i + 1:])


def delete_line(rng, data):
    lines = _lines(data)
    del lines[int(rng.integers(len(lines)))]
    return b'\n'.join(lines)


def swap_lines(rng, data):
    lines = _lines(data)
    i, j = rng.integers(len(lines), size=2)
    lines[i], lines[j] = lines[j], lines[i]
    return b'\n'.join(lines)


TEXT_MUTATIONS = [mutate_number, mutate_number, mutate_number, mutate_string, insert_odd,
                  duplicate_line, delete_line, swap_lines]


def mutate_text(rng, data):
    """One to three mutations, text-aware most of the time, byte-level otherwise."""
    for _ in range(int(rng.integers(1, 4))):
        ops = TEXT_MUTATIONS if rng.random() < 0.8 else BYTE_MUTATIONS
        data = _pick(rng, ops)(rng, data)
    return data


def mutate_bytes(rng, data):
    for _ in range(int(rng.integers(1, 4))):
        data = _pick(rng, BYTE_MUTATIONS)(rng, data)
    return data


# -- protobuf messages -----------------------------------------------------------------------

def _extreme_int(rng):
    return _pick(rng, EXTREME_INTS)


def mutate_blob_proto(rng, blob):
    """Shape or values of a BlobProto made to disagree, or absurd."""
    choice = int(rng.integers(6))
    if choice == 0 and len(blob.shape.dim):
        i = int(rng.integers(len(blob.shape.dim)))
        blob.shape.dim[i] = int(np.clip(_extreme_int(rng), -2 ** 63, 2 ** 63 - 1))
    elif choice == 1:
        field = _pick(rng, ['num', 'channels', 'height', 'width'])
        setattr(blob, field, int(np.clip(_extreme_int(rng), -2 ** 31, 2 ** 31 - 1)))
    elif choice == 2:
        blob.shape.dim.append(int(rng.integers(0, 5)))
    elif choice == 3:
        n = len(blob.data)
        if n:
            del blob.data[int(rng.integers(n)):]
        else:
            blob.data.extend([1.0, 2.0])
    elif choice == 4:
        blob.ClearField('data')
        blob.double_data.extend([0.5] * int(rng.integers(0, 4)))
    else:
        blob.raw_data_type = int(rng.integers(0, 6))
        blob.raw_data = rng.integers(0, 256, int(rng.integers(0, 9)), dtype=np.uint8).tobytes()


def _blobs(msg):
    out = []
    for layer in list(getattr(msg, 'layer', [])) + list(getattr(msg, 'layers', [])):
        out.extend(layer.blobs)
    out.extend(getattr(msg, 'history', []))
    return out


def mutate_message(rng, msg):
    """A NetParameter / SolverState / BlobProto with one structural mutation."""
    from caffe_py.proto import caffe_pb2
    if isinstance(msg, caffe_pb2.BlobProto):
        mutate_blob_proto(rng, msg)
        return
    blobs = _blobs(msg)
    choice = int(rng.integers(5))
    if isinstance(msg, caffe_pb2.SolverState) and choice == 0:
        field = _pick(rng, ['iter', 'current_step'])
        setattr(msg, field, int(np.clip(_extreme_int(rng), -2 ** 31, 2 ** 31 - 1)))
    elif choice == 1 and isinstance(msg, caffe_pb2.SolverState):
        msg.learned_net = _pick(rng, ['', '/nonexistent.caffemodel', 'x' * 300])
    elif choice == 2 and blobs:
        container = _pick(rng, list(msg.layer) + list(msg.layers)) if not isinstance(
            msg, caffe_pb2.SolverState) else msg
        field = container.blobs if not isinstance(msg, caffe_pb2.SolverState) else container.history
        if len(field) and rng.random() < 0.5:
            del field[int(rng.integers(len(field)))]
        else:
            field.add().CopyFrom(_pick(rng, blobs))
    elif blobs:
        mutate_blob_proto(rng, _pick(rng, blobs))


def mutate_proto_bytes(rng, data, cls):
    """Structural mutation of a binary message when it parses, else (or sometimes) byte-level;
    with some probability a name string gets a non-UTF-8 byte."""
    r = rng.random()
    if r < 0.45:
        msg = cls()
        try:
            msg.ParseFromString(data)
        except Exception:
            return mutate_bytes(rng, data)
        mutate_message(rng, msg)
        return msg.SerializeToString()
    if r < 0.6:
        return corrupt_names(rng, data)
    return mutate_bytes(rng, data)


def corrupt_names(rng, data):
    """Replace a byte inside a short printable length-delimited string by 0xFF (non-UTF-8)."""
    spots = [m.start() + 1 for m in re.finditer(rb'[\x0a\x12\x1a\x22][\x02-\x20][a-z_]{2,}', data)]
    if not spots:
        return set_bytes(rng, data)
    data = bytearray(data)
    data[_pick(rng, spots) + 1] = _pick(rng, [0xFF, 0xC3, 0x80, 0x00])
    return bytes(data)


# -- Datum records -----------------------------------------------------------------------------

def mutate_datum(rng, datum):
    """A Datum with absurd or inconsistent shape, data or encoding."""
    choice = int(rng.integers(7))
    if choice == 0:
        field = _pick(rng, ['channels', 'height', 'width'])
        setattr(datum, field, int(np.clip(_extreme_int(rng), -2 ** 31, 2 ** 31 - 1)))
    elif choice == 1:
        datum.data = datum.data[:int(rng.integers(len(datum.data) + 1))]
    elif choice == 2:
        datum.encoded = not datum.encoded
    elif choice == 3:
        datum.data = b''
    elif choice == 4:
        datum.ClearField('data')
        datum.float_data.extend(rng.normal(size=int(rng.integers(0, 300))).astype(np.float32).tolist())
    elif choice == 5:
        datum.data = mutate_bytes(rng, datum.data)
    else:
        datum.label = int(np.clip(_extreme_int(rng), -2 ** 31, 2 ** 31 - 1))
