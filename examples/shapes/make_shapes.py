"""Generate the "shapes" image set that mini CaffeNet is pretrained on (not committed: rerun it).

Ten classes of figures, each with a surface of its own as objects have one
(striped ellipses, dotted discs, checked squares, plain stars, grainy
triangles ...), in random colours, sizes, positions and rotations over flat,
gradient or noisy backgrounds: the net learns edges, colours and textures.
Writes 40x40 PNGs, train.txt and test.txt (`<path> <label>` lines, shuffled;
paths relative to the output folder, which the ImageData layers name as
root_folder).

    python examples/shapes/make_shapes.py                   # -> examples/shapes/data/
    python examples/shapes/make_shapes.py --train 300 --test 50 --out DIR
"""
import argparse
import os

import cv2
import numpy as np

SIZE = 40
UP = 4  # draw at 4x, then downsample: anti-aliased edges
# each class is a figure with a surface of its own, as objects have (a zebra's stripes, a ball's
# plain skin): name -> (figure, surface)
CLASSES = [('zebra', 'ellipse', 'stripes'), ('ladybird', 'circle', 'dots'), ('chessboard', 'square', 'checks'),
           ('ball', 'circle', 'plain'), ('star', 'star', 'plain'), ('ring', 'ring', 'plain'),
           ('cage', 'square', 'grid'), ('cloud', 'blob', 'soft'), ('sandpile', 'triangle', 'grain'),
           ('cross', 'cross', 'plain')]


def random_color(rng, avoid=None):
    """A colour (BGR, 0-255) that differs from `avoid` by a visible amount."""
    while True:
        c = rng.integers(0, 256, 3).astype(np.float32)
        if avoid is None or np.abs(c - avoid).sum() > 180:
            return c


