"""2-D convolution with unit stride and dilation through the discrete Fourier transform (CPU).

With every plane zero-padded to Caffe's padded extent (hp, wp), the circular correlation
of an image with a kernel equals the linear one at every output, so per frequency the
convolution is a matrix product over channels: output spectrum (N x O) = input spectrum
(N x C) x weight spectrum (C x O), per group. Backward is the same: the data gradient is the
top diff's spectrum times the weight spectrum, the weight gradient the top diff's conjugate
spectrum times the input's, summed over the batch.

The transforms are matrix products as well: a real DFT along the width (a real matrix
giving interleaved (re, im) half spectra, which view as complex64) and a complex DFT along
the height; each reads only the positions it needs (the padding is implicit) and each
inverse writes only the positions kept. Spectra are laid out (hp, wf, rows, channels), so
the per-frequency products are one stack of small complex GEMMs. The top diff and the weights
are transformed with conjugated matrices (a real array's conjugate spectrum costs nothing
extra), which makes each of the three products a plain one.

Where the kernel is large next to the planes and channels are many (CIFAR-10's 5x5
convolutions of 16x16 and 8x8 planes) this is a third of the GEMM's multiply-adds with
no column matrix; `worthwhile` decides per layer. In float32 the results agree with the
GEMM's to about 1e-6 of the layer's scale.
"""
import numpy as np

from .cores import add, assign, matmul, matmul_stack, split_apply
from .im2col import Buffers, ForwardMemo

SPECTRUM_BYTES = 32 << 20   # the largest spectrum of a minibatch worth holding
# The route is chosen by a cost model fitted to forward+backward times of the convolutions of
# LeNet, CIFAR10-quick and CaffeNet on a 2-core machine (benchmarks/bench_conv_routes.py):
BYTE_COST = 16              # multiply-adds that streaming one byte costs
ADVANTAGE = 0.7             # spectral where its cost is at most this fraction of the GEMM's
SMALLEST = 1 << 22          # GEMM cost below which its few calls beat the transforms' many


def _angles(n, positions, frequencies):
    return 2 * np.pi * np.outer(positions, frequencies) / n


