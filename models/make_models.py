"""Write the net definitions under models/ and examples/finetune_style/ with caffe_py.net_spec.

    python models/make_models.py            # (re)write every net prototxt
    python models/make_models.py --check    # exit 1 if a committed file differs from what this writes

The classic nets have the layer names, shapes, fillers and learning-rate
multipliers that Caffe users know; data sources are relative paths as in
Caffe's own files (they are not shipped). Solver files are written by hand
beside the nets.
"""
import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from caffe_py.formats import to_text  # noqa: E402
from caffe_py.net_spec import NetSpec, layers as L  # noqa: E402

TRAIN = dict(phase='TRAIN')
TEST = dict(phase='TEST')
LEARN = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
LEARN_FAST = [dict(lr_mult=10, decay_mult=1), dict(lr_mult=20, decay_mult=0)]


def gaussian(std):
    return dict(type='gaussian', std=std)


def constant(value):
    return dict(type='constant', value=value)


class Builder:
    """Adds layers to a NetSpec; in deploy mode fillers and lr multipliers are left out, as in Caffe's deploy files."""

    def __init__(self, deploy, param=LEARN):
        self.n = NetSpec()
        self.deploy = deploy
        self.param = param

    def _learned(self, kwargs, weight, bias, param):
        if not self.deploy:
            if param:
                kwargs['param'] = param
            kwargs['weight_filler'] = weight
            if bias is not None:
                kwargs['bias_filler'] = bias
        return kwargs

    def conv(self, name, bottom, num_output, kernel_size, stride=1, pad=0, group=1,
             weight=None, bias=constant(0), param=None):
        kw = dict(num_output=num_output)
        if pad:
            kw['pad'] = pad
        kw['kernel_size'] = kernel_size
        if stride != 1:
            kw['stride'] = stride
        if group != 1:
            kw['group'] = group
        self.n[name] = L.Convolution(bottom, **self._learned(kw, weight, bias, param or self.param))
        return self.n[name]

    def fc(self, name, bottom, num_output, weight=None, bias=constant(0), param=None):
        kw = self._learned(dict(num_output=num_output), weight, bias, param or self.param)
        self.n[name] = L.InnerProduct(bottom, **kw)
        return self.n[name]

    def relu(self, name, bottom):
        self.n[name] = L.ReLU(bottom, in_place=True)
        return bottom

    def pool(self, name, bottom, pool, kernel_size, stride, pad=0):
        kw = dict(pool=pool, kernel_size=kernel_size, stride=stride)
        if pad:
            kw['pad'] = pad
        self.n[name] = L.Pooling(bottom, **kw)
        return self.n[name]

    def lrn(self, name, bottom, local_size=5, alpha=1e-4, beta=0.75):
        self.n[name] = L.LRN(bottom, local_size=local_size, alpha=alpha, beta=beta)
        return self.n[name]

    def dropout(self, name, bottom, ratio):
        self.n[name] = L.Dropout(bottom, dropout_ratio=ratio, in_place=True)
        return bottom

    def input(self, *dims):
        self.n.data = L.Input(shape=dict(dim=list(dims)))
        return self.n.data

    def data_pair(self, layer_type, train, test, transform_train, transform_test, param_name,
                  name='data'):
        """TRAIN and TEST data layers with tops data, label; returns the tops."""
        spec = {param_name: train}
        tops = getattr(L, layer_type)(ntop=2, name=name, include=TRAIN,
                                      transform_param=transform_train, **spec)
        spec = {param_name: test}
        test_tops = getattr(L, layer_type)(ntop=2, name=name, include=TEST,
                                           transform_param=transform_test, **spec)
        self.n.data, self.n.label = tops
        # the TEST layer writes the same blob names; register its tops under private keys
        self.n['data@test'], self.n['label@test'] = test_tops
        return tops

    def finish(self, name, top, accuracy_tops=(('accuracy', 1),)):
        """prob (deploy) or accuracy + loss (train_val) on `top`."""
        if self.deploy:
            self.n.prob = L.Softmax(top)
        else:
            for acc_name, k in accuracy_tops:
                kw = dict(include=TEST)
                if k != 1:
                    kw['top_k'] = k
                self.n[acc_name] = L.Accuracy(top, self.n.label, **kw)
            self.n.loss = L.SoftmaxWithLoss(top, self.n.label)
        return net_param(name, self.n)


