"""Reference cases run in GPU mode (on CuPy or on tests/fakecupy.py) through pycaffe's surface:
inputs and parameters are set and read through host views (Net.blobs, Net.params)."""
from caffe_py import Net
from harness import _close, load_case


def run_layer_case(path, rtol):
    """harness.run_reference_case for a net on the device; returns the net."""
    case, meta, param, phase = load_case(path)
    net = Net(param, phase)
    for name in meta['inputs']:
        value = case['in/' + name]
        net.blobs[name].reshape(value.shape)
        net.blobs[name].data[...] = value
    params = net.params
    for key in case.files:
        if key.startswith('param/'):
            _, layer, index = key.split('/')
            blob = params[layer][int(index)]
            if blob.shape != case[key].shape:
                blob.reshape(case[key].shape)
            blob.data[...] = case[key]
    net.forward_from_to()
    for key in case.files:
        if key.startswith('out/'):
            _close(net.blobs[key[4:]].data, case[key], 'forward ' + key, rtol)
        elif key.startswith('param_after/'):
            _, layer, index = key.split('/')
            _close(net.params[layer][int(index)].data, case[key], key, rtol)
    if not meta.get('backward', True):
        return net
    net.clear_param_diffs()
    for key in case.files:
        if key.startswith('topdiff/'):
            net.blobs[key[8:]].diff[...] = case[key]
    net.backward_from_to()
    for key in case.files:
        if key.startswith('grad/'):
            _close(net.blobs[key[5:]].diff, case[key], 'backward ' + key, rtol)
        elif key.startswith('paramgrad/'):
            _, layer, index = key.split('/')
            _close(net.params[layer][int(index)].diff, case[key], key, rtol)
    return net
