"""DeepLab's DomainTransform (Chen et al. 2016, "Semantic image segmentation with task-specific
edge detection using CNNs and a discriminatively trained domain transform"): edge-preserving
recursive filtering of feature maps against a reference gradient (edge) map.

Bottoms: features (N, C, H, W), the reference gradient (N, 1, H, W) and each image's (height,
width) (N, 1, 1, 2) as ImageSegData's data_dim; only that top-left region is filtered. Each of
num_iter iterations has sigma_i = spatial_sigma * sqrt(3) * 2^(num_iter - i - 1) /
sqrt(4^num_iter - 1) and weights a = clip(exp(-sqrt(2) / sigma_i * (1 + g * spatial_sigma /
range_sigma)), min_weight, 1), then filters left to right, right to left, top to bottom and
bottom to top: y[p] += a * (y[prev] - y[p]), a taken at the later position of the two. The
scans run position by position along their axis, every row, channel and image at once.
The backward is the fork's: its reference-gradient term is d a / d g where a is not clipped
(the clip's zero slope is ignored, as the fork does).
"""
import math

import numpy as np

from ..layer import Layer, register


def _steps(length, forward):
    """(position, previous position, weight position) of one scan, in order."""
    if forward:
        return [(p, p - 1, p) for p in range(1, length)]
    return [(p, p + 1, p + 1) for p in range(length - 2, -1, -1)]


# the four passes: (transposed (a vertical pass), forward along the axis)
_PASSES = ((False, True), (False, False), (True, True), (True, False))


@register('DomainTransform')
class DomainTransformLayer(Layer):
    exact_num_bottom = 3
    exact_num_top = 1
    keeps_intermediates = True

    def setup(self, bottom, top):
        p = self.layer_param.domain_transform_param
        for name, ok in (('spatial_sigma', p.spatial_sigma > 0), ('range_sigma', p.range_sigma > 0),
                         ('min_weight', p.min_weight >= 0), ('num_iter', p.num_iter > 0)):
            if not ok:
                raise self.error('domain_transform_param.%s must be %s (got %g)'
                                 % (name, 'non-negative' if name == 'min_weight' else 'positive', getattr(p, name)))
        t = self.dtype.type
        self.num_iter = p.num_iter
        self.mult2 = t(p.spatial_sigma) / t(p.range_sigma)
        sigmas = [t(float(t(p.spatial_sigma)) * math.sqrt(3.0) * 2.0 ** (p.num_iter - (i + 1.0))
                    / math.sqrt(4.0 ** p.num_iter - 1.0)) for i in range(p.num_iter)]
        self.mult1 = [t(-math.sqrt(2.0) / float(sigma)) for sigma in sigmas]
        self.min_weight = t(p.min_weight)

    def reshape(self, bottom, top):
        x, ref, dims = bottom
        if x.num_axes != 4:
            raise self.error('bottom 0 must be (N, C, H, W), got %s' % x.shape_string())
        if ref.shape != (x.shape[0], 1) + x.shape[2:]:
            raise self.error('the reference gradient %s must be (N, 1, H, W) of the input %s'
                             % (ref.shape_string(), x.shape_string()))
        if dims.count != 2 * x.shape[0]:
            raise self.error('the input dimensions %s must hold (height, width) per image (N, 1, 1, 2)'
                             % dims.shape_string())
        top[0].reshape(x.shape)

    def _regions(self, bottom):
        """Per image (height, width) as int arrays, checked against the blob."""
        xp = bottom[0].xp
        dims = bottom[2].data.reshape(-1, 2).astype(np.int64)
        height, width = bottom[0].shape[2:]
        if bool((dims[:, 0] > height).any()) or bool((dims[:, 1] > width).any()):
            raise self.error('input_height should be less than or equal to height (%d), input_width to width (%d): '
                             'got %s' % (height, width, dims.tolist()))
        return xp.asarray(dims[:, 0]), xp.asarray(dims[:, 1])

    def _weights(self, xp, ref, i):
        a = xp.exp(self.mult1[i] * (1 + ref * self.mult2))
        return xp.minimum(xp.maximum(a, self.min_weight), self.dtype.type(1))

    def _views(self, arrays, limits, transposed, xp):
        """Arrays (N, C, A, B) scanned along B (swapped for vertical passes), the weight
        (N, A, B), and the mask of filtered (N, 1, A) rows with the limit along B per image."""
        (ih, iw), (height, width) = limits
        rows, lim, n_rows = (iw, ih, width) if transposed else (ih, iw, height)
        views = [a.swapaxes(-1, -2) if transposed else a for a in arrays]
        row_ok = (xp.arange(n_rows)[None, :] < rows[:, None])[:, None, :]
        return views, row_ok, lim

    def forward(self, bottom, top):
        xp = bottom[0].xp
        ih, iw = self._regions(bottom)
        limits = ((ih, iw), bottom[0].shape[2:])
        y = top[0].data
        y[...] = bottom[0].data
        ref = bottom[1].data[:, 0]
        self.inter = []
        for i in range(self.num_iter):
            weight = self._weights(xp, ref, i)
            for transposed, forward in _PASSES:
                inter = xp.zeros_like(y)
                (out, res, a), row_ok, lim = self._views((y, inter, weight[:, None]), limits, transposed, xp)
                for pos, prev, at in _steps(out.shape[-1], forward):
                    act = row_ok & (max(pos, prev) < lim)[:, None, None]
                    d = (out[..., prev] - out[..., pos]) * act
                    res[..., pos] = d
                    out[..., pos] += a[..., at] * d
                if self.keeps_intermediates:
                    self.inter.append(inter)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error('DomainTransform Layer cannot back-propagate to image dimension.')
        if not (propagate_down[0] or propagate_down[1]):
            return
        xp = bottom[0].xp
        ih, iw = self._regions(bottom)
        limits = ((ih, iw), bottom[0].shape[2:])
        g = top[0].diff.copy()
        ref = bottom[1].data[:, 0]
        ref_diff = xp.zeros_like(ref)
        index = len(self.inter)
        for i in reversed(range(self.num_iter)):
            weight = self._weights(xp, ref, i)
            weight_diff = xp.zeros_like(weight)
            for transposed, forward in reversed(_PASSES):
                index -= 1
                (out, res, a), row_ok, lim = self._views((g, self.inter[index], weight[:, None]), limits,
                                                         transposed, xp)
                wd = weight_diff.swapaxes(-1, -2) if transposed else weight_diff
                for pos, prev, at in reversed(_steps(out.shape[-1], forward)):
                    act = row_ok & (max(pos, prev) < lim)[:, None, None]
                    wd[..., at] += (out[..., pos] * res[..., pos]).sum(axis=1)
                    out[..., prev] += a[..., at] * out[..., pos] * act
                    out[..., pos] *= xp.where(act, 1 - a[..., at], 1)
            ref_diff += self.mult1[i] * self.mult2 * weight_diff * weight
        if propagate_down[0]:
            bottom[0].diff[...] = g
        if propagate_down[1]:
            bottom[1].diff[:, 0] = ref_diff

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2


@register('DomainTransformForwardOnly')
class DomainTransformForwardOnlyLayer(DomainTransformLayer):
    """DomainTransform without a backward (its filtered intermediates are not kept)."""
    keeps_intermediates = False

    def backward(self, top, propagate_down, bottom):
        pass

    def allow_force_backward(self, bottom_index):
        return False
