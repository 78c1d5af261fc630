"""The ONNX graph under construction and what one layer's converter sees of it (LayerContext).

A converter is a function `convert(ctx)` registered for Caffe type strings with `@converter(...)`;
it reads `ctx.param` (the LayerParameter), `ctx.bottoms` (tensor names), `ctx.bottom_shapes`,
`ctx.top_shapes` and `ctx.blob(i)` (the layer's parameter arrays), and defines each top either by
writing a node into `ctx.top(i)` or by `ctx.alias(i, tensor)`. A layer ONNX cannot express exactly
calls `raise ctx.refuse('why')`.
"""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

CONVERTERS = {}


class ExportError(ValueError):
    """A net that cannot be exported exactly; the message is one line naming the layer and why."""


def converter(*types):
    """Decorator: register `convert(ctx)` for these Caffe layer types."""
    def wrap(function):
        for name in types:
            CONVERTERS[name] = function
        return function
    return wrap


class Graph:
    """Nodes, initializers, inputs and outputs, with unique tensor names."""

    def __init__(self, opset, dynamic_batch):
        self.opset = opset
        self.dynamic_batch = dynamic_batch
        self.nodes, self.initializers, self.inputs, self.outputs = [], [], [], []
        self.taken = set()

    @property
    def input_names(self):
        return {info.name for info in self.inputs}

    def fresh(self, hint):
        """A tensor name not used yet: `hint`, else `hint_1`, `hint_2`, ..."""
        name, i = hint, 0
        while name in self.taken:
            i += 1
            name = '%s_%d' % (hint, i)
        self.taken.add(name)
        return name

    def const(self, value, hint, dtype=np.float32):
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op_type, inputs, outputs, name, **attrs):
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=name, **attrs))

    def value_info(self, name, shape):
        dims = list(shape)
        if self.dynamic_batch and dims:
            dims[0] = 'N'
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


class LayerContext:
    """One layer's view of the graph (see the module docstring)."""

    def __init__(self, graph, layer, bottoms, bottom_shapes, top_names, top_shapes):
        self.graph = graph
        self.layer = layer
        self.param = layer.layer_param
        self.name, self.type = self.param.name, self.param.type
        self.bottoms = list(bottoms)
        self.bottom_shapes = [tuple(s) for s in bottom_shapes]
        self.top_shapes = [tuple(s) for s in top_shapes]
        self._top_names = list(top_names)
        self.defined = [None] * len(top_names)
        self.opset = graph.opset
        self.dynamic_batch = graph.dynamic_batch
        self._nodes = 0

    # -- tops -------------------------------------------------------------
    def top(self, i=0):
        """The name top i gets when a node writes it (marks it defined)."""
        self.defined[i] = self._top_names[i]
        return self._top_names[i]

    def alias(self, i, tensor):
        """Top i is `tensor` itself (Split, Dropout, ...): no node."""
        self.defined[i] = tensor

    def graph_input(self, i):
        """Top i becomes an input of the graph, named as the blob, with its Caffe shape."""
        name = self.top(i)
        self.graph.inputs.append(self.graph.value_info(name, self.top_shapes[i]))

    # -- building ---------------------------------------------------------
    def tmp(self, what):
        return self.graph.fresh('%s/%s' % (self.name, what))

    def op(self, op_type, inputs, out=None, **attrs):
        """Add a node; returns its output name (a fresh one unless `out` is given)."""
        out = out or self.tmp(op_type.lower())
        self._nodes += 1
        self.graph.node(op_type, inputs, [out], '%s/%s_%d' % (self.name, op_type, self._nodes), **attrs)
        return out

    def op_multi(self, op_type, inputs, outs, **attrs):
        self._nodes += 1
        self.graph.node(op_type, inputs, outs, '%s/%s_%d' % (self.name, op_type, self._nodes), **attrs)
        return outs

    def const(self, value, what='const', dtype=np.float32):
        return self.graph.const(value, '%s/%s' % (self.name, what), dtype)

    def ints(self, values, what='ints'):
        return self.const(np.asarray(values, np.int64).reshape(-1), what, np.int64)

    def blob(self, i):
        """The layer's parameter blob i as a float32 host array (also for a net in GPU mode)."""
        return np.asarray(self.layer.blobs[i].read_data(), np.float32)

    def weight(self, i, shape=None, what=None):
        value = self.blob(i)
        return self.const(value if shape is None else value.reshape(shape), what or 'blob%d' % i)

    def reshape(self, x, shape, out=None, keep_batch=True):
        """Reshape to a static `shape`; with -dynamic_batch its first dim copies x's (0) when keep_batch."""
        dims = list(shape)
        if self.dynamic_batch and dims:
            if not keep_batch:
                raise self.refuse('it moves the batch axis, so it cannot take a dynamic batch '
                                  '(export without -dynamic_batch)')
            dims[0] = 0
        return self.op('Reshape', [x, self.ints(dims, 'shape')], out)

    def reduce(self, op_type, x, axes, keepdims, out=None):
        """ReduceX over `axes`: as an input from opset 18 (ReduceSum: 13), an attribute before."""
        if op_type == 'ReduceSum' or self.opset >= 18:
            return self.op(op_type, [x, self.ints(axes, 'axes')], out, keepdims=int(keepdims))
        return self.op(op_type, [x], out, axes=list(axes), keepdims=int(keepdims))

    def refuse(self, why):
        return ExportError('%s layer "%s": %s' % (self.type, self.name, why))

    def axis(self, axis, num_axes=None):
        """Caffe's CanonicalAxisIndex against bottom 0."""
        n = len(self.bottom_shapes[0]) if num_axes is None else num_axes
        if not -n <= axis < max(n, 1):
            raise self.refuse('axis %d out of range for a %d-axis bottom' % (axis, n))
        return axis % n if n else 0
