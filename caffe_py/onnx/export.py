"""Walk a built Net layer by layer and write the ONNX model its converters describe."""
import onnx
from onnx import helper

from ..net import Net, TEST
from .graph import CONVERTERS, ExportError, Graph, LayerContext

DEFAULT_OPSET = 17
MIN_OPSET = 13


def export(net, path=None, opset=DEFAULT_OPSET, dynamic_batch=False, weights=None, outputs=None):
    """Export `net` to ONNX and return the checked ModelProto; written to `path` when given.

    `net` is a built caffe_py.Net (its TEST phase is what deploys), or a prototxt path or
    NetParameter built here in the TEST phase with `weights`. Data layers become graph inputs
    named as their blobs; the graph's outputs are the net's, or the blobs named in `outputs`.
    Raises ExportError naming the first layer ONNX cannot express exactly.
    """
    if not isinstance(net, Net):
        net = Net(net, TEST, weights=weights)
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ExportError('opset %d is not supported: use %d to %d'
                          % (opset, MIN_OPSET, onnx.defs.onnx_opset_version()))
    graph = Graph(opset, dynamic_batch)
    tensors, shapes = _convert_layers(net, graph)
    produced = graph.input_names | {out for node in graph.nodes for out in node.output}
    for name in net.outputs if outputs is None else outputs:
        if name not in tensors:
            raise ExportError('output "%s" is not a blob of net "%s"' % (name, net.name))
        tensor = tensors[name]
        if tensor != name and name in produced:
            raise ExportError('output "%s": that name already holds another version of the blob '
                              '(a graph input changed in place, or a clashing blob name)' % name)
        if tensor != name:
            graph.node('Identity', [tensor], [name], 'output/' + name)
        # with a dynamic batch, shape inference tells which output dimensions follow it
        if dynamic_batch:
            graph.outputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        else:
            graph.outputs.append(graph.value_info(name, net.blobs[name].shape))
    model = helper.make_model(
        helper.make_graph(graph.nodes, net.name or 'caffe_net', graph.inputs, graph.outputs,
                          graph.initializers),
        opset_imports=[helper.make_opsetid('', opset)], producer_name='caffe-py')
    model.ir_version = min(model.ir_version, _ir_version(opset))
    inferred = _check_shapes(model, shapes, dynamic_batch)
    if dynamic_batch:
        del model.graph.output[:]
        model.graph.output.extend(inferred.graph.output)
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        onnx.save(model, path)
    return model


def _convert_layers(net, graph):
    """Convert every layer; returns (blob name -> tensor name, tensor name -> (layer, Caffe shape))."""
    last_writer = {}
    for i, layer in enumerate(net.layers):
        for top in layer.layer_param.top:
            last_writer[top] = i
    tensors, shapes = {}, {}
    for i, layer in enumerate(net.layers):
        lp = layer.layer_param
        names = []
        for top in lp.top:
            hint = top if last_writer[top] == i and top not in graph.taken else '%s/%s' % (top, lp.name)
            names.append(graph.fresh(hint))
        ctx = LayerContext(graph, layer, [tensors[b] for b in lp.bottom],
                           [b.shape for b in net.bottom_vecs[i]], names,
                           [t.shape for t in net.top_vecs[i]][:len(lp.top)])
        _converter_for(ctx)(ctx)
        for top, tensor, blob in zip(lp.top, ctx.defined, net.top_vecs[i]):
            if tensor is None:
                raise ExportError('%s layer "%s": its converter left top "%s" undefined'
                                  % (lp.type, lp.name, top))
            tensors[top] = tensor
            shapes.setdefault(tensor, (lp, tuple(blob.shape)))
    return tensors, shapes


def _converter_for(ctx):
    if ctx.type == 'Python':
        hook = getattr(getattr(ctx.layer, 'impl', None), 'export_onnx', None)
        if hook is None:
            raise ctx.refuse('a Python layer (%s.%s) exports only when its class defines export_onnx(ctx)'
                             % (ctx.param.python_param.module, ctx.param.python_param.layer))
        return hook
    function = CONVERTERS.get(ctx.type)
    if function is None:
        raise ctx.refuse('no exact ONNX equivalent is implemented for this layer type')
    return function


def _ir_version(opset):
    """The IR version that goes with `opset`, so that runtimes as old as the opset take the file."""
    for entry in onnx.helper.VERSION_TABLE:
        if entry[2] == opset:
            return entry[1]
    return onnx.IR_VERSION


def _check_shapes(model, shapes, dynamic_batch):
    """Strict shape inference; every tensor that carries a Caffe blob must have the blob's shape
    (with a dynamic batch, dimension 0 may be anything). Returns the inferred model."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # onnx raises its own InferenceError types
        raise ExportError('ONNX shape inference failed: %s' % str(exc).split('\n')[0]) from None
    graph = inferred.graph
    for info in list(graph.value_info) + list(graph.output):
        if info.name not in shapes:
            continue
        lp, want = shapes[info.name]
        dims = info.type.tensor_type.shape.dim
        got = tuple(d.dim_value if d.HasField('dim_value') else -1 for d in dims)
        expect = tuple(-1 if dynamic_batch and j == 0 else n for j, n in enumerate(want))
        if len(got) != len(expect) or any(g != e and -1 not in (g, e) for g, e in zip(got, expect)):
            raise ExportError('%s layer "%s": ONNX infers shape %s for "%s", Caffe has %s'
                              % (lp.type, lp.name, got, info.name, tuple(want)))
    return inferred

