"""`caffe-py draw_net NET OUT.(png|svg|dot)`: a picture of a net definition.

Layers are boxes (name, type, main parameters), blobs are octagons, arrows run
from bottoms through layers to tops. An in-place layer (ReLU, Dropout ...)
sits on its blob's path without a second blob node. OUT.dot is Graphviz text
written by caffe-py; .png/.svg/.pdf are rendered by Graphviz's `dot` when it is
installed, else by matplotlib (`pip install caffe-py[plot]`).
Flags: -rankdir LR|TB|RL|BT (default LR), -phase ALL|TRAIN|TEST (default ALL).
"""
import os
import shutil
import subprocess

from caffe_py import formats
from caffe_py.proto import caffe_pb2
from caffe_py.tools import flags as _flags

USAGE = 'usage: caffe-py draw_net NET OUT.(png|svg|pdf|dot) [-rankdir LR] [-phase ALL|TRAIN|TEST]'

BLOB_COLOR = '#E6E6E6'
COLORS = {'Convolution': '#F4A582', 'Deconvolution': '#F4A582', 'Pooling': '#FDDBC7',
          'InnerProduct': '#D6A5E0', 'LRN': '#B8E186', 'BatchNorm': '#B8E186', 'Scale': '#B8E186',
          'Concat': '#FFE08A', 'Eltwise': '#FFE08A', 'Split': '#FFE08A', 'Slice': '#FFE08A'}
DATA_COLOR, LOSS_COLOR, OTHER_COLOR = '#92C5DE', '#F08080', '#C6DBEF'


def _color(layer_type):
    if layer_type in COLORS:
        return COLORS[layer_type]
    if 'Data' in layer_type or layer_type == 'Input':
        return DATA_COLOR
    if 'Loss' in layer_type or layer_type == 'Accuracy':
        return LOSS_COLOR
    return OTHER_COLOR


def _pair(values, default):
    values = list(values)
    return values[0] if values else default


def describe(layer):
    """Lines for a layer's box: name, type, and its main parameters."""
    lines = [layer.name, '(%s)' % layer.type]
    t = layer.type
    if t in ('Convolution', 'Deconvolution'):
        p = layer.convolution_param
        k = p.kernel_h or _pair(p.kernel_size, 1)
        s = p.stride_h or _pair(p.stride, 1)
        pad = p.pad_h or _pair(p.pad, 0)
        lines.append('%d out, %dx%d /%d pad %d%s' % (p.num_output, k, p.kernel_w or k, s, pad,
                                                   ', group %d' % p.group if p.group > 1 else ''))
    elif t == 'Pooling':
        p = layer.pooling_param
        kind = caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool)
        if p.global_pooling:
            lines.append('%s global' % kind)
        else:
            k = p.kernel_h or p.kernel_size
            lines.append('%s %dx%d /%d%s' % (kind, k, p.kernel_w or k, p.stride_h or p.stride,
                                             ' pad %d' % (p.pad_h or p.pad) if p.pad_h or p.pad else ''))
    elif t == 'InnerProduct':
        lines.append('%d out' % layer.inner_product_param.num_output)
    elif t == 'LRN':
        lines.append('size %d' % layer.lrn_param.local_size)
    elif t == 'Dropout':
        lines.append('ratio %g' % layer.dropout_param.dropout_ratio)
    elif t == 'Input' and layer.input_param.shape:
        lines.append('x'.join(str(d) for d in layer.input_param.shape[0].dim))
    for field in ('data_param', 'image_data_param', 'hdf5_data_param'):
        if t.endswith('Data') and layer.HasField(field):
            lines.append('batch %d' % getattr(layer, field).batch_size)
    phases = [caffe_pb2.Phase.Name(r.phase) for r in layer.include if r.HasField('phase')]
    if phases:
        lines.append('[%s]' % ', '.join(phases))
    return lines


