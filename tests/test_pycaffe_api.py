"""pycaffe's Python surface beyond Net: caffe.io, forward_all / forward_backward_all,
Classifier, Detector and net_spec through `caffe.layers` / `caffe.params`."""
import os

import cv2
import numpy as np
import pytest

import caffe_py as caffe
from caffe_py import io
from caffe_py.formats import MissingFileError
from caffe_py.proto import caffe_pb2
from conftest import CORPUS, ROOT, need
from harness import io_image_backend

MINI = os.path.join(ROOT, 'models', 'mini_caffenet')
STYLE_IMAGES = os.path.join(ROOT, 'examples', 'finetune_style', 'images')


@pytest.fixture
def opencv_images():
    """OpenCV's image path (tests of its own resize values), the backend restored afterwards."""
    with io_image_backend('opencv'):
        yield


# -- blobs and datums --------------------------------------------------------------
def test_blobproto_round_trips_and_legacy_dims():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    diff = -arr
    blob = io.array_to_blobproto(arr, diff)
    assert list(blob.shape.dim) == [2, 3, 4]
    np.testing.assert_array_equal(io.blobproto_to_array(blob), arr)
    np.testing.assert_array_equal(io.blobproto_to_array(blob, return_diff=True), diff)
    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=3, width=4, data=list(range(24)))
    assert io.blobproto_to_array(legacy).shape == (1, 2, 3, 4)
    arrays = [arr, np.ones((5,), np.float32)]
    back = io.blobprotovector_str_to_arraylist(io.arraylist_to_blobprotovector_str(arrays))
    assert [a.shape for a in back] == [(2, 3, 4), (5,)]
    np.testing.assert_array_equal(back[0], arr)


def test_datum_round_trips():
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    datum = io.array_to_datum(pixels, label=7)
    assert (datum.channels, datum.height, datum.width, datum.label) == (2, 3, 4, 7)
    assert datum.data == pixels.tobytes() and not datum.float_data
    np.testing.assert_array_equal(io.datum_to_array(datum), pixels)
    floats = pixels.astype(np.float32) / 3
    datum = io.array_to_datum(floats)
    assert not datum.data and datum.label == 0
    np.testing.assert_allclose(io.datum_to_array(datum), floats, rtol=1e-6)
    with pytest.raises(ValueError, match='K x H x W'):
        io.array_to_datum(pixels[0])
    with pytest.raises(ValueError, match='encoded'):
        io.datum_to_array(caffe_pb2.Datum(encoded=True, data=b'\x89PNG'))


