"""pycaffe's `caffe.io`: images in and out of a net's input layout, blobs and Datums as arrays.

    transformer = caffe.io.Transformer({'data': net.blobs['data'].data.shape})
    transformer.set_transpose('data', (2, 0, 1))       # H x W x K -> K x H x W
    transformer.set_channel_swap('data', (2, 1, 0))    # RGB -> BGR
    transformer.set_raw_scale('data', 255)             # [0, 1] -> [0, 255]
    transformer.set_mean('data', mean_bgr)             # per channel, or K x H x W
    net.blobs['data'].data[...] = transformer.preprocess('data', caffe.io.load_image(path))

Images are H x W x K float32 arrays, RGB, in [0, 1], as pycaffe's. With scikit-image installed
(`pip install 'caffe-py[skimage]'`) load_image and resize_image give pycaffe's pixels (its
scikit-image calls); without it, or after set_image_backend('opencv'), OpenCV decodes (same
pixels wherever the JPEG/PNG decoders agree) and resizes, about 100x faster but not equal to
skimage's resize (edges replicated instead of blended with zero, no smoothing before
downsampling, OpenCV's bicubic).
"""
import importlib.util
import os

import cv2
import numpy as np

from .data.image import datum_to_chw
from .formats.blobs import array_to_blob, blob_to_array
from .formats.errors import FormatError, MissingFileError
from .proto import caffe_pb2

# scikit-image's rgb2gray weights, which pycaffe's load_image(color=False) uses
GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])
INTERPOLATIONS = {0: cv2.INTER_NEAREST, 1: cv2.INTER_LINEAR, 3: cv2.INTER_CUBIC}
CV_MAX_CHANNELS = 512        # the most channels one cv2.resize call takes


# -- blobs and datums ------------------------------------------------------------
def blobproto_to_array(blob, return_diff=False):
    """The data (or diff) of a BlobProto as a float64 array of its shape (legacy 4-d dims, double
    and NVCaffe half storage too)."""
    return blob_to_array(blob, diff=return_diff, dtype=np.float64)


def array_to_blobproto(arr, diff=None):
    """A BlobProto holding `arr` (and `diff`, of the same shape) as float32, with an N-d shape."""
    return array_to_blob(np.asarray(arr, np.float32), None if diff is None else np.asarray(diff, np.float32))


def arraylist_to_blobprotovector_str(arraylist):
    """A serialized BlobProtoVector of the arrays."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(arr) for arr in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(serialized):
    """The arrays of a serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(serialized)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr, label=None):
    """A Datum of a K x H x W array: bytes for uint8, float_data otherwise."""
    if arr.ndim != 3:
        raise ValueError('Incorrect array shape: a Datum holds K x H x W, got %s' % (arr.shape,))
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(np.asarray(arr, np.float64).flat)
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum):
    """The K x H x W array of an unencoded Datum (uint8 bytes or float_data); the label is
    datum.label."""
    if datum.encoded:
        raise ValueError('datum_to_array reads raw Datums; this one is encoded (decode it with '
                         'cv2.imdecode(np.frombuffer(datum.data, np.uint8), -1))')
    array = datum_to_chw(datum, 'given to datum_to_array')
    return array if array.dtype == np.uint8 else array.astype(np.float64)


# -- images ------------------------------------------------------------------------
_backend = []        # the chosen image backend, once chosen


def set_image_backend(name):
    """How load_image decodes and resize_image resizes: 'skimage' gives pycaffe's pixels
    (scikit-image's decoding and skimage.transform.resize, as pycaffe calls them; the default
    when scikit-image is installed), 'opencv' is the fast path (the default without it)."""
    if name not in ('skimage', 'opencv'):
        raise ValueError("image backend must be 'skimage' or 'opencv', not %r" % (name,))
    if name == 'skimage':
        _import_skimage()
    _backend[:] = [name]


def image_backend():
    """The image backend in use ('skimage' or 'opencv'), see set_image_backend."""
    if not _backend:
        _backend.append('skimage' if importlib.util.find_spec('skimage') else 'opencv')
    return _backend[0]


def _import_skimage():
    try:
        import skimage.io
        import skimage.transform  # noqa: F401
    except ImportError as exc:
        raise ImportError("the 'skimage' image backend needs scikit-image: "
                          "pip install 'caffe-py[skimage]' (%s)" % exc) from None
    return skimage


def _as_float(img):
    """scikit-image's img_as_float: unsigned ints times 1 / their maximum, in float64."""
    if img.dtype.kind == 'u':
        return np.multiply(img, 1.0 / np.iinfo(img.dtype).max, dtype=np.float64)
    return img.astype(np.float64)


