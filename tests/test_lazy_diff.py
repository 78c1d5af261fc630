"""Diffs allocated on first use, as Caffe's Blob does: a net only run forward takes no memory for
them; backward, a solver, share_diff and the device path allocate them when they need them."""
import numpy as np
import pytest

import caffe_py as caffe
import fakecupy
from caffe_py import memory
from caffe_py.blob import DEVICE, HOST, UNINITIALIZED, Blob
from caffe_py.layer import LayerError

PARAM_NET = '''
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "y" top: "y" }
layer { name: "flat" type: "Flatten" bottom: "y" top: "z" }
'''
BIG = 'dim: 1 dim: 1 dim: 4096 dim: 4096'          # 64 MiB a blob: memory.CHECK_FROM, checked


def _net(tmp_path, text, phase=caffe.TEST):
    path = tmp_path / 'net.prototxt'
    path.write_text(text)
    return caffe.Net(str(path), phase)


def _allocated(blob):
    return blob._diff_mem.head is not UNINITIALIZED


def test_forward_allocates_no_diff_and_backward_allocates_them(tmp_path):
    net = _net(tmp_path, 'force_backward: true\n' + PARAM_NET)
    net.blobs['x'].data[...] = np.arange(6).reshape(2, 3) - 2
    net.forward()
    blobs = list(net.blobs.values()) + [p for ps in net.params.values() for p in ps]
    assert not any(_allocated(b) for b in blobs)
    net.backward(z=np.ones((2, 4)))
    assert all(_allocated(b) for b in blobs)
    weight = net.params['ip'][0]
    mask = net.blobs['z'].data > 0
    np.testing.assert_allclose(net.blobs['x'].diff, mask @ weight.data, rtol=1e-6)
    np.testing.assert_allclose(weight.diff, mask.T @ net.blobs['x'].data, rtol=1e-6)


def test_solver_allocates_param_diffs_once_and_reuses_them(tmp_path):
    net = _net(tmp_path, PARAM_NET.replace('top: "z"', 'top: "z" loss_weight: 1'), caffe.TRAIN)
    weight = net.params['ip'][0]
    net.clear_param_diffs()
    diff = weight.diff
    assert not diff.any()
    for _ in range(2):
        net.clear_param_diffs()
        net.forward_backward()
        assert weight.diff is diff                       # the same buffer every iteration


def test_unallocated_diff_reads_zeros_and_is_shared_before_allocation():
    a, b = Blob((2, 3)), Blob((3, 2))
    b.share_diff(a)                                      # both unallocated: one memory
    assert not a.read_diff().any() and _allocated(a) and _allocated(b)
    c, d = Blob((2, 3)), Blob((6,))
    d.share_diff(c)
    d.diff[...] = np.arange(6)                           # allocated through the sharer
    np.testing.assert_array_equal(c.diff, np.arange(6).reshape(2, 3))
    c.reshape(1, 3)                                      # within capacity: kept
    np.testing.assert_array_equal(c.diff, [[0, 1, 2]])
    c.reshape(4, 3)                                      # larger: a new, unallocated memory
    assert not _allocated(c) and not c.diff.any() and c.diff.shape == (4, 3)


def test_device_diff_is_allocated_on_the_side_that_first_uses_it():
    with fakecupy.fake_gpu() as fake:
        blob = Blob((2, 3))
        assert blob.on_device and not _allocated(blob)
        blob.host_view().diff[...] = 1                   # first use on the host: host zeros
        assert blob._diff_mem.head is HOST and blob._diff_mem.device is None
        before = dict(fakecupy.TRANSFERS)
        assert float(blob.diff.sum()) == 6               # then copied to the device once
        assert fakecupy.TRANSFERS['h2d'] - before['h2d'] == 1 and blob._diff_mem.head is DEVICE
        other = Blob((2, 3))
        assert isinstance(other.diff, fake.ndarray) and other._diff_mem.host is None


def test_deploy_net_is_checked_for_its_data_and_backward_for_each_diff(tmp_path, monkeypatch):
    text = ('force_backward: true\nlayer { name: "in" type: "Input" top: "x" input_param { shape { %s } } }\n'
            'layer { name: "relu" type: "ReLU" bottom: "x" top: "y" }' % BIG)
    monkeypatch.setattr(memory, 'available_bytes', lambda: 200 << 20)     # data 128 MiB, with diffs 256
    with pytest.raises(caffe.net.NetError, match='for data and diffs'):
        _net(tmp_path, text, caffe.TRAIN)
    net = _net(tmp_path, text)
    net.forward()
    monkeypatch.setattr(memory, 'available_bytes', lambda: 32 << 20)
    with pytest.raises(LayerError) as info:
        net.backward()
    message = str(info.value)
    assert '\n' not in message and message.startswith('ReLU layer "relu": ')
    for part in ('blob "', 'the diff of a blob of shape 1 1 4096 4096', '%d bytes' % (64 << 20), 'available'):
        assert part in message


def test_first_param_diff_too_large_names_the_layer_and_param(tmp_path, monkeypatch):
    net = _net(tmp_path, PARAM_NET)
    monkeypatch.setattr(memory, 'CHECK_FROM', 0)
    monkeypatch.setattr(memory, 'available_bytes', lambda: 8)
    with pytest.raises(LayerError, match=r'^InnerProduct layer "ip": param blob 0: the diff of a blob '
                                         r'of shape 4 3 needs 48 bytes; this machine has 8 bytes available$'):
        net.clear_param_diffs()
