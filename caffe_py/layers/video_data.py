"""SSD's VideoData layer (weiliu89/caffe, branch ssd): frames of a video file or a webcam."""
from ..layer import register
from .data import PrefetchingDataLayer


@register('VideoData')
class VideoDataLayer(PrefetchingDataLayer):
    """Frames read through OpenCV's VideoCapture (video_data_param: video_type WEBCAM with device_id,
    or VIDEO with video_file; skip_frames dropped before each kept frame), data_param.batch_size per
    batch, transformed by transform_param (resize_param, noise_param, crop_size, mirror, mean, scale);
    an optional label top of zeros (batch_size). A video file ends at OpenCV's frame count: the
    forward pass needing a frame past it fails with a one-line 'end of video' error, after every
    complete batch before it (the fork raises SIGINT in its prefetch thread there). The fork's
    skip_frames loop also writes each dropped frame over the previous item (and before the batch
    for the first); here items hold only kept frames. See caffe_py/data/video.py."""

    def make_source(self):
        from ..data.video import VideoSource
        batch_size = self.layer_param.data_param.batch_size
        if batch_size <= 0:
            raise self.error('data_param.batch_size must be positive')
        source = VideoSource(self.layer_param, self.transformer, batch_size)
        return source, (batch_size,) + tuple(source.shape)
