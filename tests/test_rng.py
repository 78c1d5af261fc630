"""Caffe's random streams (caffe_py.rng) against real Caffe (../shared/reference/rng) and against
step-by-step versions of the same algorithms.

The reference cases are exact: filler values and dropout tops bit for bit, and the from-scratch
`caffe train` runs (fillers, dropout masks, shuffling, random crops and mirrors all drawn) with
Caffe's initial parameters, displayed losses, test outputs and final weights.
"""
import ctypes
import ctypes.util
import json
import os
import shutil
import stat

import numpy as np
import pytest

import caffe_py as caffe
from caffe_py import rng
from caffe_py.proto import caffe_pb2
from conftest import REFERENCE, need
from harness import captured_log_text
from test_solver_reference import trajectory

RNG = os.path.join(REFERENCE, 'rng')
CASES = sorted(os.listdir(RNG)) if os.path.isdir(RNG) else []


def cases(prefix):
    found = [c for c in CASES if c.startswith(prefix)]
    return found or ['(../shared/reference/rng absent)']


def case_dir(case):
    return need(os.path.join(RNG, case))


def seeded_case_net(case):
    """(the case's folder, its net in TRAIN built after caffe.set_random_seed(the case's seed))."""
    path = case_dir(case)
    with open(os.path.join(path, 'seed.txt')) as f:
        caffe.set_random_seed(int(f.read()))
    return path, caffe.Net(os.path.join(path, 'net.prototxt'), caffe.TRAIN)


# -- against Caffe -----------------------------------------------------------------------------

@pytest.mark.parametrize('case', cases('fillers_'))
def test_fillers_equal_caffes_bit_for_bit(case):
    path, net = seeded_case_net(case)
    expected = np.load(os.path.join(path, 'params.npz'))
    assert sorted(expected.files) == sorted('%s/%d' % (name, i) for name, blobs in net.params.items()
                                            for i in range(len(blobs)))
    for key in expected.files:
        layer, i = key.split('/')
        np.testing.assert_array_equal(net.params[layer][int(i)].data, expected[key], err_msg=key)


@pytest.mark.parametrize('case', cases('dropout_'))
def test_dropout_tops_equal_caffes(case):
    path, net = seeded_case_net(case)
    x = np.load(os.path.join(path, 'input.npy'))
    tops = np.load(os.path.join(path, 'tops.npz'))
    for k in range(3):
        net.blobs['x'].data[...] = x
        net.forward()
        for name in ('d1', 'd2'):
            np.testing.assert_array_equal(net.blobs[name].data, tops['%s/%d' % (name, k)],
                                          err_msg='%s after forward %d' % (name, k))


# Every draw of these runs is Caffe's, and float32 rounds as Caffe's where it matters: the ImageData
# run is sensitive (an ulp-sized change of the first gradients moves its loss at iteration 24 by ~3e-5),
# so it stays within 1e-5 only with Caffe's per-image sums of the convolution's weight gradient and
# a correctly rounded exp in the softmax (glibc's expf) -- see vision._GemmConv.weight_grad.


@pytest.fixture(scope='module', params=cases('train_'))
def trained(request, tmp_path_factory):
    """(case, parameters at iteration 0, our trajectory, final parameters) of one from-scratch run."""
    case = request.param
    folder = copy_case_here(case, tmp_path_factory.mktemp('rng'))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        rng.c_srand(1)                       # glibc's rand() as a fresh `caffe` process has it
        with captured_log_text() as stream:
            solver = caffe.get_solver('solver.prototxt')
            init = params_of(solver.net)
            solver.solve()
    finally:
        os.chdir(cwd)
    return case, init, trajectory(stream.getvalue()), params_of(solver.net)


def copy_case_here(case, tmp_path):
    """A writable copy of the case folder, with the snap/ folder its solver writes into."""
    folder = tmp_path / case
    shutil.copytree(case_dir(case), folder)
    for root, dirs, files in os.walk(folder):
        for name in dirs + files + ['.']:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)
    (folder / 'snap').mkdir(exist_ok=True)
    return folder


