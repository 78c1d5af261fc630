"""Export every net definition under a folder and check it in ONNX Runtime against caffe-py's forward.

    python -m caffe_py.onnx.survey ../shared/corpus

For each net prototxt (solvers are skipped): build its TEST net with its inputs at batch 1 (real
weights when a caffemodel beside it fits, random ones otherwise), export it, run it in onnxruntime
on seeded random inputs and compare every output with caffe-py's to 1e-4 of the output's scale.
Prints one line per net and the counts: exported (and agreeing), refused (with the layer and why),
not built (as Caffe, a data layer's source is absent).
"""
import argparse
import glob
import logging
import os
import sys

import numpy as np

from .. import log
from ..net import TEST, Net
from .export import export
from .graph import ExportError

TOLERANCE = 1e-4


def net_files(folder):
    """Every net prototxt under `folder` (solver files left out), sorted."""
    paths = sorted(glob.glob(os.path.join(folder, '**', '*.prototxt'), recursive=True))
    return [p for p in paths if 'solver' not in os.path.basename(p)]


def weights_for(path):
    """A caffemodel in the prototxt's folder whose layers fill this net, or None."""
    models = glob.glob(os.path.join(os.path.dirname(path), '*.caffemodel'))
    return models[0] if len(models) == 1 else None


def randomize(net, seed=0):
    """Seeded random parameters that keep activations near unit scale (BatchNorm: positive variance)."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        blobs = [blob.host_view() for blob in layer.blobs]
        if layer.type == 'BatchNorm':
            blobs[0].data[...] = rng.normal(0, 0.5, blobs[0].shape)
            blobs[1].data[...] = rng.uniform(0.5, 2.0, blobs[1].shape)
            blobs[2].data[...] = rng.uniform(0.5, 2.0)
            continue
        for blob in blobs:
            shape = blob.shape
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 10
            blob.data[...] = rng.normal(0, 1 / np.sqrt(max(fan_in, 1)), shape)


def random_inputs(net, model, seed=0):
    """{graph input: seeded standard-normal array of its blob's shape}."""
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal(net.blobs[i.name].shape).astype(np.float32)
            for i in model.graph.input}


def run_onnx(model, feeds):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def run_caffe(net, feeds, names):
    for name, value in feeds.items():
        net.blobs[name].reshape(value.shape)
        net.blobs[name].data[...] = value
    net.reshape()
    net.forward()
    return {name: np.array(net.blobs[name].data) for name in names}


def worst_error(got, want):
    """Largest |onnx - caffe| over the outputs, each relative to its output's scale (max |caffe|, >= 1e-6)."""
    worst = 0.0
    for name, value in want.items():
        scale = max(float(np.abs(value).max()) if value.size else 0.0, 1e-6)
        worst = max(worst, float(np.abs(got[name].reshape(value.shape) - value).max()) / scale)
    return worst


def check(net, **kwargs):
    """Export `net`, run it in onnxruntime and in caffe-py on the same inputs; (model, worst error)."""
    model = export(net, **kwargs)
    feeds = random_inputs(net, model)
    got = run_onnx(model, feeds)
    return model, worst_error(got, run_caffe(net, feeds, list(got)))


def prepare(path, batch=1):
    """(TEST net of `path` with its inputs at `batch`, weights path or None): the caffemodel beside
    it when one fits, seeded random weights otherwise. Raises what Net raises when it cannot build."""
    net = Net(path, TEST)
    for name in net.inputs:
        net.blobs[name].reshape((batch,) + tuple(net.blobs[name].shape[1:]))
    net.reshape()
    weights = weights_for(path)
    try:
        if weights:
            net.copy_from(weights)
            return net, weights
    except Exception:  # the caffemodel beside it belongs to another net of the folder
        pass
    randomize(net)
    return net, None


def survey(paths, batch=1):
    """[(path, status, detail)] with status 'exported', 'refused' or 'not built'."""
    results = []
    for path in paths:
        try:
            net, weights = prepare(path, batch)
        except Exception as exc:  # a net Caffe could not build either (absent data source, ...)
            results.append((path, 'not built', str(exc).split('\n')[0]))
            continue
        try:
            _, error = check(net)
        except ExportError as exc:
            results.append((path, 'refused', str(exc)))
            continue
        detail = '%s weights, max error %.1e of the output scale' % ('real' if weights else 'random', error)
        results.append((path, 'exported' if error <= TOLERANCE else 'MISMATCH', detail))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('folder', nargs='?', default=os.path.join('..', 'shared', 'corpus'))
    parser.add_argument('--batch', type=int, default=1, help='batch size of the Input blobs (default 1)')
    args = parser.parse_args(argv)
    log.init(logging.WARNING)
    results = survey(net_files(args.folder), args.batch)
    for path, status, detail in results:
        print('%-10s %s: %s' % (status, os.path.relpath(path, args.folder), detail))
    counts = {}
    for _, status, _ in results:
        counts[status] = counts.get(status, 0) + 1
    print('%d nets: %s' % (len(results), ', '.join('%d %s' % (n, s) for s, n in sorted(counts.items()))))
    return 1 if 'MISMATCH' in counts else 0


if __name__ == '__main__':
    sys.exit(main())

