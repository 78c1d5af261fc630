"""Faults while training: signals, kill -9 during snapshots, a full disk, NaN/inf.

Signals and kills are sent to real `caffe-py train` subprocesses; the files they leave are checked
after the next start. Snapshots are published in pairs (caffe_py.solvers.snapshots).
"""
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from caffe_py.solvers import get_solver
from caffe_py.solvers.nan_check import NonFiniteError
from caffe_py.tools import cli
import fakecupy
from harness import started_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# a net with 512 x 512 weights (1 MB caffemodel, 1 MB solverstate) and no data files
BIG_NET = '''name: "big"
layer { name: "data" type: "DummyData" top: "data" top: "target"
  dummy_data_param { shape { dim: 2 dim: 512 } shape { dim: 2 dim: 512 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 0.5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 512 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
'''

BIG_SOLVER = ('net: "net.prototxt"\nmomentum: 0.9\nlr_policy: "fixed"\ndisplay: 0\nrandom_seed: 1\n'
              'snapshot_prefix: "snaps/big"\n')

# what a snapshot of a prefix may leave in its folder
SNAPSHOT_FILE = re.compile(r'big_iter_(\d+)\.(caffemodel|solverstate)(\.h5)?$')


@pytest.fixture
def bigdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'net.prototxt').write_text(BIG_NET)
    (tmp_path / 'snaps').mkdir()
    return tmp_path


def big_solver(folder, text, base_lr=0.001):
    path = os.path.join(str(folder), 'solver.prototxt')
    with open(path, 'w') as f:
        f.write(BIG_SOLVER + 'base_lr: %g\n' % base_lr + text)
    return path


def train_process(*argv, stderr, **kwargs):
    """`caffe-py train` (python -m caffe_py) as a job: (process, mark) for a with block that
    kills what is left of it on leaving (harness.started_job)."""
    return started_job([sys.executable, '-m', 'caffe_py', 'train'] + [str(a) for a in argv],
                       env=dict(os.environ, PYTHONPATH=ROOT), stderr=stderr, **kwargs)


