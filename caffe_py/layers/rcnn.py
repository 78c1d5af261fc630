"""Region layers of Faster R-CNN (rbgirshick/caffe-fast-rcnn) and R-FCN (daijifeng001/caffe-rfcn):
ROIPooling, PSROIPooling, SmoothL1Loss and BoxAnnotatorOHEM, with the forks' rounding and bin rules.

Regions of interest are rows (batch index, x1, y1, x2, y2) in image coordinates; spatial_scale
maps them onto the feature map. py-faster-rcnn's own layers (proposal, anchor and proposal
targets, roi data) are Python layers: they run through the Python layer when their module is
importable, as in Caffe.
"""
import numpy as np

from ..backend import get_array_module
from ..layer import Layer, register
from ..proto import caffe_pb2
from .loss import LossLayer, normalization_mode

_NORM = caffe_pb2.LossParameter


def _round(xp, values):
    """C's round(): halves away from zero."""
    return xp.sign(values) * xp.floor(xp.abs(values) + values.dtype.type(0.5))


def _rois(layer, bottom):
    rois = bottom[1]
    if rois.num_axes < 2 or rois.count_range(1) != 5:
        raise layer.error('bottom[1] must hold rows (batch index, x1, y1, x2, y2), got %s'
                          % rois.shape_string())
    data = rois.data.reshape(-1, 5)
    batch = data[:, 0].astype(np.int64)
    if batch.size and (int(batch.min()) < 0 or int(batch.max()) >= bottom[0].shape[0]):
        raise layer.error('roi batch indices must lie in [0, %d), got %d..%d'
                          % (bottom[0].shape[0], int(batch.min()), int(batch.max())))
    return batch, data


def _bins(xp, start, size, count, limit, dtype):
    """[begin, end) of `count` bins of `size` (per roi) from `start`, clipped to [0, limit]:
    floor(p * size) and ceil((p + 1) * size), as the forks compute them in Dtype."""
    p = xp.arange(count, dtype=dtype)
    begin = xp.floor(p[None, :] * size[:, None]).astype(np.int64) + start[:, None]
    end = xp.ceil((p[None, :] + 1) * size[:, None]).astype(np.int64) + start[:, None]
    return xp.clip(begin, 0, limit), xp.clip(end, 0, limit)


class _RegionPooling(Layer):
    """Pools the regions of bottom[1] on the feature map bottom[0] (N, C, H, W); the regions
    get no gradient."""
    exact_num_bottom = 2
    exact_num_top = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error('bottom[0] must be (N, C, H, W), got %s' % bottom[0].shape_string())


