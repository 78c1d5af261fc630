"""The `caffe-py` command: Caffe's `caffe` brew commands and its tools behind one entry point.

Each command lives in a module of caffe_py.tools with `main(argv) -> exit code`.
Errors print one line (`caffe-py: error: ...`) and exit non-zero; `-v`/`--verbose`
anywhere on the line shows the traceback too.
"""
import importlib
import sys

# command -> (module, one-line summary)
COMMANDS = {
    'train': ('train', 'train or finetune a model (-solver, -weights, -snapshot, -gpu)'),
    'test': ('test', 'score a model (-model, -weights, -iterations)'),
    'time': ('time', 'benchmark a model\'s layers (-model, -iterations)'),
    'device_query': ('device_query', 'show GPU diagnostic information (-gpu)'),
    'convert_imageset': ('convert_imageset', 'convert images + a list file to an LMDB/LevelDB of Datum'),
    'compute_image_mean': ('compute_image_mean', 'mean image of a database -> binaryproto'),
    'extract_features': ('extract_features', 'write chosen blobs of a net to databases'),
    'upgrade_net_proto_text': ('upgrade', 'upgrade a V0/V1 net prototxt to the current format'),
    'upgrade_net_proto_binary': ('upgrade', 'upgrade a V0/V1 binary caffemodel to the current format'),
    'upgrade_solver_proto_text': ('upgrade', 'upgrade a solver prototxt (solver_type enum -> type)'),
    'plot_log': ('plot_log', 'plot loss, test outputs and lr from a training log'),
    'draw_net': ('draw_net', 'draw a net definition as PNG, SVG or DOT'),
    'export_onnx': ('export_onnx', 'a net and its weights -> an ONNX model (-model, -weights, -output)'),
}


class CommandError(Exception):
    """An error a command reports as one line (bad input, missing file, ...)."""


def usage():
    lines = ['usage: caffe-py <command> <args>', '', 'commands:']
    for name, (_, summary) in COMMANDS.items():
        lines.append('  %-26s %s' % (name, summary))
    lines += ['', "Flags are Caffe's: -flag value, -flag=value or --flag value.",
              "'caffe-py <command> --help' shows a command's flags; add -v to see tracebacks."]
    return '\n'.join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    for flag in ('-v', '--verbose'):
        while flag in argv:
            argv.remove(flag)
            verbose = True
    if not argv or argv[0] in ('-h', '-help', '--help', 'help'):
        print(usage())
        return 0 if argv else 1
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print('caffe-py: error: unknown command "%s"; known: %s' % (name, ', '.join(COMMANDS)),
              file=sys.stderr)
        return 1
    try:
        module = importlib.import_module('caffe_py.tools.' + COMMANDS[name][0])
        return module.main(name, rest) or 0
    except KeyboardInterrupt:
        print('caffe-py: interrupted', file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line for people; the traceback on request
        if verbose:
            import traceback
            traceback.print_exc()
        print('caffe-py: error: %s' % _one_line(exc), file=sys.stderr)
        return 1


def _one_line(exc):
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)) and exc.filename:
        text = '%s: %s' % (exc.strerror or type(exc).__name__, exc.filename)
    return ' '.join(text.split('\n')[:1]) if len(text) > 2000 else text.replace('\n', ' | ')
