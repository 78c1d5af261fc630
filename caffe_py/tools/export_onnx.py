"""`caffe-py export_onnx`: a net and its weights -> an ONNX model (caffe_py.onnx)."""
from .. import log
from ..net import TEST, Net
from . import common
from .cli import CommandError
from .flags import parse, wants_help

FLAGS = {'model': '', 'weights': '', 'output': '', 'opset': 0, 'dynamic_batch': False, 'level': 0,
         'stage': '', 'outputs': ''}
HELP = {
    'model': 'the net definition (deploy or train_val prototxt, V0/V1 upgraded); built in its TEST phase',
    'weights': 'trained weights (caffemodel or .h5); without them the fillers\' values are exported',
    'output': 'the ONNX file to write',
    'opset': 'ONNX opset (0: the default, %s)',
    'dynamic_batch': 'make the batch axis of the inputs and outputs symbolic (N)',
    'level': 'network level',
    'stage': "network stages, separated by ','",
    'outputs': "blobs to make the graph's outputs, separated by ',' (default: the net's outputs)",
}


def main(command, argv):
    from .. import onnx as exporter   # needs the onnx package: a clear error if it is missing
    if wants_help(argv):
        print('usage: caffe-py export_onnx -model deploy.prototxt -weights w.caffemodel -output model.onnx '
              '[-opset N] [-dynamic_batch]\n\nflags:')
        for name, text in HELP.items():
            print('  -%-15s %s' % (name, text.replace('%s', str(exporter.DEFAULT_OPSET))))
        return 0
    flags, positional = parse(argv, FLAGS)
    if positional:
        raise CommandError('export_onnx: unexpected argument(s) %s' % ' '.join(positional))
    for name in ('model', 'output'):
        if not flags[name]:
            raise CommandError('export_onnx needs -%s' % name)
    common.require_file(flags['model'], '-model')
    net = Net(flags['model'], TEST, level=flags['level'], stages=common.get_stages(flags['stage']))
    for path in filter(None, (w.strip() for w in flags['weights'].split(','))):
        common.require_file(path, '-weights')
        net.copy_from(path)
    outputs = [b.strip() for b in flags['outputs'].split(',')] if flags['outputs'] else None
    model = exporter.export(net, flags['output'], opset=flags['opset'] or exporter.DEFAULT_OPSET,
                            dynamic_batch=flags['dynamic_batch'], outputs=outputs)
    graph = model.graph
    log.info('Wrote %s: opset %d, %d nodes, inputs %s, outputs %s', flags['output'],
             model.opset_import[0].version, len(graph.node), ', '.join(i.name for i in graph.input),
             ', '.join(o.name for o in graph.output))
    return 0