def background(rng, size):
    """Flat, gradient or lightly noisy; returns the image and its main colour."""
    kind = rng.integers(3)
    base, other = random_color(rng), random_color(rng)
    img = np.empty((size, size, 3), np.float32)
    img[:] = base
    if kind == 1:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / (np.ptp(t) + 1e-6) * 0.6
        img = base * (1 - t[..., None]) + other * t[..., None]
    elif kind == 2:
        img += cv2.resize(rng.normal(0, 15, (size // UP, size // UP, 3)).astype(np.float32), (size, size))
    return img, base


def polygon(center, radius, n, rotation, inner=None):
    """Vertices of a regular n-gon (or a star when `inner` radius is given), int32."""
    k = 2 * n if inner else n
    angles = rotation + np.arange(k) * 2 * np.pi / k
    radii = np.full(k, radius, np.float64)
    if inner:
        radii[1::2] = inner
    pts = np.stack([center[0] + radii * np.cos(angles), center[1] + radii * np.sin(angles)], 1)
    return np.round(pts).astype(np.int32)


def figure_mask(figure, size, rng):
    """The figure's coverage (0-1 floats) on a size x size canvas."""
    mask = np.zeros((size, size), np.float32)
    c = (size / 2 + rng.uniform(-4, 4) * UP, size / 2 + rng.uniform(-4, 4) * UP)
    ci = (int(c[0]), int(c[1]))
    r = rng.uniform(10, 14) * UP
    rot = rng.uniform(0, 2 * np.pi)
    thick = int(rng.uniform(2.5, 4) * UP)
    if figure == 'circle':
        cv2.circle(mask, ci, int(r), 1.0, -1, cv2.LINE_AA)
    elif figure == 'ellipse':
        cv2.ellipse(mask, ci, (int(r * 1.2), int(r * 0.7)), np.degrees(rot), 0, 360, 1.0, -1, cv2.LINE_AA)
    elif figure == 'ring':
        cv2.circle(mask, ci, int(r - thick / 2), 1.0, thick, cv2.LINE_AA)
    elif figure == 'square':
        cv2.fillPoly(mask, [polygon(c, r * 1.1, 4, rot)], 1.0, cv2.LINE_AA)
    elif figure == 'triangle':
        cv2.fillPoly(mask, [polygon(c, r * 1.2, 3, rot)], 1.0, cv2.LINE_AA)
    elif figure == 'star':
        cv2.fillPoly(mask, [polygon(c, r * 1.2, 5, rot, inner=r * 0.5)], 1.0, cv2.LINE_AA)
    elif figure == 'cross':
        for a in (rot, rot + np.pi / 2):
            d = (r * np.cos(a), r * np.sin(a))
            cv2.line(mask, (int(c[0] - d[0]), int(c[1] - d[1])), (int(c[0] + d[0]), int(c[1] + d[1])),
                     1.0, thick + UP, cv2.LINE_AA)
    elif figure == 'blob':
        for _ in range(4):
            off = rng.uniform(-0.5, 0.5, 2) * r
            cv2.circle(mask, (int(c[0] + off[0]), int(c[1] + off[1])), int(r * rng.uniform(0.5, 0.8)),
                       1.0, -1, cv2.LINE_AA)
        mask = cv2.GaussianBlur(mask, (0, 0), 2 * UP)
    return mask


def surface(kind, size, rng, color):
    """The figure's fill: plain colour or a two-colour pattern."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = color
    if kind in ('plain', 'soft'):
        return img
    second = random_color(rng, avoid=color)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(3, 5) * UP
    u = (np.cos(angle) * xx + np.sin(angle) * yy) / period
    v = (-np.sin(angle) * xx + np.cos(angle) * yy) / period
    if kind == 'stripes':
        t = (u % 1) < 0.5
    elif kind == 'checks':
        t = (np.floor(u) + np.floor(v)) % 2 > 0
    elif kind == 'grid':
        t = ((u % 1) < 0.25) | ((v % 1) < 0.25)
    elif kind == 'dots':
        t = ((u % 1 - 0.5) ** 2 + (v % 1 - 0.5) ** 2) < 0.08
    else:  # grain
        t = cv2.resize(rng.random((size // UP, size // UP)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_NEAREST) < 0.5
    return np.where(t[..., None], second, img)


def make_image(label, rng):
    _, figure, fill = CLASSES[label]
    big = SIZE * UP
    bg, base = background(rng, big)
    mask = figure_mask(figure, big, rng)[..., None]
    img = bg * (1 - mask) + surface(fill, big, rng, random_color(rng, avoid=base)) * mask
    small = cv2.resize(np.clip(img, 0, 255), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return np.clip(np.round(small), 0, 255).astype(np.uint8)


def write_set(out, n_train, n_test, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out, 'images'), exist_ok=True)
    lists = {'train': [], 'test': []}
    for label, (name, _, _) in enumerate(CLASSES):
        for split, count in (('train', n_train), ('test', n_test)):
            for i in range(count):
                rel = 'images/%s_%s_%04d.png' % (split, name, i)
                cv2.imwrite(os.path.join(out, rel), make_image(label, rng))
                lists[split].append('%s %d' % (rel, label))
    for split, lines in lists.items():
        order = rng.permutation(len(lines))
        with open(os.path.join(out, split + '.txt'), 'w') as f:
            f.write(''.join(lines[i] + '\n' for i in order))
    return {k: len(v) for k, v in lists.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description='Generate the shapes image set (pretraining task).')
    parser.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data'))
    parser.add_argument('--train', type=int, default=300, help='training images per class')
    parser.add_argument('--test', type=int, default=50, help='test images per class')
    parser.add_argument('--seed', type=int, default=2014)
    args = parser.parse_args(argv)
    counts = write_set(args.out, args.train, args.test, args.seed)
    print('wrote %d training and %d test images of %d classes to %s'
          % (counts['train'], counts['test'], len(CLASSES), args.out))


if __name__ == '__main__':
    main()
