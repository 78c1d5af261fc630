"""The train / test / time / device_query commands, run in-process through the dispatcher,
and the training log as Caffe's tools/extra/parse_log.py reads it."""
import os
import re
import signal

import numpy as np
import pytest

import caffe_py as caffe
from caffe_py import formats
from caffe_py.tools import cli
from caffe_py.tools.common import SignalHandler
from test_solvers import lines, make_classifier, write_solver


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_classifier(str(tmp_path))
    return tmp_path


def run(*argv):
    return cli.main([str(a) for a in argv])


def train_ok(*argv):
    assert run('train', *argv) == 0


def error_of(capsys, *argv):
    """The one error line of a failing command."""
    assert run(*argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith('caffe-py: error: ')
    return err[-1][len('caffe-py: error: '):]


# -- parse_log.py's view of the log (its regexes, re-implemented here) ---------------------------

ITERATION = re.compile(r'Iteration (\d+)')
TRAIN_OUTPUT = re.compile(r'Train net output #(\d+): (\S+) = ([\.\deE+-]+)')
TEST_OUTPUT = re.compile(r'Test net output #(\d+): (\S+) = ([\.\deE+-]+)')
LEARNING_RATE = re.compile(r'lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)')


def parse_log(text):
    """(train rows, test rows) as parse_log.py builds them: one row per iteration with outputs."""
    iteration, rate = -1, float('nan')
    rows = {'train': [], 'test': []}
    start = None
    for line in text.splitlines():
        match = ITERATION.search(line)
        if match:
            iteration = int(match.group(1))
        if start is None and 'Solving' in line:
            start = _seconds(line)
        if iteration == -1:
            continue
        _seconds(line)         # parse_log.py reads every line's glog time stamp
        match = LEARNING_RATE.search(line)
        if match:
            rate = float(match.group(1))
        for kind, regex in (('train', TRAIN_OUTPUT), ('test', TEST_OUTPUT)):
            match = regex.search(line)
            if match:
                table = rows[kind]
                if not table or table[-1]['NumIters'] != iteration:
                    table.append({'NumIters': iteration, 'LearningRate': rate})
                table[-1][match.group(2)] = float(match.group(3))
    assert start is not None, 'no "Solving" line: extract_seconds.py finds no start time'
    return rows['train'], rows['test']


def _seconds(line):
    """extract_seconds.py's reading of a glog prefix: I<mmdd> <hh:mm:ss.micro> ..."""
    head, stamp = line.split()[:2]
    month, day = int(head[1:3]), int(head[3:])
    assert 1 <= month <= 12 and 1 <= day <= 31, line
    h, m, s = (int(x) for x in stamp[:stamp.rfind('.')].split(':'))
    return ((h * 60 + m) * 60 + s) + int(stamp[stamp.rfind('.') + 1:]) / 1e6


def test_training_log_reads_as_parse_log_expects(workdir, captured_log):
    write_solver(workdir, 'display: 2\nmax_iter: 6\ntest_iter: 2\ntest_interval: 3\nlr_policy: "step"\n'
                          'stepsize: 4\ngamma: 0.5\n')
    train_ok('-solver', 'solver.prototxt')
    train, test = parse_log(captured_log.getvalue())
    assert [row['NumIters'] for row in train] == [0, 2, 4]
    # the lr of a row is the last one printed before its outputs (parse_log.py's known lag)
    assert [row['LearningRate'] for row in train[1:]] == [0.1, 0.1]
    assert [row['LearningRate'] for row in test[1:]] == [0.1, 0.05]
    assert all(set(row) == {'NumIters', 'LearningRate', 'loss'} for row in train)
    assert [row['NumIters'] for row in test] == [0, 3, 6]
    assert all(set(row) == {'NumIters', 'LearningRate', 'accuracy', 'loss'} for row in test)
    text = captured_log.getvalue()
    for expected in ('Use CPU.', 'Solving small', 'Learning Rate Policy: step', 'Starting Optimization',
                     'Iteration 6, loss = ', 'Snapshotting to binary proto file solver_iter_6.caffemodel',
                     'Snapshotting solver state to binary proto file solver_iter_6.solverstate'):
        assert expected in text
    assert lines(captured_log, 'Optimization Done.') == ['Optimization Done.'] * 2
    # glog prefix: severity, date, time, thread id, file:line of the caller
    assert re.match(r'I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ solver\.py:\d+\] Solving small$',
                    [x for x in text.splitlines() if 'Solving' in x][0])


# -- train ----------------------------------------------------------------------------------

def test_train_resume_from_snapshot_matches_straight_run(workdir):
    write_solver(workdir, 'display: 0\nmax_iter: 8\nsnapshot: 4\nsnapshot_prefix: "a"\n')
    train_ok('-solver', 'solver.prototxt')
    straight = formats.read_net('a_iter_8.caffemodel')
    write_solver(workdir, 'display: 0\nmax_iter: 8\nsnapshot: 4\nsnapshot_prefix: "b"\n')
    train_ok('-solver', 'solver.prototxt', '-snapshot', 'a_iter_4.solverstate')
    resumed = formats.read_net('b_iter_8.caffemodel')
    assert not os.path.exists('b_iter_4.caffemodel')
    for x, y in zip(straight.layer, resumed.layer):
        for bx, by in zip(x.blobs, y.blobs):
            np.testing.assert_array_equal(formats.blob_to_array(bx), formats.blob_to_array(by))


def test_finetune_recipe(workdir, captured_log):
    """Pretrain, then finetune a net whose last layer is renamed (so it starts fresh) at 10x its rate."""
    write_solver(workdir, 'display: 0\nmax_iter: 20\nsnapshot_prefix: "pre"\n')
    train_ok('-solver', 'solver.prototxt')
    pretrained = caffe.Net('net.prototxt', caffe.TEST, weights='pre_iter_20.caffemodel')

    make_classifier(str(workdir), last='ip2_ft', lr_w=10, lr_b=20, name='ft.prototxt', seed=1)
    ft_solver = ('net: "ft.prototxt"\nbase_lr: 0.01\nmomentum: 0.9\nlr_policy: "fixed"\n'
                 'random_seed: 7\nsnapshot_prefix: "ft"\ndisplay: 1\n')
    with open('ft_solver.prototxt', 'w') as f:
        f.write(ft_solver + 'max_iter: 0\n')
    train_ok('-solver', 'ft_solver.prototxt', '-weights', 'pre_iter_20.caffemodel')
    assert 'Finetuning from pre_iter_20.caffemodel' in captured_log.getvalue()
    assert 'Ignoring source layer ip2' in captured_log.getvalue()
    start = caffe.Net('ft.prototxt', caffe.TEST, weights='ft_iter_0.caffemodel')
    for a, b in zip(start.params['ip1'], pretrained.params['ip1']):
        np.testing.assert_array_equal(a.data, b.data)
    caffe.set_random_seed(7)
    fresh = caffe.Net('ft.prototxt', caffe.TRAIN)
    for a, b in zip(start.params['ip2_ft'], fresh.params['ip2_ft']):
        np.testing.assert_array_equal(a.data, b.data)
    assert not np.allclose(start.params['ip2_ft'][0].data, pretrained.params['ip2'][0].data)

    with open('ft_solver.prototxt', 'w') as f:
        f.write(ft_solver + 'max_iter: 24\n')
    captured_log.truncate(0)
    train_ok('-solver', 'ft_solver.prototxt', '-weights', 'pre_iter_20.caffemodel')
    losses = [float(x.rsplit('= ', 1)[1]) for x in lines(captured_log, 'iter/s')]
    assert len(losses) == 24 and np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
    solver = caffe.solvers.get_solver('ft_solver.prototxt')
    assert solver.net.params_lr == [1, 2, 10, 20]


def test_train_on_signal(workdir, captured_log):
    """SIGHUP (default: snapshot) and SIGINT (-sigint_effect stop) raised by a layer mid-training."""
    with open('net.prototxt') as f:
        net = f.read()
    with open('net.prototxt', 'w') as f:
        f.write(net + 'layer { name: "signal" type: "Python" bottom: "ip2" include { phase: TRAIN }\n'
                      '  python_param { module: "test_train_cli" layer: "SignalLayer" '
                      'param_str: "3:SIGHUP,6:SIGINT" } }\n')
    write_solver(workdir, 'display: 0\nmax_iter: 20\nsnapshot_prefix: "sig"\n')
    train_ok('-solver', 'solver.prototxt', '-sigint_effect', 'stop')
    assert sorted(f for f in os.listdir('.') if f.startswith('sig_')) == ['sig_iter_3.caffemodel', 'sig_iter_3.solverstate',
                                            'sig_iter_6.caffemodel', 'sig_iter_6.solverstate']
    assert 'Optimization stopped early.' in captured_log.getvalue()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class SignalLayer(caffe.Layer):
    """Sends the process a signal during given forward passes (param_str 'n:SIGNAME,...', 1-based)."""

    def setup(self, bottom, top):
        self.plan = {int(k): getattr(signal, v) for k, v in
                     (item.split(':') for item in self.param_str.split(','))}
        self.calls = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        self.calls += 1
        if self.calls in self.plan:
            os.kill(os.getpid(), self.plan[self.calls])

    def backward(self, top, propagate_down, bottom):
        pass


def test_signal_handler_consumes_each_signal():
    with SignalHandler('stop', 'snapshot') as handler:
        assert handler() == 'none'
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGINT)
        assert handler() == 'snapshot'
        assert handler() == 'stop'
        assert handler() == 'none'
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_train_level_and_stages(workdir, captured_log):
    with open('net.prototxt') as f:
        net = f.read()
    with open('net.prototxt', 'w') as f:
        f.write(net + 'layer { name: "quiet" type: "Silence" bottom: "label" '
                      'include { phase: TRAIN stage: "b" min_level: 2 } }\n')
    write_solver(workdir, 'display: 0\nmax_iter: 1\n')
    train_ok('-solver', 'solver.prototxt', '-stage', 'a,b', '-level', '1')
    assert 'Creating Layer quiet' not in captured_log.getvalue()
    train_ok('-solver', 'solver.prototxt', '-stage', 'a,b', '-level', '2')
    assert len(lines(captured_log, 'Creating Layer quiet')) == 1


