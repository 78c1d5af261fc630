"""User layers for tests/test_python_layer.py, written as a pycaffe user would write them."""
import numpy as np

import caffe_py as caffe


class TimesLayer(caffe.Layer):
    """y = k * x, k from param_str (10 by default)."""

    def setup(self, bottom, top):
        self.k = float(self.param_str or 10)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.k * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = self.k * top[0].diff


class HalfSquaredErrorLayer(caffe.Layer):
    """Euclidean loss: sum((a - b)^2) / (2 num); the gradient honours the loss weight in top[0].diff."""

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise ValueError('needs two bottoms, got %d' % len(bottom))

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise ValueError('bottoms differ in size: %d and %d' % (bottom[0].count, bottom[1].count))
        self.residual = np.zeros_like(bottom[0].data)
        top[0].reshape()

    def forward(self, bottom, top):
        np.subtract(bottom[0].data, bottom[1].data.reshape(bottom[0].shape), out=self.residual)
        top[0].data[()] = (self.residual ** 2).sum() / (2.0 * bottom[0].num)

    def backward(self, top, propagate_down, bottom):
        scale = top[0].diff[()] / bottom[0].num
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                bottom[i].diff[...] = (sign * scale * self.residual).reshape(bottom[i].shape)


class ChannelAffineLayer(caffe.Layer):
    """y = w[c] * x + b[c] over axis 1, with two learnable blobs (w starts at 1, b at 0)."""

    def setup(self, bottom, top):
        channels = bottom[0].channels
        self.blobs.add_blob(channels)
        self.blobs.add_blob(channels)
        self.blobs[0].data[...] = 1

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)
        self.view = (1, -1) + (1,) * (len(bottom[0].shape) - 2)

    def forward(self, bottom, top):
        w, b = (blob.data.reshape(self.view) for blob in self.blobs)
        top[0].data[...] = w * bottom[0].data + b

    def backward(self, top, propagate_down, bottom):
        axes = tuple(i for i in range(top[0].diff.ndim) if i != 1)
        self.blobs[0].diff[...] += (top[0].diff * bottom[0].data).sum(axis=axes)
        self.blobs[1].diff[...] += top[0].diff.sum(axis=axes)
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * self.blobs[0].data.reshape(self.view)


class PhaseLayer(caffe.Layer):
    """A scalar top holding self.phase."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape()

    def forward(self, bottom, top):
        top[0].data[()] = self.phase


class FailingSetupLayer(caffe.Layer):
    def setup(self, bottom, top):
        raise RuntimeError('deliberate failure in setup')


class FailingForwardLayer(TimesLayer):
    def forward(self, bottom, top):
        raise KeyError('deliberate failure in forward')


class WithInitLayer(TimesLayer):
    """A user __init__ calling the base's, as some pycaffe layers do."""

    def __init__(self, param):
        super().__init__(param)
        self.created = True