def params_of(net):
    return {'%s/%d' % (name, i): blob.data.copy() for name, blobs in net.params.items()
            for i, blob in enumerate(blobs)}


def test_train_starts_from_caffes_parameters(trained):
    case, init, _, _ = trained
    expected = np.load(os.path.join(case_dir(case), 'init.npz'))
    assert sorted(init) == sorted(expected.files)
    for key in expected.files:
        np.testing.assert_array_equal(init[key], expected[key], err_msg=key)


def test_train_follows_caffes_trajectory(trained):
    case, _, ours, _ = trained
    with open(os.path.join(case_dir(case), 'trajectory.json')) as f:
        theirs = json.load(f)
    steps = ('display', 'test')          # the snapshot and 'Optimization Done' lines are the CLI's
    assert [e for e in ours['events'] if e[0] in steps] == [e for e in theirs['events'] if e[0] in steps]
    assert [it for it, _ in ours['train']] == [it for it, _ in theirs['train']]
    for (it, value), (_, expected) in zip(ours['train'], theirs['train']):
        assert value == pytest.approx(expected, rel=1e-5), 'displayed loss at iteration %d' % it
    assert [t['iter'] for t in ours['test']] == [t['iter'] for t in theirs['test']]
    for mine, caffes in zip(ours['test'], theirs['test']):
        assert list(mine['outputs']) == list(caffes['outputs'])
        for name, value in caffes['outputs'].items():
            assert mine['outputs'][name] == pytest.approx(value, rel=1e-5, abs=1e-7), \
                'test output %s at iteration %d' % (name, mine['iter'])


def test_train_ends_at_caffes_weights(trained):
    case, _, _, final = trained
    expected = np.load(os.path.join(case_dir(case), 'final.npz'))
    assert sorted(final) == sorted(expected.files)
    for key in expected.files:
        np.testing.assert_allclose(final[key], expected[key], rtol=1e-4, atol=1e-4, err_msg=key)


# -- the engine and distributions, step by step ------------------------------------------------

def test_mt19937_is_the_standard_engine():
    """mt19937 seeded with 5489 gives 4123659995 as its 10000th word (the C++ standard's check)."""
    stream = rng.CaffeStream(5489)
    stream.words(9998)
    assert int(stream.words(2)[1]) == 4123659995


def test_words_continue_one_stream_across_calls_and_unread():
    whole = rng.CaffeStream(3).words(100)
    stream = rng.CaffeStream(3)
    a = stream.words(30)
    stream.unread(a[20:])
    b = stream.words(80)
    np.testing.assert_array_equal(np.concatenate([a[:20], b]), whole)


def scalar_normals(seed, n, dtype):
    """Caffe's normals one attempt at a time over one long block of words (the vectorised walk's
    reference)."""
    t = np.dtype(dtype).type
    k = 1 if t is np.float32 else 2
    words = rng.CaffeStream(seed).words(n * (k + 1) + 1000)
    out, pos = [], 0
    while len(out) < n:
        accepted, value, taken = rng._attempt_scalar(words, pos, k, t)
        pos += taken
        if accepted:
            out.append(value)
    return np.array(out, dtype), pos


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('seed', [11, 4294967295])
def test_gaussian_block_walk_equals_attempt_by_attempt(dtype, seed):
    """Including the exponential tails (about a dozen here), drawn as arrays in the block walk."""
    expected, used = scalar_normals(seed, 20000, dtype)
    stream = rng.CaffeStream(seed)
    parts = [stream.gaussian(n, 0, 1, dtype) for n in (1, 7, 4000, 15992)]     # calls split anywhere
    np.testing.assert_array_equal(np.concatenate(parts), expected)
    follow = rng.CaffeStream(seed)
    follow.words(used)
    np.testing.assert_array_equal(stream.words(5), follow.words(5))      # and the engine ends there


def test_gaussian_tail_and_moments():
    values = rng.CaffeStream(5).gaussian(400000, 0, 1, np.float32)
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1) < 0.01
    assert (np.abs(values) > rng._NORMAL_X[1]).sum() > 50          # the exponential tail is drawn


