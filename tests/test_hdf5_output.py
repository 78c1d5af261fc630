"""HDF5Output writes its bottoms as Caffe's data/label datasets, appending one batch per forward."""
import h5py
import numpy as np
from google.protobuf import text_format

import caffe_py
from caffe_py.proto import caffe_pb2


def test_hdf5_output_appends_batches(tmp_path):
    path = tmp_path / 'out.h5'
    param = text_format.Parse('''
      layer { name: "in" type: "Input" top: "x" top: "y"
              input_param { shape { dim: 3 dim: 2 dim: 2 } shape { dim: 3 } } }
      layer { name: "out" type: "HDF5Output" bottom: "x" bottom: "y"
              hdf5_output_param { file_name: "%s" } }''' % path, caffe_pb2.NetParameter())
    net = caffe_py.Net(param, caffe_py.TEST)
    batches = []
    for k in range(2):
        x = np.random.default_rng(k).standard_normal((3, 2, 2)).astype(np.float32)
        y = np.arange(3, dtype=np.float32) + 10 * k
        net.forward(x=x, y=y)
        batches.append((x, y))
    net.close()
    with h5py.File(path, 'r') as f:
        assert f['data'].shape == (6, 2, 2, 1)
        assert f['label'].shape == (6, 1, 1, 1)
        np.testing.assert_array_equal(f['data'][:, :, :, 0], np.r_[batches[0][0], batches[1][0]])
        np.testing.assert_array_equal(f['label'][:, 0, 0, 0], np.r_[batches[0][1], batches[1][1]])


def test_every_bvlc_layer_type_is_registered():
    bvlc = '''AbsVal Accuracy ArgMax BNLL BatchNorm BatchReindex Bias Clip Concat ContrastiveLoss Convolution
        Crop Data Deconvolution Dropout DummyData ELU Eltwise Embed EuclideanLoss Exp Filter Flatten HDF5Data
        HDF5Output HingeLoss Im2col ImageData InfogainLoss InnerProduct Input LRN LSTM LSTMUnit Log MVN
        MemoryData MultinomialLogisticLoss PReLU Parameter Pooling Power Python RNN ReLU Reduction Reshape SPP
        Scale Sigmoid SigmoidCrossEntropyLoss Silence Slice Softmax SoftmaxWithLoss Split Swish TanH Threshold
        Tile WindowData'''.split()
    assert len(bvlc) == 61
    assert set(bvlc) <= set(caffe_py.layer_type_list())
