"""SSD's image operations (weiliu89/caffe: im_transforms.cpp and the data transformer's image
steps), with the OpenCV calls the fork makes, on HWC images. Every random choice is made by the
caller (caffe_py.data.annotated) and passed in.
"""
import cv2
import numpy as np

from ..proto import caffe_pb2
from .annotated_boxes import small_side_size
from .image import DataSourceError

_RESIZE = caffe_pb2.ResizeParameter
INTERP = {_RESIZE.LINEAR: cv2.INTER_LINEAR, _RESIZE.AREA: cv2.INTER_AREA, _RESIZE.NEAREST: cv2.INTER_NEAREST,
          _RESIZE.CUBIC: cv2.INTER_CUBIC, _RESIZE.LANCZOS4: cv2.INTER_LANCZOS4}
_PAD = {_RESIZE.CONSTANT: cv2.BORDER_CONSTANT, _RESIZE.MIRRORED: cv2.BORDER_REFLECT_101,
        _RESIZE.REPEAT_NEAREST: cv2.BORDER_REPLICATE}


def _convert_table(alpha, beta):
    """cv::Mat::convertTo(-1, alpha, beta) on 8-bit values as a lookup table: float arithmetic,
    rounded half to even and saturated."""
    values = np.arange(256, dtype=np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _need_color(image, what):
    if image.shape[2] != 3:
        raise DataSourceError('%s needs color (3-channel) images; this one has %d channel(s)'
                              % (what, image.shape[2]))


def distort(image, steps):
    """ApplyDistort's chosen steps, in order: ('brightness', delta), ('contrast', alpha),
    ('saturation', alpha), ('hue', delta), ('order', channel permutation)."""
    for kind, value in steps:
        if kind == 'brightness':
            image = cv2.LUT(image, _convert_table(1, value)).reshape(image.shape)
        elif kind == 'contrast':
            image = cv2.LUT(image, _convert_table(value, 0)).reshape(image.shape)
        elif kind in ('saturation', 'hue'):
            _need_color(image, 'distort_param %s' % kind)
            hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
            channel = 1 if kind == 'saturation' else 0
            table = _convert_table(value, 0) if kind == 'saturation' else _convert_table(1, value)
            hsv[..., channel] = cv2.LUT(np.ascontiguousarray(hsv[..., channel]), table)
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        else:
            _need_color(image, 'distort_param random_order_prob')
            image = np.ascontiguousarray(image[..., list(value)])
    return image


def expand(image, height, width, top, left, fill):
    """ExpandImage: `image` at (top, left) of a height x width canvas filled with `fill` per channel
    (or, an HWC array, copied from it)."""
    h, w, channels = image.shape
    if np.ndim(fill) == 3:
        canvas = fill.copy()
        canvas[top:top + h, left:left + w] = image
        return canvas
    fill = [float(v) for v in np.broadcast_to(fill, (channels,))] + [0.0] * (4 - channels)
    canvas = cv2.copyMakeBorder(image, top, height - h - top, left, width - w - left, cv2.BORDER_CONSTANT,
                                value=fill)
    return canvas.reshape(height, width, channels)


def resize(image, param, interp):
    """ApplyResize with the interpolation chosen: WARP, FIT_LARGE_SIZE_AND_PAD (aspect kept, centred,
    padded by pad_mode / pad_value) or FIT_SMALL_SIZE (aspect kept, the smaller side fitted)."""
    h, w, channels = image.shape
    f32 = np.float32
    if param.resize_mode == _RESIZE.WARP:
        out = cv2.resize(image, (param.width, param.height), interpolation=interp)
    elif param.resize_mode == _RESIZE.FIT_SMALL_SIZE:
        rows, cols = small_side_size(param, h, w)
        out = cv2.resize(image, (cols, rows), interpolation=interp)
    else:
        pad = list(param.pad_value) or [0.0]
        if len(pad) not in (1, channels):
            raise DataSourceError('Specify either 1 pad_value or as many as channels: %d' % channels)
        pad = (pad * channels if len(pad) == 1 else pad) + [0.0] * (4 - channels)
        new_h, new_w = param.height, param.width
        aspect = f32(w) / f32(h)
        if aspect > f32(new_w) / f32(new_h):                     # full width, bands above and below
            rows = int(np.floor(f32(new_w) / aspect))
            out = cv2.resize(image, (new_w, rows), interpolation=interp)
            top = int(np.floor((new_h - rows) / 2.0))
            out = cv2.copyMakeBorder(out, top, new_h - rows - top, 0, 0, _PAD[param.pad_mode], value=pad[:4])
        else:
            cols = int(np.floor(aspect * f32(new_h)))
            out = cv2.resize(image, (cols, new_h), interpolation=interp)
            left = int(np.floor((new_w - cols) / 2.0))
            out = cv2.copyMakeBorder(out, 0, 0, left, new_w - cols - left, _PAD[param.pad_mode], value=pad[:4])
    return out.reshape(out.shape[:2] + (channels,))


def _on_luma(image, apply):
    """`apply` to the Y plane of a BGR image (YCrCb), or to a gray image itself."""
    if image.shape[2] == 1:
        return apply(image[..., 0])[..., None]
    ycrcb = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
    ycrcb[..., 0] = apply(np.ascontiguousarray(ycrcb[..., 0]))
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)


