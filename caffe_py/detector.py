"""pycaffe's Detector: a TEST-phase Net that classifies windows of images, R-CNN style."""
import os

import numpy as np

from . import io
from .classifier import configured_transformer
from .net import TEST, Net


class Detector(Net):
    """Warps each window (ymin, xmin, ymax, xmax) to the input size, with `context_pad` pixels of
    the input showing surrounding context (as R-CNN's feature extraction), and classifies it."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None, context_pad=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = configured_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """[{'window', 'prediction', 'filename'}] for (image filename, windows) pairs."""
        images_windows = [(name, list(windows)) for name, windows in images_windows]
        crops = []
        for filename, windows in images_windows:
            image = io.load_image(filename)
            crops.extend(self.crop(image, window) for window in windows)
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        flat = [(filename, window) for filename, windows in images_windows for window in windows]
        return [{'window': window, 'prediction': prediction, 'filename': filename}
                for (filename, window), prediction in zip(flat, predictions)]

    def detect_selective_search(self, image_fnames):
        """detect_windows over Selective Search proposals (needs the selective_search_ijcv_with_python
        package and its MATLAB code, as pycaffe did)."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError as exc:
            raise ImportError('detect_selective_search needs the selective_search_ijcv_with_python package '
                              '(and MATLAB); give windows to detect_windows instead') from exc
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows = selective_search.get_windows(image_fnames, cmd='selective_search_rcnn')
        return self.detect_windows(zip(image_fnames, windows))

    def crop(self, im, window):
        """The window of im (H x W x K), with context padding when configured."""
        window = np.asarray(window)
        y0, x0, y1, x1 = (int(v) for v in window)
        if not self.context_pad:
            return im[y0:y1, x0:x1]
        crop_size = self.blobs[self.inputs[0]].width     # square inputs, as pycaffe assumes
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        half_h, half_w = (y1 - y0 + 1) / 2.0, (x1 - x0 + 1) / 2.0
        center = np.array((y0 + half_h, x0 + half_w))
        box = np.round(np.tile(center, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        scale_h, scale_w = crop_size / (box[2] - box[0] + 1), crop_size / (box[3] - box[1] + 1)
        pad_y, pad_x = int(round(max(0, -box[0]) * scale_h)), int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h, clip_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        if clip_h <= 0 or clip_w <= 0:
            raise ValueError('window %s lies outside the %dx%d image' % (tuple(window), im_h, im_w))
        crop_h = min(int(round(clip_h * scale_h)), crop_size - pad_y)
        crop_w = min(int(round(clip_w * scale_w)), crop_size - pad_x)
        context = im[int(box[0]):int(box[2]), int(box[1]):int(box[3])]
        crop = np.empty(self.crop_dims, np.float32)
        crop[...] = self.crop_mean
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = io.resize_image(context, (crop_h, crop_w))
        return crop

    def configure_crop(self, context_pad):
        """Crop dimensions (H, W, K) and, with context, the mean that fills the padding."""
        in_ = self.inputs[0]
        to_image = np.argsort(self.transformer.transpose[in_])     # K x H x W -> H x W x K
        self.crop_dims = np.array(self.blobs[in_].shape[1:])[to_image]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, np.float32)
            return
        crop_mean = np.array(mean).transpose(to_image)
        channel_order = self.transformer.channel_swap.get(in_)
        if channel_order is not None:
            crop_mean = crop_mean[:, :, np.argsort(channel_order)]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