@register('ROIPooling')
class ROIPoolingLayer(_RegionPooling):
    """Max over each of pooled_h x pooled_w bins of every region (Fast R-CNN); backward routes
    each top diff to the recorded argmax (first maximum in row-major order); empty bins give 0."""

    def setup(self, bottom, top):
        param = self.layer_param.roi_pooling_param
        if param.pooled_h <= 0 or param.pooled_w <= 0:
            raise self.error('pooled_h and pooled_w must be > 0 (got %d, %d)' % (param.pooled_h, param.pooled_w))
        self.pooled = (param.pooled_h, param.pooled_w)
        self.scale = param.spatial_scale

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        num_rois = bottom[1].shape[0]
        top[0].reshape((num_rois, bottom[0].shape[1]) + self.pooled)

    def _geometry(self, bottom):
        xp, dtype = bottom[0].xp, bottom[0].data.dtype
        batch, rois = _rois(self, bottom)
        corners = _round(xp, rois[:, 1:] * dtype.type(self.scale)).astype(np.int64)
        x1, y1, x2, y2 = corners.T
        height, width = bottom[0].shape[2:]
        size_h = xp.maximum(y2 - y1 + 1, 1).astype(dtype) / dtype.type(self.pooled[0])
        size_w = xp.maximum(x2 - x1 + 1, 1).astype(dtype) / dtype.type(self.pooled[1])
        hs, he = _bins(xp, y1, size_h, self.pooled[0], height, dtype)
        ws, we = _bins(xp, x1, size_w, self.pooled[1], width, dtype)
        return batch, hs, he, ws, we

    def forward(self, bottom, top):
        geometry = [_host(a) for a in self._geometry(bottom)]
        if bottom[0].xp is np:
            self._max_reduce(bottom[0].data, geometry, top[0].data)
            self.argmax = None            # found when a backward pass asks for it
        else:
            self.argmax = self._max_and_argmax(bottom[0].data, geometry, top[0].data)

    def _max_reduce(self, x, geometry, out):
        """Bin maxima of every region: per region, the maximum over each bin's columns, then over
        each bin's rows, every channel at once. The map is read as (N, W, H, C), so that the
        reductions run over whole channel vectors."""
        batch, hs, he, ws, we = geometry
        channels_last = np.ascontiguousarray(x.transpose(0, 3, 2, 1))
        ph, pw = self.pooled
        cols = np.empty((pw, x.shape[2], x.shape[1]), x.dtype)
        best = np.empty((pw, ph, x.shape[1]), x.dtype)
        for r in range(len(batch)):       # one region at a time, every channel at once
            h0, h1 = hs[r].min(), he[r].max()
            plane = channels_last[batch[r]]
            for j in range(pw):
                if we[r][j] > ws[r][j] and h1 > h0:
                    plane[ws[r][j]:we[r][j], h0:h1].max(axis=0, out=cols[j, h0:h1])
            for i in range(ph):
                if he[r][i] > hs[r][i]:
                    cols[:, hs[r][i]:he[r][i]].max(axis=1, out=best[:, i])
            empty = (he[r] <= hs[r])[:, None] | (we[r] <= ws[r])[None, :]
            out[r] = np.where(empty, 0, best.transpose(2, 1, 0))

    def _max_and_argmax(self, x, geometry, out):
        """_max_reduce on the device: per region, each bin's columns masked, then its rows."""
        xp = get_array_module(x)
        batch, hs, he, ws, we = geometry
        argmax = xp.full(out.shape, -1, dtype=np.int64)
        pw = self.pooled[1]
        width = x.shape[3]
        for r in range(len(batch)):
            h0, h1, w0, w1 = hs[r].min(), he[r].max(), ws[r].min(), we[r].max()
            if h1 <= h0 or w1 <= w0:
                out[r] = 0
                continue
            crop = x[batch[r], :, h0:h1, w0:w1]
            hh, ww = np.arange(h0, h1), np.arange(w0, w1)
            mask_w = xp.asarray((ww[None, :] >= ws[r][:, None]) & (ww[None, :] < we[r][:, None]))
            mask_h = xp.asarray((hh[None, :] >= hs[r][:, None]) & (hh[None, :] < he[r][:, None]))
            cols = xp.where(mask_w[None, None], crop[:, :, None, :], -xp.inf)      # (C, h, PW, w)
            col_arg = cols.argmax(axis=3)
            col_max = xp.take_along_axis(cols, col_arg[..., None], axis=3)[..., 0]  # (C, h, PW)
            rows = xp.where(mask_h[None, :, :, None], col_max[:, None], -xp.inf)     # (C, PH, h, PW)
            row_arg = rows.argmax(axis=2)                                           # (C, PH, PW)
            best = xp.take_along_axis(rows, row_arg[:, :, None], axis=2)[:, :, 0]
            best_w = col_arg[xp.arange(len(crop))[:, None, None], row_arg, xp.arange(pw)]
            empty = xp.asarray((he[r] <= hs[r])[:, None] | (we[r] <= ws[r])[None, :])
            out[r] = xp.where(empty, 0, best)
            argmax[r] = xp.where(empty, -1, (row_arg + h0) * width + best_w + w0)
        return argmax

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        if self.argmax is None:
            self.argmax = _bin_argmax(bottom[0].data, *[_host(a) for a in self._geometry(bottom)])
        num, channels, height, width = bottom[0].shape
        batch = bottom[1].data.reshape(-1, 5)[:, 0].astype(np.int64)
        plane = (batch[:, None] * channels + xp.arange(channels)[None, :]) * (height * width)
        index = (plane[:, :, None, None] + self.argmax).reshape(-1)
        weights = top[0].diff.reshape(-1)
        if bool((self.argmax < 0).any()):            # empty bins send nothing down
            keep = self.argmax.reshape(-1) >= 0
            index, weights = index[keep], weights[keep]
        grad = xp.bincount(index, weights=weights, minlength=bottom[0].count)
        bottom[0].diff[...] = grad.reshape(bottom[0].shape)


