"""Generate the "styles" image set of the finetuning example (committed; rerun to regenerate).

Eight picture styles, each drawn in random colours so that the style, not the
palette, tells them apart: stripes, polka dots, checks, cross-hatching,
watercolour blobs, grain, mosaic (Mondrian-like blocks) and brush strokes.
Writes 40x40 PNGs under images/, then train.txt and test.txt in the seed's
`<path> <label>` format, shuffled (paths relative to this folder, which the
ImageData layers name as root_folder), and style_names.txt (line i = label i).

    python examples/finetune_style/make_styles.py            # 50 training + 15 test images per style
"""
import argparse
import os

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 40
UP = 4
STYLES = ['stripes', 'dots', 'checks', 'hatching', 'watercolour', 'grain', 'mosaic', 'brush']


def hsv_color(rng, s=(0.35, 1.0), v=(0.35, 1.0)):
    """A random colour (BGR floats 0-255) with saturation and value in the given ranges."""
    hsv = np.uint8([[[rng.integers(0, 180), int(255 * rng.uniform(*s)), int(255 * rng.uniform(*v))]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def two_colors(rng):
    """A background and a foreground colour with clear contrast."""
    while True:
        a, b = hsv_color(rng), hsv_color(rng)
        if np.abs(a - b).sum() > 200:
            return a, b


def coords(size):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


def blend(a, b, t):
    return a * (1 - t[..., None]) + b * t[..., None]


def stripes(rng, n):
    bg, fg = two_colors(rng)
    xx, yy = coords(n)
    angle, period = rng.uniform(0, np.pi), rng.uniform(3.5, 7) * UP
    phase = (np.cos(angle) * xx + np.sin(angle) * yy) / period
    return blend(bg, fg, ((phase % 1) < rng.uniform(0.3, 0.55)).astype(np.float32))


def dots(rng, n):
    bg, fg = two_colors(rng)
    img = np.empty((n, n, 3), np.float32)
    img[:] = bg
    step = rng.uniform(6, 10) * UP
    radius = int(step * rng.uniform(0.2, 0.32))
    shift = rng.uniform(0, step, 2)
    for row, y in enumerate(np.arange(-step, n + step, step) + shift[1]):
        offset = step / 2 if row % 2 else 0
        for x in np.arange(-step, n + step, step) + shift[0] + offset:
            cv2.circle(img, (int(x), int(y)), radius, tuple(float(v) for v in fg), -1, cv2.LINE_AA)
    return img


def checks(rng, n):
    bg, fg = two_colors(rng)
    xx, yy = coords(n)
    angle, period = rng.uniform(0, np.pi / 2), rng.uniform(5, 10) * UP
    u = (np.cos(angle) * xx + np.sin(angle) * yy) / period
    v = (-np.sin(angle) * xx + np.cos(angle) * yy) / period
    return blend(bg, fg, ((np.floor(u) + np.floor(v)) % 2).astype(np.float32))


def hatching(rng, n):
    """Thin pen strokes in two crossing directions, slightly irregular."""
    paper, ink = two_colors(rng)
    img = np.empty((n, n, 3), np.float32)
    img[:] = paper
    base = rng.uniform(0, np.pi)
    for angle in (base, base + rng.uniform(np.pi / 3, 2 * np.pi / 3)):
        d = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-d[1], d[0]])
        spacing = rng.uniform(3, 5) * UP
        for k in np.arange(-n, n, spacing):
            p = n / 2 + normal * (k + rng.uniform(-0.8, 0.8) * UP)
            length = rng.uniform(0.4, 1.0) * n
            start = p - d * length * rng.uniform(0.2, 0.8)
            end = start + d * length
            cv2.line(img, tuple(int(v) for v in start), tuple(int(v) for v in end),
                     tuple(float(v) for v in ink), max(1, int(rng.uniform(0.6, 1.0) * UP)), cv2.LINE_AA)
    return img


def watercolour(rng, n):
    """Soft overlapping translucent blobs."""
    img = np.empty((n, n, 3), np.float32)
    img[:] = hsv_color(rng, s=(0.05, 0.3), v=(0.8, 1.0))
    for _ in range(rng.integers(4, 8)):
        mask = np.zeros((n, n), np.float32)
        center = tuple(int(v) for v in rng.uniform(0, n, 2))
        axes = tuple(int(v) for v in rng.uniform(0.15, 0.45, 2) * n)
        cv2.ellipse(mask, center, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), 3 * UP) * rng.uniform(0.4, 0.8)
        img = blend(img, hsv_color(rng, s=(0.3, 0.8), v=(0.5, 1.0)), mask)
    return img