class Graph:
    """Nodes (id -> dict(kind, label lines, color)) and edges (src, dst) of a net, in net order."""

    def __init__(self, net_param):
        self.name = net_param.name or 'Net'
        self.nodes = {}
        self.edges = []
        producer = {}       # blob name -> the node that last wrote it
        for i, layer in enumerate(net_param.layer):
            lid = 'layer%d' % i
            self.nodes[lid] = dict(kind='layer', lines=describe(layer), color=_color(layer.type))
            for bottom in layer.bottom:
                if bottom not in producer:
                    producer[bottom] = self._blob(bottom)
                self.edges.append((producer[bottom], lid))
            for top in layer.top:
                if top in layer.bottom:        # in place: the layer itself carries the blob on
                    producer[top] = lid
                    continue
                bid = self._blob(top)
                self.edges.append((lid, bid))
                producer[top] = bid
        for name in net_param.input:          # legacy `input:` fields
            self._blob(name)

    def _blob(self, name):
        bid = 'blob:' + name
        self.nodes.setdefault(bid, dict(kind='blob', lines=[name], color=BLOB_COLOR))
        return bid


def _quote(text):
    return '"%s"' % text.replace('\\', '\\\\').replace('"', '\\"')


def to_dot(graph, rankdir='LR'):
    """Graphviz DOT text of `graph`."""
    out = ['digraph %s {' % _quote(graph.name),
           '  rankdir=%s;' % rankdir,
           '  node [fontname="Helvetica", fontsize=10, style=filled];',
           '  edge [arrowsize=0.7];']
    for nid, node in graph.nodes.items():
        label = '\\n'.join(l.replace('\\', '\\\\').replace('"', '\\"') for l in node['lines'])
        shape = 'box' if node['kind'] == 'layer' else 'octagon'
        out.append('  %s [shape=%s, label="%s", fillcolor="%s"];' % (_quote(nid), shape, label, node['color']))
    for src, dst in graph.edges:
        out.append('  %s -> %s;' % (_quote(src), _quote(dst)))
    out.append('}')
    return '\n'.join(out) + '\n'


def layout(graph):
    """Layered drawing positions: {node: (rank, slot)} and, per edge, the (rank, slot) waypoints between.

    rank = longest path from a source; an edge longer than one rank passes through a waypoint
    in each rank between, which takes a slot like a node so that edges do not cross boxes;
    within a rank, nodes are ordered by the mean slot of their predecessors.
    """
    preds = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        preds[dst].append(src)
    rank = {}
    for n in graph.nodes:                   # net order is a topological order
        rank[n] = 1 + max((rank[p] for p in preds[n] if p in rank), default=-1)
    chains = []                             # per edge: [src, waypoints..., dst]
    for k, (src, dst) in enumerate(graph.edges):
        way = [('edge', k, r) for r in range(rank[src] + 1, rank[dst])]
        for w, r in zip(way, range(rank[src] + 1, rank[dst])):
            rank[w] = r
        chain = [src] + way + [dst]
        for a, b in zip(chain[1:-1], chain[:-2]):
            preds[a] = [b]
        chains.append(chain)
    by_rank = {}
    for n in rank:
        by_rank.setdefault(rank[n], []).append(n)
    slot = {}
    for r in sorted(by_rank):
        placed = {n: i for i, n in enumerate(by_rank[r])}

        def key(n):
            ps = [slot[p] for p in preds.get(n, ()) if p in slot]
            return (sum(ps) / len(ps) if ps else 0.0, placed[n])
        by_rank[r].sort(key=key)
        width = len(by_rank[r])
        for i, n in enumerate(by_rank[r]):
            slot[n] = i - (width - 1) / 2
    pos = {n: (rank[n], slot[n]) for n in rank}
    return {n: pos[n] for n in graph.nodes}, [[pos[n] for n in chain] for chain in chains]


