"""CUDA sources of caffe-py's GPU kernels (package data; caffe_py.gpu compiles them with CuPy)."""