# -- images ----------------------------------------------------------------------
def test_load_image_is_rgb_float_in_0_1(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 255          # blue, green, red
    path = str(tmp_path / 'c.png')
    cv2.imwrite(path, bgr)
    img = io.load_image(path)
    assert img.shape == (4, 5, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img[0, 0], [1.0, 20 / 255, 10 / 255], rtol=1e-6)
    gray = io.load_image(path, color=False)
    assert gray.shape == (4, 5, 1)
    np.testing.assert_allclose(gray[0, 0, 0], 0.2125 + 0.7154 * 20 / 255 + 0.0721 * 10 / 255, rtol=1e-5)

    cv2.imwrite(str(tmp_path / 'g.png'), np.full((3, 3), 51, np.uint8))
    assert io.load_image(str(tmp_path / 'g.png')).shape == (3, 3, 3)
    assert io.load_image(str(tmp_path / 'g.png'), color=False).shape == (3, 3, 1)
    cv2.imwrite(str(tmp_path / 'a.png'), np.dstack([bgr, np.full((4, 5), 9, np.uint8)]))
    np.testing.assert_array_equal(io.load_image(str(tmp_path / 'a.png')), img)
    cv2.imwrite(str(tmp_path / 'w.png'), np.full((2, 2), 65535, np.uint16))
    np.testing.assert_array_equal(io.load_image(str(tmp_path / 'w.png')), 1.0)

    with pytest.raises(MissingFileError, match='nope.png'):
        io.load_image(str(tmp_path / 'nope.png'))


def test_resize_image_keeps_channels_and_constants(opencv_images):
    rng = np.random.default_rng(0)
    for channels in (1, 3, 5, 600):          # 600: more than one OpenCV call
        im = rng.random((6, 8, channels)).astype(np.float32)
        out = io.resize_image(im, (12, 4))
        assert out.shape == (12, 4, channels) and out.dtype == np.float32
        assert im.min() - 1e-6 <= out.min() and out.max() <= im.max() + 1e-6
        # every channel stays in its place (OpenCV's per-channel-count paths round differently)
        np.testing.assert_allclose(out[..., -1:], io.resize_image(im[..., -1:], (12, 4)), rtol=1e-6)
    np.testing.assert_array_equal(io.resize_image(np.full((3, 3, 3), 0.25, np.float32), (7, 9)), 0.25)
    im = rng.random((5, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(io.resize_image(im, (5, 5)), im)
    nearest = io.resize_image(im, (10, 10), interp_order=0)
    np.testing.assert_array_equal(nearest[::2, ::2], im)
    with pytest.raises(ValueError, match='interp_order'):
        io.resize_image(im, (2, 2), interp_order=2)


def test_oversample_crops_corners_centre_and_mirrors():
    images = [np.arange(7 * 9 * 2, dtype=np.float32).reshape(7, 9, 2) + 1000 * i for i in range(2)]
    crops = io.oversample(images, (4, 5))
    assert crops.shape == (20, 4, 5, 2)
    for i, im in enumerate(images):
        expected = [im[:4, :5], im[:4, 4:], im[3:, :5], im[3:, 4:], im[1:5, 2:7]]   # centre: int(3.5-2), int(4.5-2.5)
        for j, crop in enumerate(expected):
            np.testing.assert_array_equal(crops[10 * i + j], crop)
            np.testing.assert_array_equal(crops[10 * i + 5 + j], crop[:, ::-1])


# -- Transformer -----------------------------------------------------------------
def test_transformer_order_of_operations_and_inverse():
    t = io.Transformer({'data': (1, 3, 4, 5)})
    t.set_transpose('data', (2, 0, 1))
    t.set_channel_swap('data', (2, 1, 0))
    t.set_raw_scale('data', 255)
    mean = np.array([104.0, 117.0, 123.0])
    t.set_mean('data', mean)
    t.set_input_scale('data', 0.5)
    image = np.random.default_rng(1).random((4, 5, 3)).astype(np.float32)
    out = t.preprocess('data', image)
    expected = (image.transpose(2, 0, 1)[::-1] * 255 - mean[:, None, None]) * 0.5
    assert out.shape == (3, 4, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(t.deprocess('data', out[np.newaxis]), image, rtol=1e-5, atol=1e-6)
    resized = t.preprocess('data', np.ones((8, 10, 3), np.float32))
    assert resized.shape == (3, 4, 5)


def test_transformer_mean_shapes_and_errors():
    t = io.Transformer({'data': (2, 3, 4, 4)})
    t.set_mean('data', np.ones((3, 4, 4)))
    t.set_mean('data', np.ones((3, 8, 8)))                  # another size: resized
    assert t.mean['data'].shape == (3, 4, 4)
    with pytest.raises(ValueError, match='channels'):
        t.set_mean('data', np.ones(2))
    with pytest.raises(ValueError, match='invalid'):
        t.set_mean('data', np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match='Transpose'):
        t.set_transpose('data', (1, 0))
    with pytest.raises(ValueError, match='Channel swap'):
        t.set_channel_swap('data', (1, 0))
    with pytest.raises(KeyError, match='not one of the net inputs'):
        t.preprocess('label', np.ones((4, 4, 3)))


# -- Net.forward_all / forward_backward_all ---------------------------------------
def _small_net(tmp_path, batch=4):
    path = tmp_path / 'net.prototxt'
    path.write_text('''
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: %d dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
force_backward: true
''' % batch)
    caffe.set_random_seed(3)
    return caffe.Net(str(path), caffe.TEST)


def test_forward_all_batches_and_drops_the_padding(tmp_path):
    net = _small_net(tmp_path)
    data = np.random.default_rng(2).standard_normal((10, 3)).astype(np.float32)
    out = net.forward_all(data=data, blobs=['ip'])
    assert set(out) == {'prob', 'ip'} and out['prob'].shape == (10, 2)
    w, b = net.params['ip'][0].data, net.params['ip'][1].data
    logits = data @ w.T + b
    np.testing.assert_allclose(out['ip'], logits, rtol=1e-5, atol=1e-6)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(out['prob'], e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_forward_backward_all_gives_input_gradients(tmp_path):
    net = _small_net(tmp_path)
    rng = np.random.default_rng(4)
    data = rng.standard_normal((6, 3)).astype(np.float32)
    top_diff = rng.standard_normal((6, 2)).astype(np.float32)
    outs, diffs = net.forward_backward_all(data=data, prob=top_diff)
    assert outs['prob'].shape == (6, 2) and diffs['data'].shape == (6, 3)
    for i in range(6):
        one = np.zeros((4, 3), np.float32)
        one[0] = data[i]
        net.forward(data=one)
        grad = np.zeros((4, 2), np.float32)
        grad[0] = top_diff[i]
        np.testing.assert_allclose(diffs['data'][i], net.backward(prob=grad)['data'][0], rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match='neither inputs nor outputs'):
        net.forward_backward_all(label=data)
    with pytest.raises(ValueError, match='no items'):
        net.forward_all(data=data[:0])


# -- Classifier / Detector --------------------------------------------------------
MODEL = os.path.join(MINI, 'deploy.prototxt')
WEIGHTS = os.path.join(MINI, 'mini_caffenet_pretrained.caffemodel')
IMAGES = [os.path.join(STYLE_IMAGES, name) for name in ('checks_060.png', 'dots_061.png', 'stripes_062.png')]


def _caffe_test_transform(paths, crop=32):
    """What a Data/ImageData layer in TEST does to these images: BGR bytes, centre crop,
    minus 128, times 0.0125 (examples/finetune_style/train_val.prototxt)."""
    batch = []
    for path in paths:
        image = cv2.imread(path).astype(np.float32)
        y, x = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
        batch.append(((image[y:y + crop, x:x + crop] - 128) * 0.0125).transpose(2, 0, 1))
    return np.stack(batch)


@pytest.fixture
def style_images():
    missing = [p for p in IMAGES if not os.path.exists(p)]
    if missing:
        pytest.skip('example images absent: %s' % missing)
    return IMAGES


def test_classifier_centre_crop_equals_caffes_test_transform(style_images, opencv_images):
    classifier = caffe.Classifier(MODEL, WEIGHTS, image_dims=(40, 40), mean=np.full(3, 128.0),
                                  raw_scale=255, input_scale=0.0125, channel_swap=(2, 1, 0))
    predictions = classifier.predict([caffe.io.load_image(p) for p in style_images], oversample=False)
    net = caffe.Net(MODEL, caffe.TEST, weights=WEIGHTS)
    expected = net.forward_all(data=_caffe_test_transform(style_images))['prob']
    assert predictions.shape == (3, 10)
    np.testing.assert_allclose(predictions, expected, rtol=1e-6, atol=0)
    averaged = classifier.predict([caffe.io.load_image(p) for p in style_images])
    assert averaged.shape == (3, 10)
    np.testing.assert_allclose(averaged.sum(axis=1), 1, rtol=1e-5)


def test_detector_windows_with_and_without_context(style_images):
    options = dict(mean=np.full(3, 128.0), raw_scale=255, input_scale=0.0125, channel_swap=(2, 1, 0))
    windows = [np.array([4, 4, 36, 36]), np.array([0, 0, 20, 30])]
    detector = caffe.Detector(MODEL, WEIGHTS, **options)
    found = detector.detect_windows([(style_images[0], windows)])
    assert [d['filename'] for d in found] == [style_images[0]] * 2
    assert all(d['prediction'].shape == (10,) for d in found)
    # the first window is exactly the centre crop
    expected = caffe.Net(MODEL, caffe.TEST, weights=WEIGHTS).forward_all(
        data=_caffe_test_transform(style_images[:1]))['prob'][0]
    np.testing.assert_allclose(found[0]['prediction'], expected, rtol=1e-6, atol=0)

    padded = caffe.Detector(MODEL, WEIGHTS, context_pad=4, **options)
    assert tuple(padded.crop_dims) == (32, 32, 3)
    image = caffe.io.load_image(style_images[0])
    assert padded.crop(image, windows[1]).shape == (32, 32, 3)
    corner = padded.crop(image, np.array([0, 0, 10, 10]))     # context beyond the image: the mean
    np.testing.assert_allclose(corner[0, 0], 128 / 255.0, rtol=1e-6)
    with pytest.raises(ImportError, match='detect_windows'):
        padded.detect_selective_search(style_images[:1])


# -- net_spec through caffe.layers / caffe.params ------------------------------------
def test_net_spec_from_the_top_level():
    from caffe_py import layers as L, params as P
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, weight_filler=dict(type='xavier'))
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    proto = n.to_proto()
    assert [layer.type for layer in proto.layer] == ['Input', 'Convolution', 'Pooling']
    assert caffe.to_proto(n.pool).layer[-1].pooling_param.pool == caffe_pb2.PoolingParameter.MAX
    with pytest.raises(AttributeError):
        L.vision_helpers_that_do_not_exist


# -- the classic pycaffe notebooks on real files of the corpus ---------------------------
def test_imagenet_mean_file_through_caffe_io():
    path = need(os.path.join(CORPUS, 'imagenet_mean', 'imagenet_mean.binaryproto'))
    blob = caffe_pb2.BlobProto.FromString(open(path, 'rb').read())
    mean = caffe.io.blobproto_to_array(blob)
    assert mean.shape == (1, 3, 256, 256) and mean.dtype == np.float64
    # per-channel BGR means of this copy of the ILSVRC-2012 mean (pycaffe's .npy has 104.0, 116.7, 122.7)
    np.testing.assert_allclose(mean[0].mean(1).mean(1), [103.882, 116.802, 123.702], atol=1e-3)
    transformer = caffe.io.Transformer({'data': (10, 3, 227, 227)})
    transformer.set_mean('data', mean[0])
    assert transformer.mean['data'].shape == (3, 227, 227)
    np.testing.assert_allclose(transformer.mean['data'].mean(axis=(1, 2)), mean[0].mean(axis=(1, 2)), rtol=2e-3)


def test_net_surgery_fully_convolutional_caffenet():
    """examples/net_surgery: fc6-fc8 weights poured into convolutions; the full-conv net maps a
    451x451 input to an 8x8 map, and on a 227x227 input its one output is CaffeNet's."""
    full_conv = need(os.path.join(CORPUS, 'net_surgery', 'bvlc_caffenet_full_conv.prototxt'))
    deploy = need(os.path.join(CORPUS, 'bvlc_reference_caffenet', 'deploy.prototxt'))
    caffe.set_random_seed(0)
    net = caffe.Net(deploy, caffe.TEST)
    net.blobs['data'].reshape(1, 3, 227, 227)
    net.reshape()
    rng = np.random.default_rng(0)
    for blobs in net.params.values():
        fan_in = blobs[0].count // blobs[0].shape[0]
        blobs[0].data[...] = rng.standard_normal(blobs[0].shape) * np.sqrt(2.0 / fan_in)
        blobs[1].data[...] = rng.uniform(-0.1, 0.1, blobs[1].shape)
    conv_net = caffe.Net(full_conv, caffe.TEST)
    for name in net.params:
        target = name + '-conv' if name.startswith('fc') else name
        conv_net.params[target][0].data.flat = net.params[name][0].data.flat
        conv_net.params[target][1].data[...] = net.params[name][1].data
    image = rng.uniform(-50, 50, (1, 3, 227, 227)).astype(np.float32)
    net.blobs['data'].data[...] = image
    expected = net.forward()['prob'][0]
    assert conv_net.forward()['prob'].shape == (1, 1000, 8, 8)       # 451 x 451: an 8 x 8 map
    conv_net.blobs['data'].reshape(1, 3, 227, 227)                   # one window: CaffeNet itself
    conv_net.reshape()
    conv_net.blobs['data'].data[...] = image
    out = conv_net.forward()['prob']
    assert out.shape == (1, 1000, 1, 1)
    np.testing.assert_allclose(out[0, :, 0, 0], expected, rtol=1e-4, atol=1e-7)


def classify_styles():
    """The example style images through a Classifier with the example's TEST transform."""
    classifier = caffe.Classifier(MODEL, WEIGHTS, image_dims=(40, 40), mean=np.full(3, 128.0), raw_scale=255,
                                  input_scale=0.0125, channel_swap=(2, 1, 0))
    return classifier.predict([caffe.io.load_image(p) for p in IMAGES])


def test_classifier_in_gpu_mode_matches_the_cpu(style_images):
    import fakecupy
    if fakecupy.compiler() is None:
        pytest.skip('no C++ compiler for the CuPy stand-in')
    expected = classify_styles()
    with fakecupy.fake_gpu():
        got = classify_styles()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