def wait_for(path, text, process, timeout=60):
    """Wait until the log file `path` holds `text` (fail if the process ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            if text in f.read():
                return
        if process.poll() is not None:
            with open(path) as f:
                raise AssertionError('training ended (%s) before "%s":\n%s' % (process.returncode, text, f.read()))
        time.sleep(0.005)
    process.kill()
    raise AssertionError('no "%s" within %d s' % (text, timeout))


def snapshot_files(folder='snaps'):
    """{iteration: set of kinds} for the snapshot files, and the list of other files."""
    pairs, others = {}, []
    for name in os.listdir(folder):
        match = SNAPSHOT_FILE.match(name)
        if match:
            pairs.setdefault(int(match.group(1)), set()).add(match.group(2) + (match.group(3) or ''))
        else:
            others.append(name)
    return pairs, others


def assert_only_pairs(folder='snaps', h5=False):
    pairs, others = snapshot_files(folder)
    assert others == []
    kinds = {'caffemodel.h5', 'solverstate.h5'} if h5 else {'caffemodel', 'solverstate'}
    assert all(found == kinds for found in pairs.values()), pairs
    return sorted(pairs)


# -- snapshots are published in pairs ----------------------------------------------------------

@pytest.mark.parametrize('h5', [False, True])
def test_snapshots_leave_pairs_only(bigdir, h5):
    big_solver(bigdir, 'max_iter: 4\nsnapshot: 2\n' + ('snapshot_format: HDF5\n' if h5 else ''))
    solver = get_solver('solver.prototxt')
    solver.solve()
    assert assert_only_pairs(h5=h5) == [2, 4]
    ext = '.h5' if h5 else ''
    assert solver.latest_snapshot() == ('snaps/big_iter_4.solverstate' + ext, 'snaps/big_iter_4.caffemodel' + ext)
    resumed = get_solver('solver.prototxt')
    resumed.restore(solver.latest_snapshot()[0])
    assert resumed.iter == 4
    np.testing.assert_array_equal(resumed.net.params['ip'][0].data, solver.net.params['ip'][0].data)


def dead_pid():
    """The id of a process that has ended."""
    child = subprocess.Popen(['true'])
    child.wait()
    return child.pid


def test_recover_finishes_or_removes_what_a_kill_left(bigdir, captured_log):
    big_solver(bigdir, 'max_iter: 6\nsnapshot: 2\n')
    get_solver('solver.prototxt').solve()
    before = {name: open('snaps/' + name, 'rb').read() for name in os.listdir('snaps')}
    pid = dead_pid()
    # killed while writing iteration 8: temporaries only (one of them truncated)
    shutil.copy('snaps/big_iter_6.caffemodel', 'snaps/big_iter_8.caffemodel.tmp-%d' % pid)
    with open('snaps/big_iter_8.solverstate.tmp-%d' % pid, 'wb') as f:
        f.write(before['big_iter_6.solverstate'][:100])
    # killed between the two renames of iteration 6: the journal says what is left to do
    os.rename('snaps/big_iter_6.solverstate', 'snaps/big_iter_6.solverstate.tmp-%d' % pid)
    with open('snaps/big_iter_6.snapshot-journal', 'w') as f:
        json.dump({'pid': pid, 'renames': [['big_iter_6.caffemodel.tmp-%d' % pid, 'big_iter_6.caffemodel'],
                                           ['big_iter_6.solverstate.tmp-%d' % pid, 'big_iter_6.solverstate']]}, f)
    # killed after both renames of iteration 4, before the journal was removed
    with open('snaps/big_iter_4.snapshot-journal', 'w') as f:
        json.dump({'pid': pid, 'renames': [['big_iter_4.caffemodel.tmp-%d' % pid, 'big_iter_4.caffemodel']]}, f)
    # a temporary of a run that is still alive, and a caffemodel of the user's without a solverstate
    alive = 'snaps/big_iter_10.caffemodel.tmp-%d' % os.getppid()
    open(alive, 'wb').close()
    shutil.copy('snaps/big_iter_2.caffemodel', 'snaps/big_iter_9.caffemodel')

    solver = get_solver('solver.prototxt')
    text = captured_log.getvalue()
    assert 'Completed the snapshot snaps/big_iter_6.caffemodel + snaps/big_iter_6.solverstate ' \
           'interrupted by a kill (process %d)' % pid in text
    assert 'Removed snaps/big_iter_8.solverstate.tmp-%d, left by a snapshot that was interrupted' % pid in text
    assert 'Leaving %s: process %d, which writes it, is running' % (alive, os.getppid()) in text
    os.remove(alive)
    assert sorted(os.listdir('snaps')) == sorted(before) + ['big_iter_9.caffemodel']
    for name, data in before.items():
        assert open('snaps/' + name, 'rb').read() == data, name
    assert solver.restore_latest() == 'snaps/big_iter_6.solverstate'
    assert solver.iter == 6


def test_resume_latest_picks_the_newest_complete_pair(bigdir, capsys, captured_log):
    big_solver(bigdir, 'max_iter: 4\nsnapshot: 2\n')
    assert cli.main(['train', '-solver', 'solver.prototxt', '-snapshot', 'latest']) == 1
    assert capsys.readouterr().err.splitlines()[-1] == 'caffe-py: error: no snapshot to resume from: ' \
        'no snaps/big_iter_N.solverstate with its caffemodel'
    assert cli.main(['train', '-solver', 'solver.prototxt']) == 0
    os.remove('snaps/big_iter_4.caffemodel')          # a solverstate whose weights are gone
    big_solver(bigdir, 'max_iter: 6\nsnapshot: 2\n')
    assert cli.main(['train', '-solver', 'solver.prototxt', '-snapshot', 'latest']) == 0
    assert 'Resuming from the newest complete snapshot: snaps/big_iter_2.solverstate ' \
           '(weights snaps/big_iter_2.caffemodel)' in captured_log.getvalue()
    assert snapshot_files()[0] == {2: {'caffemodel', 'solverstate'}, 4: {'caffemodel', 'solverstate'},
                                   6: {'caffemodel', 'solverstate'}}
    os.remove('snaps/big_iter_6.caffemodel')
    assert cli.main(['train', '-solver', 'solver.prototxt', '-snapshot', 'snaps/big_iter_6.solverstate']) == 1
    assert capsys.readouterr().err.splitlines()[-1] == 'caffe-py: error: file not found: ' \
        'snaps/big_iter_6.caffemodel (named by learned_net in snaps/big_iter_6.solverstate); the newest complete snapshot is ' \
        'snaps/big_iter_4.solverstate (-snapshot latest resumes from it)'


# -- signals, as Caffe's SignalHandler ---------------------------------------------------------

def test_sighup_snapshots_and_sigint_stops_a_real_run(bigdir):
    big_solver(bigdir, 'max_iter: 100000000\n')
    with open('log.txt', 'w') as log, train_process('-solver', 'solver.prototxt', stderr=log) as (proc, _):
        wait_for('log.txt', 'Starting Optimization', proc)
        proc.send_signal(signal.SIGHUP)
        wait_for('log.txt', 'Snapshotting solver state', proc)
        assert proc.poll() is None                   # a snapshot, and training goes on
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    text = open('log.txt').read()
    assert 'Optimization stopped early.' in text
    # the SIGHUP snapshot, and the one Solve writes after stopping (snapshot_after_train)
    assert len(assert_only_pairs()) == 2


def test_signal_effects_from_flags_on_a_real_run(bigdir):
    big_solver(bigdir, 'max_iter: 100000000\n')
    flags = ['-solver', 'solver.prototxt', '-sigint_effect', 'none', '-sighup_effect', 'stop']
    with open('log.txt', 'w') as log, train_process(*flags, stderr=log) as (proc, _):
        wait_for('log.txt', 'Starting Optimization', proc)
        proc.send_signal(signal.SIGINT)                # ignored
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(60) == 0
    assert 'Optimization stopped early.' in open('log.txt').read()
    assert len(assert_only_pairs()) == 1


# -- kill -9 during snapshots --------------------------------------------------------------------

def kill_during_snapshots(folder, kills, seed, h5=False):
    """Train with a snapshot every iteration and kill -9 at random times (seeded); after each next start,
    what the kill left is gone or completed. Returns how many kills left something to clean up."""
    rng = random.Random(seed)
    big_solver(folder, 'max_iter: 100000000\nsnapshot: 1\n' + ('snapshot_format: HDF5\n' if h5 else ''))
    ext = '.h5' if h5 else ''
    model, state = 'caffemodel' + ext, 'solverstate' + ext
    left = 0
    newest = None
    for round_ in range(kills + 1):
        pairs, debris = snapshot_files()
        lone = [i for i, kinds in pairs.items() if kinds == {model}]
        left += bool(debris or lone)
        log_path = 'log%d.txt' % round_
        resume = ['-snapshot', 'latest'] if newest is not None else []
        with open(log_path, 'w') as log, \
                train_process('-solver', 'solver.prototxt', *resume, stderr=log) as (proc, _):
            wait_for(log_path, 'Starting Optimization', proc)
            # the start removed the temporaries and completed the half-published pairs
            assert not any(os.path.exists('snaps/' + name) for name in debris), debris
            assert all(os.path.exists('snaps/big_iter_%d.%s' % (i, state)) for i in lone), lone
            if round_ == kills:
                proc.send_signal(signal.SIGINT)
                assert proc.wait(60) == 0
            else:
                wait_for(log_path, 'Snapshotting to', proc)
                time.sleep(rng.uniform(0, 0.15))
                proc.kill()
                proc.wait(60)
        if resume:
            assert 'Resuming from the newest complete snapshot: snaps/big_iter_%d.%s' % (newest, state) \
                in open(log_path).read()
        # the solverstate is published last: it has its caffemodel even before the next start
        pairs, _ = snapshot_files()
        assert all(model in kinds for kinds in pairs.values()), pairs
        complete = sorted(i for i, kinds in pairs.items() if kinds == {model, state})
        # the next start resumes from there, or from a pair whose journal it completes
        journals = [int(m.group(1)) for m in map(re.compile(r'big_iter_(\d+)\.snapshot-journal$').match,
                                                  os.listdir('snaps')) if m]
        newest = max(complete + journals, default=None)
        for i in complete[:-2]:                        # keep the disk small
            for kind in (model, state):
                os.remove('snaps/big_iter_%d.%s' % (i, kind))
    for i in assert_only_pairs(h5=h5):
        solver = get_solver('solver.prototxt')
        solver.restore('snaps/big_iter_%d.%s' % (i, state))
        assert solver.iter == i
    return left


def test_kill_9_during_snapshots(bigdir):
    print('kills that left temporaries or a lone caffemodel: %d of 5'
          % kill_during_snapshots(bigdir, kills=5, seed=17))


@pytest.mark.slow
def test_kill_9_during_snapshots_30_times(bigdir):
    print('kills that left temporaries or a lone caffemodel: %d of 30'
          % kill_during_snapshots(bigdir, kills=30, seed=1717))


@pytest.mark.slow
def test_kill_9_during_hdf5_snapshots_10_times(bigdir):
    print('kills that left temporaries or a lone caffemodel: %d of 10'
          % kill_during_snapshots(bigdir, kills=10, seed=99, h5=True))


# -- a full disk -----------------------------------------------------------------------------------

def error_line(stderr):
    last = stderr.strip().splitlines()[-1]
    assert last.startswith('caffe-py: error: '), stderr[-2000:]
    return last


@pytest.mark.parametrize('h5', [False, True])
def test_file_size_limit_names_the_snapshot_and_keeps_earlier_files(bigdir, h5):
    """RLIMIT_FSIZE makes every write past 256 KB fail (EFBIG), as a full disk fails it (ENOSPC)."""
    big_solver(bigdir, 'max_iter: 2\nsnapshot: 2\n' + ('snapshot_format: HDF5\n' if h5 else ''))
    with train_process('-solver', 'solver.prototxt', stderr=subprocess.PIPE) as (first, _):
        assert first.communicate(timeout=60)[1] and first.returncode == 0
    before = {name: open('snaps/' + name, 'rb').read() for name in os.listdir('snaps')}

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))
    with train_process('-solver', 'solver.prototxt', stderr=subprocess.PIPE,
                       preexec_fn=limit_file_size) as (again, _):
        stderr = again.communicate(timeout=60)[1]
    assert again.returncode == 1
    # h5py words the error its own way around the system's 'File too large'
    assert re.fullmatch(r'caffe-py: error: cannot write snapshot snaps/big_iter_2\.caffemodel%s: .*File too large.* '
                        r'\(nothing of it was kept; earlier snapshots are untouched\)' % ('\\.h5' if h5 else ''),
                        error_line(stderr))
    assert sorted(os.listdir('snaps')) == sorted(before)
    for name, data in before.items():
        assert open('snaps/' + name, 'rb').read() == data, name


# run inside a user and mount namespace, with snaps/ a 2.5 MB tmpfs: room for one snapshot pair
IN_TMPFS = '''
import json, os, subprocess, sys
run = subprocess.run([sys.executable, '-m', 'caffe_py', 'train', '-solver', 'solver.prototxt'],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
from caffe_py import formats
state = formats.read_solverstate('snaps/big_iter_2.solverstate')
weights = formats.read_net(state.learned_net, binary=True)
print(json.dumps({'rc': run.returncode, 'stderr': run.stderr, 'files': sorted(os.listdir('snaps')),
                  'iter': state.iter, 'weights': len(weights.layer[1].blobs[0].data)}))
'''


def test_disk_full_names_the_path_and_keeps_earlier_snapshots(bigdir):
    unshare = ['unshare', '--user', '--map-root-user', '--mount']
    probe = unshare + ['sh', '-c', 'mount -t tmpfs -o size=64k tmpfs "$0"', str(bigdir / 'snaps')]
    if not shutil.which('unshare') or subprocess.run(probe, capture_output=True).returncode:
        pytest.skip('cannot mount a small tmpfs here (no user and mount namespaces)')
    big_solver(bigdir, 'max_iter: 4\nsnapshot: 2\n')
    (bigdir / 'in_tmpfs.py').write_text(IN_TMPFS)
    result = subprocess.run(unshare + ['sh', '-c', 'mount -t tmpfs -o size=2560k tmpfs snaps && "$0" in_tmpfs.py',
                                       sys.executable], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out['rc'] == 1
    assert re.fullmatch(r'caffe-py: error: cannot write snapshot snaps/big_iter_4\.(caffemodel|solverstate): No '
                        r'space left on device \(nothing of it was kept; earlier snapshots are untouched\)',
                        error_line(out['stderr']))
    assert out['files'] == ['big_iter_2.caffemodel', 'big_iter_2.solverstate']
    assert (out['iter'], out['weights']) == (2, 512 * 512)


# -- NaN and inf -----------------------------------------------------------------------------------

def nan_net(data_filler, power_layer=True, lr_mult=1, weight_filler='type: "gaussian" std: 1'):
    """DummyData -> InnerProduct ip -> Power root (sqrt) -> EuclideanLoss.

    sqrt(x < 0) is NaN in the forward pass, sqrt'(0) is inf in the backward pass."""
    root = ('layer { name: "root" type: "Power" bottom: "ip" top: "root" power_param { power: 0.5 } }\n'
            if power_layer else '')
    return ('name: "nan"\n'
            'layer { name: "data" type: "DummyData" top: "data" top: "target"\n'
            '  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }\n'
            '    data_filler { %s } data_filler { type: "constant" value: 1 } } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" param { lr_mult: %g }\n'
            '  inner_product_param { num_output: 2 weight_filler { %s } } }\n'
            '%slayer { name: "loss" type: "EuclideanLoss" bottom: "%s" bottom: "target" top: "loss" }\n'
            % (data_filler, lr_mult, weight_filler, root, 'root' if power_layer else 'ip'))


