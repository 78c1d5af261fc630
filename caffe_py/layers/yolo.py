"""Layers of the YOLO Caffe ports (eric612/MobileNet-YOLO and the caffe-yolo family): Reorg.
(Their Upsample shares its type name with SegNet's and lives in segmentation.py.)
"""
from ..layer import Layer, register


@register('Reorg')
class ReorgLayer(Layer):
    """Darknet's reorg (YOLOv2's passthrough), with its memory order: the bottom (N, C, H, W) is
    read as (N, C/s^2, H*s, W*s) and written as (N, C, H, W) in stride-phase-major channel order,
    the top being that memory seen as (N, C*s^2, H/s, W/s). `reverse` is the inverse: (N, C, H, W)
    -> (N, C/s^2, H*s, W*s). Backward is the inverse permutation."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.reorg_param
        if not param.HasField('stride') or param.stride < 1:
            raise self.error('Reorg Layer needs a positive stride param.')
        if top[0] is bottom[0]:
            raise self.error('Reorg Layer does not allow in-place computation.')
        self.stride = param.stride
        self.reverse = param.reverse

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error('bottom must be (N, C, H, W), got %s' % bottom[0].shape_string())
        n, c, h, w = bottom[0].shape
        s = self.stride
        if c % (s * s):
            raise self.error('channels (%d) must be a multiple of stride^2 (%d)' % (c, s * s))
        if self.reverse:
            top[0].reshape(n, c // (s * s), h * s, w * s)
        else:
            if h % s or w % s:
                raise self.error('height and width (%d, %d) must be multiples of the stride %d' % (h, w, s))
            top[0].reshape(n, c * s * s, h // s, w // s)
        # the two views of the same memory, in the bottom's C, H, W (both directions):
        # "wide" (N, C/s^2, H, s, W, s) and "deep" (N, s, s, C/s^2, H, W)
        self.wide = (n, c // (s * s), h, s, w, s)
        self.deep = (n, s, s, c // (s * s), h, w)

    def _wide_to_deep(self, src, dst):
        dst.reshape(self.deep)[...] = src.reshape(self.wide).transpose(0, 3, 5, 1, 2, 4)

    def _deep_to_wide(self, src, dst):
        dst.reshape(self.wide)[...] = src.reshape(self.deep).transpose(0, 3, 4, 1, 5, 2)

    def forward(self, bottom, top):
        move = self._deep_to_wide if self.reverse else self._wide_to_deep
        move(bottom[0].data, top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            move = self._wide_to_deep if self.reverse else self._deep_to_wide
            move(top[0].diff, bottom[0].diff)