def test_train_errors(workdir, capsys):
    write_solver(workdir, 'max_iter: 1\n')
    assert error_of(capsys, 'train') == 'Need a solver definition to train (-solver).'
    assert error_of(capsys, 'train', '-solver', 'solver.prototxt', '-weights', 'a', '-snapshot', 'b') == \
        'Give a snapshot to resume training or weights to finetune but not both.'
    assert error_of(capsys, 'train', '-solver', 'nope.prototxt') == \
        'file not found (named by -solver): nope.prototxt'
    assert error_of(capsys, 'train', '-solver', 'solver.prototxt', '-weights', 'w.caffemodel') == \
        'file not found (named by -weights): w.caffemodel'
    assert error_of(capsys, 'train', '-solver', 'solver.prototxt', '-snapshot', 's.solverstate') == \
        'file not found (named by -snapshot): s.solverstate'
    assert 'Invalid signal effect "later"' in error_of(capsys, 'train', '-solver', 'solver.prototxt',
                                                        '-sigint_effect', 'later')
    assert "unknown command line flag 'solvr'" in error_of(capsys, 'train', '-solvr', 'x')
    assert 'unexpected argument' in error_of(capsys, 'train', 'solver.prototxt')
    write_solver(workdir, 'max_iter: 1\nnet: "other.prototxt"\n')
    assert error_of(capsys, 'train', '-solver', 'solver.prototxt') == \
        "file not found (named by the solver's net field): other.prototxt"


