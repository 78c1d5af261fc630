"""caffe.io's image backends: load_image and resize_image with scikit-image (pycaffe's pixels)
and with OpenCV (the fast path), median milliseconds per image.

    python benchmarks/bench_image_io.py [--iters N]

The image is a smooth 375 x 500 JPEG (an ImageNet-sized photo); resizes go to CaffeNet's 227 x 227
(down) and from 100 x 120 up to 227 x 227, three channels, float32 in [0, 1].
"""
import argparse
import os
import statistics
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from caffe_py import io  # noqa: E402
from bench_cpu_nets import timed  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=30)
    args = parser.parse_args()
    rng = np.random.RandomState(0)
    pixels = cv2.GaussianBlur((rng.rand(375, 500, 3) * 255).astype(np.uint8), (7, 7), 3)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'photo.jpg')
        cv2.imwrite(path, pixels)
        image = io.load_image(path)
        small = image[:100, :120]
        cases = [('load_image 375x500 JPEG', lambda: io.load_image(path)),
                 ('resize_image 375x500 -> 227x227', lambda: io.resize_image(image, (227, 227))),
                 ('resize_image 100x120 -> 227x227', lambda: io.resize_image(small, (227, 227)))]
        backends = ['opencv'] + (['skimage'] if importable('skimage') else [])
        print('%-34s' % 'ms per image' + ''.join('%12s' % b for b in backends))
        for name, fn in cases:
            row = []
            for backend in backends:
                io.set_image_backend(backend)
                row.append(statistics.median(timed(fn, args.iters)))
            print('%-34s' % name + ''.join('%12.3f' % ms for ms in row))


def importable(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


if __name__ == '__main__':
    main()
