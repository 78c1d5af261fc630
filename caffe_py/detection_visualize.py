"""DetectionOutput's `visualize` (weiliu89/caffe, branch ssd): the data blob turned back into images
(the layer's transform_param undone, as the fork's TransformInv), the detections scoring at least
visualize_threshold drawn on them with the fork's colours, labels and FPS line (VisualizeBBox),
each frame shown in a "detections" window when a display is available and appended to the video
`save_file` (DIVX, 30 frames per second) when one is named.
"""
import os
import signal
import sys
import time

import cv2
import numpy as np

from . import log
from .data import annotated
from .data.transformer import DataTransformer, TransformError
from .proto import caffe_pb2

f32 = np.float32
_RESIZE = caffe_pb2.ResizeParameter
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _cv_rng_floats(seed, n):
    """The first n draws of OpenCV's cv::RNG(seed).uniform(0.f, 1.f) (multiply-with-carry)."""
    state = seed or 0xFFFFFFFF
    out = np.empty(n, f32)
    for k in range(n):
        state = (state & 0xFFFFFFFF) * 4164903690 + (state >> 32)
        out[k] = f32(state & 0xFFFFFFFF) * f32(2.3283064365386963e-10)
    return out


def _hsv_to_rgb(h, s, v):
    """The fork's HSV2RGB, in float."""
    i = int(h * f32(6))
    f = h * f32(6) - f32(i)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = {0: (v, t, p), 1: (q, v, p), 2: (p, v, t), 3: (p, q, v), 4: (t, p, v), 5: (v, p, q)}.get(
        i, (f32(1), f32(1), f32(1)))
    return (float(r * f32(255)), float(g * f32(255)), float(b * f32(255)))


def colors(n):
    """The fork's GetColors(n): golden-ratio hues from cv::RNG(12345), saturation 0.3, value 0.99.
    The fork hands OpenCV (r, g, b) * 255 as the colour, which OpenCV reads as (blue, green, red)."""
    golden, s, v = f32(0.618033988749895), f32(0.3), f32(0.99)
    return [_hsv_to_rgb(np.fmod(u + golden, f32(1)), s, v) for u in _cv_rng_floats(12345, n)]


def images_from_blob(data, transformer, resize, rng):
    """The fork's TransformInv: (N, C, H, W) values to N uint8 images (H x W x C, or H x W with one
    channel): value / scale + mean, cut to an integer and kept to 8 bits as the fork's cast does
    on x86, then resized by transform_param.resize_param."""
    num, channels = data.shape[:2]
    if channels not in (1, 3):
        raise TransformError('the data blob has %d channels; visualize takes 1 or 3' % channels)
    mean = transformer.mean_for(channels, 'visualize')
    values = data.astype(f32) / transformer.scale
    if mean is not None:
        values = values + mean
    pixels = np.trunc(values).astype(np.int64).astype(np.uint8)
    out = []
    for image in pixels:
        image = np.ascontiguousarray(image.transpose(1, 2, 0))
        if resize is not None:
            image = annotated.resize(image, {'box': np.zeros((0, 4), f32)}, resize, rng)[0]
        out.append(image[..., 0] if channels == 1 else image)
    return out


def draw(images, rows, threshold, palette, display_names, fps):
    """Draw detection rows (D, 7) scoring at least `threshold` on `images` in place, as the fork's
    VisualizeBBox: the FPS line at the top left, then per label (ascending) each box with a
    "name: score" tab at its bottom left corner."""
    height, width = images[0].shape[:2]
    rows = np.asarray(rows)
    keep = (rows[:, 2].astype(f32) >= f32(threshold)) & (rows[:, 1] >= 0)
    rows = rows[keep]
    boxes = np.trunc(rows[:, 3:7].astype(f32) * np.array([width, height, width, height], f32)).astype(int)
    items, labels = rows[:, 0].astype(int), rows[:, 1].astype(int)
    for i, image in enumerate(images):
        text = ('FPS: %.2f' % fps)[:49]
        (w, h), base = cv2.getTextSize(text, _FONT, 1, 2)
        cv2.rectangle(image, (0, 0), (w, h + base), (255, 255, 255), cv2.FILLED)
        cv2.putText(image, text, (0, int(h + base / 2.)), _FONT, 1, (0, 0, 0), 2, cv2.LINE_8)
        mine = np.flatnonzero(items == i)
        for k in mine[np.argsort(labels[mine], kind='stable')]:
            color = palette[labels[k]]
            x0, y0, x1, y1 = (int(v) for v in boxes[k])
            cv2.rectangle(image, (x0, y0), (x1, y1), color, 4)
            name = display_names.get(labels[k], 'Unknown')
            text = ('%s: %.2f' % (name, float(f32(rows[k, 2]))))[:49]
            (w, h), base = cv2.getTextSize(text, _FONT, 1, 2)
            cv2.rectangle(image, (x0, y1), (x0 + w, y1 - h - base), color, cv2.FILLED)
            cv2.putText(image, text, (x0, y1 - base), _FONT, 1, (0, 0, 0), 2, cv2.LINE_8)


