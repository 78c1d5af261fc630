"""`caffe-py train` against real `caffe train` runs (../shared/reference/solvers).

Each case is copied to a temporary folder (the reference folder is read-only)
and trained there exactly as Caffe was: `train -solver solver.prototxt
-weights init.caffemodel`. The log must show Caffe's sequence of display /
test / snapshot / done events with its losses, rates and test outputs; the
snapshots must carry Caffe's names and fields, and the weights Caffe's values.
"""
import json
import os
import re
import shutil
import stat

import numpy as np
import pytest

from caffe_py import formats
from caffe_py.tools import cli
from conftest import REFERENCE, need
from harness import captured_log_text

SOLVERS = os.path.join(REFERENCE, 'solvers')
CASES = sorted(os.listdir(SOLVERS)) if os.path.isdir(SOLVERS) else ['(reference absent)']
RTOL = 1e-3


def case_dir(case):
    return need(os.path.join(SOLVERS, case))


def copy_case(case, tmp_path, with_snapshots):
    """A writable copy of the case folder; snap/ is emptied unless `with_snapshots`."""
    target = tmp_path / case
    ignore = None if with_snapshots else (lambda folder, names: names if folder.endswith('snap') else [])
    shutil.copytree(case_dir(case), target, ignore=ignore)
    for folder, dirs, files in os.walk(target):
        for name in dirs + files:
            path = os.path.join(folder, name)
            os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)
    os.chmod(target, os.stat(target).st_mode | stat.S_IWUSR)
    return target


def train(folder, *extra):
    """Run `train` in `folder` (the working directory is restored after); returns the log text."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with captured_log_text() as stream:
            assert cli.main(['train', '-solver', 'solver.prototxt'] + list(extra)) == 0
    finally:
        os.chdir(cwd)
    return stream.getvalue()


EVENT_PATTERNS = [
    ('display', re.compile(r'Iteration (\d+) \(\S+ iter/s, \S+s/\d+ iters\), loss = (\S+)$')),
    ('display', re.compile(r'Iteration (\d+), loss = (\S+)$')),
    ('lr', re.compile(r'Iteration (\d+), lr = (\S+)$')),
    ('test', re.compile(r'Iteration (\d+), Testing net \(#\d+\)$')),
    ('output', re.compile(r'    Test net output #\d+: (\S+) = (\S+)')),
    ('snapshot', re.compile(r'Snapshotting to (?:binary proto|HDF5) file (\S+)$')),
    ('done', re.compile(r'Optimization Done\.$')),
]


def trajectory(text):
    """The log as trajectory.json describes Caffe's: train, lr, test and events."""
    result = {'train': [], 'lr': [], 'test': [], 'events': []}
    for line in text.splitlines():
        if not re.match(r'[IWEF]\d{4} ', line) or '] ' not in line:
            continue
        message = line.split('] ', 1)[1]
        for kind, pattern in EVENT_PATTERNS:
            match = pattern.match(message)
            if not match:
                continue
            if kind == 'display':
                result['train'].append([int(match.group(1)), float(match.group(2))])
                result['events'].append(['display', int(match.group(1))])
            elif kind == 'lr':
                result['lr'].append([int(match.group(1)), float(match.group(2))])
            elif kind == 'test':
                result['test'].append({'iter': int(match.group(1)), 'outputs': {}})
                result['events'].append(['test', int(match.group(1))])
            elif kind == 'output':
                result['test'][-1]['outputs'][match.group(1)] = float(match.group(2))
            elif kind == 'snapshot':
                result['events'].append(['snapshot', match.group(1)])
            else:
                result['events'].append(['done'])
            break
    return result


def assert_series(ours, caffe, what):
    assert [it for it, _ in ours] == [it for it, _ in caffe], what + ': iterations differ'
    for (it, value), (_, expected) in zip(ours, caffe):
        assert value == pytest.approx(expected, rel=RTOL, abs=1e-7), '%s at iteration %d' % (what, it)


def snapshot_weights(path):
    net = formats.read_net(path)
    return {'%s/%d' % (layer.name, i): formats.blob_to_array(blob)
            for layer in net.layer for i, blob in enumerate(layer.blobs)}


