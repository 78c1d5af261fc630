"""caffe.io's images against pycaffe's own code path (scikit-image / SciPy calls as BVLC's
python/caffe/io.py makes them): load_image under both backends, resize_image and the
Transformer's mean under the 'skimage' backend, and what the 'opencv' backend does instead."""
import cv2
import numpy as np
import pytest
from PIL import Image

from caffe_py import io
from harness import io_image_backend

skimage = pytest.importorskip('skimage')
import skimage.io  # noqa: E402
import skimage.transform  # noqa: E402
from scipy.ndimage import zoom  # noqa: E402


def pycaffe_load_image(filename, color=True):
    """BVLC pycaffe's load_image (as_grey is spelled as_gray since scikit-image 0.16)."""
    img = skimage.img_as_float(skimage.io.imread(filename, as_gray=not color)).astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return img


def pycaffe_resize_image(im, new_dims, interp_order=1):
    """BVLC pycaffe's resize_image."""
    if im.shape[-1] == 1 or im.shape[-1] == 3:
        im_min, im_max = im.min(), im.max()
        if im_max > im_min:
            im_std = (im - im_min) / (im_max - im_min)
            resized_std = skimage.transform.resize(im_std, new_dims, order=interp_order, mode='constant')
            resized_im = resized_std * (im_max - im_min) + im_min
        else:
            ret = np.empty((new_dims[0], new_dims[1], im.shape[-1]), dtype=np.float32)
            ret.fill(im_min)
            return ret
    else:
        scale = tuple(np.array(new_dims, dtype=float) / np.array(im.shape[:2]))
        resized_im = zoom(im, scale + (1,), order=interp_order)
    return resized_im.astype(np.float32)


@pytest.fixture(params=['skimage', 'opencv'])
def backend(request):
    with io_image_backend(request.param):
        yield request.param


@pytest.fixture
def skimage_backend():
    with io_image_backend('skimage'):
        yield


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """Files of every kind load_image meets: JPEG, RGB/RGBA/grey/palette PNG, 16 bits."""
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.RandomState(0)
    smooth = cv2.GaussianBlur((rng.rand(37, 53, 3) * 255).astype(np.uint8), (5, 5), 2)
    rgba = np.dstack([smooth, (rng.rand(37, 53) * 255).astype(np.uint8)])
    files = {'jpg': smooth, 'rgb.png': smooth, 'rgba.png': rgba, 'gray.png': smooth[:, :, 1],
             'gray16.png': (rng.rand(9, 7) * 65535).astype(np.uint16),
             'rgb16.png': (rng.rand(9, 7, 3) * 65535).astype(np.uint16)}
    paths = {}
    for name, pixels in files.items():
        paths[name] = str(folder / ('image.' + name))
        Image.fromarray(pixels).save(paths[name]) if pixels.dtype == np.uint8 else \
            cv2.imwrite(paths[name], pixels[..., ::-1] if pixels.ndim == 3 else pixels)
    paths['palette.png'] = str(folder / 'palette.png')
    Image.fromarray(smooth).convert('P').save(paths['palette.png'])
    paths['la.png'] = str(folder / 'la.png')
    Image.fromarray(rgba[:, :, 1::2], 'LA').save(paths['la.png'])
    return paths


@pytest.mark.parametrize('name', ['jpg', 'rgb.png', 'rgba.png', 'gray.png', 'gray16.png', 'rgb16.png',
                                  'palette.png'])
@pytest.mark.parametrize('color', [True, False])
def test_load_image_gives_pycaffes_pixels(images, name, color, backend):
    expected = pycaffe_load_image(images[name], color)
    got = io.load_image(images[name], color)
    assert got.dtype == np.float32 and got.shape == expected.shape == \
        expected.shape[:2] + ((3,) if color else (1,))
    np.testing.assert_array_equal(got, expected)


def test_grey_alpha_images_load_as_rgba(images, backend):
    """pycaffe returns two channels (color) or fails (grey) on a grey + alpha PNG; caffe-py
    takes it as the RGBA image of the same look."""
    la = np.asarray(Image.open(images['la.png']))
    rgba = str(images['la.png']).replace('la.png', 'la_as_rgba.png')
    Image.fromarray(la[:, :, [0, 0, 0, 1]], 'RGBA').save(rgba)
    for color in (True, False):
        np.testing.assert_array_equal(io.load_image(images['la.png'], color), pycaffe_load_image(rgba, color))


@pytest.mark.filterwarnings('ignore::DeprecationWarning')     # imageio trying its plugins
def test_load_image_errors(tmp_path, backend):
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'not an image')
    with pytest.raises(io.FormatError, match='bad.png'):
        io.load_image(str(bad))
    with pytest.raises(io.MissingFileError, match='nope.jpg'):
        io.load_image(str(tmp_path / 'nope.jpg'))


