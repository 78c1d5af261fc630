"""Upgrade legacy Caffe definitions to the current format, as Caffe's
src/caffe/util/upgrade_proto.cpp does.

Stages (applied by upgrade_net in Caffe's order):
  V0 -> V1   `layers { layer { type: "conv" ... } }`: padding layers folded
             into the following conv/pool, flat V0 settings moved into the
             per-type parameter messages
  data       scale/mean_file/crop_size/mirror of V1 data layers moved into
             transform_param
  V1 -> V2   `layers { type: CONVOLUTION }` -> `layer { type: "Convolution" }`,
             blobs_lr/weight_decay/param names -> ParamSpec
  input      net-level input/input_shape/input_dim -> an "Input" layer
  BatchNorm  old three-ParamSpec BatchNorm layers get lr_mult/decay_mult 0
and for solvers: solver_type enum -> type string.

Every stage mutates the message in place. Problems Caffe only logs are
logged to the 'caffe_py' logger (and make upgrade_net return False); what
Caffe aborts on raises UpgradeError naming the file.
"""
import logging
import os

from caffe_py.proto import caffe_pb2

from .errors import UpgradeError

log = logging.getLogger("caffe_py")

V1 = caffe_pb2.V1LayerParameter

# V0 type string -> V1 enum value name
V0_LAYER_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT",
    "conv": "CONVOLUTION", "data": "DATA", "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS", "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT", "im2col": "IM2COL",
    "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING",
    "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS", "split": "SPLIT", "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

# V1 enum value name -> V2 type string
V1_LAYER_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax",
    "BNLL": "BNLL", "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution", "DATA": "Data",
    "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN",
    "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split",
    "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}

# The flat V0 settings: (V0 field, name used in messages, {V0 type: (param
# message, field)}). A None type key means "any layer type"; a None field
# means the whole message is copied. Order = the order Caffe checks them.
_CONV, _IP, _POOL = "convolution_param", "inner_product_param", "pooling_param"
_DATA_LAYERS = {"data": "data_param", "hdf5_data": "hdf5_data_param",
                "images": "image_data_param", "window_data": "window_data_param"}
_V0_SETTINGS = [
    ("num_output", "num_output", {"conv": (_CONV, "num_output"), "innerproduct": (_IP, "num_output")}),
    ("biasterm", "biasterm", {"conv": (_CONV, "bias_term"), "innerproduct": (_IP, "bias_term")}),
    ("weight_filler", "weight_filler", {"conv": (_CONV, "weight_filler"), "innerproduct": (_IP, "weight_filler")}),
    ("bias_filler", "bias_filler", {"conv": (_CONV, "bias_filler"), "innerproduct": (_IP, "bias_filler")}),
    ("pad", "pad", {"conv": (_CONV, "pad"), "pool": (_POOL, "pad")}),
    ("kernelsize", "kernelsize", {"conv": (_CONV, "kernel_size"), "pool": (_POOL, "kernel_size")}),
    ("group", "group", {"conv": (_CONV, "group")}),
    ("stride", "stride", {"conv": (_CONV, "stride"), "pool": (_POOL, "stride")}),
    ("pool", "pool", {"pool": (_POOL, "pool")}),
    ("dropout_ratio", "dropout_ratio", {"dropout": ("dropout_param", "dropout_ratio")}),
    ("local_size", "local_size", {"lrn": ("lrn_param", "local_size")}),
    ("alpha", "alpha", {"lrn": ("lrn_param", "alpha")}),
    ("beta", "beta", {"lrn": ("lrn_param", "beta")}),
    ("k", "k", {"lrn": ("lrn_param", "k")}),
    ("source", "source", dict({t: (p, "source") for t, p in _DATA_LAYERS.items()},
                              infogain_loss=("infogain_loss_param", "source"))),
    ("scale", "scale", {None: ("transform_param", "scale")}),
    ("meanfile", "meanfile", {None: ("transform_param", "mean_file")}),
    ("batchsize", "batchsize", {t: (p, "batch_size") for t, p in _DATA_LAYERS.items()}),
    ("cropsize", "cropsize", {None: ("transform_param", "crop_size")}),
    ("mirror", "mirror", {None: ("transform_param", "mirror")}),
    ("rand_skip", "rand_skip", {"data": ("data_param", "rand_skip"),
                                "images": ("image_data_param", "rand_skip")}),
    ("shuffle_images", "shuffle", {"images": ("image_data_param", "shuffle")}),
    ("new_height", "new_height", {"images": ("image_data_param", "new_height")}),
    ("new_width", "new_width", {"images": ("image_data_param", "new_width")}),
    ("concat_dim", "concat_dim", {"concat": ("concat_param", "concat_dim")}),
    ("det_fg_threshold", "det_fg_threshold", {"window_data": ("window_data_param", "fg_threshold")}),
    ("det_bg_threshold", "det_bg_threshold", {"window_data": ("window_data_param", "bg_threshold")}),
    ("det_fg_fraction", "det_fg_fraction", {"window_data": ("window_data_param", "fg_fraction")}),
    ("det_context_pad", "det_context_pad", {"window_data": ("window_data_param", "context_pad")}),
    ("det_crop_mode", "det_crop_mode", {"window_data": ("window_data_param", "crop_mode")}),
    ("hdf5_output_param", "hdf5_output_param", {"hdf5_output": ("hdf5_output_param", None)}),
]

