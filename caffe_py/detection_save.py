"""DetectionOutput's save_output_param (weiliu89/caffe, branch ssd): the detections of
num_test_image images, gathered over batches, written once per round as the fork writes them.

Formats: "VOC" (a comp4-style file per class, `<prefix><name>.txt`, lines `image score xmin ymin
xmax ymax`), "COCO" (`<prefix>.json`, the fork's boost property_tree JSON) and "ILSVRC"
(`<prefix>.txt`, lines `image label score xmin ymin xmax ymax`). Boxes are in pixels of each
image's original size (name_size_file), through save_output_param.resize_param as the fork's
OutputBBox; corners and sizes are rounded to 1/100 and cut to integers as the fork does. Each
file is written whole (a temporary file renamed over the old one).
"""
import os
import re

import numpy as np

from . import formats, log
from .proto import caffe_pb2

FORMATS = ('VOC', 'COCO', 'ILSVRC')
_RESIZE = caffe_pb2.ResizeParameter
_SETTING = 'detection_output_param.save_output_param.'
f32 = np.float32
# boost::regex the fork runs over write_json's text: quoted numbers and literals lose their quotes
_UNQUOTE = re.compile(r'"(null|true|false|-?[0-9]+(\.[0-9]+)?)"')


def read_label_map(path, error):
    """(label -> name, label -> display_name) of a LabelMap text file; labels must be unique."""
    try:
        label_map = formats.read_proto(path, caffe_pb2.LabelMap, binary=False,
                                       named_by=_SETTING + 'label_map_file')
    except formats.FormatError as exc:
        raise error('Failed to read label map file: %s' % exc) from None
    names, display = {}, {}
    for item in label_map.item:
        if item.label in names:
            raise error('label map file %s (%slabel_map_file) has label %d more than once'
                        % (path, _SETTING, item.label))
        names[item.label] = item.name
        display[item.label] = item.display_name
    return names, display


def read_name_sizes(path, error, setting=_SETTING + 'name_size_file'):
    """Image names and (height, width) rows of a name_size_file (`name height width` per line);
    `setting` names the field that named it in errors."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise error('Failed to open name size file: %s (%s): %s'
                    % (path, setting, getattr(exc, 'strerror', None) or exc)) from None
    names, sizes = [], []
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words:
            continue
        if len(words) != 3 or not all(w.lstrip('+-').isdigit() for w in words[1:]):
            raise error('name size file %s line %d (%s): expected "name height width", '
                        'got %r' % (path, number, setting, line))
        names.append(words[0])
        sizes.append((int(words[1]), int(words[2])))
    return names, np.array(sizes, np.int64).reshape(-1, 2)


def _scale(boxes, height, width):
    return boxes * np.array([width, height, width, height], f32)


def output_boxes(boxes, height, width, resize):
    """The fork's OutputBBox: normalized boxes (k, 4) float32 to pixels of a height x width image,
    undoing `resize` (a ResizeParameter or None)."""
    mode = resize.resize_mode if resize is not None else 0
    if mode == _RESIZE.FIT_LARGE_SIZE_AND_PAD:
        new_h, new_w = f32(resize.height), f32(resize.width)
        aspect = f32(width) / f32(height)
        if aspect > new_w / new_h:
            band = (new_h - new_w / aspect) / f32(2) / new_h
            source = np.array([0, band, 1, f32(1) - band], f32)
        else:
            band = (new_w - new_h * aspect) / f32(2) / new_w
            source = np.array([band, 0, f32(1) - band, 1], f32)
        span = np.array([source[2] - source[0], source[3] - source[1]] * 2, f32)
        projected = np.clip((boxes - source[[0, 1, 0, 1]]) / span, f32(0), f32(1))
        outside = ((boxes[:, 0] >= source[2]) | (boxes[:, 2] <= source[0]) |
                   (boxes[:, 1] >= source[3]) | (boxes[:, 3] <= source[1]))
        boxes = np.where(outside[:, None], boxes, projected)      # ProjectBBox leaves those as they were
    elif mode == _RESIZE.FIT_SMALL_SIZE and resize.height_scale and resize.width_scale:
        boxes = _scale(boxes, resize.height_scale, resize.width_scale)
        limit = np.array([width, height, width, height], f32)
        return np.clip(boxes, f32(0), limit)
    return _scale(np.clip(boxes, f32(0), f32(1)), height, width)


def _c_round(x):
    """C's round(): halves away from zero."""
    x = np.asarray(x, np.float64)
    return np.trunc(x + np.copysign(0.5, x))