def test_uniform_formula_and_redraw():
    t = np.float32
    words = rng.CaffeStream(8).words(1100)
    values = rng.CaffeStream(8).uniform(1000, -2, 3, t)
    hi = np.nextafter(t(3), t(np.inf))
    expected = words.astype(t) / (t(4294967295) + t(1)) * (hi - t(-2)) + t(-2)
    np.testing.assert_array_equal(values, expected[expected < hi][:1000])
    stream = rng.CaffeStream(0)
    stream.unread(np.array([0xffffffff, 7], np.uint32))      # float(2^32 - 1) / 2^32 rounds to 1: redrawn
    assert stream.uniform(1, 0, 1, t)[0] == t(7) / t(2 ** 32) * np.nextafter(t(1), t(2))


def test_bernoulli_threshold():
    stream = rng.CaffeStream(0)
    stream.unread(np.array([0, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 2 ** 32 - 1], np.uint32))
    # p * (2^32 - 1) = 2147483647.5 in double
    np.testing.assert_array_equal(stream.bernoulli(5, 0.5, np.float64), [True, True, False, False, False])
    assert not stream.bernoulli(3, 0.0).any()
    np.testing.assert_array_equal(stream.words(1), rng.CaffeStream(0).words(1))   # p == 0 drew nothing


def test_uniform_int_buckets_and_rejects():
    stream = rng.CaffeStream(0)
    bucket = 0xffffffff // 3                             # range 2: 2^32 - 1 = 3 * 1431655765
    stream.unread(np.array([bucket * 3, bucket * 2 + 5, 0], np.uint32))     # first is > 2: redrawn
    np.testing.assert_array_equal(stream.uniform_int([2, 2]), [2, 0])


def test_caffe_shuffle_swaps_from_the_end():
    stream = rng.CaffeStream(4)
    picks = rng.CaffeStream(4).uniform_int([4, 3, 2, 1])
    items = list('abcde')
    expected = list(items)
    for i, j in zip(range(4, 0, -1), picks):
        expected[i], expected[j] = expected[j], expected[i]
    stream.shuffle(items)
    assert items == expected


def glibc():
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version
    except (OSError, AttributeError, TypeError):
        pytest.skip('glibc is not the C library here')
    return libc


@pytest.mark.parametrize('seed', [1, 12345, 2 ** 32 - 5])
def test_c_rand_equals_glibcs(seed):
    libc = glibc()
    libc.srand(ctypes.c_uint(seed))
    expected = [libc.rand() for _ in range(3000)]
    mine = rng.GlibcRand(seed)
    np.testing.assert_array_equal(np.concatenate([mine.rand(5), mine.rand(2995)]), expected)


def test_random_shuffle_is_libstdcxx_loop():
    items = list(range(6))
    picks = rng.GlibcRand(1).rand(5)
    expected = list(items)
    for i, r in zip(range(1, 6), picks):
        j = r % (i + 1)
        expected[i], expected[j] = expected[j], expected[i]
    rng.GlibcRand(1).random_shuffle(items)
    assert items == expected


def test_numpy_kind_is_opt_in(monkeypatch):
    assert rng.kind() == 'caffe'
    monkeypatch.setitem(rng._state, 'kind', 'numpy')
    stream = rng.new_stream(3)
    assert stream.kind == 'numpy'
    assert stream.gaussian(10, 0, 1).dtype == np.float32 and stream.words(4).dtype == np.uint32
    with pytest.raises(ValueError, match='caffe'):
        rng.set_kind('boost')


def test_sparse_gaussian_draws_its_mask_after_the_values():
    param = caffe_pb2.FillerParameter(type='gaussian', std=1, sparse=2)
    caffe.set_random_seed(9)
    blob = caffe.Blob((4, 6))
    from caffe_py.fillers import fill
    fill(blob, param)
    stream = rng.CaffeStream(9)
    values = stream.gaussian(24, 0, 1)
    keep = stream.bernoulli(24, np.float32(2) / np.float32(4))
    np.testing.assert_array_equal(blob.data.reshape(-1), values * keep)


