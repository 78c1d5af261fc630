"""Images and Datums as Caffe's util/io.cpp handles them (OpenCV: BGR, HWC, uint8).

The transformer takes decoded images as they are (HWC) and raw Datums as CHW
arrays (`datum_to_chw`: uint8 data or float_data); `datum_image` says which.
"""
import os

import cv2
import numpy as np

from .. import memory
from ..proto import caffe_pb2
from .hdf5 import DataSourceError, read_text

IMREAD_NATIVE = cv2.IMREAD_UNCHANGED


def color_flag(is_color):
    return cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE


def read_image(path, height=0, width=0, is_color=True):
    """Caffe's ReadImageToCVMat: cv2.imread, resized (INTER_LINEAR) when height and width are > 0.

    A missing or undecodable file raises DataSourceError naming the path.
    """
    if '\0' in path:
        raise DataSourceError('Could not open or find file %r: the name holds a NUL byte' % path)
    try:
        image = cv2.imread(path, color_flag(is_color)) if _utf8(path) else _read_undecodable_name(path, is_color)
    except cv2.error as exc:
        raise DataSourceError('Could not decode image file %s (%s)' % (path, cv_message(exc))) from None
    if image is None:
        if not os.path.isfile(path):
            raise DataSourceError('Could not open or find file %s (working directory %s)'
                                  % (path, os.getcwd()))
        raise DataSourceError('Could not decode image file %s' % path)
    if height > 0 and width > 0:
        channels = 1 if image.ndim == 2 else image.shape[2]
        what = 'image %s resized to %dx%d' % (path, height, width)
        try:
            memory.check(height * width * channels, what)
            image = cv2.resize(image, (width, height))
        except memory.OutOfMemoryError as exc:
            raise DataSourceError(str(exc)) from None
        except (cv2.error, OverflowError) as exc:
            raise DataSourceError('Could not resize %s (%s)' % (what, cv_message(exc))) from None
    return image


def _utf8(path):
    try:
        path.encode('utf-8')
        return True
    except UnicodeEncodeError:
        return False


def _read_undecodable_name(path, is_color):
    """cv2.imread of a file whose name is not UTF-8 (OpenCV takes only UTF-8 names): read, then decode."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError:
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), color_flag(is_color)) if data else None


def cv_message(exc):
    """The informative line of an OpenCV error (its text spans several lines)."""
    lines = []
    for line in str(exc).splitlines():
        line = line.strip(' >-')
        if 'error:' in line:
            line = line[line.index('error:') + 6:].strip()
        if line and line not in lines:
            lines.append(line)
    return '; '.join(lines) or type(exc).__name__


def decode_image(data, flag, what):
    """cv2.imdecode of encoded bytes; `what` names the record in the error."""
    if not len(data):
        raise DataSourceError('Could not decode %s: encoded image data is empty' % what)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error as exc:
        raise DataSourceError('Could not decode %s (%s)' % (what, cv_message(exc))) from None
    if image is None:
        raise DataSourceError('Could not decode %s (%d bytes of encoded image data)' % (what, len(data)))
    return image


def hwc_to_chw(image):
    """A CHW view of an OpenCV image (HW for one channel)."""
    if image.ndim == 2:
        return image[None]
    return image.transpose(2, 0, 1)


def parse_datum(value, what):
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise DataSourceError('corrupt Datum record %s: %s' % (what, exc)) from None
    return datum


def datum_to_chw(datum, what):
    """The CHW array of a raw (not encoded) Datum: uint8 from data, else float32 from float_data."""
    shape = (datum.channels, datum.height, datum.width)
    size = shape[0] * shape[1] * shape[2]
    if datum.data:
        array = np.frombuffer(datum.data, np.uint8)
    else:
        array = np.array(datum.float_data, np.float32)
    if array.size != size or min(shape) <= 0:
        raise DataSourceError('Datum %s holds %d values, its shape %dx%dx%d needs %d'
                              % (what, array.size, shape[0], shape[1], shape[2], size))
    return array.reshape(shape)


def datum_image(datum, flag, what):
    """(pixels, chw) of a Datum: an OpenCV image decoded with imdecode(`flag`) when encoded
    (chw False), else the CHW array of its raw values (chw True)."""
    if datum.encoded:
        return decode_image(datum.data, flag, what), False
    return datum_to_chw(datum, what), True


def image_to_datum(image, label, datum=None):
    """Caffe's CVMatToDatum: a raw Datum (CHW bytes) of an OpenCV uint8 image, with its label."""
    if image.dtype != np.uint8:
        raise ValueError('Image data type must be unsigned byte, got %s' % image.dtype)
    chw = hwc_to_chw(image)
    datum = datum or caffe_pb2.Datum()
    datum.Clear()
    datum.channels, datum.height, datum.width = chw.shape
    datum.data = np.ascontiguousarray(chw).tobytes()
    datum.label = label
    datum.encoded = False
    return datum


def _extension_matches(filename, encoding):
    ext = filename.rsplit('.', 1)[-1].lower()
    encoding = encoding.lower()
    return ext == encoding or (encoding == 'jpg' and ext == 'jpeg')


def read_image_to_datum(path, label, height=0, width=0, is_color=True, encoding=''):
    """Caffe's ReadImageToDatum: raw, or encoded (the file's bytes when they already fit, else re-encoded)."""
    image = read_image(path, height, width, is_color)
    if not encoding:
        return image_to_datum(image, label)
    datum = caffe_pb2.Datum()
    channels = 1 if image.ndim == 2 else image.shape[2]
    if (channels == 3) == is_color and not height and not width and _extension_matches(path, encoding):
        with open(path, 'rb') as f:
            datum.data = f.read()
    else:
        ok, buf = cv2.imencode('.' + encoding, image)
        if not ok:
            raise DataSourceError('Could not encode %s as %s' % (path, encoding))
        datum.data = buf.tobytes()
    datum.label = label
    datum.encoded = True
    return datum


def read_image_list(source, what='image list', keep_blank=False):
    """(path, label) pairs of a Caffe list file: the label after the last space of each line.

    Blank lines are dropped, or kept as ('', 0) with keep_blank (they still take
    an index, as in Caffe's convert_imageset).
    """
    text = read_text(source, what)
    rows = text.split('\n')
    if rows and rows[-1] == '':
        rows.pop()
    lines = []
    for line in rows:
        if not line.strip():
            if keep_blank:
                lines.append(('', 0))
            continue
        path, space, label = line.rpartition(' ')
        if not space:
            path, label = line, line
        lines.append((path, atoi(label)))
    return lines


def atoi(text):
    """C's atoi: leading blanks, a sign, then digits; 0 when there are none."""
    text = text.lstrip()
    sign, digits = 1, ''
    if text[:1] in '+-' and text:
        sign, text = (-1 if text[0] == '-' else 1), text[1:]
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    return sign * int(digits) if digits else 0
