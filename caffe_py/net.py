"""Net: builds Caffe's network from a NetParameter and runs it (Caffe's Net, pycaffe's surface).

Init follows Caffe's Net::Init: NetState filtering, Split insertion, blob
wiring (in-place tops reuse their bottom blob), which layers and blobs need
backward, loss weights, force_backward, and parameter sharing by name.
"""
import os
from collections import OrderedDict

import numpy as np

from . import formats, log, memory
from .blob import Blob, host_views
from .layer import LayerError, create_layer
from .proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


class NetError(ValueError):
    """The net definition cannot be built; the message names the layer and blob."""


# -- NetParameter transformations ---------------------------------------------

def state_meets_rule(state, rule, layer_name):
    """Whether NetState `state` meets NetStateRule `rule` (Caffe's StateMeetsRule)."""
    if rule.HasField('phase') and rule.phase != state.phase:
        log.info('The NetState phase (%d) differed from the phase (%d) specified by a rule in layer %s',
                 state.phase, rule.phase, layer_name)
        return False
    if rule.HasField('min_level') and state.level < rule.min_level:
        log.info('The NetState level (%d) is above the min_level (%d) specified by a rule in layer %s',
                 state.level, rule.min_level, layer_name)
        return False
    if rule.HasField('max_level') and state.level > rule.max_level:
        log.info('The NetState level (%d) is above the max_level (%d) specified by a rule in layer %s',
                 state.level, rule.max_level, layer_name)
        return False
    for stage in rule.stage:
        if stage not in state.stage:
            log.info("The NetState did not contain stage '%s' specified by a rule in layer %s",
                     stage, layer_name)
            return False
    for stage in rule.not_stage:
        if stage in state.stage:
            log.info("The NetState contained a not_stage '%s' specified by a rule in layer %s",
                     stage, layer_name)
            return False
    return True


def filter_net(param, state=None):
    """A copy of `param` keeping the layers whose include/exclude rules `state` (by default its
    own state) meets; the copy has that state."""
    state = param.state if state is None else state
    filtered = caffe_pb2.NetParameter()
    filtered.CopyFrom(param)
    filtered.state.CopyFrom(state)
    del filtered.layer[:]
    for layer in param.layer:
        if layer.include and layer.exclude:
            raise NetError('layer "%s": specify either include rules or exclude rules; not both'
                           % layer.name)
        included = not layer.include
        if included:
            included = not any(state_meets_rule(state, r, layer.name) for r in layer.exclude)
        else:
            included = any(state_meets_rule(state, r, layer.name) for r in layer.include)
        if included:
            filtered.layer.add().CopyFrom(layer)
    return filtered


def split_layer_name(layer_name, blob_name, blob_index):
    return '%s_%s_%d_split' % (blob_name, layer_name, blob_index)


def split_blob_name(layer_name, blob_name, blob_index, split_index):
    return '%s_%s_%d_split_%d' % (blob_name, layer_name, blob_index, split_index)


def insert_splits(param):
    """A copy of `param` with Split layers where a top feeds several bottoms (Caffe's InsertSplits)."""
    last_top = {}            # blob name -> (layer index, top index)
    source_of_bottom = {}    # (layer, bottom index) -> (layer, top index)
    uses = {}                # (layer, top index) -> number of consumers
    loss_weight = {}
    for i, layer in enumerate(param.layer):
        for j, name in enumerate(layer.bottom):
            if name not in last_top:
                raise NetError("Unknown bottom blob '%s' (layer '%s', bottom index %d)"
                               % (name, layer.name, j))
            source_of_bottom[(i, j)] = last_top[name]
            uses[last_top[name]] = uses.get(last_top[name], 0) + 1
        for j, name in enumerate(layer.top):
            last_top[name] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            top_idx = last_top[layer.top[j]]
            loss_weight[top_idx] = layer.loss_weight[j]
            if loss_weight[top_idx]:
                uses[top_idx] = uses.get(top_idx, 0) + 1
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    next_split = {}
    for i, source in enumerate(param.layer):
        layer = out.layer.add()
        layer.CopyFrom(source)
        for j, name in enumerate(layer.bottom):
            top_idx = source_of_bottom[(i, j)]
            if uses.get(top_idx, 0) > 1:
                k = next_split.get(top_idx, 0)
                next_split[top_idx] = k + 1
                layer.bottom[j] = split_blob_name(param.layer[top_idx[0]].name, name, top_idx[1], k)
        for j, name in enumerate(layer.top):
            count = uses.get((i, j), 0)
            if count > 1:
                weight = loss_weight.get((i, j), 0.0)
                split = out.layer.add()
                split.name = split_layer_name(layer.name, name, j)
                split.type = 'Split'
                split.bottom.append(name)
                for k in range(count):
                    split.top.append(split_blob_name(layer.name, name, j, k))
                    if weight:
                        split.loss_weight.append(weight if k == 0 else 0.0)
                if weight:
                    del layer.loss_weight[:]
                    next_split[(i, j)] = next_split.get((i, j), 0) + 1
    return out