def _value_order(values):
    """int64 numbers ordered as `values` are, equal where they are equal (-0.0 and 0.0 too): float32
    bits with the negatives' magnitude bits flipped; other dtypes their rank among the distinct values."""
    if values.dtype == np.float32:
        bits = (values + np.float32(0)).view(np.int32)          # + 0: -0.0 becomes 0.0
        return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64)
    return np.unique(values, return_inverse=True)[1].reshape(values.shape).astype(np.int64)


def _bin_argmax(x, batch, hs, he, ws, we):
    """Flat position h * W + w in its plane of the first maximum (row-major, as the forks' loops
    find it) of every channel over every bin [hs, he) x [ws, we) of every region on the map x
    (N, C, H, W); -1 for empty bins. (R, C, PH, PW), as the forks' max_idx.

    Each cell is a key, its value's order in the high 32 bits and 2^32 - 1 - its position in the
    low ones, so that the largest key is the first maximum. A bin is covered by four windows of
    2^kh x 2^kw cells at its corners, whose largest keys come from range-maximum tables built one
    power of two at a time, each only as far as some bin needs it."""
    num, channels, height, width = x.shape
    rois, ph, pw = len(batch), hs.shape[1], ws.shape[1]
    tall = np.broadcast_to((he - hs)[:, :, None], (rois, ph, pw))
    wide = np.broadcast_to((we - ws)[:, None, :], (rois, ph, pw))
    empty = (tall <= 0) | (wide <= 0)
    level_h = np.frexp(np.maximum(tall, 1))[1] - 1          # floor(log2(size)), exact
    level_w = np.frexp(np.maximum(wide, 1))[1] - 1
    argmax = np.full((rois, ph, pw, channels), -1, np.int32)
    position = (np.arange(height)[:, None] * width + np.arange(width))[None, :, :, None]
    row_key = (_value_order(np.ascontiguousarray(x.transpose(0, 2, 3, 1))) << 32) | (0xFFFFFFFF - position)
    for kw in range(int(level_w[~empty].max(initial=-1)) + 1):
        if kw:                        # (N, H, W', C): windows of 2^kw columns, from two of 2^(kw-1)
            half = 1 << (kw - 1)
            row_key = np.maximum(row_key[:, :, :-half], row_key[:, :, half:])
        wanted = ~empty & (level_w == kw)
        key = row_key
        for kh in range(int(level_h[wanted].max(initial=-1)) + 1):
            if kh:                    # (N, H', W', C): and of 2^kh rows
                half = 1 << (kh - 1)
                key = np.maximum(key[:, :-half], key[:, half:])
            r, i, j = np.nonzero(wanted & (level_h == kh))
            if not len(r):
                continue
            _, rows, cols, _ = key.shape
            flat = key.reshape(-1, channels)
            upper = (batch[r] * rows + hs[r, i]) * cols
            lower = (batch[r] * rows + he[r, i] - (1 << kh)) * cols
            left, right = ws[r, j], we[r, j] - (1 << kw)
            best = flat.take(upper + left, 0)
            for corner in (upper + right, lower + left, lower + right):
                np.maximum(best, flat.take(corner, 0), out=best)
            argmax[r, i, j] = 0xFFFFFFFF - (best & 0xFFFFFFFF)
    return np.ascontiguousarray(argmax.transpose(0, 3, 1, 2))