def assert_final_weights(folder, events, case):
    last = [e[1] for e in events if e[0] == 'snapshot'][-1]
    ours = snapshot_weights(os.path.join(folder, last))
    final = np.load(os.path.join(case_dir(case), 'final.npz'))
    assert sorted(ours) == sorted(final.files)
    for key in final.files:
        np.testing.assert_allclose(ours[key], final[key], rtol=1e-4, atol=1e-4, err_msg=key)


@pytest.fixture(scope='module', params=CASES)
def trained(request, tmp_path_factory):
    """(case, folder, our trajectory): one `train -weights init.caffemodel` run per case."""
    case = request.param
    folder = copy_case(case, tmp_path_factory.mktemp('solver'), with_snapshots=False)
    return case, folder, trajectory(train(folder, '-weights', 'init.caffemodel'))


def test_train_follows_caffe(trained):
    case, folder, ours = trained
    with open(os.path.join(case_dir(case), 'trajectory.json')) as f:
        caffe = json.load(f)
    assert ours['events'] == caffe['events']
    assert_series(ours['train'], caffe['train'], 'displayed loss')
    assert_series(ours['lr'], caffe['lr'], 'lr')
    assert [t['iter'] for t in ours['test']] == [t['iter'] for t in caffe['test']]
    for mine, theirs in zip(ours['test'], caffe['test']):
        assert list(mine['outputs']) == list(theirs['outputs'])
        for name, value in theirs['outputs'].items():
            assert mine['outputs'][name] == pytest.approx(value, rel=RTOL, abs=1e-7), \
                'test output %s at iteration %d' % (name, mine['iter'])


def test_snapshot_names_and_final_weights(trained):
    case, folder, ours = trained
    with open(os.path.join(case_dir(case), 'snapshots.txt')) as f:
        names = f.read().split()
    assert sorted(os.listdir(folder / 'snap')) == sorted(names)
    assert_final_weights(folder, ours['events'], case)


def test_snapshot_fields_match_caffe(trained):
    case, folder, _ = trained
    with open(os.path.join(case_dir(case), 'snapshots.txt')) as f:
        names = f.read().split()
    for name in sorted(names, key=lambda n: n.endswith('.caffemodel')):   # solver states first
        compare_snapshot(folder / 'snap' / name, os.path.join(case_dir(case), 'snap', name))


def compare_snapshot(ours, caffe):
    """Our snapshot file parses into the fields Caffe's holds, with the same shapes (and close values)."""
    if str(ours).endswith('.caffemodel'):
        mine, theirs = formats.read_net(ours), formats.read_net(caffe)
        assert [(l.name, l.type) for l in mine.layer] == [(l.name, l.type) for l in theirs.layer]
        for a, b in zip(mine.layer, theirs.layer):
            assert [formats.blob_shape(x) for x in a.blobs] == [formats.blob_shape(x) for x in b.blobs]
            a.ClearField('blobs')
            b.ClearField('blobs')
            assert a == b, 'layer %s of %s' % (a.name, ours)
        mine.ClearField('layer')
        theirs.ClearField('layer')
        assert mine == theirs
        return
    mine, theirs = formats.read_solverstate(ours), formats.read_solverstate(caffe)
    assert (mine.iter, mine.current_step, mine.learned_net) == \
        (theirs.iter, theirs.current_step, theirs.learned_net)
    assert len(mine.history) == len(theirs.history)
    for a, b in zip(mine.history, theirs.history):
        assert formats.blob_shape(a) == formats.blob_shape(b)
        np.testing.assert_allclose(formats.blob_to_array(a), formats.blob_to_array(b), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize('case', CASES)
def test_resume_from_caffe_solverstate(case, tmp_path):
    folder = copy_case(case, tmp_path, with_snapshots=True)
    state = [name for name in os.listdir(folder / 'snap') if name.endswith('_iter_20.solverstate')]
    if not state:
        pytest.skip('this case has no iteration-20 solver state')
    ours = trajectory(train(folder, '-snapshot', 'snap/' + state[0]))
    assert ours['events'][0] == ['test', 20] or ours['events'][0] == ['display', 20]
    assert_final_weights(folder, ours['events'], case)
