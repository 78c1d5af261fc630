"""Caffe's protobuf schema for Python.

``caffe_pb2`` is generated from ``proto/caffe.proto`` by ``python -m
caffe_py.proto.regen`` and committed; a test checks that it is up to date.
"""
