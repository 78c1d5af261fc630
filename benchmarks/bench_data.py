"""Images per second of the ImageData and Data (LMDB, encoded JPEG) layers, next to bare cv2.imdecode.

    python benchmarks/bench_data.py [--images 300] [--batches 30] [--threads 1,2] [--repeat 3]

Generates 256x256 JPEGs (smooth colour fields with texture) in a temporary
folder, converts them to an encoded LMDB with convert_imageset (file bytes
kept), then measures in the same run:
  - bare decode: cv2.imdecode of the same JPEG bytes, one thread, files in memory;
  - ImageData and Data, batch 50, TRAIN, crop_size 227 + mirror + mean_value,
    forward passes after the prefetch queue has drained once (steady state).
--threads lists the decoding-thread counts per layer to measure
(CAFFE_PY_DATA_THREADS; the library's default is half the CPUs, 1 to 4). Wall-clock rates depend on what else runs on the
machine; the CPU milliseconds per image (all threads of the process) do much
less. Nothing is written outside the temporary folder.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import caffe_py  # noqa: E402
from caffe_py import log  # noqa: E402
from caffe_py.tools.convert_imageset import convert_imageset  # noqa: E402

BATCH = 50
TRANSFORM = 'transform_param { crop_size: 227 mirror: true mean_value: 104 mean_value: 117 mean_value: 123 }'


def make_images(folder, count, seed=0):
    rng = np.random.default_rng(seed)
    with open(os.path.join(folder, 'list.txt'), 'w') as listing:
        for i in range(count):
            base = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (256, 256),
                              interpolation=cv2.INTER_CUBIC)
            noise = rng.normal(0, 12, (256, 256, 3))
            image = np.clip(base + noise, 0, 255).astype(np.uint8)
            name = 'img%04d.jpg' % i
            cv2.imwrite(os.path.join(folder, name), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            listing.write('%s %d\n' % (name, i % 10))


def bare_decode_rate(blobs, rounds):
    """(images per second, CPU milliseconds per image) of cv2.imdecode in a loop."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        for data in blobs:
            cv2.imdecode(data, cv2.IMREAD_COLOR)
    n = rounds * len(blobs)
    return n / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / n


def layer_rate(text, batches):
    caffe_py.set_random_seed(0)
    net = caffe_py.Net(_param(text), caffe_py.TRAIN)
    try:
        depth = net.layers[0].prefetcher.depth
        for _ in range(depth + 2):          # drain the batches made during setup
            net.forward()
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            net.forward()
        elapsed = time.perf_counter() - start
        assert net.blobs['data'].shape == (BATCH, 3, 227, 227)
        n = batches * BATCH
        return n / elapsed, 1000 * (time.process_time() - cpu) / n
    finally:
        net.layers[0].close()


def _param(text):
    from google.protobuf import text_format
    return text_format.Parse(text, caffe_py.proto.caffe_pb2.NetParameter())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=300)
    parser.add_argument('--batches', type=int, default=30)
    parser.add_argument('--threads', default='1,2', help='decoding threads per layer, comma-separated')
    parser.add_argument('--repeat', type=int, default=3, help='rounds; the median is reported')
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(',')]
    log.init(level=30)
    folder = tempfile.mkdtemp(prefix='caffe_py_bench_data_')
    old = os.getcwd()
    try:
        os.chdir(folder)
        make_images(folder, args.images)
        convert_imageset('./', 'list.txt', 'lmdb_jpeg', encoded=True)
        blobs = [np.fromfile(name.split()[0], np.uint8) for name in open('list.txt')]
        rounds = max(1, args.batches * BATCH // len(blobs))
        bare_decode_rate(blobs[:20], 1)                     # warm up
        image_text = ('layer { name: "d" type: "ImageData" top: "data" top: "label" %s image_data_param '
                      '{ source: "list.txt" root_folder: "./" batch_size: %d } }' % (TRANSFORM, BATCH))
        data_text = ('layer { name: "d" type: "Data" top: "data" top: "label" %s data_param '
                     '{ source: "lmdb_jpeg" backend: LMDB batch_size: %d } }' % (TRANSFORM, BATCH))
        rates = {'bare': []}
        for _ in range(args.repeat):          # interleaved, so that load from elsewhere hits all alike
            rates['bare'].append(bare_decode_rate(blobs, rounds))
            for n in threads:
                os.environ['CAFFE_PY_DATA_THREADS'] = str(n)
                rates.setdefault(('ImageData', n), []).append(layer_rate(image_text, args.batches))
                rates.setdefault(('Data (LMDB, encoded JPEG)', n), []).append(layer_rate(data_text, args.batches))
        medians = {key: np.median(values, axis=0) for key, values in rates.items()}
    finally:
        os.chdir(old)
        shutil.rmtree(folder, ignore_errors=True)
    print('%d JPEGs 256x256, batch %d, crop 227 + mirror + mean, %d CPU(s), median of %d rounds'
          % (args.images, BATCH, os.cpu_count(), args.repeat))
    print('%-40s %8s %8s %15s' % ('', 'images/s', 'x bare', 'CPU ms / image'))
    bare = medians.pop('bare')
    print('%-40s %8.0f %8.2f %15.2f' % ('bare cv2.imdecode (1 thread)', bare[0], 1.0, bare[1]))
    for (name, n), (rate, cpu) in medians.items():
        label = '%s, %d thread%s' % (name, n, 's' if n > 1 else '')
        print('%-40s %8.0f %8.2f %15.2f' % (label, rate, rate / bare[0], cpu))
    if os.path.exists('/proc/loadavg'):
        print('load average after measuring: %s' % ' '.join(open('/proc/loadavg').read().split()[:3]))

if __name__ == '__main__':
    main()