def _channels(blob):
    return blob.shape[1] if blob.num_axes > 1 else 1


def _host(array):
    return array if isinstance(array, np.ndarray) else array.get()


@register('PSROIPooling')
class PSROIPoolingLayer(_RegionPooling):
    """R-FCN's position-sensitive average pooling: bin (i, j) of output channel d averages input
    channel (d * group_size + i) * group_size + j over the bin; empty bins give 0."""

    def setup(self, bottom, top):
        param = self.layer_param.psroi_pooling_param
        if param.output_dim <= 0 or param.group_size <= 0:
            raise self.error('output_dim and group_size must be > 0 (got %d, %d)'
                             % (param.output_dim, param.group_size))
        self.scale = param.spatial_scale
        self.output_dim = param.output_dim
        self.group = param.group_size

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].shape[1] != self.output_dim * self.group * self.group:
            raise self.error('input channel number %d does not match output_dim * group_size^2 = %d'
                             % (bottom[0].shape[1], self.output_dim * self.group * self.group))
        top[0].reshape(bottom[1].shape[0], self.output_dim, self.group, self.group)

    def _geometry(self, bottom):
        """Flat indices of the four integral-image corners of every bin, areas and emptiness."""
        xp, dtype = bottom[0].xp, bottom[0].data.dtype
        batch, rois = _rois(self, bottom)
        scale, g = dtype.type(self.scale), self.group
        corners = _round(xp, rois[:, 1:])
        x1, y1 = corners[:, 0] * scale, corners[:, 1] * scale
        x2, y2 = (corners[:, 2] + 1) * scale, (corners[:, 3] + 1) * scale
        size_w = xp.maximum(x2 - x1, dtype.type(0.1)) / dtype.type(g)
        size_h = xp.maximum(y2 - y1, dtype.type(0.1)) / dtype.type(g)
        _, channels, height, width = bottom[0].shape
        p = xp.arange(g, dtype=dtype)
        hs = xp.clip(xp.floor(p * size_h[:, None] + y1[:, None]).astype(np.int64), 0, height)
        he = xp.clip(xp.ceil((p + 1) * size_h[:, None] + y1[:, None]).astype(np.int64), 0, height)
        ws = xp.clip(xp.floor(p * size_w[:, None] + x1[:, None]).astype(np.int64), 0, width)
        we = xp.clip(xp.ceil((p + 1) * size_w[:, None] + x1[:, None]).astype(np.int64), 0, width)
        # (R, D, G, G) broadcasts: roi, output channel, bin row, bin column
        channel = (xp.arange(self.output_dim)[:, None, None] * g + xp.arange(g)[:, None]) * g + xp.arange(g)
        plane = (batch[:, None, None, None] * channels + channel[None]) * ((height + 1) * (width + 1))
        top_, bottom_ = hs[:, None, :, None] * (width + 1), he[:, None, :, None] * (width + 1)
        left, right = ws[:, None, None, :], we[:, None, None, :]
        corners = [plane + top_ + left, plane + top_ + right, plane + bottom_ + left, plane + bottom_ + right]
        area = ((he - hs)[:, None, :, None] * (we - ws)[:, None, None, :]).astype(dtype)
        return corners, area, area <= 0

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].data
        num, channels, height, width = x.shape
        table = xp.zeros((num, channels, height + 1, width + 1), np.float64)
        table[:, :, 1:, 1:] = x.cumsum(axis=2, dtype=np.float64).cumsum(axis=3)
        (tl, tr, bl, br), area, empty = self._geometry(bottom)
        flat = table.reshape(-1)
        sums = flat[br] - flat[tr] - flat[bl] + flat[tl]
        top[0].data[...] = xp.where(empty, 0, sums / xp.where(empty, 1, area))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        num, channels, height, width = bottom[0].shape
        (tl, tr, bl, br), area, empty = self._geometry(bottom)
        value = xp.where(empty, 0, top[0].diff / xp.where(empty, 1, area)).astype(np.float64)
        size = num * channels * (height + 1) * (width + 1)
        # the rectangle's corners in a difference table, summed back by two running sums
        index = xp.concatenate([tl.reshape(-1), tr.reshape(-1), bl.reshape(-1), br.reshape(-1)])
        weights = xp.concatenate([value.reshape(-1), -value.reshape(-1), -value.reshape(-1), value.reshape(-1)])
        delta = xp.bincount(index, weights=weights, minlength=size).reshape(num, channels, height + 1, width + 1)
        grad = delta.cumsum(axis=2).cumsum(axis=3)[:, :, :height, :width]
        bottom[0].diff[...] = grad


