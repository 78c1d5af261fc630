"""Region pooling of 300 regions on a VGG16 conv5_3-sized map, scale 1/16: ROIPooling (Faster R-CNN,
512 x 38 x 50 map, 7x7 bins) and PSROIPooling (R-FCN, 21 classes, 7x7 groups: 1029 x 38 x 50 map),
caffe-py forward and backward next to OpenCV dnn's forward, same inputs, same run.

    python benchmarks/bench_roi_pooling.py [--iters 5]
"""
import argparse
import logging
import os
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from caffe_py import TRAIN, Net, formats  # noqa: E402

NET = ('input: "x" input_shape { dim: 1 dim: %d dim: 38 dim: 50 }\n'
       'input: "rois" input_shape { dim: 300 dim: 5 }\n'
       'layer { name: "pool" type: "%s" bottom: "x" bottom: "rois" top: "y" %s }\n')
LAYERS = [('ROIPooling', 512, 'roi_pooling_param { pooled_w: 7 pooled_h: 7 spatial_scale: 0.0625 }'),
          ('PSROIPooling', 21 * 7 * 7, 'psroi_pooling_param { spatial_scale: 0.0625 output_dim: 21 group_size: 7 }')]


def bench(kind, channels, param_text, x, rois, iters):
    text = NET % (channels, kind, param_text)
    param = formats.parse_net_text(text)
    param.force_backward = True
    net = Net(param, TRAIN)
    net.blobs['x'].data[...] = x
    net.blobs['rois'].data[...] = rois
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'roi.prototxt')
        with open(path, 'w') as f:
            f.write(text)
        cv = cv2.dnn.readNetFromCaffe(path)
    times = {'caffe-py forward': [], 'caffe-py backward': [], 'OpenCV forward': []}
    for _ in range(iters):
        start = time.perf_counter()
        net.forward()
        middle = time.perf_counter()
        net.backward()
        times['caffe-py forward'].append(middle - start)
        times['caffe-py backward'].append(time.perf_counter() - middle)
        cv.setInput(x, 'x')
        cv.setInput(rois, 'rois')
        start = time.perf_counter()
        out = cv.forward()
        times['OpenCV forward'].append(time.perf_counter() - start)
    for name, values in times.items():
        print('%s %s: %.1f ms (median of %d)' % (kind, name, 1000 * float(np.median(values)), len(values)))
    print('%s largest difference from OpenCV: %.3g' % (kind, float(np.abs(out - net.blobs['y'].data).max())))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--iters', type=int, default=5)
    args = parser.parse_args()
    logging.getLogger('caffe_py').setLevel(logging.ERROR)
    rng = np.random.default_rng(0)
    x1, y1 = rng.uniform(0, 700, 300), rng.uniform(0, 500, 300)
    rois = np.column_stack([np.zeros(300), x1, y1, x1 + rng.uniform(16, 300, 300),
                            y1 + rng.uniform(16, 300, 300)]).astype(np.float32)
    for kind, channels, param_text in LAYERS:
        x = rng.standard_normal((1, channels, 38, 50)).astype(np.float32)
        bench(kind, channels, param_text, x, rois, args.iters)


if __name__ == '__main__':
    main()