# V1 layer-specific messages copied unchanged into the V2 layer
_V1_COPIED_PARAMS = [
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
    "convolution_param", "data_param", "dropout_param", "dummy_data_param",
    "eltwise_param", "exp_param", "hdf5_data_param", "hdf5_output_param",
    "hinge_loss_param", "image_data_param", "infogain_loss_param",
    "inner_product_param", "lrn_param", "memory_data_param", "mvn_param",
    "pooling_param", "power_param", "relu_param", "sigmoid_param", "softmax_param",
    "slice_param", "tanh_param", "threshold_param", "window_data_param",
    "transform_param", "loss_param",
]

# V1 data layer types whose parameters carried the transformation fields
_TRANSFORM_HOSTS = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param",
                    V1.WINDOW_DATA: "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _is_repeated(fd):
    flag = getattr(fd, "is_repeated", None)  # protobuf >= 5.29; `label` went away in 7
    return flag if flag is not None else fd.label == fd.LABEL_REPEATED


def _copy_message(dst_parent, name, src):
    sub = getattr(dst_parent, name)
    sub.SetInParent()
    sub.CopyFrom(src)


# ----------------------------------------------------------------- checks

def net_needs_v0_to_v1_upgrade(net):
    return any(l.HasField("layer") for l in net.layers)


def net_needs_v1_to_v2_upgrade(net):
    return len(net.layers) > 0


def net_needs_data_upgrade(net):
    for l in net.layers:
        host = _TRANSFORM_HOSTS.get(l.type)
        if host is not None:
            param = getattr(l, host)
            if any(param.HasField(f) for f in _TRANSFORM_FIELDS):
                return True
    return False


def net_needs_input_upgrade(net):
    return len(net.input) > 0


def net_needs_batchnorm_upgrade(net):
    return any(l.type == "BatchNorm" and len(l.param) == 3 for l in net.layer)


def net_needs_upgrade(net):
    return (net_needs_v0_to_v1_upgrade(net) or net_needs_v1_to_v2_upgrade(net)
            or net_needs_data_upgrade(net) or net_needs_input_upgrade(net)
            or net_needs_batchnorm_upgrade(net))


def solver_needs_type_upgrade(solver):
    return solver.HasField("solver_type")


# ----------------------------------------------------------------- V0 -> V1

def upgrade_v0_padding_layers(net, filename="<net>"):
    """A copy of the V0 `net` with each "padding" layer removed and its pad
    set on the conv/pool layer that reads its output."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    last_producer = {name: -1 for name in net.input}
    for i, conn in enumerate(net.layers):
        v0 = conn.layer
        if v0.type != "padding":
            out.layers.add().CopyFrom(conn)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_producer:
                raise UpgradeError("%s: V0 layer %r reads unknown blob %r (bottom %d)"
                                   % (filename, v0.name, blob, j), path=filename)
            src_index = last_producer[blob]
            if src_index < 0:
                continue
            src = net.layers[src_index]
            if src.layer.type != "padding":
                continue
            problem = None
            if v0.type not in ("conv", "pool"):
                problem = ("padding layer %r feeds layer %r of type %r; only conv and pool "
                           "layers can absorb padding" % (src.layer.name, v0.name, v0.type))
            elif len(conn.bottom) != 1:
                problem = "layer %r after a padding layer must have one bottom" % v0.name
            elif len(src.bottom) != 1 or len(src.top) != 1:
                problem = ("padding layer %r must have exactly one bottom and one top"
                           % src.layer.name)
            if problem:
                raise UpgradeError("%s: cannot upgrade V0 net: %s" % (filename, problem),
                                   path=filename)
            target = out.layers[len(out.layers) - 1]
            target.layer.pad = src.layer.pad
            target.bottom[j] = src.bottom[0]
        for blob in conn.top:
            last_producer[blob] = i
    return out


def upgrade_v0_layer(conn, out, filename="<net>"):
    """Fill V1 layer `out` from the V0 connection `conn`. Returns False when
    some V0 setting had no meaning for the layer's type (logged, dropped)."""
    ok = True
    out.Clear()
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    if not conn.HasField("layer"):
        return ok
    v0 = conn.layer
    if v0.HasField("name"):
        out.name = v0.name
    kind = v0.type
    if v0.HasField("type"):
        if kind not in V0_LAYER_TYPES:
            raise UpgradeError("%s: unknown V0 layer type %r (layer %r); known: %s"
                               % (filename, kind, v0.name, ", ".join(sorted(V0_LAYER_TYPES))),
                               path=filename)
        out.type = V1.LayerType.Value(V0_LAYER_TYPES[kind])
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, label, targets in _V0_SETTINGS:
        if not v0.HasField(field):
            continue
        target = targets.get(kind, targets.get(None))
        if target is None:
            log.error("Unknown parameter %s for layer type %s", label, kind)
            ok = False
            continue
        param_name, target_field = target
        param = getattr(out, param_name)
        value = getattr(v0, field)
        if target_field is None:
            _copy_message(out, param_name, value)
            continue
        fd = param.DESCRIPTOR.fields_by_name[target_field]
        if fd.message_type is not None:
            _copy_message(param, target_field, value)
        elif _is_repeated(fd):
            getattr(param, target_field).append(value)
        else:
            setattr(param, target_field, value)
    return ok