@register('SmoothL1Loss')
class SmoothL1LossLayer(LossLayer):
    """SmoothL1Loss of py-faster-rcnn and of R-FCN, with
    f(x) = 0.5 * (sigma * x)^2 if |x| < 1 / sigma^2, else |x| - 0.5 / sigma^2 (R-FCN: sigma 1).

    py-faster-rcnn: bottoms (a, b) or (a, b, inside weights, outside weights):
    sum(w_out * f(w_in * (a - b))) / num.
    R-FCN: bottoms (a, b, weights): sum(f(w * (a - b))) / loss_param's normalizer (FULL and VALID:
    num * spatial size, BATCH_SIZE: num, PRE_FIXED: pre_fixed_normalizer, NONE: 1; at least 1).
    Its backward is f'(w * (a - b)) / normalizer without the factor w, as the fork computes (the
    gradient where the weights are 0 or 1). Two bottoms follow R-FCN where loss_param sets
    normalization (or normalize), py-faster-rcnn otherwise. A second top (R-FCN) takes each
    instance's loss, the errors summed over channels: (N, 1, spatial...).
    """
    exact_num_bottom = None
    min_bottom = 2
    max_bottom = 4
    exact_num_top = None
    min_top = 1
    max_top = 2

    def setup(self, bottom, top):
        sigma = self.layer_param.smooth_l1_loss_param.sigma
        self.sigma2 = self.dtype.type(sigma * sigma)
        self.inside = len(bottom) >= 3
        self.outside = len(bottom) == 4
        loss = self.layer_param.loss_param
        self.mode = None                              # py-faster-rcnn: divide by num
        if len(bottom) == 3 or (len(bottom) == 2 and (loss.HasField('normalization') or loss.HasField('normalize'))):
            self.mode = normalization_mode(loss)

    def allow_force_backward(self, bottom_index):
        return bottom_index < 2

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        for i, blob in enumerate(bottom[1:], 1):
            if blob.shape[1:] != bottom[0].shape[1:]:
                raise self.error('bottom[%d] %s must have the shape of bottom[0] %s'
                                 % (i, blob.shape_string(), bottom[0].shape_string()))
        shape = bottom[0].shape
        if len(top) > 1:
            top[1].reshape(shape[:1] + (1,) + shape[2:])

    def normalizer(self, blob):
        num = blob.shape[0]
        if self.mode is None:
            return self.scalar(num)
        spatial = blob.count // max(num * _channels(blob), 1)
        value = {_NORM.FULL: num * spatial, _NORM.VALID: num * spatial, _NORM.BATCH_SIZE: num,
                 _NORM.NONE: 1}.get(self.mode)
        if self.mode == _NORM.PRE_FIXED:
            value = self.layer_param.loss_param.pre_fixed_normalizer
        return max(self.scalar(1), self.scalar(value))

    def forward(self, bottom, top):
        xp = bottom[0].xp
        diff = bottom[0].data - bottom[1].data
        if self.inside:
            diff *= bottom[2].data
        self.diff = diff
        small = xp.abs(diff) < 1 / self.sigma2
        errors = xp.where(small, self.scalar(0.5) * diff * diff * self.sigma2,
                          xp.abs(diff) - self.scalar(0.5) / self.sigma2)
        if self.outside:
            errors *= bottom[3].data
        top[0].data[...] = errors.sum() / self.normalizer(bottom[0])
        if len(top) > 1:
            per_instance = errors.reshape(bottom[0].shape[0], _channels(bottom[0]), -1).sum(axis=1)
            top[1].data[...] = per_instance.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        xp = bottom[0].xp
        diff = self.diff
        grad = xp.where(xp.abs(diff) < 1 / self.sigma2, self.sigma2 * diff, xp.sign(diff))
        if self.outside:
            grad = grad * bottom[2].data * bottom[3].data
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                alpha = self.scalar(sign) * top[0].diff.reshape(()) / self.normalizer(bottom[0])
                xp.multiply(grad, alpha, out=bottom[i].diff)


