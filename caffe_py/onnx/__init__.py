"""Export Caffe nets to ONNX: `caffe_py.onnx.export(net, 'model.onnx')`, `caffe-py export_onnx`.

Needs the `onnx` package (`pip install caffe-py[onnx]`). Standard ONNX operators only (default
opset 17), checked with onnx.checker and strict shape inference, every blob's inferred shape
equal to Caffe's. Each layer family has a small converter module (vision, common, neuron,
normalization, loss, recurrent); a layer ONNX cannot express exactly is refused with an ExportError naming it.

A Python layer exports when its class defines `export_onnx(self, ctx)`: `ctx` is a
caffe_py.onnx.graph.LayerContext; read `ctx.bottoms` (tensor names), `ctx.bottom_shapes`,
`ctx.top_shapes`, add nodes with `ctx.op('Relu', [ctx.bottoms[0]], ctx.top(0))` and constants
with `ctx.const(array)`; `raise ctx.refuse('why')` when it cannot.
"""
from .graph import CONVERTERS, ExportError, LayerContext, converter  # noqa: F401
from . import common, loss, neuron, normalization, recurrent, vision  # noqa: F401  (register the converters)
from .export import DEFAULT_OPSET, MIN_OPSET, export  # noqa: F401