def grain(rng, n):
    """A smooth gradient under heavy film grain."""
    a, b = two_colors(rng)
    xx, yy = coords(n)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.cos(angle) * xx + np.sin(angle) * yy
    img = blend(a, b, (t - t.min()) / (np.ptp(t) + 1e-6) * rng.uniform(0.3, 1.0))
    small = rng.normal(0, rng.uniform(35, 60), (n // UP, n // UP, 1)).astype(np.float32)
    return img + cv2.resize(small, (n, n), interpolation=cv2.INTER_NEAREST)[..., None]


def mosaic(rng, n):
    """Axis-aligned colour blocks separated by dark lines."""
    img = np.empty((n, n, 3), np.float32)
    line = hsv_color(rng, v=(0.0, 0.2))
    img[:] = line
    xs = np.sort(np.concatenate([[0, n], rng.uniform(0, n, rng.integers(2, 4))])).astype(int)
    ys = np.sort(np.concatenate([[0, n], rng.uniform(0, n, rng.integers(2, 4))])).astype(int)
    gap = int(rng.uniform(0.8, 1.5) * UP)
    for x0, x1 in zip(xs[:-1], xs[1:]):
        for y0, y1 in zip(ys[:-1], ys[1:]):
            img[y0 + gap:y1 - gap, x0 + gap:x1 - gap] = hsv_color(rng, s=(0.0, 1.0), v=(0.5, 1.0))
    return img


def brush(rng, n):
    """A few thick curved strokes over plain paper."""
    img = np.empty((n, n, 3), np.float32)
    img[:] = hsv_color(rng, s=(0.0, 0.4), v=(0.6, 1.0))
    for _ in range(rng.integers(2, 5)):
        t = np.linspace(0, 1, 20)
        p0, p1, p2 = (rng.uniform(-0.1, 1.1, 2) * n for _ in range(3))
        curve = ((1 - t)[:, None] ** 2 * p0 + 2 * ((1 - t) * t)[:, None] * p1 + (t ** 2)[:, None] * p2)
        cv2.polylines(img, [np.round(curve).astype(np.int32)], False,
                      tuple(float(v) for v in hsv_color(rng)), int(rng.uniform(3, 6) * UP), cv2.LINE_AA)
    return img


DRAW = dict(stripes=stripes, dots=dots, checks=checks, hatching=hatching, watercolour=watercolour,
            grain=grain, mosaic=mosaic, brush=brush)


def make_image(style, rng):
    big = DRAW[style](rng, SIZE * UP)
    small = cv2.resize(np.clip(big, 0, 255), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return np.clip(np.round(small), 0, 255).astype(np.uint8)


def write_set(out, n_train, n_test, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out, 'images'), exist_ok=True)
    lists = {'train': [], 'test': []}
    for label, style in enumerate(STYLES):
        for i in range(n_train + n_test):
            rel = 'images/%s_%03d.png' % (style, i)
            cv2.imwrite(os.path.join(out, rel), make_image(style, rng))
            lists['train' if i < n_train else 'test'].append('%s %d' % (rel, label))
    for split, lines in lists.items():
        order = rng.permutation(len(lines))
        with open(os.path.join(out, split + '.txt'), 'w') as f:
            f.write(''.join(lines[i] + '\n' for i in order))
    with open(os.path.join(out, 'style_names.txt'), 'w') as f:
        f.write(''.join(s + '\n' for s in STYLES))
    return {k: len(v) for k, v in lists.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description='Generate the styles image set (finetuning task).')
    parser.add_argument('--out', default=HERE)
    parser.add_argument('--train', type=int, default=50, help='training images per style')
    parser.add_argument('--test', type=int, default=15, help='test images per style')
    parser.add_argument('--seed', type=int, default=1701)
    args = parser.parse_args(argv)
    counts = write_set(args.out, args.train, args.test, args.seed)
    print('wrote %d training and %d test images of %d styles to %s'
          % (counts['train'], counts['test'], len(STYLES), args.out))


if __name__ == '__main__':
    main()