def real_dft(n, positions, conj=False):
    """(len(positions), 2 * (n // 2 + 1)) real: samples at `positions` (zero elsewhere)
    times it give the length-n half spectrum, interleaved (re, im); conj gives its conjugate."""
    angle = _angles(n, positions, np.arange(n // 2 + 1))
    matrix = np.empty((len(positions), 2 * angle.shape[1]))
    matrix[:, 0::2] = np.cos(angle)
    matrix[:, 1::2] = np.sin(angle) if conj else -np.sin(angle)
    return matrix


def real_idft(n, positions, conj=False):
    """(2 * (n // 2 + 1), len(positions)) real: an interleaved half spectrum of a real
    length-n signal (its conjugate if conj) times it gives the signal at `positions`."""
    half = n // 2 + 1
    angle = _angles(n, np.arange(half), positions)
    weight = np.full((half, 1), 2.0 / n)
    weight[0] = 1.0 / n
    if n % 2 == 0:
        weight[-1] = 1.0 / n
    matrix = np.empty((2 * half, len(positions)))
    matrix[0::2] = weight * np.cos(angle)
    matrix[1::2] = weight * (np.sin(angle) if conj else -np.sin(angle))
    return matrix


def complex_dft(n, positions, conj=False):
    """(n, len(positions)) complex: the length-n DFT of samples at `positions` (zero elsewhere)."""
    sign = 1 if conj else -1
    return np.exp(sign * 1j * _angles(n, np.arange(n), positions))


def complex_idft(n, positions, conj=False):
    """(len(positions), n) complex: the inverse DFT evaluated at `positions`."""
    sign = -1 if conj else 1
    return np.exp(sign * 1j * _angles(n, positions, np.arange(n))) / n


def _spectrum_shape(window):
    """(hp, wf): the padded height and the half width of a plane's spectrum."""
    hp, wp = window.padded
    return hp, wp // 2 + 1


def costs(window, group, in_channels, out_channels, num):
    """(GEMM, spectral) cost of one forward pass: real multiply-adds plus BYTE_COST per byte of
    the arrays each route streams (the column matrix; the input, weight and output spectra)."""
    (kh, kw), (h, w), (oh, ow) = window.kernel, window.size, window.out
    hp, wf = _spectrum_shape(window)
    per_group = in_channels // group
    gemm = num * out_channels * per_group * kh * kw * oh * ow
    columns = 4 * num * in_channels * kh * kw * oh * ow
    into = num * in_channels * h * (w * 2 * wf + 4 * hp * wf)
    product = 4 * hp * wf * num * per_group * out_channels
    back = num * out_channels * oh * (4 * hp * wf + 2 * wf * ow)
    weights = out_channels * per_group * kh * (kw * 2 * wf + 4 * hp * wf)
    spectra = 8 * hp * wf * (num * in_channels + out_channels * per_group + num * out_channels)
    return gemm + BYTE_COST * columns, into + product + back + weights + BYTE_COST * spectra


def worthwhile(window, group, in_channels, out_channels, num):
    """Whether a convolution should run spectrally: 2-D, unit stride and dilation, not small,
    spectra of moderate size, and at most ADVANTAGE of the GEMM's cost."""
    if len(window.kernel) != 2 or window.stride != (1, 1) or window.dilation != (1, 1) or not num:
        return False
    hp, wf = _spectrum_shape(window)
    spectrum = num * max(in_channels, out_channels) * hp * wf * 8
    if spectrum > SPECTRUM_BYTES:
        return False
    gemm, spectral = costs(window, group, in_channels, out_channels, num)
    return gemm >= SMALLEST and spectral <= ADVANTAGE * gemm


def _complex(dtype):
    return np.result_type(dtype, np.complex64)


class SpectralConv:
    """_GemmConv's interface (forward, backward, transposed_forward, transposed_backward) for
    the convolutions `worthwhile` accepts; arrays (num, C, h, w), weights (out, in / group, kh, kw),
    in float32 (complex64 spectra) or float64 (complex128)."""

    def __init__(self, window, group, in_channels, out_channels):
        (kh, kw), (ph, pw), (h, w), (oh, ow) = window.kernel, window.pad, window.size, window.out
        hp, wp = window.padded
        self.window = window
        self.group = group
        self.shape = _spectrum_shape(window)
        rows, cols = range(ph, ph + h), range(pw, pw + w)
        # (height, width) matrices; the top diff and the weights are transformed conjugated, so
        # that every product below is a plain one (see the module docstring)
        self.exact = {
            'from_im': (complex_dft(hp, rows), real_dft(wp, cols)),
            'from_out': (complex_dft(hp, range(oh), True), real_dft(wp, range(ow), True)),
            'from_kernel': (complex_dft(hp, range(kh), True), real_dft(wp, range(kw), True)),
            'to_out': (complex_idft(hp, range(oh)), real_idft(wp, range(ow))),
            'to_im': (complex_idft(hp, rows, True), real_idft(wp, cols, True)),
            'to_kernel': (complex_idft(hp, range(kh)), real_idft(wp, range(kw))),
        }
        self.cast = {}
        self.buffers = Buffers()
        self.memo = ForwardMemo()           # the input's spectrum, for the weight gradient
        self.weight_memo = ForwardMemo()    # the weights', for the data gradient

    def matrices(self, name, dtype):
        """The (height, width) pair `name` in dtype's precision."""
        key = name, np.dtype(dtype)
        if key not in self.cast:
            along_h, along_w = self.exact[name]
            self.cast[key] = along_h.astype(_complex(dtype)), along_w.astype(dtype)
        return self.cast[key]

    def scratch(self, name, shape, dtype, like):
        """A buffer that holds nothing between calls (one per name, grown as needed)."""
        return self.buffers.flat(name, int(np.prod(shape)), dtype, like).reshape(shape)

    # -- transforms ----------------------------------------------------------
    def spectrum(self, planes, dfts, name):
        """planes (A, B, h, w) real, C-contiguous -> (hp, wf, A, B) complex, with the
        matrices `dfts` ('from_im', 'from_out' or 'from_kernel'), held in the buffer `name`."""
        (hp, wf), (along_h, along_w) = self.shape, self.matrices(dfts, planes.dtype)
        a, b, h, w = planes.shape
        complex_type = _complex(planes.dtype)
        rows = self.scratch('rows', (a, b, h, 2 * wf), planes.dtype, planes)
        matmul(planes.reshape(-1, w), along_w, rows.reshape(-1, 2 * wf))
        by_row = self.scratch('by_row', (h, wf, a, b), complex_type, planes)
        split_apply(assign, by_row, rows.view(complex_type).transpose(2, 3, 0, 1))
        spectrum = self.buffers.get(name, (hp, wf, a, b), complex_type, planes)
        matmul(along_h, by_row.reshape(h, -1), spectrum.reshape(hp, -1))
        return spectrum

    def planes(self, spectrum, idfts, out):
        """out (A, B, rows, cols) real, C-contiguous = the inverse of spectrum (hp, wf, A, B)
        through the matrices `idfts` ('to_out', 'to_im' or 'to_kernel')."""
        (hp, wf), (along_h, along_w) = self.shape, self.matrices(idfts, out.dtype)
        a, b = spectrum.shape[2:]
        rows = along_h.shape[0]
        mixed = self.scratch('mixed', (rows, wf, a, b), spectrum.dtype, out)
        matmul(along_h, spectrum.reshape(hp, -1), mixed.reshape(rows, -1))
        by_plane = self.scratch('by_plane', (a, b, rows, wf), spectrum.dtype, out)
        split_apply(assign, by_plane, mixed.transpose(2, 3, 0, 1))
        matmul(by_plane.view(out.dtype).reshape(-1, 2 * wf), along_w, out.reshape(-1, along_w.shape[1]))

    def grouped(self, spectrum):
        """(hp, wf, A, B) -> a (hp * wf, group, A, B / group) view."""
        hp, wf, a, b = spectrum.shape
        return spectrum.reshape(hp * wf, a, self.group, b // self.group).transpose(0, 2, 1, 3)

    def product(self, left, right, columns):
        """(hp, wf, A, columns) spectrum = left @ right per frequency and group (scratch)."""
        hp, wf = self.shape
        out = self.scratch('product', (hp, wf, left.shape[2], columns), left.dtype, left)
        matmul_stack(left, right, self.grouped(out))
        return out

    def weights(self, weight, keep=False):
        """The conjugated weight spectrum as (hp * wf, group, out / group, in / group): the one
        forward computed if `weight` is unchanged since, else computed (and kept if `keep`)."""
        spectrum = self.weight_memo.recall(weight)
        if spectrum is None:
            (hp, wf), (out, per_group) = self.shape, weight.shape[:2]
            spectrum = self.spectrum(weight, 'from_kernel', 'weight')
            spectrum = spectrum.reshape(hp * wf, self.group, out // self.group, per_group)
        if keep:
            self.weight_memo.keep(weight, spectrum)
        return spectrum

    # -- the passes ----------------------------------------------------------
    def correlate(self, im, weight, out_side):
        """out_side = weight * im; returns im's spectrum."""
        spectrum = self.spectrum(im, 'from_im', 'im')
        weights = self.weights(weight, keep=True).swapaxes(2, 3)
        product = self.product(self.grouped(spectrum), weights, out_side.shape[1])
        self.planes(product, 'to_out', out_side)
        return spectrum

    def convolve_back(self, out_side, weight, im, out_spectrum=None):
        """im = the transposed convolution of out_side (Convolution's data gradient)."""
        if out_spectrum is None:
            out_spectrum = self.spectrum(out_side, 'from_out', 'top')
        product = self.product(self.grouped(out_spectrum), self.weights(weight), im.shape[1])
        self.planes(product, 'to_im', im)

    def weight_grad(self, out_spectrum, im_spectrum, weight_diff):
        """weight_diff += the correlation of the out side with the im side over the batch."""
        hp, wf = self.shape
        out, per_group = weight_diff.shape[:2]
        product = self.scratch('product', (hp, wf, out, per_group), out_spectrum.dtype, weight_diff)
        matmul_stack(self.grouped(out_spectrum).swapaxes(2, 3), self.grouped(im_spectrum),
                     product.reshape(hp * wf, self.group, out // self.group, per_group))
        grad = self.buffers.get('weight_grad', weight_diff.shape, weight_diff.dtype, weight_diff)
        self.planes(product, 'to_kernel', grad)
        weight_diff += grad

    def forward(self, im, weight, out_side, bias=None):
        """Convolution: out_side = weight * im (+ bias)."""
        spectrum = self.correlate(im, weight, out_side)
        if bias is not None:
            split_apply(add, out_side, out_side, bias.reshape(-1, 1, 1))
        self.memo.keep(im, spectrum)

    def backward(self, im, out_diff, weight, weight_diff=None, im_diff=None):
        """Convolution's backward: weight_diff += ..., im_diff = ... (either may be None)."""
        out_spectrum = self.spectrum(out_diff, 'from_out', 'top')
        if weight_diff is not None:
            im_spectrum = self.memo.recall(im)
            if im_spectrum is None:
                im_spectrum = self.spectrum(im, 'from_im', 'im')
            self.weight_grad(out_spectrum, im_spectrum, weight_diff)
        if im_diff is not None:
            self.convolve_back(out_diff, weight, im_diff, out_spectrum)

    def transposed_forward(self, out_side, weight, im):
        """Deconvolution's forward: im = the transposed convolution of out_side."""
        self.convolve_back(out_side, weight, im)

    def transposed_backward(self, im_diff, out_side, weight, weight_diff=None, out_diff=None):
        """Deconvolution's backward: out_diff = weight * im_diff, weight_diff += ..."""
        if out_diff is not None:
            im_spectrum = self.correlate(im_diff, weight, out_diff)
        else:
            im_spectrum = self.spectrum(im_diff, 'from_im', 'im')
        if weight_diff is not None:
            self.weight_grad(self.spectrum(out_side, 'from_out', 'top'), im_spectrum, weight_diff)