# -- the Net --------------------------------------------------------------------

class Net:
    """A Caffe network.

    Net(network_file, phase, level=0, stages=None, weights=None) as pycaffe, where
    `network_file` is a prototxt path or a NetParameter; pycaffe's legacy
    Net(network_file, weights, phase) works too, and so does a weights path given
    third. `dtype` (keyword) selects float32 (default) or float64.
    """

    def __init__(self, network_file, phase=None, level=0, stages=None, weights=None, *,
                 dtype=np.float32):
        if phase not in (TRAIN, TEST) and level in (TRAIN, TEST) and _is_path(phase):
            phase, weights, level = level, phase, 0    # legacy Net(network_file, weights, phase)
        elif _is_path(level):
            level, weights = 0, level                  # Net(network_file, phase, weights)
        if phase not in (TRAIN, TEST):
            raise ValueError('phase must be caffe_py.TRAIN or caffe_py.TEST, got %r' % (phase,))
        if isinstance(network_file, caffe_pb2.NetParameter):
            param = caffe_pb2.NetParameter()
            param.CopyFrom(network_file)
        else:
            param = formats.read_net(network_file)
        param.state.phase = phase
        param.state.level = level
        for stage in stages or ():
            param.state.stage.append(stage)
        self.dtype = np.dtype(dtype)
        self._callbacks = {'before_forward': [], 'after_forward': [],
                           'before_backward': [], 'after_backward': []}
        self._init(param)
        if weights:
            self.copy_from(weights)

    # -- construction -------------------------------------------------------
    def _init(self, in_param):
        self.phase = in_param.state.phase
        filtered = filter_net(in_param)
        log.info('Initializing net from parameters: \n%s', filtered)
        param = insert_splits(filtered)
        self.name = param.name
        self.debug_info = param.debug_info
        self.layers = []
        self._layer_names = []
        self._blobs = []            # Blob objects in creation order
        self._blob_names = []
        self._blob_need_backward = []
        self.bottom_vecs, self.top_vecs = [], []
        self.bottom_ids, self.top_ids = [], []
        self.bottom_need_backward = []
        self.layer_need_backward = []
        self._blob_loss_weights = []  # by blob id, as pycaffe's Net._blob_loss_weights
        self._input_ids = []
        self._params = []            # every param blob, by net param id
        self._param_owners = []
        self._param_layer_indices = []
        self._param_names_index = {}
        self.param_display_names = []
        self.param_id_vecs = []
        self.learnable_params = []
        self.learnable_param_ids = []
        self.params_lr, self.params_weight_decay = [], []
        self._has_lr, self._has_decay = [], []
        name_to_id = {}
        available = set()
        memory_used = 0
        memory_free = memory.available_bytes()
        try:
            self._build(param, name_to_id, available, memory_used, memory_free)
        except BaseException:
            for layer in self.layers:     # stop the data threads of the layers built so far
                try:
                    if hasattr(layer, 'close'):
                        layer.close()
                except Exception:  # a layer that failed half-way may have nothing to close
                    pass
            raise

    def _build(self, param, name_to_id, available, memory_used, memory_free):
        for layer_id, lp in enumerate(param.layer):
            if not lp.HasField('phase'):
                lp.phase = self.phase
            if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
                raise NetError('layer "%s": propagate_down must be given 0 or %d times (once per bottom)'
                               % (lp.name, len(lp.bottom)))
            log.info('Creating layer %s', lp.name)
            try:
                layer = create_layer(lp, self.dtype)
            except LayerError as exc:
                raise NetError(str(exc)) from None
            self.layers.append(layer)
            self._layer_names.append(lp.name)
            log.info('Creating Layer %s', lp.name)
            self.bottom_vecs.append([])
            self.top_vecs.append([])
            self.bottom_ids.append([])
            self.top_ids.append([])
            self.bottom_need_backward.append([])
            self.param_id_vecs.append([])
            need_backward = False
            for j, name in enumerate(lp.bottom):
                if name not in available:
                    raise NetError("Unknown bottom blob '%s' (layer '%s', bottom index %d)"
                                   % (name, lp.name, j))
                blob_id = name_to_id[name]
                log.info('%s <- %s', lp.name, name)
                self.bottom_vecs[-1].append(self._blobs[blob_id])
                self.bottom_ids[-1].append(blob_id)
                available.discard(name)
                needs = self._blob_need_backward[blob_id]
                if lp.propagate_down:
                    needs = lp.propagate_down[j]
                self.bottom_need_backward[-1].append(bool(needs))
                need_backward |= self._blob_need_backward[blob_id]
            num_top = len(lp.top)
            for j in range(num_top):
                self._append_top(lp, layer_id, j, available, name_to_id)
                if lp.type == 'Input':
                    self._input_ids.append(len(self._blobs) - 1)
            if layer.auto_top_blobs:
                needed = max(layer.min_top or 0, layer.exact_num_top or 0)
                for j in range(num_top, needed):
                    self._append_top(lp, layer_id, j, None, None)
            try:
                layer.initialize(self.bottom_vecs[-1], self.top_vecs[-1])
            except (LayerError, ValueError, IndexError) as exc:
                msg = str(exc)
                if '"%s"' % lp.name not in msg and "'%s'" % lp.name not in msg:   # quoted: "pool" is not "pooling"
                    msg = '%s layer "%s": %s' % (lp.type, lp.name, msg)
                raise NetError(msg) from None
            log.info('Setting up %s', lp.name)
            for j, top in enumerate(self.top_vecs[-1]):
                self._blob_loss_weights[self.top_ids[-1][j]] = layer.loss(j)
                log.info('Top shape: %s', top.shape_string())
                if layer.loss(j):
                    log.info('    with loss weight %s', log.fmt(layer.loss(j)))
                memory_used += top.count
            log.info('Memory required for data: %d', memory_used * self.dtype.itemsize)
            # diffs are allocated on first use (Blob): counted for a TRAIN net, which its solver
            # runs backward; a TEST net (deploy) is usually only run forward
            needed = (1 + (self.phase == TRAIN)) * memory_used * self.dtype.itemsize
            if memory_free is not None and needed > max(memory_free, memory.CHECK_FROM):
                raise NetError('%s layer "%s": the blobs up to its tops (%s) need %s for %s; '
                               'this machine has %s available'
                               % (lp.type, lp.name, ', '.join(
                                   '"%s" %s' % (lp.top[j] if j < len(lp.top) else '(automatic)',
                                                top.shape_string()) for j, top in enumerate(self.top_vecs[-1])),
                                  memory.format_bytes(needed), 'data and diffs' if self.phase == TRAIN else 'data',
                                  memory.format_bytes(memory_free)))
            if len(lp.param) > len(layer.blobs):
                raise NetError('Too many params specified for layer %s' % lp.name)
            for k in range(len(layer.blobs)):
                spec = lp.param[k] if k < len(lp.param) else caffe_pb2.ParamSpec()
                layer.set_param_propagate_down(k, spec.lr_mult != 0)
                need_backward |= spec.lr_mult != 0
            for k in range(len(layer.blobs)):
                self._append_param(layer_id, k)
            self.layer_need_backward.append(need_backward)
            if need_backward:
                for blob_id in self.top_ids[-1]:
                    self._blob_need_backward[blob_id] = True
        self._prune_backward()
        if param.force_backward:
            for layer_id, layer in enumerate(self.layers):
                self.layer_need_backward[layer_id] = True
                for j, blob_id in enumerate(self.bottom_ids[layer_id]):
                    need = self.bottom_need_backward[layer_id][j] or layer.allow_force_backward(j)
                    self.bottom_need_backward[layer_id][j] = need
                    self._blob_need_backward[blob_id] = self._blob_need_backward[blob_id] or need
                for k in range(len(layer.blobs)):
                    layer.set_param_propagate_down(k, True)
        self._output_ids = [name_to_id[name] for name in sorted(available)]
        for name in sorted(available):
            log.info('This network produces output %s', name)
        self._share_weights()
        # pycaffe's surface: host views (the blobs themselves unless they are on the device)
        self.blobs = OrderedDict((name, blob.host_view()) for name, blob in zip(self._blob_names, self._blobs))
        self._layer_index = {name: i for i, name in enumerate(self._layer_names)}
        log.info('Network initialization done.')

    def _append_top(self, lp, layer_id, top_index, available, name_to_id):
        name = lp.top[top_index] if top_index < len(lp.top) else '(automatic)'
        if name_to_id is not None and top_index < len(lp.bottom) and name == lp.bottom[top_index]:
            log.info('%s -> %s (in-place)', lp.name, name)
            blob_id = name_to_id[name]
        elif name_to_id is not None and name in name_to_id:
            raise NetError("Top blob '%s' produced by multiple sources (layer '%s')" % (name, lp.name))
        else:
            log.info('%s -> %s', lp.name, name)
            blob_id = len(self._blobs)
            self._blobs.append(Blob(dtype=self.dtype))
            self._blob_names.append(name)
            self._blob_need_backward.append(False)
            self._blob_loss_weights.append(0.0)
            if name_to_id is not None:
                name_to_id[name] = blob_id
        self.top_ids[layer_id].append(blob_id)
        self.top_vecs[layer_id].append(self._blobs[blob_id])
        if available is not None:
            available.add(name)

    def _append_param(self, layer_id, param_id):
        layer = self.layers[layer_id]
        lp = layer.layer_param
        spec = lp.param[param_id] if param_id < len(lp.param) else caffe_pb2.ParamSpec()
        name = spec.name
        self.param_display_names.append(name or str(param_id))
        net_param_id = len(self._params)
        self._params.append(layer.blobs[param_id])
        self.param_id_vecs[layer_id].append(net_param_id)
        self._param_layer_indices.append((layer_id, param_id))
        if not name or name not in self._param_names_index:
            self._param_owners.append(-1)
            if name:
                self._param_names_index[name] = net_param_id
            self.learnable_param_ids.append(len(self.learnable_params))
            self.learnable_params.append(layer.blobs[param_id])
            self._has_lr.append(spec.HasField('lr_mult'))
            self._has_decay.append(spec.HasField('decay_mult'))
            self.params_lr.append(spec.lr_mult)
            self.params_weight_decay.append(spec.decay_mult)
            return
        owner_id = self._param_names_index[name]
        self._param_owners.append(owner_id)
        owner_layer, owner_param = self._param_layer_indices[owner_id]
        log.info("Sharing parameters '%s' owned by layer '%s', param index %d",
                 name, self._layer_names[owner_layer], owner_param)
        mine, owner = layer.blobs[param_id], self.layers[owner_layer].blobs[owner_param]
        if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
            if mine.count != owner.count:
                raise NetError("Cannot share param '%s' owned by layer '%s' with layer '%s'; count mismatch. "
                               'Owner layer param shape is %s; sharing layer shape is %s'
                               % (name, self._layer_names[owner_layer], lp.name,
                                  owner.shape_string(), mine.shape_string()))
        elif mine.shape != owner.shape:
            raise NetError("Cannot share param '%s' owned by layer '%s' with layer '%s'; shape mismatch. "
                           'Owner layer param shape is %s; sharing layer expects shape %s'
                           % (name, self._layer_names[owner_layer], lp.name,
                              owner.shape_string(), mine.shape_string()))
        learnable_id = self.learnable_param_ids[owner_id]
        self.learnable_param_ids.append(learnable_id)
        for has, values, field in ((self._has_lr, self.params_lr, 'lr_mult'),
                                   (self._has_decay, self.params_weight_decay, 'decay_mult')):
            if spec.HasField(field):
                if has[learnable_id] and values[learnable_id] != getattr(spec, field):
                    raise NetError("Shared param '%s' has mismatched %s." % (name, field))
                has[learnable_id] = True
                values[learnable_id] = getattr(spec, field)

    def _prune_backward(self):
        """Skip backward where no loss depends on a layer (Caffe's reverse pass in Net::Init)."""
        under_loss, skip = set(), set()
        for layer_id in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[layer_id]
            contributes, skip_down = False, True
            for j, blob_id in enumerate(self.top_ids[layer_id]):
                name = self._blob_names[blob_id]
                if layer.loss(j) or name in under_loss:
                    contributes = True
                if name not in skip:
                    skip_down = False
                if contributes and not skip_down:
                    break
            if self.layer_need_backward[layer_id] and skip_down:
                self.layer_need_backward[layer_id] = False
                self.bottom_need_backward[layer_id] = [False] * len(self.bottom_ids[layer_id])
            if not contributes:
                self.layer_need_backward[layer_id] = False
            log.info('%s %s backward computation.', self._layer_names[layer_id],
                     'needs' if self.layer_need_backward[layer_id] else 'does not need')
            for j, blob_id in enumerate(self.bottom_ids[layer_id]):
                name = self._blob_names[blob_id]
                if contributes:
                    under_loss.add(name)
                else:
                    self.bottom_need_backward[layer_id][j] = False
                if not self.bottom_need_backward[layer_id][j]:
                    skip.add(name)

    def _share_weights(self):
        for i, owner in enumerate(self._param_owners):
            if owner >= 0:
                self._params[i].share_data(self._params[owner])
                self._params[i].share_diff(self._params[owner])

    # -- pycaffe's read-only views ---------------------------------------------
    @property
    def params(self):
        """layer name -> list of its parameter Blobs (host views on the GPU), for layers that have any."""
        return OrderedDict((name, host_views(layer.blobs)) for name, layer
                           in zip(self._layer_names, self.layers) if layer.blobs)

    @property
    def layer_dict(self):
        return OrderedDict(zip(self._layer_names, self.layers))

    @property
    def layer_names(self):
        return list(self._layer_names)

    @property
    def blob_names(self):
        return list(self._blob_names)

    @property
    def inputs(self):
        return [self._blob_names[i] for i in self._input_ids]

    @property
    def outputs(self):
        return [self._blob_names[i] for i in self._output_ids]

    @property
    def _inputs(self):
        """The input blobs' ids (pycaffe's Net._inputs)."""
        return list(self._input_ids)

    @property
    def _outputs(self):
        return list(self._output_ids)

    def _bottom_ids(self, layer_id):
        """The blob ids of layer `layer_id`'s bottoms (pycaffe's Net._bottom_ids)."""
        return list(self.bottom_ids[layer_id])

    def _top_ids(self, layer_id):
        return list(self.top_ids[layer_id])

    @property
    def top_names(self):
        return OrderedDict((name, [self._blob_names[i] for i in ids])
                           for name, ids in zip(self._layer_names, self.top_ids))

    @property
    def bottom_names(self):
        return OrderedDict((name, [self._blob_names[i] for i in ids])
                           for name, ids in zip(self._layer_names, self.bottom_ids))

    @property
    def blob_loss_weights(self):
        return OrderedDict(zip(self._blob_names, self._blob_loss_weights))

    @property
    def blob_need_backward(self):
        return OrderedDict(zip(self._blob_names, self._blob_need_backward))

    @property
    def param_owners(self):
        return list(self._param_owners)

    def layer_index(self, name):
        if name not in self._layer_index:
            raise KeyError('Unknown layer name %s' % name)
        return self._layer_index[name]

    # -- running ---------------------------------------------------------------
    def forward_from_to(self, start=0, end=None):
        """Run layers start..end inclusive; return the summed loss (Caffe's ForwardFromTo)."""
        end = len(self.layers) - 1 if end is None else end
        before, after = self._callbacks['before_forward'], self._callbacks['after_forward']
        loss = 0.0
        for i in range(start, end + 1):
            for run in before:
                run(i)
            loss += self.layers[i].run_forward(self.bottom_vecs[i], self.top_vecs[i])
            if self.debug_info:
                self._forward_debug_info(i)
            for run in after:
                run(i)
        return loss

    def backward_from_to(self, start=None, end=0):
        """Backward through layers start..end (start >= end), as Caffe's BackwardFromTo."""
        start = len(self.layers) - 1 if start is None else start
        before, after = self._callbacks['before_backward'], self._callbacks['after_backward']
        for i in range(start, end - 1, -1):
            for run in before:
                run(i)
            if self.layer_need_backward[i]:
                self.layers[i].run_backward(self.top_vecs[i], self.bottom_need_backward[i],
                                            self.bottom_vecs[i])
                if self.debug_info:
                    self._backward_debug_info(i)
            for run in after:
                run(i)

    _forward = forward_from_to       # pycaffe's private names, which some scripts call
    _backward = backward_from_to

    def before_forward(self, run):
        """Call run(layer index) before each layer's forward (pycaffe's Net.before_forward)."""
        self._callbacks['before_forward'].append(run)

    def after_forward(self, run):
        """Call run(layer index) after each layer's forward."""
        self._callbacks['after_forward'].append(run)

    def before_backward(self, run):
        """Call run(layer index) before each layer's backward."""
        self._callbacks['before_backward'].append(run)

    def after_backward(self, run):
        """Call run(layer index) after each layer's backward."""
        self._callbacks['after_backward'].append(run)

    def forward_backward(self):
        """One forward and backward pass over the whole net; returns the loss."""
        loss = self.forward_from_to()
        self.backward_from_to()
        return loss

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """pycaffe's forward: set the inputs given as kwargs, run layers start..end (names,
        inclusive) and return {blob name: data} of the net's outputs, or of the `end` layer's
        tops when `end` is given, plus the blobs named in `blobs`."""
        start_ind = 0 if start is None else self.layer_index(start)
        if end is None:
            end_ind, outputs = len(self.layers) - 1, list(self.outputs)
        else:
            end_ind, outputs = self.layer_index(end), self.top_names[end]
        self._set_arrays('data', kwargs, self.inputs, 'inputs')
        self.forward_from_to(start_ind, end_ind)
        return self._arrays('data', outputs + list(blobs or []))

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """pycaffe's backward: set the output diffs given as kwargs, run layers start..end
        backward (names, inclusive; start defaults to the last layer) and return {blob name:
        diff} of the net's inputs, or of the `end` layer's bottoms when `end` is given, plus the
        blobs named in `diffs`."""
        start_ind = len(self.layers) - 1 if start is None else self.layer_index(start)
        if end is None:
            end_ind, outputs = 0, list(self.inputs)
        else:
            end_ind, outputs = self.layer_index(end), self.bottom_names[end]
        self._set_arrays('diff', kwargs, self.outputs, 'outputs')
        self.backward_from_to(start_ind, end_ind)
        return self._arrays('diff', outputs + list(diffs or []))

    def _set_arrays(self, side, arrays, allowed, what):
        """Write {blob name: array} into the blobs' `side` (data or diff), broadcasting as
        pycaffe's `blob.data[...] = array`; the arrays must hold the blob's batch size."""
        unknown = sorted(set(arrays) - set(allowed))
        if unknown:
            raise KeyError('%s: not among the %s of net "%s" (%s)'
                           % (', '.join(unknown), what, self.name, ', '.join(allowed)))
        for name, value in arrays.items():
            blob = self.blobs[name]
            value = np.asarray(value)
            if value.ndim == 0 or value.shape[0] != blob.shape[0]:
                raise ValueError('%s %s has shape %s, not batch sized (the blob is %s)'
                                 % (name, side, value.shape, blob.shape))
            try:
                getattr(blob, side)[...] = value
            except ValueError:
                raise ValueError('%s %s of shape %s does not fit the blob %s'
                                 % (name, side, value.shape, blob.shape)) from None

    def _arrays(self, side, names):
        return {name: getattr(self.blobs[name], side) for name in dict.fromkeys(names)}

    def forward_all(self, blobs=None, **kwargs):
        """pycaffe's forward_all: forward over inputs of any length in batches of the input blob's
        size (the last batch padded with zeros); returns {output name: array of all items}."""
        names = list(dict.fromkeys(self.outputs + list(blobs or [])))
        outs = {name: [] for name in names}
        for batch in list(self._batches(kwargs)) or [{}]:
            for name, value in self.forward(blobs=blobs, **batch).items():
                outs[name].append(np.array(value))
        return self._trimmed(outs, kwargs)

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """pycaffe's forward_backward_all: kwargs hold inputs (for forward) and output diffs (for
        backward), batched as in forward_all; returns ({blob: data}, {blob: diff})."""
        inputs = {name: value for name, value in kwargs.items() if name in self.inputs}
        out_diffs = {name: value for name, value in kwargs.items() if name in self.outputs}
        unknown = set(kwargs) - set(inputs) - set(out_diffs)
        if unknown:
            raise KeyError('%s: neither inputs nor outputs of net "%s"'
                           % (', '.join(sorted(unknown)), self.name))
        outs = {name: [] for name in dict.fromkeys(self.outputs + list(blobs or []))}
        grads = {name: [] for name in dict.fromkeys(self.inputs + list(diffs or []))}
        forward_batches, backward_batches = list(self._batches(inputs)), list(self._batches(out_diffs))
        for i in range(max(1, len(forward_batches), len(backward_batches))):
            fb = forward_batches[i] if i < len(forward_batches) else {}
            bb = backward_batches[i] if i < len(backward_batches) else {}
            for name, value in self.forward(blobs=blobs, **fb).items():
                outs[name].append(np.array(value))
            for name, value in self.backward(diffs=diffs, **bb).items():
                grads[name].append(np.array(value))
        return self._trimmed(outs, kwargs), self._trimmed(grads, kwargs)

    def _batches(self, arrays):
        """{name: array} split into {name: batch} of the first blob's batch size, zero-padded."""
        if not arrays:
            return
        first = next(iter(arrays))
        size = self.blobs[first].shape[0]
        total = len(arrays[first])
        if total == 0:
            raise ValueError('no items to run in %s' % first)
        for start in range(0, total, size):
            batch = {}
            for name, value in arrays.items():
                part = np.asarray(value[start:start + size])
                if len(part) < size:
                    padding = np.zeros((size - len(part),) + part.shape[1:], part.dtype)
                    part = np.concatenate([part, padding])
                batch[name] = part
            yield batch

    @staticmethod
    def _trimmed(collected, kwargs):
        """The collected batches joined, less the padding of the last one."""
        total = len(next(iter(kwargs.values()))) if kwargs else None
        return {name: (np.concatenate(parts) if parts else np.empty((0,)))[:total]
                for name, parts in collected.items()}

    def set_input_arrays(self, data, labels):
        """Feed a MemoryData first layer (pycaffe's Net.set_input_arrays)."""
        first = self.layers[0] if self.layers else None
        if first is None or first.type != 'MemoryData':
            raise NetError('set_input_arrays needs a MemoryData first layer (net "%s")' % self.name)
        first.set_input_arrays(data, labels)

    _set_input_arrays = set_input_arrays

    def close(self):
        """Stop the background work of layers that have any (data prefetching)."""
        for layer in self.layers:
            if hasattr(layer, 'close'):
                layer.close()

    def reshape(self):
        for i, layer in enumerate(self.layers):
            layer.reshape(self.bottom_vecs[i], self.top_vecs[i])

    def clear_param_diffs(self):
        """Zero every learnable parameter's diff (allocated the first time, as in Caffe)."""
        for i, blob in enumerate(self.learnable_params):
            try:
                blob.diff[...] = 0
            except (memory.OutOfMemoryError, MemoryError) as exc:
                owned = [ids for ids, owner in zip(self._param_layer_indices, self._param_owners) if owner < 0]
                raise self.layers[owned[i][0]].memory_error(exc, ()) from None

    def update(self):
        """data -= diff for every learnable parameter (Caffe's Net::Update)."""
        for blob in self.learnable_params:
            blob.data[...] -= blob.diff

    # -- debug_info ------------------------------------------------------------
    def _forward_debug_info(self, layer_id):
        for j, blob in enumerate(self.top_vecs[layer_id]):
            log.info('    [Forward] Layer %s, top blob %s data: %s', self._layer_names[layer_id],
                     self._blob_names[self.top_ids[layer_id][j]],
                     log.fmt(float(abs(blob.data).mean()) if blob.count else 0.0))
        for k, blob in enumerate(self.layers[layer_id].blobs):
            net_param_id = self.param_id_vecs[layer_id][k]
            log.info('    [Forward] Layer %s, param blob %s data: %s', self._layer_names[layer_id],
                     self.param_display_names[net_param_id], log.fmt(float(abs(blob.data).mean())))

    def _backward_debug_info(self, layer_id):
        for j, blob in enumerate(self.bottom_vecs[layer_id]):
            if self.bottom_need_backward[layer_id][j]:
                log.info('    [Backward] Layer %s, bottom blob %s diff: %s', self._layer_names[layer_id],
                         self._blob_names[self.bottom_ids[layer_id][j]],
                         log.fmt(float(abs(blob.diff).mean()) if blob.count else 0.0))
        for k, blob in enumerate(self.layers[layer_id].blobs):
            if self.layers[layer_id].param_needs_backward(k):
                log.info('    [Backward] Layer %s, param blob %d diff: %s', self._layer_names[layer_id],
                         k, log.fmt(float(abs(blob.diff).mean())))

    # -- weights ---------------------------------------------------------------
    def copy_from(self, path):
        """Copy trained weights by layer name from a caffemodel (V1/V2 binary) or .h5 file."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise formats.MissingFileError(path, 'the weights')
        if h5py_is_hdf5(path):
            try:
                self._copy_from_hdf5(path)
            except (NetError, formats.FormatError):
                raise
            except Exception as exc:  # h5py on a damaged file: OSError, KeyError, RuntimeError, ...
                raise NetError('%s: cannot read the weights (%s: %s)'
                               % (path, type(exc).__name__, ' '.join(str(exc).split()))) from None
        else:
            self.copy_from_proto(formats.read_net(path, binary=True), path)

    def copy_from_proto(self, param, source=None):
        """Caffe's CopyTrainedLayersFrom(NetParameter); `source` names the file in errors."""
        origin = source
        for source in param.layer:
            if source.name not in self._layer_index:
                log.info('Ignoring source layer %s', source.name)
                continue
            target = self.layers[self._layer_index[source.name]].blobs
            if len(target) != len(source.blobs):
                raise NetError('%sIncompatible number of blobs for layer %s (source has %d, net has %d)'
                               % (origin + ': ' if origin else '', source.name, len(source.blobs), len(target)))
            for j, (blob, proto) in enumerate(zip(target, source.blobs)):
                try:
                    array = formats.blob_to_array(proto)
                except formats.FormatError as exc:
                    raise NetError("%slayer '%s', param blob %d: %s"
                                   % (origin + ': ' if origin else '', source.name, j, exc)) from None
                if not _shape_equals(proto, blob.shape):
                    raise NetError("Cannot copy param %d weights from layer '%s'; shape mismatch.  "
                                   'Source param shape is %s (%d); target param shape is %s. '
                                   'To learn this layer\'s parameters from scratch rather than '
                                   'copying from a saved net, rename the layer.'
                                   % (j, source.name, ' '.join(map(str, array.shape)), array.size,
                                      blob.shape_string()))
                blob.data[...] = blob.xp.asarray(array.reshape(blob.shape))

    def load_hdf5(self, path):
        """pycaffe's load_hdf5: copy weights from an HDF5 caffemodel (copy_from reads both kinds)."""
        self.copy_from(path)

    def _copy_from_hdf5(self, path):
        import h5py
        with h5py.File(path, 'r') as f:
            data = f['data']
            for name in data:
                if name not in self._layer_index:
                    log.info('Ignoring source layer %s', name)
                    continue
                layer_id = self._layer_index[name]
                target = self.layers[layer_id].blobs
                if len(data[name]) > len(target):
                    raise NetError('Incompatible number of blobs for layer %s' % name)
                for j, blob in enumerate(target):
                    if str(j) not in data[name]:
                        if self._param_owners[self.param_id_vecs[layer_id][j]] != -1:
                            continue
                        raise NetError('Incompatible number of blobs for layer %s' % name)
                    array = np.asarray(data[name][str(j)])
                    if array.size != blob.count:
                        raise NetError("Cannot copy param %d weights from layer '%s'; shape mismatch.  "
                                       'Source param shape is %s; target param shape is %s'
                                       % (j, name, array.shape, blob.shape_string()))
                    blob.data[...] = blob.xp.asarray(array.reshape(blob.shape))

    def to_proto(self, write_diff=False):
        """The net with its weights as a NetParameter (Caffe's Net::ToProto)."""
        param = caffe_pb2.NetParameter()
        param.name = self.name
        for layer in self.layers:
            lp = param.layer.add()
            lp.CopyFrom(layer.layer_param)
            del lp.blobs[:]
            for blob in layer.blobs:
                formats.array_to_blob(blob.read_data(), blob.read_diff() if write_diff else None,
                                      blob=lp.blobs.add())
        return param

    def save(self, path, write_diff=False):
        """Write the weights as a binary caffemodel (atomically)."""
        formats.write_net(path, self.to_proto(write_diff), binary=True)

    def save_hdf5(self, path, write_diff=False):
        """Write the weights as Caffe's HDF5 caffemodel (data/<layer>/<i>, atomically)."""
        formats.write_hdf5(path, lambda f: self.fill_hdf5(f, write_diff))

    def fill_hdf5(self, f, write_diff=False):
        """Put the weights (and diffs) into the open h5py.File `f` as Caffe's HDF5 caffemodel."""
        data = f.create_group('data')
        diff = f.create_group('diff') if write_diff else None
        for layer_id, layer in enumerate(self.layers):
            group = data.create_group(layer.name)
            dgroup = diff.create_group(layer.name) if write_diff else None
            for k, blob in enumerate(layer.blobs):
                if self._param_owners[self.param_id_vecs[layer_id][k]] == -1:
                    group.create_dataset(str(k), data=blob.read_data())
                if write_diff:
                    dgroup.create_dataset(str(k), data=blob.read_diff())

    def share_with(self, other):
        """Share `other`'s trained layers' weights by layer name (Caffe's ShareTrainedLayersWith)."""
        for source in other.layers:
            if source.name not in self._layer_index:
                log.debug('Ignoring source layer %s', source.name)
                continue
            target = self.layers[self._layer_index[source.name]].blobs
            if len(target) != len(source.blobs):
                raise NetError('Incompatible number of blobs for layer %s' % source.name)
            for j, (mine, theirs) in enumerate(zip(target, source.blobs)):
                if mine.shape != theirs.shape:
                    raise NetError("Cannot share param %d weights from layer '%s'; shape mismatch.  "
                                   'Source param shape is %s; target param shape is %s'
                                   % (j, source.name, theirs.shape_string(), mine.shape_string()))
                mine.share_data(theirs)


def _shape_equals(proto, shape):
    """Caffe's Blob::ShapeEquals: legacy 4-d protos compare against the blob's legacy shape."""
    legacy = any(proto.HasField(f) for f in ('num', 'channels', 'height', 'width'))
    if legacy:
        return len(shape) <= 4 and (1,) * (4 - len(shape)) + tuple(shape) == formats.blob_shape(proto)
    return tuple(shape) == formats.blob_shape(proto)


def h5py_is_hdf5(path):
    import h5py
    return h5py.is_hdf5(path)


def _is_path(value):
    return isinstance(value, (str, bytes, os.PathLike))
