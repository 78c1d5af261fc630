"""Build fork model definitions (prototxts) with caffe-py and report which parse and build.

    python benchmarks/build_fork_models.py [--phase TEST] [--shapes] [--define NAME=VALUE]... FILE_OR_LIST...

Each argument is a .prototxt, or a text file listing one per line. Nets are built in the
given phase without weights; a net whose data layer reads files that are not there, or
whose Python layer's module is not importable, counts as not built (with the reason).
--shapes prints every output blob's shape. --define fills ${NAME} in the text with VALUE, as
the sed calls of DeepLab's run scripts fill its template prototxts (${NUM_LABELS}, ${EXP} ...).
"""
import argparse
import collections
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import caffe_py as caffe  # noqa: E402
from caffe_py import formats  # noqa: E402


def paths(args):
    for arg in args:
        if arg.endswith('.prototxt'):
            yield arg
        else:
            with open(arg) as f:
                yield from (line.strip() for line in f if line.strip())


def read(path, defines):
    """The NetParameter of `path`, its ${NAME}s filled first when there are defines."""
    if not defines:
        return formats.read_net(path)
    with open(path) as f:
        text = f.read()
    for key, value in defines:
        text = text.replace(key, value)
    return formats.parse_net_text(text, filename=path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('files', nargs='+')
    parser.add_argument('--phase', default='TEST', choices=('TRAIN', 'TEST'))
    parser.add_argument('--shapes', action='store_true')
    parser.add_argument('--define', action='append', default=[], metavar='NAME=VALUE',
                        help='replace ${NAME} by VALUE in every prototxt (repeatable)')
    args = parser.parse_args(argv)
    defines = []
    for item in args.define:
        name, sep, value = item.partition('=')
        if not sep or not name:
            parser.error('--define takes NAME=VALUE, got %r' % item)
        defines.append(('${%s}' % name, value))
    logging.getLogger('caffe_py').setLevel(logging.ERROR)
    phase = caffe.TRAIN if args.phase == 'TRAIN' else caffe.TEST
    tally = collections.Counter()
    for path in paths(args.files):
        try:
            param = read(path, defines)
        except Exception as exc:   # report every failure, keep going
            tally['not parsed'] += 1
            print('PARSE FAIL %s: %s' % (path, str(exc).splitlines()[0][:300]))
            continue
        if not param.layer:
            tally['not a net'] += 1
            continue
        try:
            net = caffe.Net(param if defines else path, phase)
        except Exception as exc:
            tally['parsed, not built'] += 1
            print('BUILD FAIL %s: %s' % (path, str(exc).splitlines()[0][:300]))
            continue
        tally['built'] += 1
        outputs = ', '.join('%s %s' % (n, tuple(net.blobs[n].shape)) for n in net.outputs)
        print('OK %s%s' % (path, (': ' + outputs) if args.shapes else ''))
    print(', '.join('%s: %d' % kv for kv in sorted(tally.items())))
    return 0


if __name__ == '__main__':
    sys.exit(main())
