"""pycaffe's `caffe.draw`: pictures of net definitions (Graphviz's `dot` when installed, else
matplotlib), as `caffe-py draw_net` draws them.

    caffe.draw.draw_net_to_file(net_param, 'net.png', rankdir='LR', phase=caffe.TRAIN)
"""
import os
import tempfile

from .tools.draw_net import Graph, in_phase, render


def draw_net_to_file(caffe_net, filename, rankdir='LR', phase=None, display_lrm=False):
    """Draw NetParameter `caffe_net` to `filename` (.png, .svg, .pdf or .dot); `phase` keeps the
    layers of TRAIN or TEST only. (`display_lrm`, pycaffe's learning-rate labels, is not drawn.)"""
    render(Graph(in_phase(caffe_net, phase)), filename, rankdir)


def draw_net(caffe_net, rankdir='LR', ext='png', phase=None, display_lrm=False):
    """The drawing of NetParameter `caffe_net` as bytes in format `ext` (display_lrm is taken
    for pycaffe's signature and ignored, as in draw_net_to_file)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'net.' + ext)
        draw_net_to_file(caffe_net, path, rankdir, phase, display_lrm)
        with open(path, 'rb') as f:
            return f.read()
