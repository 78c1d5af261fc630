"""Images per second of the ImageData, Data (LMDB, encoded JPEG) and AnnotatedData layers, next to cv2.imdecode.

    python benchmarks/bench_data.py [--images 300] [--batches 30] [--threads 1,2] [--repeat 3]

Generates 256x256 JPEGs (smooth colour fields with texture) in a temporary
folder, converts them to an encoded LMDB with convert_imageset (file bytes
kept), then measures in the same run:
  - bare decode: cv2.imdecode of the same JPEG bytes, one thread, files in memory;
  - ImageData and Data, batch 50, TRAIN, crop_size 227 + mirror + mean_value,
    forward passes after the prefetch queue has drained once (steady state);
  - AnnotatedData (SSD, weiliu89/caffe) on the same JPEGs with two boxes each, batch 50,
    TRAIN, with ssd_pascal.py's augmentation: distortion, expansion up to 4x, its seven
    batch samplers, resize to 300x300 with a random interpolation, mirror, mean_value.
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


SSD_TRANSFORM = (
    'transform_param { mirror: true mean_value: 104 mean_value: 117 mean_value: 123 '
    'resize_param { prob: 1 resize_mode: WARP height: 300 width: 300 interp_mode: LINEAR interp_mode: AREA '
    'interp_mode: NEAREST interp_mode: CUBIC interp_mode: LANCZOS4 } emit_constraint { emit_type: CENTER } '
    'distort_param { brightness_prob: 0.5 brightness_delta: 32 contrast_prob: 0.5 contrast_lower: 0.5 '
    'contrast_upper: 1.5 hue_prob: 0.5 hue_delta: 18 saturation_prob: 0.5 saturation_lower: 0.5 '
    'saturation_upper: 1.5 random_order_prob: 0.0 } expand_param { prob: 0.5 max_expand_ratio: 4.0 } }')
SSD_SAMPLERS = 'batch_sampler { max_sample: 1 max_trials: 1 } ' + ' '.join(
    'batch_sampler { sampler { min_scale: 0.3 max_scale: 1.0 min_aspect_ratio: 0.5 max_aspect_ratio: 2.0 } '
    'sample_constraint { %s_jaccard_overlap: %s } max_sample: 1 max_trials: 50 }' % constraint
    for constraint in [('min', 0.1), ('min', 0.3), ('min', 0.5), ('min', 0.7), ('min', 0.9), ('max', 1.0)])


def make_annotated_lmdb(blobs, path, seed=1):
    """The JPEG bytes as AnnotatedDatum records with two random boxes each."""
    from caffe_py.data.db import DBWriter
    from caffe_py.proto import caffe_pb2
    rng = np.random.default_rng(seed)
    with DBWriter(path, 'lmdb') as db:
        for i, data in enumerate(blobs):
            record = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.BBOX)
            record.datum.encoded, record.datum.data = True, data.tobytes()
            for label in (1, 2):
                x0, y0 = rng.uniform(0, 0.6, 2)
                w, h = rng.uniform(0.1, 0.4, 2)
                record.annotation_group.add(group_label=label).annotation.add(
                    instance_id=0, bbox=caffe_pb2.NormalizedBBox(xmin=x0, ymin=y0, xmax=x0 + w, ymax=y0 + h))
            db.put('%08d' % i, record.SerializeToString())


def layer_rate(text, batches, size=227):
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
        assert net.blobs['data'].shape == (BATCH, 3, size, size)
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
        make_annotated_lmdb(blobs, 'lmdb_annotated')
        rounds = max(1, args.batches * BATCH // len(blobs))
        bare_decode_rate(blobs[:20], 1)                     # warm up
        image_text = ('layer { name: "d" type: "ImageData" top: "data" top: "label" %s image_data_param '
                      '{ source: "list.txt" root_folder: "./" batch_size: %d } }' % (TRANSFORM, BATCH))
        data_text = ('layer { name: "d" type: "Data" top: "data" top: "label" %s data_param '
                     '{ source: "lmdb_jpeg" backend: LMDB batch_size: %d } }' % (TRANSFORM, BATCH))
        annotated_text = ('layer { name: "d" type: "AnnotatedData" top: "data" top: "label" %s data_param '
                          '{ source: "lmdb_annotated" backend: LMDB batch_size: %d } annotated_data_param { %s } }'
                          % (SSD_TRANSFORM, BATCH, SSD_SAMPLERS))
        rates = {'bare': []}
        for _ in range(args.repeat):          # interleaved, so that load from elsewhere hits all alike
            rates['bare'].append(bare_decode_rate(blobs, rounds))
            for n in threads:
                os.environ['CAFFE_PY_DATA_THREADS'] = str(n)
                rates.setdefault(('ImageData', n), []).append(layer_rate(image_text, args.batches))
                rates.setdefault(('Data (LMDB, encoded JPEG)', n), []).append(layer_rate(data_text, args.batches))
                rates.setdefault(('AnnotatedData (SSD augmentation)', n), []).append(
                    layer_rate(annotated_text, args.batches, 300))
        medians = {key: np.median(values, axis=0) for key, values in rates.items()}
    finally:
        os.chdir(old)
        shutil.rmtree(folder, ignore_errors=True)
    print('%d JPEGs 256x256, batch %d, crop 227 + mirror + mean (SSD: its augmentation to 300x300), %d CPU(s), '
          'median of %d rounds'
          % (args.images, BATCH, os.cpu_count(), args.repeat))
    print('%-46s %8s %8s %15s' % ('', 'images/s', 'x bare', 'CPU ms / image'))
    bare = medians.pop('bare')
    print('%-46s %8.0f %8.2f %15.2f' % ('bare cv2.imdecode (1 thread)', bare[0], 1.0, bare[1]))
    for (name, n), (rate, cpu) in medians.items():
        label = '%s, %d thread%s' % (name, n, 's' if n > 1 else '')
        print('%-46s %8.0f %8.2f %15.2f' % (label, rate, rate / bare[0], cpu))
    if os.path.exists('/proc/loadavg'):
        print('load average after measuring: %s' % ' '.join(open('/proc/loadavg').read().split()[:3]))

if __name__ == '__main__':
    main()
