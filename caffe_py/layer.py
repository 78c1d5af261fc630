"""Layer base class and the registry of layer types keyed by Caffe's type strings.

Lifecycle (as Caffe's Layer): `initialize` checks blob counts, calls `setup`
once, then `reshape`, then fills loss-weighted top diffs with their weights.
`run_forward` reshapes and calls `forward`, returning the weighted loss;
`run_backward` calls `backward`.

Conventions for subclasses:
- `setup(bottom, top)` reads parameters and creates `self.blobs` (learnable Blobs);
  `reshape(bottom, top)` sizes tops and buffers; `forward(bottom, top)`;
  `backward(top, propagate_down, bottom)`.
- Compute with `xp = bottom[0].xp` (numpy or cupy) and in the blobs' dtype.
- Bottom diffs are overwritten; parameter diffs are accumulated (+=), so that
  iter_size and shared parameters add up; the solver clears them.
- Refer to `self.blobs[i].data` at compute time, never cache the array: shared
  parameters replace the memory after setup.
"""
import numpy as np

from . import memory
from .blob import Blob

_REGISTRY = {}


class LayerError(ValueError):
    """A layer refuses its parameters or its blobs; the message names the layer."""


def register(type_name):
    """Class decorator: register a Layer subclass under Caffe's type string."""
    def wrap(cls):
        if type_name in _REGISTRY:
            raise ValueError('layer type %r registered twice' % type_name)
        cls.type = type_name
        _REGISTRY[type_name] = cls
        return cls
    return wrap


def layer_type_list():
    """Every registered layer type, sorted, as caffe.layer_type_list()."""
    return sorted(_REGISTRY)


def create_layer(layer_param, dtype=np.float32):
    """Instantiate the layer for `layer_param.type`; unknown types list the known ones."""
    cls = _REGISTRY.get(layer_param.type)
    if cls is None:
        raise LayerError('Unknown layer type: "%s" (layer "%s"); known types: %s'
                         % (layer_param.type, layer_param.name, ', '.join(layer_type_list())))
    return cls(layer_param, dtype=dtype)


