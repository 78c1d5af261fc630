"""extract_features: run a net and store chosen blobs, one Datum (float_data) per item, as Caffe's tool.

    caffe-py extract_features pretrained_net_param feature_extraction_proto_file
        extract_feature_blob_name1[,name2,...] save_feature_dataset_name1[,name2,...]
        num_mini_batches db_type [CPU/GPU] [DEVICE_ID=0]

Keys are the item index as '%010d'; each database is committed every 1000
items and renamed into place when the run ends.
"""
import sys

import numpy as np

from .. import backend, log
from ..data.db import DBWriter
from ..proto import caffe_pb2
from .flags import wants_help

USAGE = __doc__.split('\n\n')[1]

COMMIT_EVERY = 1000


def main(command, argv):
    if wants_help(argv):
        print('Usage:\n' + USAGE)
        return 0
    if len(argv) < 6:
        print('This program takes in a trained network and an input data layer, and then extracts '
              'features of the input data produced by the net.\nUsage:\n' + USAGE, file=sys.stderr)
        return 1
    weights, model, blob_names, dataset_names, num_batches, db_type = argv[:6]
    use_gpu = len(argv) > 6 and argv[6] == 'GPU'
    device = int(argv[7]) if use_gpu and len(argv) > 7 else 0
    extract_features(weights, model, blob_names.split(','), dataset_names.split(','),
                     int(num_batches), db_type, use_gpu, device)
    return 0


def extract_features(weights, model, blob_names, dataset_names, num_batches, db_type,
                     use_gpu=False, device=0):
    from ..net import TEST, Net
    if use_gpu:
        if device < 0:
            raise ValueError('DEVICE_ID must be >= 0, got %d' % device)
        log.info('Using GPU, device %d', device)
        backend.set_device(device)
        backend.set_mode_gpu()
    else:
        log.info('Using CPU')
        backend.set_mode_cpu()
    net = Net(model, TEST, weights=weights)
    if len(blob_names) != len(dataset_names):
        raise ValueError('the number of blob names (%d) and dataset names (%d) must be equal'
                         % (len(blob_names), len(dataset_names)))
    for name in blob_names:
        if name not in net.blobs:
            raise ValueError('Unknown feature blob name %s in the network %s' % (name, model))
    writers = []
    try:
        for name in dataset_names:
            log.info('Opening dataset %s', name)
            writers.append(DBWriter(name, db_type))
        log.info('Extracting Features')
        counts = [0] * len(blob_names)
        for _ in range(num_batches):
            net.forward_from_to()
            for i, name in enumerate(blob_names):
                blob = net.blobs[name]
                features = blob.read_data().reshape(blob.shape[0], -1)
                for row in features:
                    datum = caffe_pb2.Datum(channels=blob.channels, height=blob.height, width=blob.width)
                    datum.float_data.extend(row.astype(np.float32))
                    writers[i].put('%010d' % counts[i], datum.SerializeToString())
                    counts[i] += 1
                    if counts[i] % COMMIT_EVERY == 0:
                        writers[i].commit()
                        log.info('Extracted features of %d query images for feature blob %s', counts[i], name)
        for i, name in enumerate(blob_names):
            writers[i].close()
            log.info('Extracted features of %d query images for feature blob %s', counts[i], name)
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    finally:
        net.close()
    log.info('Successfully extracted the features!')
    return counts
