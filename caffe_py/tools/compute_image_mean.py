"""compute_image_mean INPUT_DB [OUTPUT_FILE]: the mean image of a database of Datum, as Caffe's tool.

Sums in float32 record by record and divides by the count, as Caffe does; the
mean is written as a BlobProto (num=1, channels, height, width) and its
per-channel means are logged.
"""
import sys

import numpy as np

from .. import formats, log
from ..data.db import Reader
from ..data.hdf5 import DataSourceError
from ..data.image import IMREAD_NATIVE, datum_image, hwc_to_chw, parse_datum
from .flags import parse, wants_help

FLAGS = {'backend': 'lmdb'}

USAGE = ('Compute the mean_image of a set of images given by a leveldb/lmdb\n'
         'Usage:\n    caffe-py compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]\n'
         'Flags: -backend lmdb|leveldb')


def main(command, argv):
    if wants_help(argv):
        print(USAGE)
        return 0
    flags, args = parse(argv, FLAGS)
    if not 1 <= len(args) <= 2:
        print(USAGE, file=sys.stderr)
        return 1
    compute_image_mean(args[0], args[1] if len(args) > 1 else None, flags['backend'])
    return 0


def compute_image_mean(input_db, output_file=None, backend='lmdb'):
    """The mean (1 x C x H x W, float32) of every Datum in `input_db`; written to `output_file` if given."""
    reader = Reader(input_db, backend)
    try:
        if not reader.valid:
            raise DataSourceError('database %s is empty' % input_db)
        total = None
        count = 0
        for key, value in reader:
            what = 'record %s of %s' % (key.decode(errors='replace'), input_db)
            datum = parse_datum(value, what)
            if count == 0 and datum.encoded:
                log.info('Decoding Datum')
            image, chw = datum_image(datum, IMREAD_NATIVE, what)
            image = image if chw else hwc_to_chw(image)
            if total is None:
                total = np.zeros(image.shape, np.float32)
                log.info('Starting iteration')
            if image.shape != total.shape:
                raise DataSourceError('Incorrect data field size %d in %s (the first record has %d)'
                                      % (image.size, what, total.size))
            total += image
            count += 1
            if count % 10000 == 0:
                log.info('Processed %d files.', count)
    finally:
        reader.close()
    if count % 10000 != 0:
        log.info('Processed %d files.', count)
    mean = (total / np.float32(count)).astype(np.float32)[None]
    if output_file:
        log.info('Write to %s', output_file)
        formats.write_binaryproto(output_file, mean)
    channels = mean.shape[1]
    log.info('Number of channels: %d', channels)
    for c in range(channels):
        channel_sum = np.cumsum(mean[0, c].ravel(), dtype=np.float32)[-1]
        log.info('mean_value channel [%d]: %s', c, log.fmt(channel_sum / (mean.shape[2] * mean.shape[3])))
    return mean
