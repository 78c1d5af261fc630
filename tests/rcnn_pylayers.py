"""A user's Faster R-CNN-style Python layer, as py-faster-rcnn's rpn.proposal_layer is one:
proposals from RPN scores and box deltas, for tests/test_fork_layers.py."""
import ast

import numpy as np

import caffe_py as caffe


class ProposalLayer(caffe.Layer):
    """One square anchor of side `anchor` per cell of stride `feat_stride`; the `top_n`
    best-scoring anchors, moved by their deltas (dx, dy, dw, dh) and clipped to the image,
    as rows (0, x1, y1, x2, y2). Bottoms: scores (1, 2, H, W), deltas (1, 4, H, W), im_info (1, 3)."""

    def setup(self, bottom, top):
        config = ast.literal_eval(self.param_str)
        self.stride, self.anchor, self.top_n = config['feat_stride'], config['anchor'], config['top_n']
        top[0].reshape(1, 5)

    def reshape(self, bottom, top):
        top[0].reshape(self.top_n, 5)

    def forward(self, bottom, top):
        _, _, h, w = bottom[0].data.shape
        ys, xs = np.mgrid[0:h, 0:w] * self.stride + self.stride / 2.0
        scores = bottom[0].data[0, 1].reshape(-1)
        deltas = bottom[1].data[0].reshape(4, -1)
        best = np.argsort(-scores, kind='stable')[:self.top_n]
        cx = xs.reshape(-1)[best] + deltas[0, best] * self.anchor
        cy = ys.reshape(-1)[best] + deltas[1, best] * self.anchor
        half_w = np.exp(deltas[2, best]) * self.anchor / 2
        half_h = np.exp(deltas[3, best]) * self.anchor / 2
        height, width = bottom[2].data[0, :2]
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], 1)
        boxes = np.clip(boxes, 0, [width - 1, height - 1, width - 1, height - 1])
        top[0].data[...] = np.column_stack([np.zeros(len(best)), boxes])

    def backward(self, top, propagate_down, bottom):
        pass