# every ip output negative, whatever the random streams draw: sqrt is NaN at the first forward
NEGATIVE_ROOT = nan_net('type: "uniform" min: -2 max: -1', weight_filler='type: "constant" value: 1')


def nan_solver(folder, net, base_lr=0.01):
    with open(os.path.join(str(folder), 'net.prototxt'), 'w') as f:
        f.write(net)
    return big_solver(folder, 'max_iter: 3\nsnapshot_after_train: false\n', base_lr)


@pytest.mark.filterwarnings('ignore::RuntimeWarning')
@pytest.mark.parametrize('net, base_lr, message', [
    (NEGATIVE_ROOT, 0.01,
     'NaN or inf at iteration 0: layer root (Power) forward wrote top blob root data'),
    (nan_net('type: "constant" value: 0'), 0.01,
     'NaN or inf at iteration 0: layer root (Power) backward wrote bottom blob ip diff'),
    (nan_net('type: "gaussian" std: 1', power_layer=False, lr_mult=10), 3e38,
     'NaN or inf at iteration 0: layer ip (InnerProduct) update wrote param blob 0 data'),
])
def test_nan_check_names_iteration_layer_and_blob(bigdir, net, base_lr, message):
    nan_solver(bigdir, net, base_lr)
    solver = get_solver('solver.prototxt')
    solver.solve()                                      # Caffe's default: trains on
    assert solver.iter == 3
    solver = get_solver('solver.prototxt')
    solver.nan_check = True
    with pytest.raises(NonFiniteError) as info:
        solver.solve()
    assert str(info.value).startswith(message + ' (')


