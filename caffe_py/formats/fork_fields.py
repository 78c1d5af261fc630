"""Binary nets written by Caffe forks whose LayerParameter field numbers collide.

SegNet numbers upsample_param 137 and dense_image_data_param 138, DeepLab and PSPNet number
interp_param 143: BVLC's embed_param, tile_param and input_param. PSPNet's bn_param is 152
where SegNet/ENet's is 45, with other sub-field numbers. SegNet's loss_param has
weight_by_label_freqs at 3, BVLC's normalization. DeepLab's ImageSegData reads transform_param
fields 8-10 (scale_factors, crop_width, crop_height), SSD's numbers here. R-FCN's loss_param
numbers PRE_FIXED normalization 3 (BVLC's NONE) and its NONE 4. DeepLab v2 numbers
seg_accuracy_param 144, mat_write_param 145, dense_crf_param 146, domain_transform_param 147,
adaptive_bias_channel_param 148 (BVLC's crop_param to clip_param), bias_channel_param 149 and
unique_label_param 150. py-R-FCN's caffe (Microsoft/caffe)
numbers roi_pooling_param 147, smooth_l1_loss_param 148 (BVLC's swish_param, clip_param),
psroi_pooling_param 149 and box_annotator_ohem_param 150 (the YOLO ports' reorg_param and
upsample_param here). Parsed as they are, a fork's
caffemodel would show an Interp layer holding a garbled input_param. So before a binary
NetParameter is parsed, each layer's fields are read at the wire level and, where the
layer's type names a fork layer whose number collides, the field is renumbered to the one
caffe.proto gives it (and its sub-fields, where they differ). Nothing else changes, and a
file without such layers is parsed from the very same bytes.
"""

from .wire import WireError, encode_varint, read_varint
from .wire import fields as message_fields

# layer type -> {fork's LayerParameter field number: (caffe.proto's number, {sub-field renumbering},
# sub-field that must be present for the rule to apply, or None)}
RENUMBER = {
    'Upsample': {137: (150, {}, None)},           # SegNet's upsample_param (BVLC: embed_param)
    'DenseImageData': {138: (100138, {}, None)},  # SegNet's dense_image_data_param (BVLC: tile_param)
    'Interp': {143: (100143, {}, None)},          # DeepLab/PSPNet's interp_param (BVLC: input_param)
    'BN': {152: (45, {1: 11, 2: 12, 3: 13, 4: 14, 5: 15, 6: 16}, None)},   # PSPNet's bn_param
    # SegNet's loss_param: weight_by_label_freqs 3 (BVLC: normalization) with class_weighting 4,
    # which BVLC does not have, so its presence tells SegNet's message apart
    'SoftmaxWithLoss': {101: (101, {3: 100003, 4: 100004}, 4)},
    'ImageSegData': {100: (100, {8: 100008, 9: 100009, 10: 100010}, None)},   # DeepLab's transform_param
    # DeepLab v2's messages at BVLC's 144-148 and the YOLO ports' 149-150 (mat_read_param 151 is free)
    'SegAccuracy': {144: (100144, {}, None)},        # BVLC: crop_param
    'MatWrite': {145: (100145, {}, None)},           # BVLC: parameter_param
    'DenseCRF': {146: (100146, {}, None)},           # BVLC: recurrent_param
    'DomainTransform': {147: (100147, {}, None)},    # BVLC: swish_param
    'DomainTransformForwardOnly': {147: (100147, {}, None)},
    'AdaptiveBiasChannel': {148: (100148, {}, None)},   # BVLC: clip_param
    'BiasChannel': {149: (100149, {}, None)},        # here: reorg_param
    'UniqueLabel': {150: (100150, {}, None)},        # here: upsample_param
    # py-R-FCN's (Microsoft/caffe) numbers for R-FCN's messages
    'ROIPooling': {147: (8266711, {}, None)},
    'SmoothL1Loss': {148: (8266712, {}, None)},
    'PSROIPooling': {149: (10001, {}, None)},
    'BoxAnnotatorOHEM': {150: (10000, {}, None)},
}
# layer type -> (LayerParameter field, enum sub-field, {fork's value: caffe.proto's value}, sub-field
# that must be present): R-FCN's (and py-R-FCN's) SmoothL1Loss normalization, told apart by its
# pre_fixed_normalizer
REVALUE = {'SmoothL1Loss': (101, 3, {3: 4, 4: 3}, 4), 'SmoothL1LossOHEM': (101, 3, {3: 4, 4: 3}, 4)}
_LAYER = 100    # NetParameter.layer
_TYPE = 2       # LayerParameter.type
_LEN = 2        # wire type of length-delimited fields


