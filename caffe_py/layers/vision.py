"""Vision layers: Convolution, Deconvolution, Im2col, Pooling, SPP."""