def upgrade_v0_net(net, filename="<net>"):
    """V0 -> V1 in place. Like Caffe, keeps only name, layers, input,
    input_dim and force_backward of the original net."""
    padded = upgrade_v0_padding_layers(net, filename)
    ok = True
    result = caffe_pb2.NetParameter()
    if padded.HasField("name"):
        result.name = padded.name
    for conn in padded.layers:
        ok &= upgrade_v0_layer(conn, result.layers.add(), filename)
    result.input.extend(padded.input)
    result.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        result.force_backward = padded.force_backward
    net.CopyFrom(result)
    return ok


# ----------------------------------------------------------------- data transformation

def upgrade_net_data_transformation(net):
    """Move V1 data layers' scale/mean_file/crop_size/mirror into transform_param."""
    for l in net.layers:
        host = _TRANSFORM_HOSTS.get(l.type)
        if host is None:
            continue
        param = getattr(l, host)
        # Caffe touches both messages, so both end up present
        param.SetInParent()
        l.transform_param.SetInParent()
        for f in _TRANSFORM_FIELDS:
            if param.HasField(f):
                setattr(l.transform_param, f, getattr(param, f))
                param.ClearField(f)


# ----------------------------------------------------------------- V1 -> V2

def upgrade_v1_layer(v1, out):
    """Fill LayerParameter `out` from V1LayerParameter `v1`; False when the
    V1 layer still held a V0 definition (ignored, as Caffe does)."""
    out.Clear()
    ok = True
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    out.include.extend(v1.include)
    out.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        out.type = V1_LAYER_TYPES[V1.LayerType.Name(v1.type)]
    out.blobs.extend(v1.blobs)

    def spec(i):
        while len(out.param) <= i:
            out.param.add()
        return out.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        spec(i).share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(
            V1.DimCheckMode.Name(mode))
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    out.loss_weight.extend(v1.loss_weight)
    for name in _V1_COPIED_PARAMS:
        if v1.HasField(name):
            _copy_message(out, name, getattr(v1, name))
    if v1.HasField("layer"):
        log.error("Input NetParameter has V0 layer -- ignoring.")
        ok = False
    return ok


def upgrade_v1_net(net, filename="<net>"):
    """V1 `layers` -> V2 `layer` in place."""
    if len(net.layer) > 0:
        raise UpgradeError(
            "%s: refusing to upgrade inconsistent NetParameter: it has both 'layer' "
            "(current format) and 'layers' (V1 format) fields; rewrite the 'layers' "
            "entries as 'layer { type: \"...\" }' to continue" % filename, path=filename)
    ok = True
    old_layers = list(net.layers)
    del net.layers[:]
    for i, v1 in enumerate(old_layers):
        if not upgrade_v1_layer(v1, net.layer.add()):
            log.error("Upgrade of input layer %d failed.", i)
            ok = False
    return ok


# ----------------------------------------------------------------- inputs and BatchNorm

def upgrade_net_input(net, filename="<net>"):
    """Net-level input/input_shape/input_dim -> an Input layer placed first.
    Inputs without any shape (old caffemodels) are simply dropped."""
    has_shape = len(net.input_shape) > 0
    has_dim = len(net.input_dim) > 0
    if has_shape or has_dim:
        n = len(net.input)
        if has_shape and len(net.input_shape) < n:
            raise UpgradeError("%s: %d inputs but only %d input_shape entries"
                               % (filename, n, len(net.input_shape)), path=filename)
        if not has_shape and len(net.input_dim) < 4 * n:
            raise UpgradeError("%s: %d inputs need %d input_dim values, found %d"
                               % (filename, n, 4 * n, len(net.input_dim)), path=filename)
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        layer.input_param.SetInParent()
        for i, name in enumerate(net.input):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        rest = list(net.layer)
        del net.layer[:]
        net.layer.append(layer)
        net.layer.extend(rest)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


