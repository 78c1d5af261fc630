"""Protocol-buffer wire primitives for the readers that look at raw message bytes (packed blob
values, fork field renumbering)."""


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def read_varint(data, pos):
    """(value, position after it) of the varint at data[pos]."""
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError('truncated varint')
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def encode_varint(value):
    """The varint bytes of a non-negative integer."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def fields(data):
    """(number, wire type, start, value start, payload start, end) of every field of a message's
    bytes; the payload of a length-delimited field starts after its length."""
    pos, out = 0, []
    while pos < len(data):
        start = pos
        tag, pos = read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        value = body = pos
        if wire == 0:
            _, pos = read_varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            size, body = read_varint(data, pos)
            pos = body + size
        elif wire == 5:
            pos += 4
        else:
            raise WireError('wire type %d' % wire)
        if pos > len(data):
            raise WireError('field past the end')
        out.append((number, wire, start, value, body, pos))
    return out
