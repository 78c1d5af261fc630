"""Write nets in Python, as pycaffe's net_spec does: `n.conv1 = L.Convolution(n.data, ...)`.

    from caffe_py.net_spec import NetSpec, layers as L, params as P
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 32, 32]))
    n.conv1 = L.Convolution(n.data, num_output=8, kernel_size=3,
                            weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    print(n.to_proto())

Keyword arguments go into the layer type's own parameter message when it has
that field (convolution_param for Convolution ...), as pycaffe's do; `*param`
keywords and the other LayerParameter fields (include, loss_weight, name ...)
go on the layer. Dicts fill messages, lists fill repeated fields, enum values
may be given by name. A top is named after the NetSpec attribute it is
assigned to, else after its layer type and a count per type (Convolution1); a
layer after its first top (or `name=`). `ntop=k` gives k tops; `ntop=0` gives
the Function itself (assign it to the NetSpec to emit the layer);
`in_place=True` makes the tops the bottoms.
"""
from collections import OrderedDict

from .proto import caffe_pb2

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


class NetSpecError(ValueError, AttributeError):
    """A keyword names no field of the layer's messages (an AttributeError, as pycaffe raises)."""


class MissingTopError(AttributeError, KeyError):
    """A NetSpec has no top of that name (a KeyError, as pycaffe raises, and an AttributeError)."""


class Top:
    """One output blob of a layer: what later layers take as a bottom (`n`: its index)."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        return to_proto(self)


class Function:
    """One layer call: its type, bottoms (Tops) and keyword parameters."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                raise TypeError('%s input %d is not a Top (type is %s)' % (type_name, index, type(bottom)))
        self.inputs = tuple(inputs)
        self.params = dict(params)
        self.ntop = self.params.pop('ntop', 1)
        self.in_place = self.params.pop('in_place', False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _name(self, names, autonames):
        """The layer's name: its own entry (a NetSpec attribute), else its first top's name."""
        if self not in names:
            names[self] = _top_name(self.tops[0], names, autonames) if self.tops else \
                _autoname(self.type_name, autonames)
        return names[self]

    def _layer(self, bottoms, names, autonames):
        """The LayerParameter, given its bottoms' blob names."""
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(bottoms)
        else:
            layer.top.extend(_top_name(top, names, autonames) for top in self.tops)
        layer.name = self._name(names, autonames)
        own_field = _param_field(self.type_name)
        own = getattr(layer, own_field) if own_field else None
        for key, value in self.params.items():
            if own is not None and not key.endswith('param') and key in own.DESCRIPTOR.fields_by_name:
                _assign(own, key, value)
            elif key in layer.DESCRIPTOR.fields_by_name:
                _assign(layer, key, value)
            else:
                raise NetSpecError('layer "%s" (%s): no field "%s" in %s' % (
                    layer.name, self.type_name, key,
                    ' or '.join(([own.DESCRIPTOR.name] if own is not None else []) + ['LayerParameter'])))
        return layer


def _autoname(type_name, autonames):
    autonames[type_name] = autonames.get(type_name, 0) + 1
    return '%s%d' % (type_name, autonames[type_name])


def _top_name(top, names, autonames):
    if top not in names:
        names[top] = _autoname(top.fn.type_name, autonames)
    return names[top]


class NetSpec:
    """Named tops in assignment order; `to_proto()` gives the NetParameter. A Function (a
    layer made with ntop=0) may be assigned too: its layer gets the attribute's name."""

    def __init__(self):
        super().__setattr__('tops', OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise MissingTopError('the NetSpec has no top "%s"' % name) from None

    __setitem__ = __setattr__
    __getitem__ = __getattr__

    def to_proto(self):
        names = {top: name for name, top in self.tops.items()}
        return to_proto(*self.tops.values(), names=names)


def to_proto(*tops, names=None):
    """The NetParameter of every layer that `tops` (Tops or Functions) depend on, as pycaffe
    orders them: depth first from each of `tops` in turn, a layer after its bottoms' layers.
    Unnamed tops are named after their layer type and a count per type (Convolution1, ...),
    a layer after its first top."""
    names = dict(names or {})
    autonames, layers = {}, OrderedDict()
    for top in tops:
        fn = top.fn if isinstance(top, Top) else top
        stack = [(fn, iter(fn.inputs))]
        while stack:
            fn, pending = stack[-1]
            bottom = next((b for b in pending if b.fn not in layers), None)
            if bottom is not None:
                stack.append((bottom.fn, iter(bottom.fn.inputs)))
                continue
            stack.pop()
            if fn not in layers:
                bottoms = [layers[b.fn].top[b.n] for b in fn.inputs]
                layers[fn] = fn._layer(bottoms, names, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class _Layers:
    """`layers.Convolution(bottom, ...)` makes a Function of type Convolution and returns its top,
    its tuple of tops (ntop > 1) or, for ntop=0, the Function itself."""

    def __getattr__(self, type_name):
        def make(*bottoms, **params):
            fn = Function(type_name, bottoms, params)
            if fn.ntop == 0:
                return fn
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