def test_positive_unitball_sums_rows_in_order():
    param = caffe_pb2.FillerParameter(type='positive_unitball')
    caffe.set_random_seed(2)
    blob = caffe.Blob((3, 50))
    from caffe_py.fillers import fill
    fill(blob, param)
    values = rng.CaffeStream(2).uniform(150, 0, 1).reshape(3, 50)
    for row, got in zip(values, blob.data):
        total = np.float32(0)
        for v in row:
            total = np.float32(total + v)
        np.testing.assert_array_equal(got, row / total)


RECURRENT_NET = """
layer { name: "x" type: "Input" top: "x" top: "cont"
  input_param { shape { dim: 3 dim: 2 dim: 5 } shape { dim: 3 dim: 2 } } }
layer { name: "r" type: "%s" bottom: "x" bottom: "cont" top: "h"
  recurrent_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "uniform" } } }
"""


@pytest.mark.parametrize('kind, rows, per_step', [('LSTM', 16, [(16, 4)]), ('RNN', 4, [(4, 4), (4, 4), (4,)])])
def test_recurrent_layers_draw_as_caffes_unrolled_net(kind, rows, per_step, tmp_path):
    """Input weights and bias, then every time step's copy of the recurrent (and RNN's output)
    parameters, the first copy kept: the order in which Caffe's unrolled net fills them."""
    path = tmp_path / 'net.prototxt'
    path.write_text(RECURRENT_NET % kind)
    caffe.set_random_seed(5)
    net = caffe.Net(str(path), caffe.TRAIN)
    stream = rng.CaffeStream(5)
    expected = [stream.gaussian(rows * 5, 0, 0.1), stream.uniform(rows, 0, 1)]
    for step in range(3):
        drawn = [stream.uniform(s[0], 0, 1) if len(s) == 1 else stream.gaussian(s[0] * s[1], 0, 0.1)
                 for s in per_step]
        if step == 0:
            expected += drawn
    for blob, values in zip(net.params['r'], expected):
        np.testing.assert_array_equal(blob.data.reshape(-1), values)
    np.testing.assert_array_equal(rng.stream().words(3), stream.words(3))


def test_block_boundaries_do_not_change_the_stream():
    n = rng._CHUNK + 5                                  # two blocks inside one call
    whole = rng.CaffeStream(21).gaussian(n, 0, 1)
    split = rng.CaffeStream(21)
    np.testing.assert_array_equal(np.concatenate([split.gaussian(n - 8, 0, 1), split.gaussian(8, 0, 1)]), whole)
    words = rng.CaffeStream(22).words(n)
    np.testing.assert_array_equal(rng.CaffeStream(22).bernoulli(n, 0.25),
                                  words.astype(np.float32) <= np.float32(2 ** 30))


def test_image_data_draws_in_caffes_order(tmp_path, monkeypatch):
    """Setup takes four words of the global stream: the transformer's seed (InitRand), the shuffling
    engine's seed, the transformer's seed again (InitRand before the thread starts: this one is
    used) and the prefetch thread's; each image then takes mirror, crop row, crop column."""
    from test_data_layers import IMAGE_NET, make_net, write_images
    monkeypatch.chdir(tmp_path)
    images = write_images(str(tmp_path), 5, 7, 6)
    caffe.set_random_seed(33)
    net = make_net(IMAGE_NET % (4, 'true', 'shuffle: true'), caffe.TRAIN)
    try:
        net.forward()
        data, labels = net.blobs['data'].data.copy(), net.blobs['label'].data.copy()
    finally:
        net.layers[0].close()
    stream = rng.CaffeStream(33)
    _, shuffle_seed, transform_seed, _ = stream.words(4).tolist()
    np.testing.assert_array_equal(rng.stream().words(2), stream.words(2))
    order = list(range(5))
    rng.CaffeStream(shuffle_seed).shuffle(order)
    draws = rng.CaffeStream(transform_seed).words(4 * 3).reshape(4, 3).tolist()
    np.testing.assert_array_equal(labels, order[:4])
    for item, index, (mirror, row, column) in zip(data, order, draws):
        chw = images[index].transpose(2, 0, 1)[:, row % 4:row % 4 + 4, column % 3:column % 3 + 4]
        np.testing.assert_array_equal(item, chw[:, :, ::-1] if mirror % 2 else chw)


