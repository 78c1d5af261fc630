"""Test helpers: run a reference layer case from ../shared, a float64 numeric gradient check, nets of
one layer over Input layers, the captured log, caffe.io's image backend for a block, and subprocess
jobs that leave nothing behind."""
import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import time
import uuid

import numpy as np
from google.protobuf import text_format

from caffe_py import TEST, TRAIN, Net, log
from caffe_py import io as caffe_io
from caffe_py.proto import caffe_pb2


def load_case(path):
    """(npz, meta dict, NetParameter, phase) of a reference layer case."""
    case = np.load(path)
    meta = json.loads(str(case['meta']))
    param = text_format.Parse(str(case['prototxt']), caffe_pb2.NetParameter())
    phase = TRAIN if str(case['phase']) == 'TRAIN' else TEST
    return case, meta, param, phase


def _close(actual, expected, what, rtol):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, '%s: shape %s, Caffe %s' % (what, actual.shape, expected.shape)
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def run_reference_case(path):
    """Build the case's net, set inputs and params, check forward and backward against Caffe
    (rtol 2e-5; 1e-4 for the recurrent cases, whose many steps add up rounding).

    Works in CPU and GPU mode: it goes through pycaffe's host surface (net.blobs, net.params).
    """
    rtol = 1e-4 if os.path.basename(path).startswith(('lstm', 'rnn')) else 2e-5
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
            _close(params[layer][int(index)].data, case[key], key, rtol)
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
            _close(params[layer][int(index)].diff, case[key], key, rtol)
    return net


def numeric_gradient_check(prototxt, inputs, phase=TEST, no_grad=(), eps=1e-6, rtol=1e-5,
                           params=None, seed=0):
    """Check every input's and parameter's gradient of a net against central differences, in float64.

    `prototxt` is net text whose Input layers provide `inputs` (name -> array); outputs
    that are not losses get a fixed random top diff, so the objective is
    sum(loss * weight) + sum(output * R). `no_grad` names inputs without a
    gradient (labels, indices) and parameters ('layer/index') not to check. `params` (layer -> list of arrays) overrides fillers.
    """
    param = text_format.Parse(prototxt, caffe_pb2.NetParameter())
    param.force_backward = True
    net = Net(param, phase, dtype=np.float64)
    for name, value in inputs.items():
        net.blobs[name].reshape(np.shape(value))
        net.blobs[name].data[...] = value
    for layer, arrays in (params or {}).items():
        for blob, value in zip(net.layer_dict[layer].blobs, arrays):
            blob.data[...] = value
    rng = np.random.default_rng(seed)
    loss_outputs = {n for n, w in net.blob_loss_weights.items() if w}
    net.forward_from_to()
    top_diffs = {name: rng.standard_normal(net.blobs[name].shape)
                 for name in net.outputs if name not in loss_outputs}

    def objective():
        loss = net.forward_from_to()
        return loss + sum(float((net.blobs[n].data * d).sum()) for n, d in top_diffs.items())

    objective()
    net.clear_param_diffs()
    for name, diff in top_diffs.items():
        net.blobs[name].diff[...] = diff
    net.backward_from_to()
    targets = [('input ' + n, net.blobs[n].data, net.blobs[n].diff.copy())
               for n in inputs if n not in no_grad]
    for lname, layer in net.layer_dict.items():
        for i, blob in enumerate(layer.blobs):
            if layer.param_needs_backward(i) and '%s/%d' % (lname, i) not in no_grad:
                targets.append(('param %s/%d' % (lname, i), blob.data, blob.diff.copy()))
    for what, data, analytic in targets:
        flat = data.reshape(-1)
        numeric = np.empty(flat.size)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + eps
            plus = objective()
            flat[i] = keep - eps
            minus = objective()
            flat[i] = keep
            numeric[i] = (plus - minus) / (2 * eps)
        scale = max(1.0, float(np.abs(numeric).max()))
        np.testing.assert_allclose(analytic.reshape(-1), numeric, rtol=rtol, atol=rtol * scale,
                                   err_msg='gradient of ' + what)
    return net