@pytest.mark.filterwarnings('ignore::RuntimeWarning')
def test_nan_check_flag_stops_the_cli_with_one_line(bigdir, capsys):
    nan_solver(bigdir, NEGATIVE_ROOT)
    assert cli.main(['train', '-solver', 'solver.prototxt']) == 0
    assert cli.main(['train', '-solver', 'solver.prototxt', '-nan_check']) == 1
    assert re.fullmatch(r'caffe-py: error: NaN or inf at iteration 0: layer root \(Power\) forward wrote top blob '
                        r'root data \(\d+ of 8 values; -nan_check\)', error_line(capsys.readouterr().err))
    assert os.listdir('snaps') == []


def test_nan_check_off_runs_the_plain_pass(bigdir, monkeypatch):
    from caffe_py.solvers import nan_check
    nan_solver(bigdir, nan_net('type: "gaussian" std: 1', power_layer=False))
    monkeypatch.setattr(nan_check, 'forward_backward', None)
    monkeypatch.setattr(nan_check, 'check_params', None)
    get_solver('solver.prototxt').solve()


def test_nan_check_names_weights_that_start_non_finite(bigdir):
    nan_solver(bigdir, nan_net('type: "gaussian" std: 1', power_layer=False))
    solver = get_solver('solver.prototxt')
    solver.net.params['ip'][1].data[1] = np.inf
    solver.nan_check = True
    with pytest.raises(NonFiniteError, match=r'^NaN or inf at iteration 0: layer ip \(InnerProduct\) starts with '
                                             r'param blob 1 data \(1 of 2 values; -nan_check\)$'):
        solver.step(1)


@pytest.mark.filterwarnings('ignore::RuntimeWarning')
@pytest.mark.skipif(fakecupy.compiler() is None, reason='the fake device emulates kernels with g++, not installed')
def test_nan_check_and_snapshot_pairs_in_gpu_mode(bigdir):
    """The same checks on device arrays (tests/fakecupy.py standing in for CuPy)."""
    with fakecupy.fake_gpu():
        nan_solver(bigdir, nan_net('type: "constant" value: 0'))
        solver = get_solver('solver.prototxt')
        solver.nan_check = True
        with pytest.raises(NonFiniteError, match='^NaN or inf at iteration 0: layer root \\(Power\\) backward wrote '
                                                 'bottom blob ip diff '):
            solver.step(1)
        nan_solver(bigdir, nan_net('type: "gaussian" std: 1', power_layer=False))
        solver = get_solver('solver.prototxt')
        solver.nan_check = True
        solver.step(2)
        solver.snapshot()
    assert assert_only_pairs() == [2]
    resumed = get_solver('solver.prototxt')
    resumed.restore_latest()
    np.testing.assert_array_equal(resumed.net.params['ip'][0].data, solver.net.params['ip'][0].data)