class Layer:
    """Base of every layer. Class attributes describe blob-count constraints (None: any)."""

    type = None
    exact_num_bottom = None
    min_bottom = None
    max_bottom = None
    exact_num_top = None
    min_top = None
    max_top = None
    equal_num_bottom_top = False
    auto_top_blobs = False
    # loss layers weight their first top by 1 unless loss_weight says otherwise
    default_loss_weight = 0.0

    def __init__(self, layer_param, dtype=np.float32):
        self.layer_param = layer_param
        self.name = layer_param.name
        self.phase = layer_param.phase
        self.dtype = np.dtype(dtype)
        self.blobs = []
        for k, proto in enumerate(layer_param.blobs):
            try:
                self.blobs.append(blob_from_proto(proto, self.dtype))
            except ValueError as exc:         # a FormatError: values that do not fill the shape
                raise self.error('param blob %d: %s' % (k, exc)) from None
        self.param_propagate_down = []
        self.loss_weights = []

    # -- to override ------------------------------------------------------
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        raise NotImplementedError

    def forward(self, bottom, top):
        raise NotImplementedError

    def backward(self, top, propagate_down, bottom):
        pass

    def allow_force_backward(self, bottom_index):
        return True

    # -- the lifecycle ----------------------------------------------------
    def initialize(self, bottom, top):
        self.check_blob_counts(bottom, top)
        try:
            self.setup(bottom, top)
            self.reshape(bottom, top)
        except (memory.OutOfMemoryError, MemoryError) as exc:
            raise self.memory_error(exc, top) from None
        self.set_loss_weights(top)

    def run_forward(self, bottom, top):
        try:
            self.reshape(bottom, top)
            self.forward(bottom, top)
        except (memory.OutOfMemoryError, MemoryError) as exc:
            raise self.memory_error(exc, top) from None
        loss = 0.0
        for i, weight in enumerate(self.loss_weights):
            if weight:
                loss += float((top[i].data * top[i].diff).sum())
        return loss

    def run_backward(self, top, propagate_down, bottom):
        try:
            self.backward(top, propagate_down, bottom)
        except (memory.OutOfMemoryError, MemoryError) as exc:     # diffs are allocated on first use
            raise self.memory_error(exc, top, bottom) from None

    def loss(self, top_index):
        return self.loss_weights[top_index] if top_index < len(self.loss_weights) else 0.0

    def set_param_propagate_down(self, index, value):
        if len(self.param_propagate_down) <= index:
            self.param_propagate_down.extend([True] * (index + 1 - len(self.param_propagate_down)))
        self.param_propagate_down[index] = bool(value)

    def param_needs_backward(self, index):
        return index >= len(self.param_propagate_down) or self.param_propagate_down[index]

    def set_loss_weights(self, top):
        weights = list(self.layer_param.loss_weight)
        if not weights and self.default_loss_weight and top:
            weights = [self.default_loss_weight]
        if weights and len(weights) != len(top):
            raise self.error('loss_weight must be unspecified or given once per top '
                             '(%d given, %d tops)' % (len(weights), len(top)))
        self.loss_weights = [float(w) for w in weights]
        for blob, weight in zip(top, self.loss_weights):
            if weight:
                blob.diff[...] = weight

    def check_blob_counts(self, bottom, top):
        def check(what, n, exact, lo, hi):
            if exact is not None and n != exact:
                raise self.error('takes %d %s blob(s), got %d' % (exact, what, n))
            if lo is not None and n < lo:
                raise self.error('takes at least %d %s blob(s), got %d' % (lo, what, n))
            if hi is not None and n > hi:
                raise self.error('takes at most %d %s blob(s), got %d' % (hi, what, n))
        check('bottom', len(bottom), self.exact_num_bottom, self.min_bottom, self.max_bottom)
        check('top', len(top), self.exact_num_top, self.min_top, self.max_top)
        if self.equal_num_bottom_top and len(bottom) != len(top):
            raise self.error('needs as many tops as bottoms (%d bottoms, %d tops)'
                             % (len(bottom), len(top)))

    # -- helpers ----------------------------------------------------------
    def canonical_axis(self, blob, axis):
        """Caffe's CanonicalAxisIndex for `blob`, failing with this layer's name."""
        try:
            return blob.canonical_axis_index(axis)
        except IndexError as exc:
            raise self.error(str(exc)) from None

    def error(self, message):
        """A LayerError naming this layer and its type."""
        return LayerError('%s layer "%s": %s' % (self.type, self.name, message))

    def memory_error(self, exc, top, bottom=()):
        """A LayerError naming this layer, and the blob when `exc` says which, for a request too large
        (memory.OutOfMemoryError from the check before allocating, or a MemoryError from NumPy)."""
        blob = getattr(exc, 'blob', None)
        what = 'one of its weight or buffer blobs: ' if blob is not None else ''
        for side, blobs, names in (('bottom', bottom, self.layer_param.bottom),
                                   ('top', top, self.layer_param.top)):
            for j, b in enumerate(blobs):
                if b is blob:
                    what = '%s blob "%s": ' % (side, names[j] if j < len(names) else j)
        for k, param in enumerate(self.blobs):
            if param is blob:
                what = 'param blob %d: ' % k
        if isinstance(exc, memory.OutOfMemoryError):
            return self.error(what + str(exc))
        return self.error('%sout of memory (%s)' % (what, ' '.join(str(exc).split()) or 'MemoryError'))

    def make_blob(self, shape):
        """A new blob in this layer's dtype (for parameters and buffers)."""
        return Blob(shape, dtype=self.dtype)


def blob_from_proto(proto, dtype=np.float32):
    """A Blob holding a BlobProto's values (import kept local: formats may import layers)."""
    from .formats import blob_to_array
    array = blob_to_array(proto)
    blob = Blob(array.shape, dtype=dtype)
    blob.data[...] = blob.xp.asarray(array)
    return blob
