"""Layer implementations, one module per family; importing registers them all.

As pycaffe's `caffe.layers`, the package also hands out net_spec's layer functions:
`from caffe_py import layers as L; L.Convolution(bottom, num_output=8, ...)`.
"""
from . import deeplab, domain_transform, image_seg_data, mat_io, mobile, rcnn, rfcn_ohem, segmentation, yolo, yolov3_loss  # noqa: F401  fork layers
from . import (common, data, loss, neuron, normalization, python_layer,  # noqa: F401
               recurrent, vision)
from . import detection, video_data  # noqa: F401  (SSD's layers)


def __getattr__(name):
    """net_spec's layer function for a layer type name (capitalised, as L.Convolution)."""
    if name[:1].isupper():
        from ..net_spec import layers as net_spec_layers
        return getattr(net_spec_layers, name)
    raise AttributeError("module 'caffe_py.layers' has no attribute %r" % name)