def net_param(name, spec):
    """The NetParameter of `spec`, the TEST data layer's private top names mapped to the shared ones."""
    net = spec.to_proto()
    net.name = name
    for layer in net.layer:
        layer.top[:] = [t.split('@')[0] for t in layer.top]
        layer.bottom[:] = [b.split('@')[0] for b in layer.bottom]
    return net


# -- CaffeNet / AlexNet / Flickr style -------------------------------------------------------

IMAGENET_MEAN = 'data/ilsvrc12/imagenet_mean.binaryproto'


def imagenet_lmdb_data(b, crop, train_batch, test_batch, mean):
    def transform(mirror):
        t = dict(mirror=mirror, crop_size=crop)
        t.update(mean)
        return t
    return b.data_pair('Data',
                       dict(source='examples/imagenet/ilsvrc12_train_lmdb', batch_size=train_batch,
                            backend='LMDB'),
                       dict(source='examples/imagenet/ilsvrc12_val_lmdb', batch_size=test_batch,
                            backend='LMDB'),
                       transform(True), transform(False), 'data_param')


def caffenet_body(b, data, alexnet=False, fc8_name='fc8', fc8_outputs=1000, fc8_param=None):
    """conv1..fc8 of CaffeNet (pool before LRN) or AlexNet (LRN before pool, 0.1 biases)."""
    one = constant(0.1 if alexnet else 1)

    def stage(i, top):
        if alexnet:
            return b.pool('pool%d' % i, b.lrn('norm%d' % i, top), 'MAX', 3, 2)
        return b.lrn('norm%d' % i, b.pool('pool%d' % i, top, 'MAX', 3, 2))

    x = b.relu('relu1', b.conv('conv1', data, 96, 11, stride=4, weight=gaussian(0.01)))
    x = stage(1, x)
    x = b.relu('relu2', b.conv('conv2', x, 256, 5, pad=2, group=2, weight=gaussian(0.01), bias=one))
    x = stage(2, x)
    x = b.relu('relu3', b.conv('conv3', x, 384, 3, pad=1, weight=gaussian(0.01)))
    x = b.relu('relu4', b.conv('conv4', x, 384, 3, pad=1, group=2, weight=gaussian(0.01), bias=one))
    x = b.relu('relu5', b.conv('conv5', x, 256, 3, pad=1, group=2, weight=gaussian(0.01), bias=one))
    x = b.pool('pool5', x, 'MAX', 3, 2)
    x = b.dropout('drop6', b.relu('relu6', b.fc('fc6', x, 4096, weight=gaussian(0.005), bias=one)), 0.5)
    x = b.dropout('drop7', b.relu('relu7', b.fc('fc7', x, 4096, weight=gaussian(0.005), bias=one)), 0.5)
    return b.fc(fc8_name, x, fc8_outputs, weight=gaussian(0.01), param=fc8_param)


def caffenet(deploy, alexnet=False):
    b = Builder(deploy)
    if deploy:
        data = b.input(10, 3, 227, 227)
    else:
        data, _ = imagenet_lmdb_data(b, 227, 256, 50, dict(mean_file=IMAGENET_MEAN))
    top = caffenet_body(b, data, alexnet)
    return b.finish('AlexNet' if alexnet else 'CaffeNet', top)


def flickr_style(deploy):
    """CaffeNet with fc8 replaced by fc8_flickr: 20 style classes, learning 10x faster than the rest."""
    b = Builder(deploy)
    if deploy:
        data = b.input(10, 3, 227, 227)
    else:
        def transform(mirror):
            return dict(mirror=mirror, crop_size=227, mean_file=IMAGENET_MEAN)

        def images(split):
            return dict(source='data/flickr_style/%s.txt' % split, batch_size=50,
                        new_height=256, new_width=256)
        data, _ = b.data_pair('ImageData', images('train'), images('test'),
                              transform(True), transform(False), 'image_data_param')
    top = caffenet_body(b, data, fc8_name='fc8_flickr', fc8_outputs=20, fc8_param=LEARN_FAST)
    return b.finish('FlickrStyleCaffeNet', top)


# -- GoogLeNet ------------------------------------------------------------------------------