def render_matplotlib(graph, path, rankdir='LR'):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError('rendering %s needs Graphviz (`dot`) or matplotlib '
                           '(pip install "caffe-py[plot]"); OUT.dot needs neither' % path) from None
    pos, paths = layout(graph)
    every = list(pos.values()) + [p for path_ in paths for p in path_]
    ranks = 1 + max(r for r, _ in every)
    breadth = 1 + max(s for _, s in every) - min(s for _, s in every)
    horizontal = rankdir in ('LR', 'RL')
    step_rank, step_slot = (1.9, 0.9) if horizontal else (0.75, 2.0)

    def xy(point):
        r, s = point
        if rankdir in ('RL', 'BT'):
            r = ranks - 1 - r
        return (r * step_rank, -s * step_slot) if horizontal else (s * step_slot, -r * step_rank)
    size = (ranks * step_rank + 1, breadth * step_slot + 1)
    if not horizontal:
        size = size[::-1]
    scale = min(1.0, 300.0 / max(size))   # keep huge nets under matplotlib's image size limits
    fig = plt.figure(figsize=(size[0] * scale, size[1] * scale))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_axis_off()
    xs, ys = zip(*(xy(p) for p in every))
    ax.set_xlim(min(xs) - 1, max(xs) + 1)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    boxes = {}
    for n, node in graph.nodes.items():
        style = 'round,pad=0.4' if node['kind'] == 'layer' else 'round4,pad=0.3'
        text = ax.text(*xy(pos[n]), '\n'.join(node['lines']), ha='center', va='center',
                       fontsize=8 * scale, zorder=3,
                       bbox=dict(boxstyle=style, fc=node['color'], ec='#555555', lw=0.6))
        boxes[n] = text.get_bbox_patch()
    fig.canvas.draw()                      # places the boxes, so that arrows can be clipped to them
    for (src, dst), points in zip(graph.edges, paths):
        points = [xy(p) for p in points]
        for i in range(len(points) - 1):
            last = i == len(points) - 2
            ax.annotate('', xy=points[i + 1], xytext=points[i], zorder=2,
                        arrowprops=dict(arrowstyle='-|>' if last else '-', color='#444444',
                                        lw=0.8 * scale, mutation_scale=10 * scale, shrinkA=0, shrinkB=0,
                                        patchA=boxes[src] if i == 0 else None,
                                        patchB=boxes[dst] if last else None))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render(graph, path, rankdir='LR'):
    """Write `graph` to `path` by its extension: .dot text, else an image via `dot` or matplotlib."""
    ext = os.path.splitext(path)[1].lower().lstrip('.')
    text = to_dot(graph, rankdir)
    if ext in ('dot', 'gv'):
        with open(path, 'w') as f:
            f.write(text)
        return 'dot text'
    if ext not in ('png', 'svg', 'pdf'):
        raise ValueError('%s: unknown output format ".%s" (png, svg, pdf or dot)' % (path, ext))
    dot = shutil.which('dot')
    if dot:
        done = subprocess.run([dot, '-T' + ext, '-o', path], input=text.encode(), capture_output=True)
        if done.returncode != 0:
            raise RuntimeError('dot failed: %s' % done.stderr.decode(errors='replace').strip())
        return 'graphviz'
    render_matplotlib(graph, path, rankdir)
    return 'matplotlib'


def in_phase(net_param, phase):
    """The layers of net_param that a net of `phase` (TRAIN/TEST) builds; all of them for None."""
    if phase is None:
        return net_param
    from caffe_py.net import filter_net
    state = caffe_pb2.NetState()
    state.CopyFrom(net_param.state)          # its level and stages, in `phase`
    state.phase = phase
    return filter_net(net_param, state)


def main(name, argv):
    if any(a in ('-h', '-help', '--help') for a in argv):
        print(USAGE + '\n' + __doc__.split('\n\n', 1)[1].strip())
        return 0
    flags, args = _flags.parse(argv, {'rankdir': 'LR', 'phase': 'ALL'})
    if len(args) != 2:
        print(USAGE)
        return 1
    if flags['rankdir'] not in ('LR', 'TB', 'RL', 'BT'):
        raise ValueError('-rankdir must be LR, TB, RL or BT, got %s' % flags['rankdir'])
    phase = flags['phase'].upper()
    if phase not in ('ALL', 'TRAIN', 'TEST'):
        raise ValueError('-phase must be ALL, TRAIN or TEST, got %s' % flags['phase'])
    net_param = in_phase(formats.read_net(args[0]), None if phase == 'ALL' else caffe_pb2.Phase.Value(phase))
    how = render(Graph(net_param), args[1], flags['rankdir'])
    print('drew %s (%d layers) to %s with %s' % (args[0], len(net_param.layer), args[1], how))
    return 0