def display_available():
    """Whether a window can be opened: on Linux and the BSDs only with an X11 or Wayland display."""
    if sys.platform in ('win32', 'darwin'):
        return True
    return bool(os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


class Visualizer:
    """Draws, shows and records a DetectionOutput layer's detections (visualize: true)."""

    def __init__(self, error, param, transform_param, phase, display_names, num_classes):
        self.error = error
        self.threshold = param.visualize_threshold if param.HasField('visualize_threshold') else 0.6
        self.save_file = param.save_file
        try:
            self.transformer = DataTransformer(transform_param, phase)
        except (TransformError, OSError, ValueError) as exc:
            raise error('transform_param: %s' % exc) from None
        self.resize = transform_param.resize_param if transform_param.HasField('resize_param') else None
        if self.resize is not None and self.resize.resize_mode not in (_RESIZE.WARP, _RESIZE.FIT_LARGE_SIZE_AND_PAD):
            raise error('transform_param.resize_param: resize_mode %s is not supported by caffe-py for '
                        'visualize (WARP and FIT_LARGE_SIZE_AND_PAD are)'
                        % _RESIZE.Resize_mode.Name(self.resize.resize_mode))
        self.rng = np.random.default_rng()
        self.display_names = display_names
        self.palette = colors(max([len(display_names), num_classes] + [k + 1 for k in display_names]))
        self.show = None                     # decided at the first frame
        self.writer = None
        self.clock = time.process_time()

    def __call__(self, data, rows):
        """Draw `rows` on the images of `data` (N, C, H, W), show and record them."""
        rows = np.asarray(rows)
        if not len(rows) or not len(data):
            return []
        elapsed = time.process_time() - self.clock
        fps = len(data) / elapsed if elapsed > 0 else np.inf
        try:
            images = images_from_blob(np.asarray(data), self.transformer, self.resize, self.rng)
        except TransformError as exc:
            raise self.error(str(exc)) from None
        items = rows[:, 0].astype(int)
        if (items >= len(images)).any():
            raise self.error('a detection names image %d of a data blob of %d' % (items.max(), len(images)))
        top = int(rows[:, 1].max()) + 1
        if top > len(self.palette):
            self.palette = colors(top)
        draw(images, rows, self.threshold, self.palette, self.display_names, fps)
        for image in images:
            if self.save_file:
                self._record(image)
            if self.show is not False:
                self._show(image)
        self.clock = time.process_time()
        return images

    def _record(self, image):
        frame = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if self.writer is None:
            self.writer = cv2.VideoWriter(self.save_file, cv2.VideoWriter_fourcc(*'DIVX'), 30,
                                          (frame.shape[1], frame.shape[0]), True)
            if not self.writer.isOpened():
                self.writer = None
                raise self.error('cannot write the video %s (detection_output_param.save_file) with '
                                 'OpenCV (DIVX)' % self.save_file)
        self.writer.write(frame)

    def _show(self, image):
        if self.show is None:
            self.show = display_available()
            if not self.show:
                log.warning('DetectionOutput visualize: no display (DISPLAY is not set); the detections '
                            'are not shown')
                return
        try:
            cv2.imshow('detections', image)
            key = cv2.waitKey(1)
        except cv2.error:
            log.warning('DetectionOutput visualize: this OpenCV cannot open windows (%s); the '
                        'detections are not shown', cv2.__name__)
            self.show = False
            return
        if key == 27:                                   # Esc, as the fork: raise SIGINT
            signal.raise_signal(signal.SIGINT)

    def close(self):
        """Finish the video file."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