def test_numpy_streams_build_and_run_nets(monkeypatch):
    monkeypatch.setitem(rng._state, 'stream', None)       # both restored after the test
    monkeypatch.setitem(rng._state, 'kind', 'numpy')
    caffe.set_random_seed(4)
    assert rng.stream().kind == 'numpy'
    net = caffe.Net(dropout_net(), caffe.TRAIN)
    net.blobs['x'].data[...] = 1
    out = net.forward()['d']
    assert np.isfinite(out).all() and (out == 0).any() and (out != 0).any()


def dropout_net():
    from google.protobuf import text_format
    return text_format.Parse(
        'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 30 } } }'
        'layer { name: "f" type: "InnerProduct" bottom: "x" top: "f" inner_product_param { num_output: 50 '
        'weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "xavier" } } }'
        'layer { name: "d" type: "Dropout" bottom: "f" top: "d" }', caffe_pb2.NetParameter())


# -- float32 rounded as Caffe's, where a from-scratch run is sensitive to it --------------------

@pytest.mark.parametrize('channels,outputs,group', [(3, 6, 1), (4, 2, 1), (4, 4, 2)])
def test_small_conv_weight_gradient_adds_images_in_turn(channels, outputs, group):
    """Caffe's per-image GEMMs: the weight gradient is ((0 + g_0) + g_1) + ..., g_n = top_n x cols_n^T
    (both column layouts: kdim >= 4 * outputs per group picks the batch-last one)."""
    from google.protobuf import text_format
    from numpy.lib.stride_tricks import sliding_window_view
    shape = (3, channels, 7, 6)
    net = caffe.Net(text_format.Parse(
        'force_backward: true layer { name: "x" type: "Input" top: "x" input_param { shape { %s } } }'
        'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: %d '
        'kernel_size: 3 pad: 1 group: %d weight_filler { type: "gaussian" std: 0.1 } } }'
        % (' '.join('dim: %d' % d for d in shape), outputs, group), caffe_pb2.NetParameter()), caffe.TRAIN)
    gen = np.random.default_rng(3)
    x = gen.standard_normal(shape).astype(np.float32)
    net.blobs['x'].data[...] = x
    net.forward()
    top = gen.standard_normal(net.blobs['y'].shape).astype(np.float32)
    net.blobs['y'].diff[...] = top
    net.clear_param_diffs()
    net.backward()
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = sliding_window_view(padded, (3, 3), axis=(2, 3)).transpose(0, 1, 4, 5, 2, 3).reshape(3, group, -1, 42)
    expected = np.zeros((group, outputs // group, cols.shape[2]), np.float32)
    tops = top.reshape(3, group, outputs // group, 42)
    for n in range(3):
        for g in range(group):
            expected[g] += tops[n, g] @ np.ascontiguousarray(cols[n, g]).T
    np.testing.assert_array_equal(net.params['c'][0].diff.reshape(expected.shape), expected)


def test_softmax_exp_is_correctly_rounded():
    """Caffe's expf (glibc) is correctly rounded; NumPy's float32 exp is an ulp off on many values."""
    from google.protobuf import text_format
    net = caffe.Net(text_format.Parse(
        'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 50 dim: 7 dim: 3 } } }'
        'layer { name: "p" type: "Softmax" bottom: "x" top: "p" }', caffe_pb2.NetParameter()), caffe.TEST)
    x = np.random.default_rng(5).standard_normal((50, 7, 3)).astype(np.float32) * 4
    net.blobs['x'].data[...] = x
    net.forward()
    e = np.exp((x - x.max(axis=1, keepdims=True)).astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(net.blobs['p'].data, e / e.sum(axis=1, keepdims=True))
