"""Data-parallel training: rank state, round-robin data, root-only testing and snapshots,
2 MPI ranks over loopback against 1 rank (batch 2b, and batch b with iter_size 2), a rank
killed mid-run, the one-process-per-GPU launcher and pycaffe's NCCL on the CuPy stand-in.

Every job runs in its own session with a mark in its environment; whatever is left of it
afterwards is killed and fails the test, so no test leaves processes behind."""
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

import caffe_py as caffe
import fakecupy
import parallel_cases as cases
from caffe_py import parallel
from caffe_py.parallel import launch
from caffe_py.tools import cli
from harness import job_processes, outliving, process_environ, started_job

TESTS = os.path.dirname(os.path.abspath(__file__))
MPIEXEC = shutil.which('mpiexec', path=os.path.dirname(sys.executable)) or shutil.which('mpiexec')
LOOPBACK = ['--oversubscribe', '--mca', 'btl', 'self,tcp', '--mca', 'btl_tcp_if_include', 'lo']

needs_compiler = pytest.mark.skipif(fakecupy.compiler() is None, reason='the CuPy stand-in needs g++')


def _has_mpi4py():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


needs_mpi = pytest.mark.skipif(MPIEXEC is None or not _has_mpi4py(),
                               reason='needs mpi4py and mpiexec (pip install caffe-py[mpi])')


@pytest.fixture
def ranks():
    """Caffe's rank state, restored to one rank afterwards."""
    yield
    caffe.set_solver_count(1)
    caffe.set_solver_rank(0)
    caffe.set_multiprocess(False)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases.write_data(str(tmp_path))
    return tmp_path


# -- jobs of several processes ---------------------------------------------------------------

