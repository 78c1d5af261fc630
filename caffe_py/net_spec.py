"""Write nets in Python, as pycaffe's net_spec does: `n.conv1 = L.Convolution(n.data, ...)`.

    from caffe_py.net_spec import NetSpec, layers as L, params as P
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 32, 32]))
    n.conv1 = L.Convolution(n.data, num_output=8, kernel_size=3,
                            weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    print(n.to_proto())

Keyword arguments that are LayerParameter fields (param, include, loss_weight,
transform_param ...) go on the layer; the others go into the layer type's own
parameter message (convolution_param for Convolution ...). Dicts fill
messages, lists fill repeated fields, enum values may be given by name.
A top is named after the NetSpec attribute it is assigned to, a layer after
its first top (or `name=`); `ntop=k` gives k tops, `in_place=True` makes the
tops the bottoms.
"""
import itertools
from collections import OrderedDict

from .proto import caffe_pb2

_counter = itertools.count()

# layer type -> the LayerParameter field holding its parameters
_SPECIAL_PARAM_FIELDS = {'Deconvolution': 'convolution_param', 'SoftmaxWithLoss': 'softmax_param',
                         'InfogainLoss': 'infogain_loss_param', 'EuclideanLoss': 'loss_param'}


def _param_field(layer_type):
    if layer_type in _SPECIAL_PARAM_FIELDS:
        return _SPECIAL_PARAM_FIELDS[layer_type]
    wanted = layer_type.lower() + 'parameter'
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.message_type is not None and field.message_type.name.lower() == wanted:
            return field.name
    return None


def assign_fields(msg, values):
    """Fill protobuf message `msg` from a dict (nested dicts, lists, enum names)."""
    for key, value in values.items():
        _assign(msg, key, value)


def _assign(msg, key, value):
    fields = msg.DESCRIPTOR.fields_by_name
    if key not in fields:
        raise ValueError('%s has no field "%s"' % (msg.DESCRIPTOR.name, key))
    field = fields[key]
    repeated = _is_repeated(field)
    items = value if isinstance(value, (list, tuple)) else [value]
    if not repeated and isinstance(value, (list, tuple)):
        raise ValueError('%s.%s takes one value, got a list' % (msg.DESCRIPTOR.name, key))
    if field.message_type is not None:
        for item in items:
            sub = getattr(msg, key).add() if repeated else getattr(msg, key)
            if isinstance(item, dict):
                assign_fields(sub, item)
            else:
                sub.CopyFrom(item)
        return
    items = [_enum_value(field, v) for v in items]
    if repeated:
        getattr(msg, key).extend(items)
    else:
        setattr(msg, key, items[0])


def _is_repeated(field):
    if hasattr(field, 'is_repeated'):
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def _enum_value(field, value):
    if field.enum_type is not None and isinstance(value, str):
        if value not in field.enum_type.values_by_name:
            raise ValueError('%s is not a value of %s (%s)' % (
                value, field.enum_type.name, ', '.join(field.enum_type.values_by_name)))
        return field.enum_type.values_by_name[value].number
    return value


class Top:
    """One output blob of a layer: what later layers take as a bottom."""

    def __init__(self, fn, index):
        self.fn = fn
        self.index = index

    def to_proto(self):
        return to_proto(self)


class Function:
    """One layer call: its type, bottoms and keyword parameters."""

    def __init__(self, type_name, inputs, params):
        self.order = next(_counter)
        self.type_name = type_name
        self.inputs = list(inputs)
        for bottom in self.inputs:
            if not isinstance(bottom, Top):
                raise TypeError('%s: bottoms must be tops of other layers, got %r' % (type_name, bottom))
        self.params = dict(params)
        self.ntop = self.params.pop('ntop', 1)
        self.in_place = self.params.pop('in_place', False)
        self.tops = tuple(Top(self, i) for i in range(self.ntop))

    def _layer(self, names, blobs):
        """The LayerParameter; `names` are the tops' given names, `blobs` their blob names."""
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(blobs[b] for b in self.inputs)
        for i, top in enumerate(self.tops):
            blobs[top] = blobs[self.inputs[i]] if self.in_place else names[top]
            layer.top.append(blobs[top])
        layer.name = self.params.get('name') or (names[self.tops[0]] if self.tops else
                                                 '%s%d' % (self.type_name.lower(), self.order))
        own_field = _param_field(self.type_name)
        for key, value in self.params.items():
            if key == 'name':
                continue
            if key in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name:
                _assign(layer, key, value)
            elif own_field is None:
                raise ValueError('layer type %s has no parameter message for "%s"' % (self.type_name, key))
            else:
                _assign(getattr(layer, own_field), key, value)
        return layer


class NetSpec:
    """Named tops in assignment order; `to_proto()` gives the NetParameter."""

    def __init__(self):
        super().__setattr__('tops', OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    __setitem__ = __setattr__
    __getitem__ = __getattr__

    def to_proto(self):
        names = {top: name for name, top in self.tops.items()}
        return to_proto(*self.tops.values(), names=names)


def to_proto(*tops, names=None):
    """The NetParameter of every layer that `tops` depend on, in the order they were written."""
    names = dict(names or {})
    fns, stack = {}, [t.fn for t in tops]
    while stack:
        fn = stack.pop()
        if id(fn) not in fns:
            fns[id(fn)] = fn
            stack.extend(b.fn for b in fn.inputs)
    net = caffe_pb2.NetParameter()
    auto = itertools.count(1)
    blobs = {}
    for fn in sorted(fns.values(), key=lambda f: f.order):
        for top in fn.tops:
            if top not in names:
                names[top] = '%s%d' % (fn.type_name.lower(), next(auto))
        net.layer.add().CopyFrom(fn._layer(names, blobs))
    return net


class _Layers:
    """`layers.Convolution(bottom, ...)` makes a Function of type Convolution and returns its top(s)."""

    def __getattr__(self, type_name):
        def make(*bottoms, **params):
            fn = Function(type_name, bottoms, params)
            return fn.tops[0] if fn.ntop == 1 else fn.tops
        return make


class _Params:
    """`params.Pooling.MAX` is PoolingParameter's enum value MAX (Pooling's parameter message)."""

    def __getattr__(self, type_name):
        if hasattr(caffe_pb2, type_name + 'Parameter'):
            return getattr(caffe_pb2, type_name + 'Parameter')
        field = _param_field(type_name)
        if field is None:
            raise AttributeError('no parameter message for layer type %s' % type_name)
        return type(getattr(caffe_pb2.LayerParameter(), field))


layers = _Layers()
params = _Params()