# name: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection)
INCEPTION = [
    ('3a', (64, 96, 128, 16, 32, 32)), ('3b', (128, 128, 192, 32, 96, 64)),
    ('4a', (192, 96, 208, 16, 48, 64)), ('4b', (160, 112, 224, 24, 64, 64)),
    ('4c', (128, 128, 256, 24, 64, 64)), ('4d', (112, 144, 288, 32, 64, 64)),
    ('4e', (256, 160, 320, 32, 128, 128)),
    ('5a', (256, 160, 320, 32, 128, 128)), ('5b', (384, 192, 384, 48, 128, 128)),
]
XAVIER = dict(type='xavier')
BIAS02 = constant(0.2)


def inception(b, name, x, widths):
    p = 'inception_%s/' % name
    n1, r3, n3, r5, n5, proj = widths

    def conv_relu(suffix, bottom, num_output, kernel_size, pad=0):
        top = b.conv(p + suffix, bottom, num_output, kernel_size, pad=pad, weight=XAVIER, bias=BIAS02)
        return b.relu(p + 'relu_' + suffix, top)

    branch1 = conv_relu('1x1', x, n1, 1)
    branch3 = conv_relu('3x3', conv_relu('3x3_reduce', x, r3, 1), n3, 3, pad=1)
    branch5 = conv_relu('5x5', conv_relu('5x5_reduce', x, r5, 1), n5, 5, pad=2)
    pooled = b.pool(p + 'pool', x, 'MAX', 3, 1, pad=1)
    branch4 = conv_relu('pool_proj', pooled, proj, 1)
    b.n[p + 'output'] = L.Concat(branch1, branch3, branch5, branch4)
    return b.n[p + 'output']


def aux_classifier(b, i, x):
    """The auxiliary loss branch of GoogLeNet's training net (loss1 after 4a, loss2 after 4d)."""
    p = 'loss%d/' % i
    y = b.pool(p + 'ave_pool', x, 'AVE', 5, 3)
    y = b.relu(p + 'relu_conv', b.conv(p + 'conv', y, 128, 1, weight=XAVIER, bias=BIAS02))
    y = b.relu(p + 'relu_fc', b.fc(p + 'fc', y, 1024, weight=XAVIER, bias=BIAS02))
    y = b.dropout(p + 'drop_fc', y, 0.7)
    y = b.fc(p + 'classifier', y, 1000, weight=XAVIER, bias=constant(0))
    b.n['loss%d/loss%d' % (i, i)] = L.SoftmaxWithLoss(y, b.n.label, loss_weight=0.3, name=p + 'loss')
    b.n[p + 'top-1'] = L.Accuracy(y, b.n.label, include=TEST)
    b.n[p + 'top-5'] = L.Accuracy(y, b.n.label, include=TEST, top_k=5)


def googlenet(deploy):
    b = Builder(deploy)
    if deploy:
        x = b.input(10, 3, 224, 224)
    else:
        x, _ = imagenet_lmdb_data(b, 224, 32, 50, dict(mean_value=[104, 117, 123]))

    def conv_relu(name, relu, bottom, num_output, kernel_size, stride=1, pad=0):
        return b.relu(relu, b.conv(name, bottom, num_output, kernel_size, stride=stride, pad=pad,
                                   weight=XAVIER, bias=BIAS02))

    x = conv_relu('conv1/7x7_s2', 'conv1/relu_7x7', x, 64, 7, stride=2, pad=3)
    x = b.lrn('pool1/norm1', b.pool('pool1/3x3_s2', x, 'MAX', 3, 2))
    x = conv_relu('conv2/3x3_reduce', 'conv2/relu_3x3_reduce', x, 64, 1)
    x = conv_relu('conv2/3x3', 'conv2/relu_3x3', x, 192, 3, pad=1)
    x = b.pool('pool2/3x3_s2', b.lrn('conv2/norm2', x), 'MAX', 3, 2)
    for name, widths in INCEPTION:
        if name == '4a':
            x = b.pool('pool3/3x3_s2', x, 'MAX', 3, 2)
        if name == '5a':
            x = b.pool('pool4/3x3_s2', x, 'MAX', 3, 2)
        x = inception(b, name, x, widths)
        if not deploy and name in ('4a', '4d'):
            aux_classifier(b, 1 if name == '4a' else 2, x)
    x = b.dropout('pool5/drop_7x7_s1', b.pool('pool5/7x7_s1', x, 'AVE', 7, 1), 0.4)
    x = b.fc('loss3/classifier', x, 1000, weight=XAVIER, bias=constant(0))
    if deploy:
        b.n.prob = L.Softmax(x)
    else:
        b.n['loss3/loss3'] = L.SoftmaxWithLoss(x, b.n.label, loss_weight=1)
        b.n['loss3/top-1'] = L.Accuracy(x, b.n.label, include=TEST)
        b.n['loss3/top-5'] = L.Accuracy(x, b.n.label, include=TEST, top_k=5)
    return net_param('GoogleNet', b.n)


