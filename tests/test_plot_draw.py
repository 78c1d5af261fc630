"""caffe-py plot_log (log parsing, plots) and draw_net (DOT, pictures)."""
import json
import os

import pytest

from caffe_py import formats
from caffe_py.tools import cli, draw_net, plot_log
from conftest import REFERENCE, ROOT, need

SOLVERS = os.path.join(REFERENCE, 'solvers')


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.mark.parametrize('case', ['sgd_step', 'average_loss5', 'test_init_off', 'iter_size2'])
def test_parses_caffes_log_into_its_trajectory(case):
    folder = need(os.path.join(SOLVERS, case))
    log = plot_log.parse_log(os.path.join(folder, 'caffe.log'))
    expected = json.load(open(os.path.join(folder, 'trajectory.json')))
    assert [list(p) for p in log.train] == expected['train']
    assert [list(p) for p in log.lr] == expected['lr']
    tests = log.test.get(0, {})
    iterations = [i for i, _ in next(iter(tests.values()))] if tests else []
    got = [{'iter': it, 'outputs': {name: pts[k][1] for name, pts in tests.items()}}
           for k, it in enumerate(iterations)]
    assert got == expected['test']
    assert set(log.train_outputs) == {'loss'}


TINY_NET = '''
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 4 } shape { dim: 8 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
'''
TINY_SOLVER = '''
net: "net.prototxt"
test_iter: 2
test_interval: 3
base_lr: 0.1
lr_policy: "step"
gamma: 0.5
stepsize: 4
display: 2
max_iter: 6
snapshot_after_train: false
snapshot_prefix: "tiny"
random_seed: 3
solver_mode: CPU
'''


def test_parses_a_caffe_py_log(tmp_path, monkeypatch, capsys):
    (tmp_path / 'net.prototxt').write_text(TINY_NET)
    (tmp_path / 'solver.prototxt').write_text(TINY_SOLVER)
    monkeypatch.chdir(tmp_path)
    assert cli.main(['train', '-solver', 'solver.prototxt']) == 0
    text = capsys.readouterr().err
    log = plot_log.parse_log(text.splitlines())
    assert [i for i, _ in log.train] == [0, 2, 4, 6]
    assert [i for i, _ in log.lr] == [0, 2, 4]
    assert [v for _, v in log.lr] == [0.1, 0.1, 0.05]
    assert set(log.test) == {0}
    assert sorted(log.test[0]) == ['accuracy', 'loss']
    assert [i for i, _ in log.test[0]['accuracy']] == [0, 3, 6]
    assert [i for i, _ in log.train_outputs['loss']] == [0, 2, 4]
    (tmp_path / 'train.log').write_text(text)
    assert cli.main(['plot_log', 'train.log', 'series.csv']) == 0
    rows = (tmp_path / 'series.csv').read_text().splitlines()
    assert rows[0] == 'series,iteration,value'
    assert sum(r.startswith('test0/accuracy,') for r in rows) == 3


def test_parse_handles_several_test_nets_and_old_style_lines():
    lines = [
        'I0101 00:00:00.000000  1 solver.cpp:330] Iteration 0, Testing net (#0)',
        'I0101 00:00:00.000000  1 solver.cpp:397]     Test net output #0: accuracy = 0.5',
        'I0101 00:00:00.000000  1 solver.cpp:330] Iteration 0, Testing net (#1)',
        'I0101 00:00:00.000000  1 solver.cpp:397]     Test net output #0: accuracy = 0.25',
        'I0101 00:00:00.000000  1 solver.cpp:218] Iteration 0, loss = 2.5',
        'I0101 00:00:00.000000  1 solver.cpp:234]     Train net output #0: loss = 2.5 (* 1 = 2.5 loss)',
        'I0101 00:00:00.000000  1 sgd_solver.cpp:106] Iteration 0, lr = 1e-05',
        'I0101 00:00:00.000000  1 solver.cpp:218] Iteration 100 (12.5 iter/s, 8s/100 iters), loss = nan',
    ]
    log = plot_log.parse_log(lines)
    assert log.test == {0: {'accuracy': [(0, 0.5)]}, 1: {'accuracy': [(0, 0.25)]}}
    assert log.train[0] == (0, 2.5) and log.train[1][0] == 100
    assert log.lr == [(0, 1e-05)]


@pytest.mark.skipif(not _has_matplotlib(), reason='matplotlib is not installed (the plot extra)')
def test_plots_caffes_log_to_png(tmp_path):
    src = need(os.path.join(SOLVERS, 'sgd_step', 'caffe.log'))
    out = tmp_path / 'log.png'
    assert cli.main(['plot_log', src, str(out)]) == 0
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.fixture
def without_matplotlib(monkeypatch):
    """Importing matplotlib fails for the test."""
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith('matplotlib'):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, '__import__', no_matplotlib)