def _intensity(img):
    """scikit-image's rgb2gray of an H x W x 3 or 4 image, an alpha first composited over white
    (its rgba2rgb), as imread(as_gray=True) does."""
    rgb = _as_float(img)
    if rgb.shape[2] == 4:
        alpha = rgb[:, :, 3:]
        rgb = np.clip((1 - alpha) * np.ones(3) + alpha * rgb[:, :, :3], 0, 1)
    return rgb @ GRAY_WEIGHTS


def _decode(filename):
    """The image as decoded integers, H x W or H x W x C in RGB(A) order."""
    if image_backend() == 'skimage':
        try:
            return _import_skimage().io.imread(filename)
        except (OSError, ValueError, SyntaxError) as exc:
            raise FormatError('cannot decode the image %s: %s' % (filename, exc), path=filename) from None
    img = cv2.imread(filename, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FormatError('cannot decode the image %s' % filename, path=filename)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = img[:, :, [2, 1, 0, 3][:img.shape[2]]]
        if img.dtype == np.uint16:      # Pillow (scikit-image's reader) keeps 8 bits of colour
            img = (img >> 8).astype(np.uint8)
    return img


def load_image(filename, color=True):
    """An image file as H x W x 3 RGB (color) or H x W x 1 intensity, float32 in [0, 1], with
    pycaffe's arithmetic: integers times 1 / 255 (1 / 65535 for 16-bit grey; 16-bit colour is
    read as 8 bits, as pycaffe's reader does) in float64; grey
    repeated into three channels when `color`; an alpha channel dropped when `color`, else
    composited over white before the intensity 0.2125 R + 0.7154 G + 0.0721 B (grey + alpha
    images count as RGBA, where pycaffe fails)."""
    if not os.path.isfile(filename):
        raise MissingFileError(filename, 'load_image')
    img = _decode(filename)
    if img.ndim == 3 and img.shape[2] == 2:
        img = img[:, :, [0, 0, 0, 1]]
    if not color and img.ndim == 3:
        img = _intensity(img)
    img = _as_float(img).astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return img


def resize_image(im, new_dims, interp_order=1):
    """im (H x W x K) resized to new_dims (height, width), K kept, as float32; interp_order 0
    nearest, 1 bilinear (default), 3 bicubic.

    With the 'skimage' backend this is pycaffe's resize_image: for 1 or 3 channels the image is
    scaled to [0, 1], resized by skimage.transform.resize(order=interp_order, mode='constant')
    (edges blend with zero; scikit-image >= 0.15 also smooths before downsampling) and scaled
    back; other channel counts go through scipy.ndimage.zoom. With 'opencv' it is cv2.resize
    (edges replicated, no smoothing, OpenCV's bicubic)."""
    if interp_order not in INTERPOLATIONS:
        raise ValueError('interp_order must be 0, 1 or 3, not %r' % (interp_order,))
    if image_backend() == 'skimage':
        return _resize_as_pycaffe(im, new_dims, interp_order)
    height, width = int(new_dims[0]), int(new_dims[1])
    im = np.asarray(im, np.float32)
    channels = im.shape[2]
    out = np.empty((height, width, channels), np.float32)
    for start in range(0, channels, CV_MAX_CHANNELS):
        part = cv2.resize(np.ascontiguousarray(im[:, :, start:start + CV_MAX_CHANNELS]), (width, height),
                          interpolation=INTERPOLATIONS[interp_order])
        out[:, :, start:start + CV_MAX_CHANNELS] = part.reshape(height, width, -1)
    return out


def _resize_as_pycaffe(im, new_dims, interp_order):
    """pycaffe's resize_image, step for step (scikit-image / SciPy)."""
    if im.shape[-1] in (1, 3):
        im_min, im_max = im.min(), im.max()
        if im_max <= im_min:              # a constant image
            return np.full((new_dims[0], new_dims[1], im.shape[-1]), im_min, np.float32)
        resize = _import_skimage().transform.resize
        im_std = (im - im_min) / (im_max - im_min)
        resized_im = resize(im_std, new_dims, order=interp_order, mode='constant') * (im_max - im_min) + im_min
    else:
        from scipy.ndimage import zoom
        scale = tuple(np.array(new_dims, dtype=float) / np.array(im.shape[:2]))
        resized_im = zoom(im, scale + (1,), order=interp_order)
    return resized_im.astype(np.float32)


def _crop_boxes(image_dims, crop_dims):
    """pycaffe's five crops (ymin, xmin, ymax, xmax): the four corners and the centre."""
    (h, w), (ch, cw) = image_dims, crop_dims
    boxes = [(y, x, y + ch, x + cw) for y in (0, h - ch) for x in (0, w - cw)]
    boxes.append(center_crop_box(image_dims, crop_dims))
    return boxes


def center_crop_box(image_dims, crop_dims):
    """(ymin, xmin, ymax, xmax) of the centred crop, truncated to ints as pycaffe does."""
    center = np.array(image_dims[:2], np.float64) / 2.0
    half = np.array(crop_dims, np.float64) / 2.0
    return tuple(np.concatenate([center - half, center + half]).astype(int))


def oversample(images, crop_dims):
    """10 crops per image (N x H x W x K): four corners and centre, then the same mirrored."""
    images = [np.asarray(im) for im in images]
    (ch, cw), channels = (int(crop_dims[0]), int(crop_dims[1])), images[0].shape[-1]
    boxes = _crop_boxes(images[0].shape[:2], (ch, cw))
    crops = np.empty((10 * len(images), ch, cw, channels), np.float32)
    for i, im in enumerate(images):
        five = crops[10 * i:10 * i + 5]
        for j, (y0, x0, y1, x1) in enumerate(boxes):
            five[j] = im[y0:y1, x0:x1, :]
        crops[10 * i + 5:10 * i + 10] = five[:, :, ::-1, :]
    return crops


class Transformer:
    """Formats H x W x K images for a net's inputs (`inputs`: {name: input blob shape}):
    resize, transpose, channel swap, raw scale, mean, input scale, in that order."""

    def __init__(self, inputs):
        self.inputs = {name: tuple(shape) for name, shape in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise KeyError('%s is not one of the net inputs: %s' % (in_, ', '.join(self.inputs)))

    def preprocess(self, in_, data):
        """data (H' x W' x K) -> the net's K x H x W float32 input for `in_`."""
        self._check_input(in_)
        caffe_in = np.array(data, np.float32)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[list(self.channel_swap[in_]), :, :]
        if in_ in self.raw_scale:
            caffe_in *= self.raw_scale[in_]
        if in_ in self.mean:
            caffe_in -= self.mean[in_]
        if in_ in self.input_scale:
            caffe_in *= self.input_scale[in_]
        return caffe_in

    def deprocess(self, in_, data):
        """The inverse of preprocess (without the resize): K x H x W -> H x W x K."""
        self._check_input(in_)
        decaf_in = np.array(data).squeeze()
        if in_ in self.input_scale:
            decaf_in /= self.input_scale[in_]
        if in_ in self.mean:
            decaf_in += self.mean[in_]
        if in_ in self.raw_scale:
            decaf_in /= self.raw_scale[in_]
        if in_ in self.channel_swap:
            decaf_in = decaf_in[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            decaf_in = decaf_in.transpose(np.argsort(self.transpose[in_]))
        return decaf_in

    def set_transpose(self, in_, order):
        """Axis order from the image to the input, e.g. (2, 0, 1) for H x W x K -> K x H x W."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ValueError('Transpose order needs to have the same number of dimensions as the input '
                             '(%d), got %s' % (len(self.inputs[in_]) - 1, tuple(order)))
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        """Channel order after the transpose, e.g. (2, 1, 0) for RGB -> BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ValueError('Channel swap needs to have the same number of dimensions as the input '
                             'channels (%d), got %s' % (self.inputs[in_][1], tuple(order)))
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        """Multiply the raw image (e.g. 255 for models trained on [0, 255] pixels)."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Subtract `mean`: one value per channel, or K x H x W (H x W for one channel), resized
        to the input's spatial size when it differs (as pycaffe: scaled to [0, 1], resized and
        scaled back). The mean keeps its dtype, so the subtraction rounds as pycaffe's does."""
        self._check_input(in_)
        mean = np.asarray(mean)
        channels, spatial = self.inputs[in_][1], self.inputs[in_][2:]
        if mean.ndim == 1:
            if mean.shape[0] != channels:
                raise ValueError('Mean channels incompatible with input: %d values for %d channels'
                                 % (mean.shape[0], channels))
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if mean.ndim == 2:
                mean = mean[np.newaxis]
            if mean.ndim != 3 or mean.shape[0] != channels:
                raise ValueError('Mean shape %s invalid for an input of shape %s'
                                 % (mean.shape, self.inputs[in_]))
            if mean.shape[1:] != spatial:
                m_min, m_max = mean.min(), mean.max()
                if m_max > m_min:
                    normal = (mean - m_min) / (m_max - m_min)
                    mean = resize_image(normal.transpose(1, 2, 0), spatial).transpose(2, 0, 1) \
                        * (m_max - m_min) + m_min
                else:
                    mean = np.full((channels,) + spatial, m_min, mean.dtype)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply the input after mean subtraction (raw_scale acts before)."""
        self._check_input(in_)
        self.input_scale[in_] = scale
