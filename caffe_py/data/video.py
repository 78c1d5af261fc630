"""Frames of a video file or a webcam through OpenCV's VideoCapture, for SSD's VideoData layer
(weiliu89/caffe, branch ssd, video_data_layer.cpp).

Each item of a batch reads `skip_frames` frames that it drops, then the frame it keeps; the frame
is transformed as the fork's DataTransformer does for an OpenCV image: resize_param, noise_param,
then crop_size, mirror, mean and scale. A video ends where OpenCV's frame count says: the batch
asking for a frame past it raises EndOfVideo (the fork raises SIGINT there).
"""
import os

import cv2
import numpy as np

from .. import rng as caffe_rng
from ..proto import caffe_pb2
from .annotated import roll_weighted_die
from .annotated_boxes import F32, small_side_size
from .annotated_image import INTERP, noise, resize
from .hdf5 import DataSourceError
from .transformer import chw_shape

_VIDEO = caffe_pb2.VideoDataParameter


class EndOfVideo(DataSourceError):
    """Every frame of the video file has been read."""


def open_capture(param):
    """(an open cv2.VideoCapture, what it reads, for messages) of a VideoDataParameter."""
    if param.video_type == _VIDEO.WEBCAM:
        what = 'webcam video_data_param.device_id %d' % param.device_id
        capture = cv2.VideoCapture(param.device_id)
    elif param.video_type == _VIDEO.VIDEO:
        if not param.HasField('video_file'):
            raise DataSourceError('video_type VIDEO needs video_data_param.video_file')
        what = 'video %s (video_data_param.video_file)' % param.video_file
        if not os.path.isfile(param.video_file):
            raise DataSourceError('%s does not exist (working directory %s)' % (what, os.getcwd()))
        capture = cv2.VideoCapture(param.video_file)
    else:
        raise DataSourceError('unknown video_data_param.video_type %d' % param.video_type)
    if not capture.isOpened():
        raise DataSourceError('failed to open %s: OpenCV cannot read it' % what)
    return capture, what


class VideoSource:
    """The prefetch loader of VideoData: batch_size frames per batch, a label of 0 each."""

    def __init__(self, layer_param, transformer, batch_size):
        param = layer_param.video_data_param
        self.transform_param = layer_param.transform_param
        if self.transform_param.crop_h or self.transform_param.crop_w:
            raise DataSourceError('VideoData takes crop_size, not transform_param crop_h / crop_w')
        self.transformer = transformer
        self.batch_size = batch_size
        self.skip = param.skip_frames
        self.stream = None
        if self.transform_param.noise_param.convert_to_lab:
            raise DataSourceError('noise_param.convert_to_lab is not supported in VideoData')
        self.capture, self.what = open_capture(param)
        self.is_file = param.video_type == _VIDEO.VIDEO
        self.total = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)) if self.is_file else None
        self.taken, self.pending = 0, None
        first = self._read()
        # the fork reads a frame for the shape, then seeks back to frame 0 (a webcam's is dropped)
        self.taken, self.pending = 0, (first if self.is_file else None)
        channels, height, width = chw_shape(first)
        if self.transform_param.HasField('resize_param'):      # InferBlobShape: no draws
            r = self.transform_param.resize_param
            height, width = small_side_size(r, height, width) \
                if r.resize_mode == caffe_pb2.ResizeParameter.FIT_SMALL_SIZE else (r.height, r.width)
        self.shape = transformer.output_shape((channels, height, width))

    def seed_thread(self, seed):
        """The prefetch thread's engine: the resize interpolation and salt-and-pepper draws."""
        self.stream = caffe_rng.new_stream(seed)

    def _read(self):
        if self.pending is not None:
            frame, self.pending = self.pending, None
        else:
            ok, frame = self.capture.read()
            if not ok or frame is None:
                raise DataSourceError('could not read frame %d of %s' % (self.taken, self.what))
        self.taken += 1
        return frame

    def _next(self):
        """The next frame, or EndOfVideo past the last one of a file."""
        if self.is_file and self.taken >= self.total:
            raise EndOfVideo('end of %s: all its %d frames were read (the fork stops the run here)'
                             % (self.what, self.total))
        return self._read()

    def _prepare(self, frame):
        """The fork's resize_param and noise_param steps (draws from the prefetch thread's engine),
        before crop, mirror, mean and scale."""
        p = self.transform_param
        frame = frame if frame.ndim == 3 else frame[..., None]
        if p.HasField('resize_param'):
            modes = list(p.resize_param.interp_mode)
            interp = INTERP[modes[roll_weighted_die(len(modes), self.stream)]] if modes else cv2.INTER_LINEAR
            frame = resize(frame, p.resize_param, interp)
        if p.HasField('noise_param'):
            salt = None
            if p.noise_param.saltpepper:
                height, width = frame.shape[:2]
                count = int(np.floor(F32(p.noise_param.saltpepper_param.fraction) * F32(width) * F32(height)))
                words = self.stream.words(2 * count).reshape(count, 2)
                salt = (words[:, 1] % height, words[:, 0] % width)
            frame = noise(frame, p.noise_param, salt)
        return frame

    def load_batch(self, batch):
        batch.reshape((self.batch_size,) + self.shape, (self.batch_size,))
        draws = self.transformer.draw(self.batch_size)
        for i in range(self.batch_size):
            for _ in range(self.skip):
                self._next()
            frame = self._prepare(self._next())
            self.transformer.transform(frame, batch.data[i], None if draws is None else draws[i],
                                       'frame %d of %s' % (self.taken - 1, self.what))
        batch.label[...] = 0

    def close(self):
        self.capture.release()
