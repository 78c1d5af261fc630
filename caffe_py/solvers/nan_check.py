"""Stop training at the first NaN or inf (`caffe-py train -nan_check`, `solver.nan_check = True`).

Caffe trains on through non-finite values, and so does caffe-py by default: the check is opt-in and
costs nothing when off (the solver then calls the net's own forward_backward). When on, the net runs
one layer at a time and each layer's output is checked: the top data after its forward, the bottom
and parameter diffs after its backward, and the parameters as training starts and after each update.
The first non-finite value stops training with one line naming the iteration, the layer and the blob.
"""


class NonFiniteError(FloatingPointError):
    """A NaN or inf found by the check, naming the iteration, the layer and the blob."""


def _check(blob, kind, iteration, layer, stage, name):
    """Raise NonFiniteError if `blob`'s data or diff (`kind`) holds a NaN or inf."""
    finite = blob.xp.isfinite(getattr(blob, kind))
    if bool(finite.all()):
        return
    raise NonFiniteError('NaN or inf at iteration %d: layer %s (%s) %s %s %s (%d of %d values; -nan_check)'
                         % (iteration, layer.name, layer.type, stage, name, kind,
                            finite.size - int(finite.sum()), finite.size))


def forward_backward(net, iteration):
    """net.forward_backward() checking every layer's output; returns the loss."""
    names = net.blob_names
    loss = 0.0
    for i, layer in enumerate(net.layers):
        loss += net.forward_from_to(i, i)
        for j, blob in enumerate(net.top_vecs[i]):
            _check(blob, 'data', iteration, layer, 'forward wrote', 'top blob ' + names[net.top_ids[i][j]])
    for i in range(len(net.layers) - 1, -1, -1):
        if not net.layer_need_backward[i]:
            continue
        layer = net.layers[i]
        net.backward_from_to(i, i)
        for j, blob in enumerate(net.bottom_vecs[i]):
            if net.bottom_need_backward[i][j]:
                _check(blob, 'diff', iteration, layer, 'backward wrote',
                       'bottom blob ' + names[net.bottom_ids[i][j]])
        for k, blob in enumerate(layer.blobs):
            if layer.param_needs_backward(k):
                _check(blob, 'diff', iteration, layer, 'backward wrote', 'param blob %d' % k)
    return loss


def check_params(net, iteration, stage='update wrote'):
    """The parameters (net.params[layer][k]): after the update of `iteration`, or as training starts."""
    for layer in net.layers:
        for k, blob in enumerate(layer.blobs):
            _check(blob, 'data', iteration, layer, stage, 'param blob %d' % k)