@register('BoxAnnotatorOHEM')
class BoxAnnotatorOHEMLayer(Layer):
    """R-FCN's online hard example mining. Bottoms: rois (R, 5, ...), each region's loss
    (R, 1, ...), labels (R, 1, ...) and box-regression loss weights (R, C, ...). Of each image's
    regions (rois' batch index), the roi_per_img of largest loss keep their label and weights;
    the others get ignore_label and weights 0. Equal losses go to the earlier region (the fork's
    std::sort leaves their order unspecified). Tops: labels, weights; nothing goes back."""
    exact_num_bottom = 4
    exact_num_top = 2

    def setup(self, bottom, top):
        param = self.layer_param.box_annotator_ohem_param
        if param.roi_per_img <= 0:
            raise self.error('box_annotator_ohem_param.roi_per_img must be > 0')
        self.roi_per_img = param.roi_per_img
        self.ignore_label = param.ignore_label

    def allow_force_backward(self, bottom_index):
        return False

    def reshape(self, bottom, top):
        rois = bottom[0]
        num = rois.shape[0]
        if _channels(rois) != 5:
            raise self.error('bottom[0] (rois) must have 5 channels, got %s' % rois.shape_string())
        self.spatial = rois.count // max(num * 5, 1)
        for i, channels in ((1, 1), (2, 1), (3, None)):
            blob = bottom[i]
            if (blob.shape[0] != num or blob.count != num * _channels(blob) * self.spatial
                    or (channels and _channels(blob) != channels)):
                raise self.error('bottom[%d] %s does not fit rois %s (%s channels per region)'
                                 % (i, blob.shape_string(), rois.shape_string(), channels or 'any'))
        top[0].reshape(bottom[2].shape)
        top[1].reshape(bottom[3].shape)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        num = bottom[0].shape[0]
        batch = _host(bottom[0].data).reshape(num, 5, -1)[:, 0].reshape(-1).astype(np.int64)
        if batch.size and batch.min() < 0:
            raise self.error('roi batch indices must be >= 0, got %d' % batch.min())
        loss = _host(bottom[1].data).reshape(-1)
        order = np.argsort(-loss, kind='stable')                    # hardest first
        grouped = order[np.argsort(batch[order], kind='stable')]    # by image, hardest first
        images = batch[grouped]
        rank = np.arange(len(grouped)) - np.searchsorted(images, images, side='left')
        keep = np.zeros(len(loss), bool)
        keep[grouped] = rank < self.roi_per_img
        keep = xp.asarray(keep.reshape(num, 1, -1))
        labels = bottom[2].data.reshape(num, 1, -1)
        top[0].data[...] = xp.where(keep, labels, self.dtype.type(self.ignore_label)).reshape(top[0].shape)
        weights = bottom[3].data.reshape(num, _channels(bottom[3]), -1)
        top[1].data[...] = xp.where(keep, weights, self.dtype.type(0)).reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        pass