@pytest.mark.parametrize('channels', [1, 3, 4])
@pytest.mark.parametrize('new_dims', [(23, 31), (80, 64), (37, 53)])
@pytest.mark.parametrize('order', [0, 1, 3])
def test_resize_image_is_pycaffes(skimage_backend, channels, new_dims, order):
    im = np.random.RandomState(channels).rand(37, 53, channels).astype(np.float32) * 3 - 1
    got = io.resize_image(im, new_dims, order)
    assert got.dtype == np.float32 and got.shape == new_dims + (channels,)
    np.testing.assert_array_equal(got, pycaffe_resize_image(im, new_dims, order))


def test_resize_of_a_constant_and_of_other_dtypes(skimage_backend):
    np.testing.assert_array_equal(io.resize_image(np.full((4, 5, 3), 0.5, np.float32), (7, 2)), 0.5)
    pixels = (np.random.RandomState(3).rand(12, 9, 3) * 255).astype(np.uint8)
    np.testing.assert_array_equal(io.resize_image(pixels, (5, 6)), pycaffe_resize_image(pixels, (5, 6)))
    wide = np.random.RandomState(4).rand(12, 9, 3)
    np.testing.assert_array_equal(io.resize_image(wide, (30, 20)), pycaffe_resize_image(wide, (30, 20)))


def test_what_the_opencv_backend_does_differently(backend):
    """Up-sampling: pycaffe's resize blends the border with zero (mode='constant'), OpenCV
    replicates it; both bilinear inside. Down-sampling: scikit-image smooths first."""
    im = np.linspace(0.2, 1.0, 16, dtype=np.float32).reshape(4, 4, 1)
    up = io.resize_image(np.dstack([im] * 3), (8, 8))
    reference = pycaffe_resize_image(np.dstack([im] * 3), (8, 8))
    if backend == 'skimage':
        np.testing.assert_array_equal(up, reference)
    else:
        np.testing.assert_allclose(up[2:6, 2:6], reference[2:6, 2:6], atol=1e-6)   # interior alike
        assert up[-1, -1, 0] == 1 and reference[-1, -1, 0] < 0.7                    # border differs


def test_transformer_mean_and_preprocess_round_as_pycaffe(skimage_backend):
    transformer = io.Transformer({'data': (1, 3, 6, 5)})
    transformer.set_transpose('data', (2, 0, 1))
    transformer.set_channel_swap('data', (2, 1, 0))
    transformer.set_raw_scale('data', 255)
    mean = np.random.RandomState(5).rand(3, 9, 7) * 200          # float64, resized as pycaffe
    transformer.set_mean('data', mean)
    m_min, m_max = mean.min(), mean.max()
    expected_mean = pycaffe_resize_image(((mean - m_min) / (m_max - m_min)).transpose(1, 2, 0),
                                         (6, 5)).transpose(2, 0, 1) * (m_max - m_min) + m_min
    np.testing.assert_array_equal(transformer.mean['data'], expected_mean)
    image = np.random.RandomState(6).rand(8, 8, 3).astype(np.float32)
    expected = pycaffe_resize_image(image, (6, 5)).transpose(2, 0, 1)[[2, 1, 0]]
    expected *= 255
    expected -= expected_mean
    np.testing.assert_array_equal(transformer.preprocess('data', image), expected)
    transformer.set_mean('data', np.array([104, 117, 123]))     # integer means keep their dtype
    assert transformer.mean['data'].dtype.kind == 'i'


def test_backend_choice():
    with io_image_backend('opencv'):
        assert io.image_backend() == 'opencv'
        with pytest.raises(ValueError, match="'skimage' or 'opencv'"):
            io.set_image_backend('pil')


def test_classifier_feeds_the_net_pycaffes_pixels(skimage_backend):
    """Classifier.predict (centre crop) equals the net run on pycaffe's own pipeline: its
    load_image, resize_image to image_dims, the centre crop and the Transformer's steps."""
    import os
    import caffe_py as caffe
    from conftest import ROOT
    mini = os.path.join(ROOT, 'models', 'mini_caffenet')
    model, weights = os.path.join(mini, 'deploy.prototxt'), os.path.join(mini, 'mini_caffenet_pretrained.caffemodel')
    paths = [os.path.join(ROOT, 'examples', 'finetune_style', 'images', name)
             for name in ('checks_060.png', 'dots_061.png')]
    mean = np.array([120.0, 125.0, 130.0])
    classifier = caffe.Classifier(model, weights, image_dims=(45, 41), mean=mean, raw_scale=255,
                                  input_scale=0.0125, channel_swap=(2, 1, 0))
    got = classifier.predict([io.load_image(p) for p in paths], oversample=False)
    crop = classifier.blobs['data'].shape[2]
    batch = []
    for path in paths:
        resized = pycaffe_resize_image(pycaffe_load_image(path), (45, 41))
        y0, x0 = int(45 / 2.0 - crop / 2.0), int(41 / 2.0 - crop / 2.0)
        chw = resized[y0:y0 + crop, x0:x0 + crop].transpose(2, 0, 1)[[2, 1, 0]]
        chw *= 255
        chw -= mean[:, np.newaxis, np.newaxis]
        chw *= 0.0125
        batch.append(chw)
    expected = caffe.Net(model, caffe.TEST, weights=weights).forward_all(data=np.stack(batch))['prob']
    np.testing.assert_array_equal(got, expected)