def test_gpu_requests_fail_clearly_without_cupy(workdir, capsys):
    try:
        import cupy  # noqa: F401
        pytest.skip('CuPy is installed')
    except ImportError:
        pass
    write_solver(workdir, 'max_iter: 1\nsolver_mode: GPU\n')
    assert 'CuPy' in error_of(capsys, 'train', '-solver', 'solver.prototxt')
    write_solver(workdir, 'max_iter: 1\n')
    assert 'CuPy' in error_of(capsys, 'train', '-solver', 'solver.prototxt', '-gpu', '0')
    assert 'CuPy' in error_of(capsys, 'device_query', '-gpu', '0')
    assert '-gpu' in error_of(capsys, 'device_query')
    caffe.set_mode_cpu()


def test_device_query_reads_what_cuda_13_dropped_from_the_properties(captured_log):
    import fakecupy
    with fakecupy.fake_gpu():
        assert run('device_query', '-gpu', '0') == 0
    printed = dict(line.split(':', 1) for line in lines(captured_log, '') if ':' in line)
    assert printed['Maximum memory pitch'].strip() == str(1 << 31)
    assert printed['Concurrent copy and execution'].strip() == 'Yes'
    assert printed['Kernel execution timeout'].strip() == 'No'
    assert printed['Name'].strip() == 'caffe-py fake device (NumPy)'