def _keep_axes(out):
    return out if out.ndim == 3 else out[..., None]


def noise(image, param, salt=None):
    """ApplyNoise, each enabled effect in the fork's order (its `prob` is not consulted there either):
    decolorize, gauss_blur, hist_eq, clahe, jpeg, erode, posterize, inverse, saltpepper (at the pixels
    `salt` = (rows, columns)), convert_to_hsv, convert_to_lab. As in the fork, jpeg decodes in color
    and convert_to_lab gives a float32 image (read_as_fork reads the result)."""
    if param.decolorize:
        _need_color(image, 'noise_param.decolorize')
        image = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    if param.gauss_blur:
        image = _keep_axes(cv2.GaussianBlur(image, (7, 7), 1.5))
    if param.hist_eq:
        image = _on_luma(image, cv2.equalizeHist)
    if param.clahe:
        image = _on_luma(image, cv2.createCLAHE(clipLimit=4).apply)
    if param.jpeg > 0:
        encoded = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, int(param.jpeg)])[1]
        image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if param.erode:
        image = _keep_axes(cv2.erode(image, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3), (1, 1))))
    if param.posterize:
        image = image // 64 * 64 + 32
    if param.inverse:
        image = 255 - image
    if param.saltpepper:
        values = salt_values(param, image.shape[2])
        image = image.copy()
        image[salt[0], salt[1]] = values
    if param.convert_to_hsv:
        _need_color(image, 'noise_param.convert_to_hsv')
        image = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    if param.convert_to_lab:
        _need_color(image, 'noise_param.convert_to_lab')
        image = cv2.cvtColor(image.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_BGR2Lab)
    return image


def salt_values(param, channels):
    values = list(param.saltpepper_param.value)
    if not values:
        raise DataSourceError('noise_param.saltpepper needs saltpepper_param.value (the fork reads '
                              'past its end without one)')
    if len(values) not in (1, channels):
        raise DataSourceError('Specify either 1 saltpepper_param.value or as many as channels: %d' % channels)
    return np.asarray(values * channels if len(values) == 1 else values, np.float32).astype(np.uint8)


def read_as_fork(image, channels, rows, cols, mirror):
    """The fork's Transform reading the crop (rows, cols) of its final image: row by row, the first
    width x channels bytes as 8-bit pixels of `channels` channels, mirrored by pixel. For an 8-bit
    image with that many channels this is the crop itself; after convert_to_lab (float32) or jpeg on
    a gray image (decoded in color), it is those bytes, as the fork reads them."""
    crop = image[rows, cols]
    height, width = crop.shape[:2]
    if crop.dtype != np.uint8 or crop.shape[2] != channels:
        crop = np.ascontiguousarray(crop).view(np.uint8).reshape(height, -1)[:, :width * channels]
        crop = crop.reshape(height, width, channels)
    return crop[:, ::-1] if mirror else crop
