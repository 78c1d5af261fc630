"""Common layers: InnerProduct, Concat, Slice, Split, Flatten, Reshape, Eltwise, Softmax, ..."""