def layer_net_text(shapes, layer, bottoms=None, tops=('y',)):
    """Net text: an Input layer per input (name -> shape), then layer "L" whose body after its
    bottoms (the inputs, or `bottoms`) and `tops` is `layer`."""
    text = ''
    for name, shape in shapes.items():
        dims = ' '.join('dim: %d' % d for d in shape)
        text += 'layer { name: "in_%s" type: "Input" top: "%s" input_param { shape { %s } } }\n' % (
            name, name, dims)
    bottoms = list(shapes) if bottoms is None else bottoms
    links = ' '.join('bottom: "%s"' % b for b in bottoms) + ' ' + ' '.join('top: "%s"' % t for t in tops)
    return text + 'layer { name: "L" %s %s }' % (links, layer)


def _shapes(inputs):
    return {name: np.shape(value) for name, value in inputs.items()}


def layer_net(inputs, layer, *, phase=TEST, dtype=np.float64, params=None, **links):
    """The force_backward net of layer_net_text over `inputs` (name -> array), inputs set, layer L's
    blobs set to `params` (a list) where given; `links` are layer_net_text's bottoms and tops."""
    param = text_format.Parse(layer_net_text(_shapes(inputs), layer, **links), caffe_pb2.NetParameter())
    param.force_backward = True
    net = Net(param, phase, dtype=dtype)
    for name, value in inputs.items():
        net.blobs[name].data[...] = value
    for blob, value in zip(net.layer_dict['L'].blobs, params or ()):
        blob.data[...] = value
    return net


def layer_forward(inputs, layer, **kwargs):
    """layer_net's net, forwarded."""
    net = layer_net(inputs, layer, **kwargs)
    net.forward()
    return net


def rand(*shape, seed=0):
    """Standard normal values of `shape` from a seeded generator."""
    return np.random.default_rng(seed).standard_normal(shape)


def layer_gradient_check(inputs, layer, *, phase=TEST, no_grad=(), params=None, seed=0, **links):
    """numeric_gradient_check of layer L over `inputs` (name -> array) in layer_net_text's net."""
    return numeric_gradient_check(layer_net_text(_shapes(inputs), layer, **links), inputs, phase=phase,
                                  no_grad=no_grad, params=params, seed=seed)


@contextlib.contextmanager
def captured_log_text():
    """A StringIO receiving caffe_py's INFO log in glog's format for the duration of the block."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log.GlogFormatter())
    log.logger.addHandler(handler)
    old_level = log.logger.level
    log.logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        log.logger.removeHandler(handler)
        log.logger.setLevel(old_level)


@contextlib.contextmanager
def io_image_backend(name):
    """caffe.io's image backend set to `name` for the block, the previous one restored after it."""
    before = caffe_io.image_backend()
    caffe_io.set_image_backend(name)
    try:
        yield name
    finally:
        caffe_io.set_image_backend(before)


@contextlib.contextmanager
def started_job(argv, cwd=None, env=None, stderr=subprocess.PIPE, **popen):
    """(process, mark): argv started in its own session, stdout discarded, with `env` (default
    os.environ) and the job mark CAFFE_PY_TEST_JOB=mark in its environment. On leaving the block
    whatever is left of the job (its session, any process carrying the mark) is killed."""
    mark = uuid.uuid4().hex
    env = dict(os.environ if env is None else env, CAFFE_PY_TEST_JOB=mark)
    proc = subprocess.Popen(argv, cwd=None if cwd is None else str(cwd), env=env, stdout=subprocess.DEVNULL,
                            stderr=stderr, text=True, start_new_session=True, **popen)
    try:
        yield proc, mark
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        _kill(job_processes(mark))


def job_processes(mark):
    """Pids of live processes whose environment carries the job mark."""
    needle = ('CAFFE_PY_TEST_JOB=%s' % mark).encode()
    return [int(name) for name in os.listdir('/proc') if name.isdigit() and needle in process_environ(int(name))]


def process_environ(pid):
    """The raw /proc environment of process `pid` (b'' when it is gone or not readable)."""
    try:
        with open('/proc/%d/environ' % pid, 'rb') as f:
            return f.read()
    except OSError:
        return b''


def outliving(mark, seconds):
    """Pids of the job's processes still alive after waiting up to `seconds` for them to end."""
    deadline = time.monotonic() + seconds
    while job_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    return job_processes(mark)


def _kill(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