def _ptree_float(values):
    """What `ptree.put<float>` stores: the float printed with max_digits10 (9) significant digits."""
    return ['%.9g' % v for v in np.asarray(values, f32).astype(np.float64)]


def _json_escape(text):
    """boost property_tree's create_escapes (on UTF-8 bytes: every byte from 0x80 passes)."""
    out = []
    for ch in text:
        c = ord(ch)
        if c in (0x20, 0x21) or 0x23 <= c <= 0x2E or 0x30 <= c <= 0x5B or c >= 0x5D:
            out.append(ch)
        elif ch in '\b\f\n\r\t/"\\':
            out.append('\\' + {'\b': 'b', '\f': 'f', '\n': 'n', '\r': 'r', '\t': 't'}.get(ch, ch))
        else:
            out.append('\\u%04X' % c)
    return ''.join(out)


class Detection:
    """One saved detection as the fork's ptree holds it: strings."""
    __slots__ = ('image', 'label', 'category', 'bbox', 'score')

    def __init__(self, image, label, category, bbox, score):
        self.image, self.label, self.category, self.bbox, self.score = image, label, category, bbox, score

    def pixels(self):
        """xmin, ymin, xmax, ymax as the VOC and ILSVRC writers read the ptree back: each value cut
        to an integer, the far corner as corner + size."""
        x, y, w, h = (int(float(f32(v))) for v in self.bbox)
        return x, y, x + w, y + h

    def score_text(self):
        """The score as `ostream << float` prints it (6 significant digits)."""
        return '%g' % float(f32(self.score))

    def json(self):
        pad = ' ' * 12
        fields = ['"image_id": "%s"' % _json_escape(self.image),
                  '"category_id": "%s"' % _json_escape(self.category),
                  '"bbox": [\n%s\n%s]' % (',\n'.join(' ' * 16 + '"%s"' % v for v in self.bbox), pad),
                  '"score": "%s"' % self.score]
        return ' ' * 8 + '{\n' + ',\n'.join(pad + f for f in fields) + '\n' + ' ' * 8 + '}'


