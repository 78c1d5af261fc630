"""The spectral convolution route (caffe_py.layers.spectral): the same numbers as the loops, the
GEMM route and Caffe (layer cases and whole training runs), float64 gradients, and which layers
take it."""
import json
import os

import numpy as np
import pytest

from caffe_py.layers import cores, im2col, spectral, vision
from harness import run_reference_case
from test_layers_reference import CASES
from test_solver_reference import assert_final_weights, assert_series, case_dir, copy_case, train, trajectory
from test_vision_layers import build, check, conv, deconv, naive_conv, naive_deconv, rand, seeded_pass


@pytest.fixture
def everywhere(monkeypatch):
    """Every 2-D unit-stride, undilated convolution takes the spectral route, however small."""
    monkeypatch.setattr(spectral, 'SMALLEST', 0)
    monkeypatch.setattr(spectral, 'ADVANTAGE', float('inf'))


def route(net):
    return type(net.layer_dict['L'].core)


SPECTRAL_CONVS = [
    ('num_output: 4 kernel_size: 3 pad: 1 group: 2', (2, 4, 5, 5)),
    ('num_output: 3 kernel_h: 2 kernel_w: 4 pad_h: 1 pad_w: 2', (2, 2, 4, 6)),
    ('num_output: 2 kernel_size: 3 bias_term: false', (3, 3, 5, 4)),
    ('num_output: 2 kernel_size: 5 pad: 2', (1, 2, 2, 3)),        # kernel larger than the image
    ('num_output: 3 kernel_size: 1', (2, 2, 3, 3)),
]


@pytest.mark.parametrize('params,shape', SPECTRAL_CONVS)
def test_convolution_gradient(everywhere, params, shape):
    assert route(build({'x': rand(*shape)}, conv(params))) is spectral.SpectralConv
    check({'x': rand(*shape)}, conv(params))


@pytest.mark.parametrize('params,shape', SPECTRAL_CONVS)
def test_convolution_matches_naive_loops(everywhere, params, shape):
    x = rand(*shape)
    net = build({'x': x}, conv(params))
    net.forward_from_to()
    blobs = net.layer_dict['L'].blobs
    window, group = net.layer_dict['L'].core.window, net.layer_dict['L'].group
    bias = blobs[1].data if len(blobs) > 1 else None
    expected = naive_conv(x, blobs[0].data, bias, (1, 1), window.pad, (1, 1), group)
    np.testing.assert_allclose(net.blobs['y'].data, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('params,shape', [
    ('num_output: 6 kernel_size: 3 pad: 1 group: 2', (2, 4, 4, 3)),
    ('num_output: 2 kernel_h: 3 kernel_w: 2', (1, 3, 3, 2)),
])
def test_deconvolution_gradient_and_naive_scatter(everywhere, params, shape):
    x = rand(*shape)
    net = build({'x': x}, deconv(params))
    assert route(net) is spectral.SpectralConv
    net.forward_from_to()
    layer = net.layer_dict['L']
    w, b = (blob.data for blob in layer.blobs)
    expected = naive_deconv(x, w, b, (1, 1), layer.core.window.pad, layer.group, net.blobs['y'].shape[2:])
    np.testing.assert_allclose(net.blobs['y'].data, expected, rtol=1e-12, atol=1e-12)
    check({'x': x}, deconv(params))


def test_two_bottoms_share_weights(everywhere):
    check({'a': rand(2, 2, 4, 4), 'b': rand(2, 2, 4, 4, seed=1)},
          conv('num_output: 2 kernel_size: 3 pad: 1'), tops=('ya', 'yb'))


@pytest.mark.parametrize('layer', [conv('num_output: 4 kernel_size: 3 pad: 1 group: 2'),
                                   deconv('num_output: 4 kernel_size: 3 pad: 1 group: 2')])
def test_float32_agrees_with_the_gemm_route(monkeypatch, layer):
    x = rand(4, 4, 9, 7)
    results = []
    for advantage in (0, float('inf')):
        monkeypatch.setattr(spectral, 'SMALLEST', 0)
        monkeypatch.setattr(spectral, 'ADVANTAGE', advantage)
        net = build({'x': x}, layer, dtype=np.float32)
        assert (route(net) is spectral.SpectralConv) == (advantage > 0)
        results.append(seeded_pass(net))
    for gemm, spectral_result in zip(*results):
        scale = np.abs(gemm).max()
        np.testing.assert_allclose(spectral_result, gemm, rtol=1e-5, atol=1e-6 * scale)


def test_work_split_over_threads_changes_nothing(everywhere, monkeypatch):
    """Transposes and bias in parallel parts (here 3, on tiny arrays): the same bits as serial."""
    x = rand(5, 4, 7, 6)
    results = []
    for count, smallest in ((1, cores.MIN_PARALLEL), (3, 0)):
        monkeypatch.setattr(cores, 'CORES', count)
        monkeypatch.setattr(cores, 'MIN_PARALLEL', smallest)
        net = build({'x': x}, conv('num_output: 6 kernel_size: 3 pad: 1 group: 2'), dtype=np.float32)
        assert route(net) is spectral.SpectralConv
        results.append(seeded_pass(net))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_stacked_products_split_over_the_stack_give_the_same_bits(monkeypatch):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
            for shape in ((30, 2, 10, 16), (30, 2, 16, 12)))
    whole, split = np.empty((30, 2, 10, 12), complex), np.empty((30, 2, 10, 12), complex)
    cores.matmul_stack(a, b, whole)
    monkeypatch.setattr(cores, 'CORES', 3)
    monkeypatch.setattr(cores, 'MIN_SPLIT_GEMM', 0)
    cores.matmul_stack(a, b, split)
    np.testing.assert_array_equal(split, whole)
    np.testing.assert_allclose(whole, a @ b, rtol=1e-12)


