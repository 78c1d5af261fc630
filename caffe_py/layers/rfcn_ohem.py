"""py-R-FCN's OHEM losses (YuwenXiong/py-R-FCN's caffe, Microsoft/caffe): SoftmaxWithLossOHEM and
SmoothL1LossOHEM, which add a per-region loss top for BoxAnnotatorOHEM to rank. (The fork runs
them on the GPU only; here they run on both.)"""
from ..layer import Layer, register
from ..proto import caffe_pb2
from .loss import SoftmaxWithLossLayer, normalization_mode
from .rcnn import SmoothL1LossLayer

_NORM = caffe_pb2.LossParameter


@register('SoftmaxWithLossOHEM')
class SoftmaxWithLossOHEMLayer(SoftmaxWithLossLayer):
    """SoftmaxWithLoss (softmax_param's axis, ignore_label, normalization; no class weighting)
    with a third top: each position's loss -log(max(p[label], FLT_MIN)), 0 where ignored, shaped
    like the labels. Backward is SoftmaxWithLoss's (the gradient of top[0]; the other tops send
    nothing down). Forward zeroes the bottom's diff, as the fork does."""
    max_top = 3

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.class_weights = None

    def forward(self, bottom, top):
        super().forward(bottom, top)        # SoftmaxWithLoss with R-FCN's per-instance top
        bottom[0].diff[...] = 0


@register('SmoothL1LossOHEM')
class SmoothL1LossOHEMLayer(SmoothL1LossLayer):
    """R-FCN's SmoothL1Loss (sigma 1) with bottoms (a, b) or (a, b, weights): sum(f(w * (a - b)))
    / loss_param's normalizer (FULL, VALID: num * spatial, BATCH_SIZE: num, PRE_FIXED:
    pre_fixed_normalizer, NONE: 1; at least 1), whatever the bottom count; backward
    f'(w * (a - b)) / normalizer without the factor w. An optional second top takes each region's
    loss summed over channels (N, 1, spatial...). Its setup skips LossLayer's, so no loss weight is
    implied: an unweighted top adds nothing to the net's loss, as in the fork."""
    max_bottom = 3
    default_loss_weight = 0.0

    def setup(self, bottom, top):
        self.sigma2 = self.scalar(1)
        self.inside = len(bottom) == 3
        self.outside = False
        self.mode = normalization_mode(self.layer_param.loss_param)

    def set_loss_weights(self, top):
        Layer.set_loss_weights(self, top)

    def allow_force_backward(self, bottom_index):
        return True