def _job(argv, cwd, fake_devices=None, **kwargs):
    """harness.started_job with Open MPI allowed to run as root, INFO logged, and the CuPy
    stand-in with `fake_devices` devices where asked."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1', GLOG_minloglevel='0')
    if fake_devices:
        _stand_in(env, cwd, fake_devices)
    return started_job(argv, cwd, env, **kwargs)


def run_job(argv, cwd, timeout=60, fake_devices=None):
    """Run argv in its own session; (exit code, stderr, seconds). Fails on timeout or leftovers."""
    start = time.monotonic()
    with _job(argv, cwd, fake_devices) as (proc, mark):
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail('%s ran past %d s' % (' '.join(argv[:4]), timeout))
        seconds = time.monotonic() - start
        left = outliving(mark, 5)
    assert not left, 'processes left behind: %s' % left
    return proc.returncode, err, seconds


def _wait_for_file(path, seconds=40):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)


def _stand_in(env, folder, devices=2):
    """Make every Python process started with `env` use the CuPy stand-in with `devices` devices."""
    site = os.path.join(str(folder), 'site')
    os.makedirs(site, exist_ok=True)
    with open(os.path.join(site, 'sitecustomize.py'), 'w') as f:
        f.write(cases.SITECUSTOMIZE % TESTS)
    env['PYTHONPATH'] = os.pathsep.join([site, str(folder), env.get('PYTHONPATH', '')])
    env['FAKECUPY_DEVICES'] = str(devices)


def mpi_train(folder, solver, n=2, timeout=60, more=()):
    command = [sys.executable, '-m', 'caffe_py', 'train', '-solver', solver] + list(more)
    return run_job([MPIEXEC, '-n', str(n)] + LOOPBACK + command, folder, timeout)


def weights(path):
    net = caffe.Net('net.prototxt', caffe.TEST, weights=path)
    try:
        return {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}
    finally:
        net.close()


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=name)


def train_here(batch, iter_size=1, prefix='one'):
    """One rank in this process; the final weights."""
    assert cli.main(['train', '-solver', cases.write_run('.', batch, iter_size, prefix=prefix)]) == 0
    return weights('%s_iter_6.caffemodel' % prefix)


# -- rank state and data dealing, in this process ----------------------------------------------

def test_pycaffe_rank_state(ranks):
    caffe.set_solver_count(4)
    caffe.set_solver_rank(3)
    caffe.set_multiprocess(True)
    assert (caffe.solver_count(), caffe.solver_rank(), parallel.multiprocess()) == (4, 3, True)
    assert not parallel.root_solver()
    assert caffe.has_nccl is parallel.has_nccl and isinstance(caffe.has_nccl(), bool)


DEALT_NET = '''layer { name: "a" type: "Data" top: "a" top: "label" include { phase: %(phase)s }
        data_param { source: "train_lmdb" backend: LMDB batch_size: 3 } }
layer { name: "b" type: "HDF5Data" top: "b" include { phase: %(phase)s }
        hdf5_data_param { source: "train_h5.txt" batch_size: 5 } }'''


def read_batches(phase, count, rank, batches):
    caffe.set_solver_count(count)
    caffe.set_solver_rank(rank)
    with open('dealt.prototxt', 'w') as f:
        f.write(DEALT_NET % {'phase': 'TRAIN' if phase == caffe.TRAIN else 'TEST'})
    net = caffe.Net('dealt.prototxt', phase)
    try:
        got = {'a': [], 'b': []}
        for _ in range(batches):
            net.forward()
            for name in got:
                got[name].append(net.blobs[name].data.copy())
        return {name: np.concatenate(v) for name, v in got.items()}
    finally:
        net.close()


def test_data_and_hdf5_layers_deal_items_round_robin_in_train(data_dir, ranks):
    # 22 records and 13 rows: both wrap around while being dealt
    alone = read_batches(caffe.TRAIN, 1, 0, 12)
    for rank in range(3):
        mine = read_batches(caffe.TRAIN, 3, rank, 4)
        np.testing.assert_array_equal(mine['a'], alone['a'][rank::3][:12])
        np.testing.assert_array_equal(mine['b'], alone['b'][rank::3][:20])
    # only the root tests: a TEST net reads every item on any rank
    test = read_batches(caffe.TEST, 3, 1, 2)
    np.testing.assert_array_equal(test['a'], alone['a'][:6])
    np.testing.assert_array_equal(test['b'], alone['b'][:10])


def test_image_data_warns_without_shuffle_or_rand_skip(tmp_path, monkeypatch, ranks, captured_log):
    monkeypatch.chdir(tmp_path)
    cv2.imwrite('x.png', np.zeros((4, 4, 3), np.uint8))
    (tmp_path / 'list.txt').write_text('x.png 0\nx.png 1\n')
    layer = ('layer { name: "d" type: "ImageData" top: "data" top: "label" '
             'image_data_param { source: "list.txt" batch_size: 1 %s } }')
    caffe.set_solver_count(2)
    for rank, extra, warned in ((1, '', True), (1, 'shuffle: true', False), (1, 'rand_skip: 1', False),
                                (0, '', False)):
        caffe.set_solver_rank(rank)
        (tmp_path / 'net.prototxt').write_text(layer % extra)
        captured_log.truncate(0)
        caffe.Net('net.prototxt', caffe.TRAIN).close()
        assert ('Shuffling or skipping recommended for multi-GPU' in captured_log.getvalue()) == warned, extra


def test_other_ranks_neither_test_nor_snapshot_and_seed_random_seed_plus_rank(data_dir, ranks):
    root = caffe.get_solver(cases.write_run('.', 4, prefix='root'))
    caffe.set_solver_count(2)
    caffe.set_solver_rank(1)
    other = caffe.get_solver(cases.write_run('.', 4, prefix='other'))
    try:
        assert other.test_nets == [] and len(root.test_nets) == 1
        calls = []
        other.add_callback(type('Callback', (), {'on_start': lambda self: calls.append('start'),
                                                 'on_gradients_ready': lambda self: calls.append('ready')})())
        caffe.set_solver_rank(1)
        other.solve()
        assert other.iter == 6 and calls == ['start', 'ready'] * 6
        assert not [f for f in os.listdir('.') if f.startswith('other_iter')]
        # rank 1 draws its fillers from random_seed + 1
        caffe.set_solver_rank(0)
        param = caffe.get_solver(cases.write_run('.', 4, prefix='eight')).param
        param.random_seed = 8
        eight = caffe.get_solver(param)
        caffe.set_solver_rank(1)
        fresh_other = caffe.get_solver(cases.write_run('.', 4, prefix='other'))
        np.testing.assert_array_equal(fresh_other.net.params['ip_a'][0].data, eight.net.params['ip_a'][0].data)
        assert not np.array_equal(root.net.params['ip_a'][0].data, eight.net.params['ip_a'][0].data)
        for s in (eight, fresh_other):
            s.close()
    finally:
        for s in (root, other):
            s.close()


def test_missing_mpi4py_is_one_line(data_dir, ranks, monkeypatch, capsys):
    monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '2')
    monkeypatch.setitem(sys.modules, 'mpi4py', None)
    assert cli.main(['train', '-solver', cases.write_run('.', 4)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('caffe-py: error: rank 0 failed: ') and 'pip install caffe-py[mpi]' in err[-1]


def test_mpi_world_from_the_launchers_environment():
    assert launch.mpi_world({}) is None
    assert launch.mpi_world({'OMPI_COMM_WORLD_SIZE': '1'}) is None
    assert launch.mpi_world({'OMPI_COMM_WORLD_SIZE': '16', 'OMPI_COMM_WORLD_RANK': '9',
                             'OMPI_COMM_WORLD_LOCAL_RANK': '1'}) == (16, 9, 1)
    assert launch.mpi_world({'PMI_SIZE': '4', 'PMI_RANK': '2', 'MPI_LOCALRANKID': '2'}) == (4, 2, 2)
    slurm = {'SLURM_STEP_NUM_TASKS': '8', 'SLURM_PROCID': '5', 'SLURM_LOCALID': '1'}
    assert launch.mpi_world(slurm) == (8, 5, 1)


# -- 2 MPI ranks on the CPU ----------------------------------------------------------------------

@needs_mpi
def test_two_mpi_ranks_equal_one_rank_with_twice_the_batch_and_with_iter_size(data_dir):
    code, err, _ = mpi_train(data_dir, cases.write_run('.', 4, prefix='two'))
    assert code == 0, err[-3000:]
    two = weights('two_iter_6.caffemodel')
    # only the root tests, displays and snapshots: the lines of one solver
    assert err.count('Test net output #0') == 3 and err.count('Snapshotting to binary proto file') == 2
    assert err.count('Iteration 5 (') == 1
    assert 'Reducing gradients over 2 ranks in one call' in err
    assert_same_weights(two, train_here(8, prefix='one'))
    assert_same_weights(two, train_here(4, iter_size=2, prefix='acc'))


# rank 1 dies in iteration 5: the snapshots of iterations 2 and 4, whole, and nothing else
KILL_SNAPSHOTS = ['kill_iter_2.caffemodel', 'kill_iter_2.solverstate',
                  'kill_iter_4.caffemodel', 'kill_iter_4.solverstate']


@needs_mpi
def test_a_rank_killed_mid_run_stops_the_job_and_the_last_snapshot_loads(data_dir):
    solver = cases.write_run('.', 4, max_iter=40, snapshot=2, prefix='kill', kill_at=5)
    code, err, _ = mpi_train(data_dir, solver, timeout=40)   # the job's end is bounded by the timeout
    assert code != 0     # Open MPI names the rank that died, or rank 0 whose socket to it closed
    assert sorted(f for f in os.listdir('.') if f.startswith('kill_iter')) == KILL_SNAPSHOTS
    assert weights('kill_iter_4.caffemodel')['ip_b'][0].shape == (3, 3)
    solver = caffe.get_solver(solver)
    try:
        solver.restore('kill_iter_4.solverstate')
        assert solver.iter == 4
    finally:
        solver.close()


@needs_mpi
@pytest.mark.slow
def test_a_resumed_mpi_run_restores_every_rank(data_dir):
    solver = cases.write_run('.', 4, prefix='two')
    assert mpi_train(data_dir, solver)[0] == 0
    os.remove('two_iter_6.caffemodel')
    code, err, _ = mpi_train(data_dir, solver, more=['-snapshot', 'two_iter_3.solverstate'])
    # a rank that did not restore would run 6 iterations against the root's 3 and never finish
    assert code == 0, err[-3000:]
    assert err.count('Iteration 4 (') == 1 and os.path.exists('two_iter_6.caffemodel')


@needs_mpi
@needs_compiler
def test_mpi_ranks_with_gpus_take_their_local_rank_s_device_and_bootstrap_nccl_through_mpi(data_dir):
    code, err, _ = run_job([MPIEXEC, '-n', '2'] + LOOPBACK + [sys.executable, '-m', 'caffe_py', 'train', '-solver',
                           cases.write_run('.', 4, prefix='mpigpu'), '-gpu', 'all'], data_dir, fake_devices=2)
    assert code == 0, err[-3000:]
    assert 'Training data-parallel on 2 ranks (NCCL)' in err and 'GPU 0: caffe-py fake device' in err
    assert_same_weights(weights('mpigpu_iter_6.caffemodel'), train_here(8, prefix='one'))


@needs_mpi
@pytest.mark.slow
def test_sigint_to_the_root_mpi_rank_stops_every_rank(data_dir):
    solver = cases.write_run('.', 4, max_iter=100000, snapshot=3, prefix='sig')
    argv = [MPIEXEC, '-n', '2'] + LOOPBACK + [sys.executable, '-m', 'caffe_py', 'train', '-solver', solver]
    with _job(argv, data_dir) as (proc, mark):
        _wait_for_file('sig_iter_3.caffemodel')
        root = [pid for pid in job_processes(mark) if b'OMPI_COMM_WORLD_RANK=0\0' in process_environ(pid)]
        assert len(root) == 1
        os.kill(root[0], signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]
    assert 'Optimization stopped early.' in err


# -- one process per GPU, on the CuPy stand-in ------------------------------------------------------

@needs_compiler
def test_gpu_flag_starts_one_process_per_device_reducing_with_nccl(data_dir):
    code, err, _ = run_job([sys.executable, '-m', 'caffe_py', 'train', '-solver',
                            cases.write_run('.', 4, prefix='gpus'), '-gpu', '0,1'], data_dir, fake_devices=2)
    assert code == 0, err[-3000:]
    assert 'Reducing gradients over 2 ranks layer by layer' in err
    assert_same_weights(weights('gpus_iter_6.caffemodel'), train_here(8, prefix='one'))


@needs_compiler
def test_gpu_rank_killed_stops_every_rank_with_one_line(data_dir):
    solver = cases.write_run('.', 4, max_iter=40, snapshot=2, prefix='kill', kill_at=5)
    code, err, _ = run_job([sys.executable, '-m', 'caffe_py', 'train', '-solver', solver, '-gpu', '0,1'],
                           data_dir, fake_devices=2, timeout=40)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last == 'caffe-py: error: rank 1 (GPU 1) killed by SIGKILL; stopped the other ranks'
    assert sorted(f for f in os.listdir('.') if f.startswith('kill_iter')) == KILL_SNAPSHOTS


@needs_compiler
def test_gpu_rank_failing_names_the_rank_and_the_cause(data_dir):
    solver = cases.write_run('.', 4, prefix='bad')
    with open('net.prototxt', 'a') as f:   # no rank can set this layer up
        f.write('layer { name: "p" type: "Python" bottom: "b" python_param { module: "nosuch" layer: "L" } }')
    code, err, _ = run_job([sys.executable, '-m', 'caffe_py', 'train', '-solver', solver, '-gpu', '0,1'],
                           data_dir, fake_devices=2, timeout=40)
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith('caffe-py: error: rank ') and 'nosuch' in last
    assert last.endswith('; stopped the other ranks')


@needs_compiler
def test_sigint_to_the_launcher_stops_every_rank_together(data_dir):
    """SIGINT reaches the root only; the root decides and every rank stops at the same iteration."""
    solver = cases.write_run('.', 4, max_iter=100000, snapshot=3, prefix='sig')
    argv = [sys.executable, '-m', 'caffe_py', 'train', '-solver', solver, '-gpu', '0,1']
    with _job(argv, data_dir, fake_devices=2) as (proc, _):
        _wait_for_file('sig_iter_3.caffemodel')
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]
    assert 'Optimization stopped early.' in err
    last = max(int(f[len('sig_iter_'):-len('.caffemodel')]) for f in os.listdir('.')
               if f.startswith('sig_iter_') and f.endswith('.caffemodel'))
    assert 3 <= last < 100000 and os.path.exists('sig_iter_%d.solverstate' % last)


@needs_compiler
@pytest.mark.slow
def test_ranks_die_with_a_killed_launcher(data_dir):
    solver = cases.write_run('.', 4, max_iter=100000, snapshot=3, prefix='orphan')
    argv = [sys.executable, '-m', 'caffe_py', 'train', '-solver', solver, '-gpu', '0,1']
    with _job(argv, data_dir, fake_devices=2, stderr=subprocess.DEVNULL) as (proc, mark):
        _wait_for_file('orphan_iter_3.caffemodel')
        proc.kill()
        proc.wait()
        left = outliving(mark, 10)
    assert not left


def test_a_gpu_named_twice_is_one_line(data_dir, capsys):
    assert cli.main(['train', '-solver', cases.write_run('.', 4), '-gpu', '0,1,0']) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        'caffe-py: error: -gpu names GPU 0 more than once (one process per device)')


def test_several_gpus_without_cupy_is_one_line(data_dir, monkeypatch, capsys):
    from caffe_py import backend
    monkeypatch.setitem(sys.modules, 'cupy', None)
    previous = backend.use_device_module(None)
    try:
        assert cli.main(['train', '-solver', cases.write_run('.', 4), '-gpu', '0,1']) == 1
    finally:
        backend.use_device_module(previous)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('caffe-py: error: ') and 'pip install caffe-py[gpu]' in err[-1]


@needs_compiler
@pytest.mark.slow
def test_a_script_written_like_bvlc_train_py_runs_unchanged(data_dir):
    with open('train.py', 'w') as f:
        f.write(cases.PYCAFFE_TRAIN)
    code, err, _ = run_job([sys.executable, 'train.py', cases.write_run('.', 4, prefix='script')], data_dir,
                           fake_devices=2)
    assert code == 0, err[-3000:]
    assert 'Using devices [0, 1]' in err
    assert_same_weights(weights('script_iter_6.caffemodel'), train_here(8, prefix='one'))


# -- a real device ------------------------------------------------------------------------------

@pytest.mark.gpu
def test_every_gpu_trains_as_one_with_the_batch_times_the_device_count(data_dir):
    import cupy
    count = cupy.cuda.runtime.getDeviceCount()
    code, err, _ = run_job([sys.executable, '-m', 'caffe_py', 'train', '-solver',
                            cases.write_run('.', 4, prefix='all'), '-gpu', 'all'], data_dir, timeout=300)
    assert code == 0, err[-3000:]
    assert_same_weights(weights('all_iter_6.caffemodel'), train_here(4 * count, prefix='one'))


@pytest.mark.gpu
def test_nccl_allreduce_on_the_device():
    from caffe_py import backend
    from caffe_py.parallel.comm import NCCLComm, new_uid
    backend.set_mode_gpu()
    try:
        import cupy
        comm = NCCLComm(new_uid(), 1, 0)
        a = cupy.arange(5, dtype=cupy.float32)
        comm.comm.allReduce(a.data.ptr, a.data.ptr, a.size, comm.nccl.NCCL_FLOAT32, comm.nccl.NCCL_SUM,
                            cupy.cuda.get_current_stream().ptr)
        comm.bcast([a])
        assert comm.agree('snapshot') == 'snapshot'
        np.testing.assert_array_equal(a.get(), np.arange(5, dtype=np.float32))
    finally:
        backend.set_mode_cpu()