def upgrade_net_batchnorm(net):
    """Old BatchNorm layers declared three ParamSpecs; Caffe zeroes their
    lr_mult and decay_mult (the statistics are not learned)."""
    for l in net.layer:
        if l.type == "BatchNorm" and len(l.param) == 3:
            for p in l.param:
                p.lr_mult = 0.0
                p.decay_mult = 0.0


# ----------------------------------------------------------------- drivers

def upgrade_net(net, filename="<net>"):
    """Apply every needed stage in place, in Caffe's order. Returns False
    when Caffe would report "problems ... continuing anyway"."""
    ok = True
    if net_needs_v0_to_v1_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated "
                 "V0LayerParameter: %s", filename)
        if upgrade_v0_net(net, filename):
            log.info("Successfully upgraded file specified using deprecated V0LayerParameter")
        else:
            ok = False
            log.error("Warning: had one or more problems upgrading V0NetParameter to "
                      "NetParameter (see above); continuing anyway.")
        log.warning("Note that future Caffe releases will not support V0NetParameter; "
                    "use upgrade_net_proto_text for prototxt and upgrade_net_proto_binary "
                    "for model weights to upgrade this and any other net protos to the "
                    "new format.")
    if net_needs_data_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated "
                 "transformation parameters: %s", filename)
        upgrade_net_data_transformation(net)
        log.info("Successfully upgraded file specified using deprecated data "
                 "transformation parameters.")
        log.warning("Note that future Caffe releases will only support transform_param "
                    "messages for transformation fields.")
    if net_needs_v1_to_v2_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated "
                 "V1LayerParameter: %s", filename)
        if upgrade_v1_net(net, filename):
            log.info("Successfully upgraded file specified using deprecated V1LayerParameter")
        else:
            ok = False
            log.error("Warning: had one or more problems upgrading V1LayerParameter "
                      "(see above); continuing anyway.")
    if net_needs_input_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated input "
                 "fields: %s", filename)
        upgrade_net_input(net, filename)
        log.info("Successfully upgraded file specified using deprecated input fields.")
        log.warning("Note that future Caffe releases will only support input layers "
                    "and not input fields.")
    if net_needs_batchnorm_upgrade(net):
        log.info("Attempting to upgrade batch norm layers using deprecated params: %s",
                 filename)
        upgrade_net_batchnorm(net)
        log.info("Successfully upgraded batch norm layers using deprecated params.")
    return ok


def upgrade_solver_type(solver, filename="<solver>"):
    """solver_type enum -> type string, in place."""
    if solver.HasField("solver_type") and solver.HasField("type"):
        raise UpgradeError(
            "%s: failed to upgrade solver: the old solver_type field (enum) and the new "
            "type field (string) cannot both be specified" % filename, path=filename)
    if not solver.HasField("solver_type"):
        log.error("Warning: solver type already up to date.")
        return False
    name = caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)
    solver.type = SOLVER_TYPES[name]
    solver.ClearField("solver_type")
    return True


def upgrade_solver(solver, filename="<solver>"):
    """Apply the solver upgrades Caffe applies (the solver_type enum)."""
    ok = True
    if solver_needs_type_upgrade(solver):
        log.info("Attempting to upgrade input file specified using deprecated "
                 "'solver_type' field (enum)': %s", filename)
        if upgrade_solver_type(solver, filename):
            log.info("Successfully upgraded file specified using deprecated 'solver_type' "
                     "field (enum) to 'type' field (string).")
            log.warning("Note that future Caffe releases will only support 'type' field "
                        "(string) for a solver's type.")
        else:
            ok = False
            log.error("Warning: had one or more problems upgrading SolverType (see above).")
    return ok


def upgrade_snapshot_prefix(solver, filename):
    """Caffe's default for snapshot_prefix: the solver file's path without its
    extension; a prefix naming an existing folder gets the solver file's stem
    appended."""
    if not solver.HasField("snapshot_prefix"):
        solver.snapshot_prefix = os.path.splitext(filename)[0]
        log.info("snapshot_prefix was not specified and is set to %s", solver.snapshot_prefix)
    elif os.path.isdir(solver.snapshot_prefix):
        stem = os.path.splitext(os.path.basename(filename))[0]
        solver.snapshot_prefix = os.path.join(solver.snapshot_prefix, stem)
        log.info("snapshot_prefix was a directory and is replaced to %s",
                 solver.snapshot_prefix)