# -- LeNet and CIFAR-10 quick -----------------------------------------------------------------

SIMPLE = [dict(lr_mult=1), dict(lr_mult=2)]


def lenet(deploy):
    b = Builder(deploy, param=SIMPLE)
    if deploy:
        x = b.input(64, 1, 28, 28)
    else:
        def mnist(split, batch):
            return dict(source='examples/mnist/mnist_%s_lmdb' % split, batch_size=batch, backend='LMDB')
        scale = dict(scale=0.00390625)
        x, _ = b.data_pair('Data', mnist('train', 64), mnist('test', 100), scale, scale, 'data_param',
                           name='mnist')
    x = b.pool('pool1', b.conv('conv1', x, 20, 5, weight=XAVIER, bias=dict(type='constant')), 'MAX', 2, 2)
    x = b.pool('pool2', b.conv('conv2', x, 50, 5, weight=XAVIER, bias=dict(type='constant')), 'MAX', 2, 2)
    x = b.relu('relu1', b.fc('ip1', x, 500, weight=XAVIER, bias=dict(type='constant')))
    x = b.fc('ip2', x, 10, weight=XAVIER, bias=dict(type='constant'))
    return b.finish('LeNet', x)


def cifar10_quick(deploy):
    b = Builder(deploy, param=SIMPLE)
    if deploy:
        x = b.input(1, 3, 32, 32)
    else:
        def cifar(split):
            return dict(source='examples/cifar10/cifar10_%s_lmdb' % split, batch_size=100, backend='LMDB')
        mean = dict(mean_file='examples/cifar10/mean.binaryproto')
        x, _ = b.data_pair('Data', cifar('train'), cifar('test'), mean, mean, 'data_param',
                           name='cifar')
    x = b.pool('pool1', b.conv('conv1', x, 32, 5, pad=2, weight=gaussian(0.0001), bias=dict(type='constant')),
               'MAX', 3, 2)
    x = b.relu('relu1', x)
    x = b.relu('relu2', b.conv('conv2', x, 32, 5, pad=2, weight=gaussian(0.01), bias=dict(type='constant')))
    x = b.pool('pool2', x, 'AVE', 3, 2)
    x = b.relu('relu3', b.conv('conv3', x, 64, 5, pad=2, weight=gaussian(0.01), bias=dict(type='constant')))
    x = b.pool('pool3', x, 'AVE', 3, 2)
    x = b.fc('ip1', x, 64, weight=gaussian(0.1), bias=dict(type='constant'))
    x = b.fc('ip2', x, 10, weight=gaussian(0.1), bias=dict(type='constant'))
    return b.finish('CIFAR10_quick', x)


# -- mini CaffeNet: CaffeNet's layer sequence at 3x32x32, trained here ------------------------

MINI_CROP = 32
MINI_MEAN = [128, 128, 128]
MINI_SCALE = 0.0125   # (pixel - 128) / 80: inputs of unit order


def mini_caffenet_body(b, data, fc8_name, fc8_outputs, fc8_param=None):
    """CaffeNet in miniature: the same layers in the same order with few channels and small kernels."""
    msra = dict(type='msra')

    def stage(i, top):
        return b.lrn('norm%d' % i, b.pool('pool%d' % i, top, 'MAX', 3, 2))

    x = b.relu('relu1', b.conv('conv1', data, 24, 5, stride=2, pad=2, weight=msra))
    x = stage(1, x)
    x = b.relu('relu2', b.conv('conv2', x, 48, 5, pad=2, group=2, weight=msra, bias=constant(0.1)))
    x = stage(2, x)
    x = b.relu('relu3', b.conv('conv3', x, 64, 3, pad=1, weight=msra))
    x = b.relu('relu4', b.conv('conv4', x, 64, 3, pad=1, group=2, weight=msra, bias=constant(0.1)))
    x = b.relu('relu5', b.conv('conv5', x, 48, 3, pad=1, group=2, weight=msra, bias=constant(0.1)))
    x = b.pool('pool5', x, 'MAX', 3, 2)
    x = b.dropout('drop6', b.relu('relu6', b.fc('fc6', x, 128, weight=msra, bias=constant(0.1))), 0.5)
    x = b.dropout('drop7', b.relu('relu7', b.fc('fc7', x, 128, weight=msra, bias=constant(0.1))), 0.5)
    return b.fc(fc8_name, x, fc8_outputs, weight=gaussian(0.01), param=fc8_param)