def test_weight_gradient_reads_the_bottom_at_backward_time(everywhere):
    """The input spectrum kept from forward serves backward only if the bottom is unchanged."""
    x, changed = rand(2, 2, 5, 5), rand(2, 2, 5, 5, seed=1)
    layer = conv('num_output: 2 kernel_size: 3 pad: 1')
    grads = []
    for forward_input in (x, changed):
        net = build({'x': forward_input}, layer, params=[rand(2, 2, 3, 3, seed=5), np.zeros(2)])
        net.forward_from_to()
        net.blobs['x'].data[...] = changed
        net.blobs['y'].diff[...] = rand(*net.blobs['y'].shape, seed=2)
        net.clear_param_diffs()
        net.backward_from_to()
        net.backward_from_to()          # a second backward accumulates, with the spectrum recomputed
        grads.append(net.layer_dict['L'].blobs[0].diff.copy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


def test_data_gradient_reads_the_weights_at_backward_time(everywhere):
    """The weight spectrum kept from forward serves backward only if the weights are unchanged."""
    x, w, changed = rand(2, 2, 5, 5), rand(3, 2, 3, 3, seed=1), rand(3, 2, 3, 3, seed=2)
    layer = conv('num_output: 3 kernel_size: 3 pad: 1')
    diffs = []
    for forward_weights in (w, changed):
        net = build({'x': x}, layer, params=[forward_weights, np.zeros(3)])
        net.forward_from_to()
        net.layer_dict['L'].blobs[0].data[...] = changed
        net.blobs['y'].diff[...] = rand(*net.blobs['y'].shape, seed=3)
        net.backward_from_to()
        diffs.append(net.blobs['x'].diff.copy())
    np.testing.assert_allclose(diffs[0], diffs[1], rtol=1e-12)


CONV_CASES = [c for c in CASES if 'conv' in c.lower()]


@pytest.mark.skipif(not CONV_CASES, reason='../shared/reference/layers is absent')
@pytest.mark.parametrize('path', CONV_CASES, ids=[c.rsplit('/', 1)[-1][:-4] for c in CONV_CASES])
def test_reference_case_through_the_spectral_route(everywhere, path):
    net = run_reference_case(path)
    if not any(isinstance(getattr(layer, 'core', None), spectral.SpectralConv) for layer in net.layers):
        pytest.skip('no 2-D unit-stride convolution here (test_layers_reference covers it)')


@pytest.mark.parametrize('case', ['sgd_step', 'adam', 'iter_size2'])
def test_training_through_the_spectral_route_follows_caffe(everywhere, case, tmp_path):
    """`caffe train` runs whose convolution (3x3, unit stride) goes through spectra: Caffe's
    displayed losses and final weights."""
    folder = copy_case(case, tmp_path, with_snapshots=False)
    ours = trajectory(train(folder, '-weights', 'init.caffemodel'))
    with open(os.path.join(case_dir(case), 'trajectory.json')) as f:
        caffe = json.load(f)
    assert_series(ours['train'], caffe['train'], 'displayed loss')
    assert_final_weights(folder, ours['events'], case)


def window(kernel, stride, pad, dilation, size):
    out = [im2col.conv_out_size(s, k, st, p, d) for s, k, st, p, d in zip(size, kernel, stride, pad, dilation)]
    return im2col.Window(kernel, stride, pad, dilation, size, out)


@pytest.mark.parametrize('geometry,channels,num,expected', [
    # CIFAR10-quick's conv2 and conv3, LeNet's conv2, CaffeNet's conv2: measured faster spectrally
    (((5, 5), (1, 1), (2, 2), (1, 1), (16, 16)), (1, 32, 32), 100, True),
    (((5, 5), (1, 1), (2, 2), (1, 1), (8, 8)), (1, 32, 64), 100, True),
    (((5, 5), (1, 1), (0, 0), (1, 1), (12, 12)), (1, 20, 50), 64, True),
    (((5, 5), (1, 1), (2, 2), (1, 1), (27, 27)), (2, 96, 256), 10, True),
    # measured slower: few input channels (CIFAR10-quick's conv1), 3x3 of CaffeNet's conv3
    (((5, 5), (1, 1), (2, 2), (1, 1), (32, 32)), (1, 3, 32), 100, False),
    (((3, 3), (1, 1), (1, 1), (1, 1), (13, 13)), (1, 256, 384), 10, False),
    # not expressible: stride, dilation, 3-D; too small to gain
    (((5, 5), (2, 2), (2, 2), (1, 1), (16, 16)), (1, 32, 32), 100, False),
    (((5, 5), (1, 1), (4, 4), (2, 2), (16, 16)), (1, 32, 32), 100, False),
    (((5, 5, 5), (1, 1, 1), (2, 2, 2), (1, 1, 1), (8, 8, 8)), (1, 32, 32), 10, False),
    (((5, 5), (1, 1), (2, 2), (1, 1), (16, 16)), (1, 32, 32), 1, False),
])
def test_route_choice(geometry, channels, num, expected):
    group, cin, cout = channels
    assert spectral.worthwhile(window(*geometry), group, cin, cout, num) == expected


def test_large_spectra_take_the_gemm_route(monkeypatch):
    geometry = window((5, 5), (1, 1), (2, 2), (1, 1), (16, 16))
    assert spectral.worthwhile(geometry, 1, 32, 32, 100)
    monkeypatch.setattr(spectral, 'SPECTRUM_BYTES', 100 * 32 * 20 * 11 * 8 - 1)
    assert not spectral.worthwhile(geometry, 1, 32, 32, 100)


def test_net_layers_take_the_chosen_route():
    x = rand(100, 32, 16, 16).astype(np.float32)
    assert route(build({'x': x}, conv('num_output: 32 kernel_size: 5 pad: 2'), dtype=np.float32)) \
        is spectral.SpectralConv
    assert route(build({'x': x}, conv('num_output: 32 kernel_size: 5 pad: 2 stride: 2'), dtype=np.float32)) \
        is vision._GemmConv


@pytest.mark.parametrize('n', [5, 6])
def test_dft_matrices_invert_each_other(n):
    signal = rand(n)
    half = signal @ spectral.real_dft(n, range(n))
    np.testing.assert_allclose(half[0::2] + 1j * half[1::2], np.fft.rfft(signal), atol=1e-12)
    np.testing.assert_allclose(half @ spectral.real_idft(n, range(n)), signal, atol=1e-12)
    conj = signal @ spectral.real_dft(n, range(n), True)
    np.testing.assert_allclose(conj @ spectral.real_idft(n, range(n), True), signal, atol=1e-12)
    full = spectral.complex_dft(n, range(n)) @ signal
    np.testing.assert_allclose(full, np.fft.fft(signal), atol=1e-12)
    np.testing.assert_allclose(spectral.complex_idft(n, range(n)) @ full, signal, atol=1e-12)
    # samples at some positions only: the transform of the zero-padded signal
    part = signal[1:3] @ spectral.real_dft(n, range(1, 3))
    np.testing.assert_allclose(part[0::2] + 1j * part[1::2], np.fft.rfft(np.r_[0, signal[1:3], [0] * (n - 3)]),
                               atol=1e-12)