# -- test, time ------------------------------------------------------------------------------

def test_test_command(workdir, captured_log):
    write_solver(workdir, 'display: 0\nmax_iter: 4\nsnapshot_prefix: "t"\n')
    train_ok('-solver', 'solver.prototxt')
    assert run('test', '-model', 'net.prototxt', '-weights', 't_iter_4.caffemodel', '-iterations', 3) == 0
    batches = lines(captured_log, 'Batch ')
    assert [b.split(' = ')[0] for b in batches] == ['Batch %d, %s' % (i, name) for i in range(3)
                                                    for name in ('accuracy', 'loss')]
    values = {name: np.mean([float(b.split(' = ')[1]) for b in batches if name in b])
              for name in ('accuracy', 'loss')}
    summary = [x for x in lines(captured_log, ' = ') if not x.startswith('Batch')][-2:]
    assert summary[0] == 'accuracy = %s' % caffe.log.fmt(np.float32(values['accuracy']))
    loss = float(summary[1].split(' = ')[1].split(' ')[0])
    assert loss == pytest.approx(values['loss'], rel=1e-5)
    assert summary[1].endswith(' loss)') and '(* 1 = ' in summary[1]
    assert 'Running for 3 iterations.' in captured_log.getvalue()


def test_test_command_errors(workdir, capsys):
    assert error_of(capsys, 'test', '-weights', 'x') == 'Need a model definition to score (-model).'
    assert error_of(capsys, 'test', '-model', 'net.prototxt') == 'Need model weights to score (-weights).'
    assert error_of(capsys, 'test', '-model', 'net.prototxt', '-weights', 'x.caffemodel') == \
        'file not found (named by -weights): x.caffemodel'
    assert 'phase must be "TRAIN" or "TEST"' in error_of(capsys, 'test', '-model', 'net.prototxt',
                                                          '-weights', 'x', '-phase', 'VAL')


def test_time_command(workdir, captured_log):
    assert run('time', '-model', 'net.prototxt', '-iterations', 2) == 0
    text = lines(captured_log, '')
    for expected in ('Performing Forward', 'Performing Backward', '*** Benchmark begins ***',
                     'Testing for 2 iterations.', 'Average time per layer: ', '*** Benchmark ends ***'):
        assert expected in text
    assert len([x for x in text if re.match(r'Iteration: \d forward-backward time: [\d.e+-]+ ms\.$', x)]) == 2
    assert any(re.match(r'^       ip1\tforward: [\d.e+-]+ ms\.$', x) for x in text)
    assert any(re.match(r'^      data\tbackward: [\d.e+-]+ ms\.$', x) for x in text)
    for what in ('Average Forward pass', 'Average Backward pass', 'Average Forward-Backward', 'Total Time'):
        assert any(re.match(r'^%s: [\d.e+-]+ ms\.$' % what, x) for x in text), what


def test_help(capsys):
    for command in ('train', 'test', 'time', 'device_query'):
        assert run(command, '--help') == 0
        assert '-gpu' in capsys.readouterr().out
