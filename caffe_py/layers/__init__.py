"""Layer implementations, one module per family; importing registers them all."""
from . import (common, data, loss, neuron, normalization, python_layer,  # noqa: F401
               recurrent, vision)