class DetectionSaver:
    """Collects a DetectionOutput layer's rows image by image and writes the files each time
    num_test_image images have been seen, then starts over with the first name, as the fork."""

    def __init__(self, error, param, label_map, background, num_classes):
        self.error = error
        self.directory = param.output_directory
        self.prefix = param.output_name_prefix
        self.format = param.output_format
        if self.format not in FORMATS:
            raise error('%soutput_format "%s" is not one of %s' % (_SETTING, self.format, ', '.join(FORMATS)))
        self.label_map = param.label_map_file
        self.names = label_map[0]
        self.images, self.sizes = read_name_sizes(param.name_size_file, error)
        self.num_test_image = param.num_test_image if param.HasField('num_test_image') else len(self.images)
        if not 0 < self.num_test_image <= len(self.images):
            raise error('%snum_test_image %d must be in 1..%d, the images of name_size_file %s'
                        % (_SETTING, self.num_test_image, len(self.images), param.name_size_file))
        self.resize = param.resize_param if param.HasField('resize_param') else None
        if self.resize is not None and not (self.resize.height > 0 and self.resize.width > 0):
            raise error('%sresize_param needs height and width (got %d x %d)'
                        % (_SETTING, self.resize.height, self.resize.width))
        self.background = background
        self.num_classes = num_classes
        self.count = 0
        self.detections = []

    def add(self, rows, num):
        """Take the (D, 7) rows of a batch of `num` images (fake rows of label -1 are skipped)."""
        rows = np.asarray(rows)
        rows = rows[rows[:, 1] != -1]
        items = rows[:, 0].astype(np.int64)
        for i in range(num):
            mine = rows[items == i]
            if len(mine):
                self._collect(mine)
            self.count += 1
            if self.count % self.num_test_image == 0:
                self.write()
                self.count = 0
                self.detections = []

    def _collect(self, rows):
        labels = rows[:, 1].astype(np.int64)
        for label in np.unique(labels):
            if label not in self.names:
                raise self.error('Cannot find label: %d in the label map %s (%slabel_map_file)'
                                 % (label, self.label_map, _SETTING))
        height, width = self.sizes[self.count]
        box = output_boxes(rows[:, 3:7].astype(f32), height, width, self.resize)
        hundred = f32(100)
        corner = _c_round(box[:, :2] * hundred) / 100.
        size = _c_round((box[:, 2:] - box[:, :2]) * hundred) / 100.
        values = np.concatenate([corner, size], 1)
        image = self.images[self.count]
        for label, score, bbox in zip(labels, _ptree_float(rows[:, 2]), values):
            category = str(label) if self.format == 'ILSVRC' else self.names[label]
            self.detections.append(Detection(image, int(label), category, _ptree_float(bbox), score))

    def _path(self, name):
        return os.path.join(self.directory, self.prefix + name)

    def write(self):
        """Write this round's files."""
        if self.format == 'VOC':
            labels = sorted((set(range(self.num_classes)) | set(self.names)) - {self.background})
            files = {self.names.get(c, ''): [] for c in labels}
            for d in self.detections:
                files[d.category].append('%s %s %d %d %d %d\n' % ((d.image, d.score_text()) + d.pixels()))
            for name, lines in files.items():
                self._write(self._path(name + '.txt'), ''.join(lines))
        elif self.format == 'COCO':
            if self.detections:
                text = '[\n' + ',\n'.join(d.json() for d in self.detections) + '\n    \n]\n'
            else:
                text = '[\n]\n'
            self._write(self._path('.json'), _UNQUOTE.sub(r'\1', text))
        else:
            self._write(self._path('.txt'), ''.join(
                '%s %d %s %d %d %d %d\n' % ((d.image, d.label, d.score_text()) + d.pixels())
                for d in self.detections))

    def _write(self, path, text):
        try:
            with formats.atomic_path(path) as tmp:
                with open(tmp, 'w') as f:
                    f.write(text)
        except OSError as exc:
            raise self.error('cannot write %s (%soutput_directory): %s'
                             % (path, _SETTING, exc.strerror or exc)) from None


def make_directory(path, error):
    """Create the output directory (with its parents), checking it can be written."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise error('cannot create %s (%soutput_directory): %s' % (path, _SETTING, exc.strerror or exc)) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise error('cannot write into %s (%soutput_directory): permission denied' % (path, _SETTING))


def make_saver(error, param, background, num_classes):
    """(a DetectionSaver or None, label -> display name) for a DetectionOutput's
    save_output_param, with the fork's rules for when files are written."""
    if param.output_directory:
        make_directory(param.output_directory, error)
    label_map = read_label_map(param.label_map_file, error) if param.label_map_file else ({}, {})
    if not (param.output_directory and param.label_map_file and param.name_size_file):
        if param.output_directory:
            log.warning('%soutput_directory is set but no files are written: they need label_map_file '
                        'and name_size_file too', _SETTING)
        return None, label_map[1]
    return DetectionSaver(error, param, label_map, background, num_classes), label_map[1]