def _length_delimited(number, payload):
    return encode_varint(number << 3 | _LEN) + encode_varint(len(payload)) + bytes(payload)


def _renumber_fields(data, mapping):
    """The message `data` with the fields named in `mapping` (old -> new number) renumbered."""
    pieces = []
    for number, wire, start, value, _, end in message_fields(data):
        if number in mapping:
            pieces.append(encode_varint(mapping[number] << 3 | wire) + bytes(data[value:end]))
        else:
            pieces.append(bytes(data[start:end]))
    return b''.join(pieces)


def _revalue_field(data, number, values):
    """The message `data` with the varint field `number` mapped through `values`."""
    pieces = []
    for field, wire, start, value, _, end in message_fields(data):
        if field == number and wire == 0:
            old, _ = read_varint(data, value)
            pieces.append(bytes(data[start:value]) + encode_varint(values.get(old, old)))
        else:
            pieces.append(bytes(data[start:end]))
    return b''.join(pieces)


def _layer(data, renumber=True):
    """A LayerParameter's bytes renumbered for its type, or None when nothing changes; with
    renumber=False only the REVALUE rules apply (their value maps are their own inverses)."""
    fields = message_fields(data)
    kind = None
    for number, wire, _, _, body, end in fields:
        if number == _TYPE and wire == _LEN:
            kind = bytes(data[body:end]).decode('utf-8', 'replace')
    table = (RENUMBER.get(kind) or {}) if renumber else {}
    revalue = REVALUE.get(kind)
    rules = {}
    for number, wire, _, _, body, end in fields:
        if number in table and wire == _LEN:
            new_number, sub, marker = table[number]
            if marker is None or any(f[0] == marker for f in message_fields(data[body:end])):
                rules[number] = (new_number, sub, None)
        elif revalue and number == revalue[0] and wire == _LEN:
            if any(f[0] == revalue[3] for f in message_fields(data[body:end])):
                rules[number] = (number, {}, revalue[1:3])
    if not rules:
        return None
    pieces = []
    for number, wire, start, _, body, end in fields:
        if number in rules and wire == _LEN:
            new_number, sub, values = rules[number]
            payload = data[body:end]
            if sub:
                payload = _renumber_fields(payload, sub)
            if values:
                payload = _revalue_field(payload, *values)
            pieces.append(_length_delimited(new_number, payload))
        else:
            pieces.append(bytes(data[start:end]))
    return b''.join(pieces)


def renumber_net(data, renumber=True):
    """A binary NetParameter with fork fields moved to caffe.proto's numbers; `data` itself when
    no layer needs it (or when the bytes are not a well-formed message: the parser reports that).
    renumber=False gives the bytes to write: enum values in the fork's numbering (R-FCN's
    PRE_FIXED 3), the one ambiguity on reading, so that caffe-py reads its own files back the same
    (and R-FCN its SmoothL1Loss); colliding fields stay at this schema's numbers, which the forks
    skip as unknown (their weights load by layer name either way)."""
    view = memoryview(data)
    try:
        fields = message_fields(view)
        changed = {}
        for index, (number, wire, _, _, body, end) in enumerate(fields):
            if number == _LAYER and wire == _LEN:
                new = _layer(view[body:end], renumber)
                if new is not None:
                    changed[index] = _length_delimited(_LAYER, new)
    except WireError:
        return data
    if not changed:
        return data
    return b''.join(changed.get(i, view[f[2]:f[5]]) for i, f in enumerate(fields))