def image_list_data(b, folder, train_batch, test_batch):
    """ImageData layers reading <folder>/train.txt and test.txt (paths relative to <folder>/)."""
    def transform(mirror):
        return dict(mirror=mirror, crop_size=MINI_CROP, mean_value=MINI_MEAN, scale=MINI_SCALE)

    def images(split, batch):
        return dict(source='%s/%s.txt' % (folder, split), root_folder=folder + '/', batch_size=batch)
    return b.data_pair('ImageData', images('train', train_batch), images('test', test_batch),
                       transform(True), transform(False), 'image_data_param')


SHAPE_CLASSES = 10
STYLE_CLASSES = 8


def mini_caffenet(deploy):
    b = Builder(deploy)
    if deploy:
        x = b.input(10, 3, MINI_CROP, MINI_CROP)
    else:
        x, _ = image_list_data(b, 'examples/shapes/data', 32, 50)
    return b.finish('MiniCaffeNet', mini_caffenet_body(b, x, 'fc8', SHAPE_CLASSES))


def finetune_style(deploy):
    """The seed's recipe on mini CaffeNet: fc8 -> fc8_style with the style classes, lr_mult 10/20."""
    b = Builder(deploy)
    if deploy:
        x = b.input(10, 3, MINI_CROP, MINI_CROP)
    else:
        x, _ = image_list_data(b, 'examples/finetune_style', 20, 40)
    top = mini_caffenet_body(b, x, 'fc8_style', STYLE_CLASSES, fc8_param=LEARN_FAST)
    return b.finish('MiniCaffeNetStyle', top)


# -- files ------------------------------------------------------------------------------------

HEADER = '# Written by models/make_models.py (caffe-py); edit that script, then rerun it.\n'

FILES = {
    'models/bvlc_reference_caffenet/deploy.prototxt': lambda: caffenet(True),
    'models/bvlc_reference_caffenet/train_val.prototxt': lambda: caffenet(False),
    'models/bvlc_alexnet/deploy.prototxt': lambda: caffenet(True, alexnet=True),
    'models/bvlc_alexnet/train_val.prototxt': lambda: caffenet(False, alexnet=True),
    'models/bvlc_googlenet/deploy.prototxt': lambda: googlenet(True),
    'models/bvlc_googlenet/train_val.prototxt': lambda: googlenet(False),
    'models/finetune_flickr_style/deploy.prototxt': lambda: flickr_style(True),
    'models/finetune_flickr_style/train_val.prototxt': lambda: flickr_style(False),
    'models/lenet/lenet.prototxt': lambda: lenet(True),
    'models/lenet/lenet_train_test.prototxt': lambda: lenet(False),
    'models/cifar10_quick/cifar10_quick.prototxt': lambda: cifar10_quick(True),
    'models/cifar10_quick/cifar10_quick_train_test.prototxt': lambda: cifar10_quick(False),
    'models/mini_caffenet/deploy.prototxt': lambda: mini_caffenet(True),
    'models/mini_caffenet/train_val.prototxt': lambda: mini_caffenet(False),
    'examples/finetune_style/deploy.prototxt': lambda: finetune_style(True),
    'examples/finetune_style/train_val.prototxt': lambda: finetune_style(False),
}


def render(path):
    """The file's text; whole floats are written as integers (`lr_mult: 1`), as Caffe's files have them."""
    return HEADER + re.sub(r'(: -?\d+)\.0$', r'\1', to_text(FILES[path]()), flags=re.M)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='compare instead of writing')
    args = parser.parse_args(argv)
    stale = []
    for path in FILES:
        text = render(path)
        full = os.path.join(ROOT, path)
        if args.check:
            if not os.path.exists(full) or open(full).read() != text:
                stale.append(path)
            continue
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, 'w') as f:
            f.write(text)
        print('wrote', path)
    if stale:
        print('out of date (rerun models/make_models.py):', ', '.join(stale))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