def test_plot_without_matplotlib_says_what_to_install(tmp_path, without_matplotlib, capsys):
    src = need(os.path.join(SOLVERS, 'sgd_step', 'caffe.log'))
    assert cli.main(['plot_log', src, str(tmp_path / 'x.png')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'matplotlib' in err[0] and 'caffe-py[plot]' in err[0]


NETS = ['models/bvlc_reference_caffenet/train_val.prototxt', 'models/bvlc_googlenet/train_val.prototxt',
        'models/lenet/lenet.prototxt', 'examples/finetune_style/train_val.prototxt']


@pytest.mark.parametrize('path', NETS)
def test_dot_has_every_layer_and_wires_bottoms_to_tops(path):
    param = formats.read_net(os.path.join(ROOT, path))
    graph = draw_net.Graph(param)
    dot = draw_net.to_dot(graph)
    assert dot.startswith('digraph') and dot.rstrip().endswith('}')
    for layer in param.layer:
        assert '"%s\\n(%s)' % (layer.name, layer.type) in dot, layer.name
    assert sum(n.startswith('layer') for n in graph.nodes) == len(param.layer)
    for i, layer in enumerate(param.layer):
        assert sum(dst == 'layer%d' % i for _, dst in graph.edges) == len(layer.bottom), layer.name
        for top in layer.top:
            if top not in layer.bottom:
                assert ('layer%d' % i, 'blob:' + top) in graph.edges


def test_in_place_layers_sit_on_the_blobs_path():
    param = formats.read_net(os.path.join(ROOT, 'models/bvlc_reference_caffenet/deploy.prototxt'))
    graph = draw_net.Graph(param)
    label = {n: v['lines'][0] for n, v in graph.nodes.items()}
    edges = {(label[a], label[b]) for a, b in graph.edges}
    assert ('conv1', 'relu1') in edges and ('relu1', 'pool1') in edges
    assert ('fc6', 'relu6') in edges and ('relu6', 'drop6') in edges and ('drop6', 'fc7') in edges
    assert sum(1 for v in graph.nodes.values() if v['lines'] == ['conv1']) == 1


def test_draw_net_cli_writes_dot_and_filters_phase(tmp_path):
    out = tmp_path / 'net.dot'
    assert cli.main(['draw_net', os.path.join(ROOT, NETS[0]), str(out), '-phase', 'TEST']) == 0
    dot = out.read_text()
    assert 'batch 50' in dot and 'batch 256' not in dot and 'accuracy\\n(Accuracy)' in dot
    assert cli.main(['draw_net', os.path.join(ROOT, NETS[0]), str(tmp_path / 'x.bmp')]) == 1


def test_pycaffe_draw_module_filters_phase_and_returns_bytes(tmp_path):
    import caffe_py as caffe
    from caffe_py import draw
    net_param = formats.read_net(os.path.join(ROOT, NETS[0]))
    draw.draw_net_to_file(net_param, str(tmp_path / 'train.dot'), phase=caffe.TRAIN)
    train = (tmp_path / 'train.dot').read_text()
    assert 'batch 256' in train and 'batch 50' not in train
    text = draw.draw_net(net_param, 'TB', ext='dot').decode()
    assert 'batch 256' in text and 'batch 50' in text and 'rankdir=TB' in text.replace(' ', '')
    assert len(net_param.layer) == len(formats.read_net(os.path.join(ROOT, NETS[0])).layer)   # not filtered in place


@pytest.mark.skipif(not _has_matplotlib(), reason='matplotlib is not installed (the plot extra)')
def test_draw_net_renders_png_with_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setattr(draw_net.shutil, 'which', lambda name: None)
    out = tmp_path / 'net.png'
    assert cli.main(['draw_net', os.path.join(ROOT, 'models/lenet/lenet_train_test.prototxt'), str(out),
                     '-rankdir', 'TB']) == 0
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_draw_net_without_renderers_says_what_to_install(tmp_path, monkeypatch, without_matplotlib, capsys):
    monkeypatch.setattr(draw_net.shutil, 'which', lambda name: None)
    assert cli.main(['draw_net', os.path.join(ROOT, NETS[2]), str(tmp_path / 'x.svg')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'dot' in err[0] and 'matplotlib' in err[0]


@pytest.mark.skipif(not draw_net.shutil.which('dot'), reason="Graphviz's dot is not installed")
def test_draw_net_renders_svg_with_graphviz(tmp_path):
    out = tmp_path / 'net.svg'
    assert cli.main(['draw_net', os.path.join(ROOT, NETS[1]), str(out)]) == 0
    svg = out.read_text()
    assert '<svg' in svg and 'inception_5b/output' in svg
