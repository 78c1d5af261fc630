"""examples/finetune_style: the seed's finetuning recipe in miniature (files, data, arithmetic, a short run)."""
import os
import re

import cv2
import numpy as np
import pytest

import caffe_py
from caffe_py import formats
from caffe_py.tools import cli
from conftest import ROOT

EXAMPLE = os.path.join(ROOT, 'examples', 'finetune_style')
PRETRAINED = os.path.join(ROOT, 'models', 'mini_caffenet', 'mini_caffenet_pretrained.caffemodel')
STYLES = [s.strip() for s in open(os.path.join(EXAMPLE, 'style_names.txt'))]


def read_list(split):
    pairs = []
    for line in open(os.path.join(EXAMPLE, split + '.txt')):
        path, label = line.rsplit(None, 1)
        pairs.append((path, int(label)))
    return pairs


def data_layers(phase):
    net = formats.read_net(os.path.join(EXAMPLE, 'train_val.prototxt'))
    return [l for l in net.layer if l.type == 'ImageData' and l.include[0].phase == phase]


def test_prototxts_parse():
    for name in ('train_val.prototxt', 'deploy.prototxt'):
        formats.read_net(os.path.join(EXAMPLE, name))
    for name in ('solver.prototxt', 'solver_scratch.prototxt'):
        solver = formats.read_solver(os.path.join(EXAMPLE, name))
        assert solver.net == 'examples/finetune_style/train_val.prototxt'
        assert solver.snapshot_prefix.startswith('examples/finetune_style/')


@pytest.mark.parametrize('split', ['train', 'test'])
def test_image_lists_exist_are_shuffled_and_cover_every_style(split):
    pairs = read_list(split)
    for path, label in pairs:
        assert os.path.isfile(os.path.join(EXAMPLE, path)), path
        assert 0 <= label < len(STYLES)
        assert STYLES[label] in path
    labels = [label for _, label in pairs]
    assert set(labels) == set(range(len(STYLES)))
    assert len(set(np.bincount(labels))) == 1                # balanced
    changes = sum(a != b for a, b in zip(labels, labels[1:]))
    assert changes > 0.6 * len(labels)                       # shuffled, not grouped by class


def test_train_and_test_sets_are_disjoint_and_images_are_small():
    train = {p for p, _ in read_list('train')}
    test = {p for p, _ in read_list('test')}
    assert not train & test
    image = cv2.imread(os.path.join(EXAMPLE, next(iter(train))))
    assert image.shape == (40, 40, 3)
    total = sum(os.path.getsize(os.path.join(EXAMPLE, p)) for p in train | test)
    assert total < 5 << 20


def test_image_data_layers_read_the_lists_from_the_repository_root():
    for phase, split in ((caffe_py.TRAIN, 'train'), (caffe_py.TEST, 'test')):
        (layer,) = data_layers(phase)
        p = layer.image_data_param
        assert p.source == 'examples/finetune_style/%s.txt' % split
        assert p.root_folder == 'examples/finetune_style/'
        t = layer.transform_param
        assert t.crop_size == 32 and list(t.mean_value) and t.mirror == (phase == caffe_py.TRAIN)


def test_solver_arithmetic_follows_the_set_sizes():
    """test_iter x test batch covers the test set once; tests and snapshots fall on whole epochs."""
    n_train, n_test = len(read_list('train')), len(read_list('test'))
    train_batch = data_layers(caffe_py.TRAIN)[0].image_data_param.batch_size
    test_batch = data_layers(caffe_py.TEST)[0].image_data_param.batch_size
    epoch = n_train // train_batch
    for name in ('solver.prototxt', 'solver_scratch.prototxt'):
        solver = formats.read_solver(os.path.join(EXAMPLE, name))
        assert solver.test_iter[0] * test_batch == n_test
        assert solver.test_interval % epoch == 0 and solver.snapshot % epoch == 0
        assert solver.max_iter % solver.test_interval == 0
        text = open(os.path.join(EXAMPLE, name)).read()
        assert re.search(r'%d test images\s*/ test batch %d' % (n_test, test_batch), text)


def test_finetune_net_renames_fc8_and_raises_its_rates():
    net = formats.read_net(os.path.join(EXAMPLE, 'train_val.prototxt'))
    base = formats.read_net(os.path.join(ROOT, 'models', 'mini_caffenet', 'train_val.prototxt'))
    learned = [l for l in net.layer if l.param]
    assert [l.name for l in learned] == [l.name.replace('fc8', 'fc8_style') for l in base.layer if l.param]
    for layer in learned:
        mults = [(p.lr_mult, p.decay_mult) for p in layer.param]
        assert mults == ([(10, 1), (20, 0)] if layer.name == 'fc8_style' else [(1, 1), (2, 0)]), layer.name
    fc8 = next(l for l in net.layer if l.name == 'fc8_style')
    assert fc8.inner_product_param.num_output == len(STYLES)
    same = [(l.type, list(l.bottom)) for l in net.layer if l.type != 'ImageData']
    assert same == [(l.type, [b.replace('fc8', 'fc8_style') for b in l.bottom])
                    for l in base.layer if l.type != 'ImageData']


def test_pretrained_weights_fill_every_layer_but_the_new_one():
    net = caffe_py.Net(os.path.join(EXAMPLE, 'deploy.prototxt'), caffe_py.TEST, weights=PRETRAINED)
    trained = {l.name for l in formats.read_net(PRETRAINED, binary=True).layer if l.blobs}
    assert set(net.params) - trained == {'fc8_style'}


def test_generator_is_deterministic(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location('make_styles', os.path.join(EXAMPLE, 'make_styles.py'))
    make_styles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_styles)
    assert make_styles.STYLES == STYLES
    make_styles.main(['--out', str(tmp_path)])
    for split in ('train', 'test'):
        assert (tmp_path / (split + '.txt')).read_text() == open(os.path.join(EXAMPLE, split + '.txt')).read()
    for path, _ in read_list('test')[:10]:
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / path)), cv2.imread(os.path.join(EXAMPLE, path)))


def _short_solver(tmp_path, name, max_iter):
    solver = formats.read_solver(os.path.join(EXAMPLE, name))
    solver.max_iter = max_iter
    solver.test_interval = max_iter
    solver.test_iter[0] = 1
    solver.display = 1
    solver.snapshot = 0
    solver.snapshot_prefix = str(tmp_path / 'short')
    path = tmp_path / name
    formats.write_solver(str(path), solver)
    return str(path)


def test_a_few_finetuning_iterations_from_the_repository_root(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)      # Caffe resolves the paths in prototxts against the working directory
    solver = _short_solver(tmp_path, 'solver.prototxt', 4)
    assert cli.main(['train', '-solver', solver, '-weights', os.path.relpath(PRETRAINED, ROOT)]) == 0
    log = capsys.readouterr().err
    assert 'Finetuning from models/mini_caffenet/mini_caffenet_pretrained.caffemodel' in log
    assert 'Ignoring source layer fc8' in log      # the renamed layer starts from its fillers
    snapshot = tmp_path / 'short_iter_4.caffemodel'
    assert snapshot.exists()
    tuned = caffe_py.Net(os.path.join(EXAMPLE, 'deploy.prototxt'), caffe_py.TEST, weights=str(snapshot))
    start = caffe_py.Net(os.path.join(EXAMPLE, 'deploy.prototxt'), caffe_py.TEST, weights=PRETRAINED)
    # 4 small steps move conv1 a little away from the pretrained weights
    diff = np.abs(tuned.params['conv1'][0].data - start.params['conv1'][0].data).max()
    assert 0 < diff < 0.05
