"""Elementwise (neuron) layers: ReLU, Sigmoid, TanH, Dropout, PReLU, ..."""
