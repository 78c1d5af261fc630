"""convert_imageset ROOTFOLDER/ LISTFILE DB_NAME: images + labels -> an LMDB/LevelDB of Datum, as Caffe's tool.

Keys are '%08d_<name>' with the line index; a file that cannot be read is
logged and skipped (its index stays unused), as Caffe does. The database is
built under a temporary name and renamed at the end; an existing DB_NAME is
refused.
"""
import sys

from .. import log, rng as caffe_rng
from ..data.db import DBWriter
from ..data.image import DataSourceError, read_image_list, read_image_to_datum
from .flags import parse, wants_help

FLAGS = {
    'gray': False, 'shuffle': False, 'backend': 'lmdb', 'resize_width': 0, 'resize_height': 0,
    'check_size': False, 'encoded': False, 'encode_type': '',
}

USAGE = ('Convert a set of images to the leveldb/lmdb format used as input for Caffe.\n'
         'Usage:\n    caffe-py convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME\n'
         'Flags: -gray -shuffle -backend lmdb|leveldb -resize_width N -resize_height N '
         '-check_size -encoded -encode_type png|jpg|...')

COMMIT_EVERY = 1000


def main(command, argv):
    if wants_help(argv):
        print(USAGE)
        return 0
    flags, args = parse(argv, FLAGS)
    if len(args) != 3:
        print(USAGE, file=sys.stderr)
        return 1
    convert_imageset(*args, **flags)
    return 0


def convert_imageset(root_folder, list_file, db_name, gray=False, shuffle=False, backend='lmdb',
                     resize_width=0, resize_height=0, check_size=False, encoded=False, encode_type=''):
    """Write the images of `list_file` (under `root_folder`) to a new database `db_name`."""
    is_color = not gray
    lines = read_image_list(list_file, 'list file', keep_blank=True)
    if shuffle:
        log.info('Shuffling data')
        lines = list(lines)
        caffe_rng.stream().shuffle(lines)        # caffe::shuffle on the (unseeded) global engine
    log.info('A total of %d images.', len(lines))
    if encode_type and not encoded:
        log.info('encode_type specified, assuming encoded=true.')
    resize_height, resize_width = max(0, resize_height), max(0, resize_width)
    count = 0
    skipped = 0
    data_size = None
    with DBWriter(db_name, backend) as db:
        for line_id, (name, label) in enumerate(lines):
            encoding = encode_type
            if encoded and not encoding:
                if '.' not in name:
                    raise DataSourceError("Failed to guess the encoding of '%s' (give -encode_type)" % name)
                encoding = name.rsplit('.', 1)[1].lower()
            path = root_folder + name
            try:
                datum = read_image_to_datum(path, label, resize_height, resize_width, is_color, encoding)
            except DataSourceError as exc:
                log.error('%s; skipping it', exc)
                skipped += 1
                continue
            if check_size:
                size = datum.channels * datum.height * datum.width
                if data_size is None:
                    data_size = size
                elif len(datum.data) != data_size:
                    raise DataSourceError('Incorrect data field size %d of %s (the first image has %d)'
                                          % (len(datum.data), path, data_size))
            db.put('%08d_%s' % (line_id, name), datum.SerializeToString())
            count += 1
            if count % COMMIT_EVERY == 0:
                db.commit()
                log.info('Processed %d files.', count)
        if count % COMMIT_EVERY != 0:
            db.commit()
            log.info('Processed %d files.', count)
    if skipped:
        log.warning('%d of %d files could not be read and were skipped.', skipped, len(lines))
    return count
