"""Data layers: Input here; the database, image and HDF5 readers live in caffe_py.data."""
from ..layer import Layer, register


@register('Input')
class InputLayer(Layer):
    """Tops shaped by input_param.shape (one shape for all tops, or one per top); filled by the user."""
    exact_num_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        shapes = self.layer_param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise self.error('input_param must give 0, 1 or %d shapes, got %d' % (len(top), len(shapes)))
        for i, blob in enumerate(top):
            if shapes:
                blob.reshape(tuple(shapes[0 if len(shapes) == 1 else i].dim))

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass
