"""Run an SSD detector (prototxt + caffemodel) on an image and draw its boxes.

    python examples/ssd_detect/detect.py                      # tiny SSD on the shipped scene
    python examples/ssd_detect/detect.py --model MobileNetSSD_deploy.prototxt \\
        --weights MobileNetSSD_deploy.caffemodel --image street.jpg --labels voc

The image is resized to the net's input, taken as BGR, shifted by --mean and multiplied by
--scale (one value or B,G,R; the defaults are those of tiny SSD and of MobileNet-SSD). Detections above --threshold are
printed and drawn into --out (a PNG).
"""
import argparse
import os
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LABELS = {
    'tiny': ('background', 'circle', 'square'),
    'voc': ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
            'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
            'train', 'tvmonitor'),
    'face': ('background', 'face'),
}


def detect(net, image, mean=127.5, scale=1 / 127.5):
    """Detections of a deploy net on a BGR uint8 image: rows (label, score, xmin, ymin, xmax, ymax)
    in pixels of the image."""
    data = net.blobs[net.inputs[0]]
    height, width = data.shape[2:]
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    data.reshape((1, 3, height, width))
    mean = np.asarray(mean, np.float32)
    data.data[...] = ((resized.astype(np.float32) - mean) * scale).transpose(2, 0, 1)[None]
    rows = net.forward()[net.outputs[0]][0, 0]
    rows = rows[rows[:, 1] >= 0]
    size = np.array([image.shape[1], image.shape[0]] * 2, np.float32)
    return np.concatenate([rows[:, 1:3], np.clip(rows[:, 3:7], 0, 1) * size], axis=1)


def draw(image, detections, labels, threshold):
    out = image.copy()
    for label, score, x0, y0, x1, y1 in detections:
        if score < threshold:
            continue
        name = labels[int(label)] if int(label) < len(labels) else str(int(label))
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), (0, 0, 255), 2)
        cv2.putText(out, '%s %.2f' % (name, score), (int(x0) + 2, max(int(y0) - 4, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1, cv2.LINE_AA)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tiny = os.path.join(ROOT, 'models', 'tiny_ssd')
    parser.add_argument('--model', default=os.path.join(tiny, 'deploy.prototxt'))
    parser.add_argument('--weights', default=os.path.join(tiny, 'tiny_ssd.caffemodel'))
    parser.add_argument('--image', default=os.path.join(HERE, 'scene.jpg'))
    parser.add_argument('--out', default='detections.png')
    parser.add_argument('--labels', default='tiny', help='tiny, voc, face, or a file with one name a line')
    parser.add_argument('--mean', default='127.5', help='one value, or B,G,R')
    parser.add_argument('--scale', type=float, default=1 / 127.5)
    parser.add_argument('--threshold', type=float, default=0.5)
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    import caffe_py as caffe
    labels = LABELS.get(args.labels) or open(args.labels).read().split()
    image = cv2.imread(args.image)
    if image is None:
        parser.error('cannot read the image %s (--image)' % args.image)
    net = caffe.Net(args.model, caffe.TEST, weights=args.weights)
    detections = detect(net, image, [float(v) for v in args.mean.split(',')], args.scale)
    for label, score, x0, y0, x1, y1 in detections[detections[:, 1] >= args.threshold]:
        print('%-12s %.3f  (%4.0f, %4.0f) - (%4.0f, %4.0f)' % (labels[int(label)], score, x0, y0, x1, y1))
    cv2.imwrite(args.out, draw(image, detections, labels, args.threshold))
    print('wrote', args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
