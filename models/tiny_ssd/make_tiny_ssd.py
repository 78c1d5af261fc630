"""Tiny SSD: an SSD detector (PriorBox, Normalize, Permute, MultiBoxLoss, DetectionOutput) for
circles and squares on 300 x 300 scenes, trained here with caffe-py.

    python models/tiny_ssd/make_tiny_ssd.py            # nets, scenes, training, weights (~8 min)
    python models/tiny_ssd/make_tiny_ssd.py --nets     # only rewrite the prototxt files
    python models/tiny_ssd/make_tiny_ssd.py --lmdb 500 # scenes as AnnotatedDatum LMDBs (train + test), then
    caffe-py train -solver models/tiny_ssd/solver.prototxt     # SSD's recipe: AnnotatedData + augmentation
    caffe-py train -solver models/tiny_ssd/solver_detection.prototxt   # the same, testing mAP as SSD does

Writes deploy.prototxt, train.prototxt (fed from Python, as the weights were trained),
train_lmdb.prototxt + solver.prototxt (AnnotatedData reading examples/ssd_detect/scenes_lmdb),
test_lmdb.prototxt + solver_detection.prototxt (SSD's test net and solver: DetectionEvaluate on
examples/ssd_detect/scenes_test_lmdb, eval_type "detection", ap_version "11point") and
tiny_ssd.caffemodel beside this file, and the demo scene examples/ssd_detect/scene.jpg. Scenes: a noisy background with 1 to 4 filled shapes, class 1
circle, class 2 square, sides 40 to 150 pixels. Input: BGR pixels, (x - 127.5) / 127.5.
"""
import argparse
import os
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLASSES = ('background', 'circle', 'square')
SIZE = 300
BATCH = 8
MAX_BOXES = 4
# (feature, min_size, max_size) of the three heads
HEADS = (('conv3', 30, 70), ('conv4', 70, 130), ('conv5', 130, 220))


def _conv(name, bottom, outputs, kernel, stride, pad, relu=True):
    text = ('layer { name: "%s" type: "Convolution" bottom: "%s" top: "%s" '
            'param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 } '
            'convolution_param { num_output: %d kernel_size: %d stride: %d pad: %d '
            'weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0 } } }\n'
            % (name, bottom, name, outputs, kernel, stride, pad))
    if relu:
        text += 'layer { name: "%s_relu" type: "ReLU" bottom: "%s" top: "%s" }\n' % (name, name, name)
    return text


def _flat(name, bottom):
    return ('layer { name: "%s_perm" type: "Permute" bottom: "%s" top: "%s_perm" '
            'permute_param { order: 0 order: 2 order: 3 order: 1 } }\n'
            'layer { name: "%s_flat" type: "Flatten" bottom: "%s_perm" top: "%s_flat" '
            'flatten_param { axis: 1 } }\n' % (name, bottom, name, name, name, name))


def net_text(deploy):
    """The deploy or the training net as prototxt text."""
    priors = 4                                  # min, sqrt(min * max), ratio 2, ratio 1/2
    text = 'name: "tiny_ssd"\n'
    if deploy:
        text += ('layer { name: "data" type: "Input" top: "data" '
                 'input_param { shape { dim: 1 dim: 3 dim: %d dim: %d } } }\n' % (SIZE, SIZE))
    else:
        text += ('layer { name: "data" type: "Input" top: "data" top: "label" input_param { '
                 'shape { dim: %d dim: 3 dim: %d dim: %d } shape { dim: 1 dim: 1 dim: %d dim: 8 } } }\n'
                 % (BATCH, SIZE, SIZE, BATCH * MAX_BOXES))
    text += _conv('conv1', 'data', 16, 5, 4, 2)
    text += _conv('conv2', 'conv1', 32, 3, 2, 1)
    text += _conv('conv3', 'conv2', 32, 3, 2, 1)
    text += _conv('conv4', 'conv3', 64, 3, 2, 1)
    text += _conv('conv5', 'conv4', 64, 3, 2, 1)
    text += ('layer { name: "conv3_norm" type: "Normalize" bottom: "conv3" top: "conv3_norm" '
             'norm_param { across_spatial: false channel_shared: false '
             'scale_filler { type: "constant" value: 20 } } }\n')
    locs, confs, boxes = [], [], []
    for feature, min_size, max_size in HEADS:
        source = feature + '_norm' if feature == 'conv3' else feature
        text += _conv(source + '_mbox_loc', source, priors * 4, 3, 1, 1, relu=False)
        text += _flat(source + '_mbox_loc', source + '_mbox_loc')
        text += _conv(source + '_mbox_conf', source, priors * len(CLASSES), 3, 1, 1, relu=False)
        text += _flat(source + '_mbox_conf', source + '_mbox_conf')
        text += ('layer { name: "%s_mbox_priorbox" type: "PriorBox" bottom: "%s" bottom: "data" '
                 'top: "%s_mbox_priorbox" prior_box_param { min_size: %d max_size: %d aspect_ratio: 2 '
                 'flip: true clip: false variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 '
                 'offset: 0.5 } }\n' % (source, source, source, min_size, max_size))
        locs.append(source + '_mbox_loc_flat')
        confs.append(source + '_mbox_conf_flat')
        boxes.append(source + '_mbox_priorbox')
    for name, parts, axis in (('mbox_loc', locs, 1), ('mbox_conf', confs, 1), ('mbox_priorbox', boxes, 2)):
        text += ('layer { name: "%s" type: "Concat" %s top: "%s" concat_param { axis: %d } }\n'
                 % (name, ' '.join('bottom: "%s"' % p for p in parts), name, axis))
    if deploy:
        text += ('layer { name: "mbox_conf_reshape" type: "Reshape" bottom: "mbox_conf" '
                 'top: "mbox_conf_reshape" reshape_param { shape { dim: 0 dim: -1 dim: %d } } }\n'
                 'layer { name: "mbox_conf_softmax" type: "Softmax" bottom: "mbox_conf_reshape" '
                 'top: "mbox_conf_softmax" softmax_param { axis: 2 } }\n'
                 'layer { name: "mbox_conf_flatten" type: "Flatten" bottom: "mbox_conf_softmax" '
                 'top: "mbox_conf_flatten" flatten_param { axis: 1 } }\n'
                 'layer { name: "detection_out" type: "DetectionOutput" bottom: "mbox_loc" '
                 'bottom: "mbox_conf_flatten" bottom: "mbox_priorbox" top: "detection_out" '
                 'detection_output_param { num_classes: %d share_location: true background_label_id: 0 '
                 'nms_param { nms_threshold: 0.45 top_k: 100 } code_type: CENTER_SIZE keep_top_k: 20 '
                 'confidence_threshold: 0.25 } }\n' % (len(CLASSES), len(CLASSES)))
    else:
        text += ('layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "mbox_loc" bottom: "mbox_conf" '
                 'bottom: "mbox_priorbox" bottom: "label" top: "mbox_loss" '
                 'propagate_down: true propagate_down: true propagate_down: false propagate_down: false '
                 'loss_param { normalization: VALID } multibox_loss_param { loc_loss_type: SMOOTH_L1 '
                 'conf_loss_type: SOFTMAX loc_weight: 1.0 num_classes: %d share_location: true '
                 'match_type: PER_PREDICTION overlap_threshold: 0.5 use_prior_for_matching: true '
                 'background_label_id: 0 use_difficult_gt: true neg_pos_ratio: 3.0 neg_overlap: 0.5 '
                 'code_type: CENTER_SIZE mining_type: MAX_NEGATIVE } }\n' % len(CLASSES))
    return text


LMDB = 'examples/ssd_detect/scenes_lmdb'
ANNOTATED_DATA = (
    'layer { name: "data" type: "AnnotatedData" top: "data" top: "label" include { phase: TRAIN }\n'
    '  data_param { source: "%s" backend: LMDB batch_size: %d }\n'
    '  transform_param { mirror: true mean_value: 127.5 mean_value: 127.5 mean_value: 127.5 scale: 0.007843\n'
    '    resize_param { prob: 1 resize_mode: WARP height: %d width: %d interp_mode: LINEAR interp_mode: AREA }\n'
    '    emit_constraint { emit_type: CENTER }\n'
    '    distort_param { brightness_prob: 0.5 brightness_delta: 32 contrast_prob: 0.5 contrast_lower: 0.5\n'
    '      contrast_upper: 1.5 hue_prob: 0.5 hue_delta: 18 saturation_prob: 0.5 saturation_lower: 0.5\n'
    '      saturation_upper: 1.5 random_order_prob: 0 }\n'
    '    expand_param { prob: 0.5 max_expand_ratio: 2 } }\n'
    '  annotated_data_param { batch_sampler { max_sample: 1 max_trials: 1 }\n'
    '    batch_sampler { sampler { min_scale: 0.3 max_scale: 1 min_aspect_ratio: 0.5 max_aspect_ratio: 2 }\n'
    '      sample_constraint { min_jaccard_overlap: 0.5 } max_sample: 1 max_trials: 50 } } }\n'
    % (LMDB, BATCH, SIZE, SIZE))
SOLVER = """net: "models/tiny_ssd/train_lmdb.prototxt"
type: "Adam"
base_lr: 0.001
momentum: 0.9
momentum2: 0.999
weight_decay: 0.0005
lr_policy: "multistep"
gamma: 0.1
stepvalue: 1600
max_iter: 2000
display: 50
average_loss: 50
snapshot: 1000
snapshot_prefix: "examples/ssd_detect/snapshots/tiny_ssd"
solver_mode: CPU
random_seed: 0
"""


TEST_LMDB = 'examples/ssd_detect/scenes_test_lmdb'
TEST_SCENES = 64
SOLVER_DETECTION = SOLVER.replace(
    'net: "models/tiny_ssd/train_lmdb.prototxt"\n',
    'train_net: "models/tiny_ssd/train_lmdb.prototxt"\ntest_net: "models/tiny_ssd/test_lmdb.prototxt"\n'
    'test_iter: %d\ntest_interval: 500\n' % (TEST_SCENES // BATCH))
SOLVER_DETECTION += 'eval_type: "detection"\nap_version: "11point"\n'


def lmdb_test_net_text():
    """The deploy net fed by AnnotatedData (TEST: resize only), its detections (confidence 0.01, as SSD's
    test nets) evaluated against the labels by DetectionEvaluate."""
    text = net_text(deploy=True).replace('confidence_threshold: 0.25', 'confidence_threshold: 0.01')
    start = text.index('layer { name: "data"')
    data = ('layer { name: "data" type: "AnnotatedData" top: "data" top: "label" include { phase: TEST }\n'
            '  data_param { source: "%s" backend: LMDB batch_size: %d }\n'
            '  transform_param { mean_value: 127.5 mean_value: 127.5 mean_value: 127.5 scale: 0.007843\n'
            '    resize_param { prob: 1 resize_mode: WARP height: %d width: %d interp_mode: LINEAR } } }\n'
            % (TEST_LMDB, BATCH, SIZE, SIZE))
    return (text[:start] + data + text[text.index('\n', start) + 1:]
            + 'layer { name: "detection_eval" type: "DetectionEvaluate" bottom: "detection_out" bottom: "label" '
            'top: "detection_eval" include { phase: TEST }\n  detection_evaluate_param { num_classes: %d '
            'background_label_id: 0 overlap_threshold: 0.5 evaluate_difficult_gt: false } }\n' % len(CLASSES))


def lmdb_net_text():
    """The training net fed by AnnotatedData with SSD's augmentations (ssd_pascal.py's recipe)."""
    text = net_text(deploy=False)
    start = text.index('layer { name: "data"')
    return text[:start] + ANNOTATED_DATA + text[text.index('\n', start) + 1:]


def write_lmdb(path, count, seed=1):
    """`count` scenes as AnnotatedDatum records (JPEG), as SSD's convert_annoset writes them."""
    sys.path.insert(0, ROOT)
    from caffe_py.data.db import DBWriter
    from caffe_py.proto import caffe_pb2
    rng = np.random.default_rng(seed)
    with DBWriter(path, 'lmdb') as db:
        for i in range(count):
            image, boxes = scene(rng)
            record = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.BBOX)
            record.datum.encoded = True
            record.datum.data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
            for k, (label, x0, y0, x1, y1) in enumerate(boxes):
                group = record.annotation_group.add(group_label=label)
                group.annotation.add(instance_id=k, bbox=caffe_pb2.NormalizedBBox(
                    xmin=x0, ymin=y0, xmax=x1, ymax=y1))
            db.put('%08d' % i, record.SerializeToString())


def scene(rng, count=None):
    """(BGR image SIZE x SIZE uint8, boxes [(label, xmin, ymin, xmax, ymax)] relative to the image)."""
    image = rng.integers(60, 200, 3) + rng.normal(0, 12, (SIZE, SIZE, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    boxes = []
    for _ in range(count or rng.integers(1, MAX_BOXES + 1)):
        for _ in range(20):                                      # place without heavy overlap
            side = int(rng.integers(40, 151))
            x, y = (int(v) for v in rng.integers(0, SIZE - side, 2))
            box = np.array([x, y, x + side, y + side]) / SIZE
            if all(_overlap(box, b[1:]) < 0.2 for b in boxes):
                break
        else:
            continue
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        label = int(rng.integers(1, 3))
        if label == 1:
            cv2.circle(image, (x + side // 2, y + side // 2), side // 2, color, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(image, (x, y), (x + side - 1, y + side - 1), color, -1)
        boxes.append((label,) + tuple(box))
    return image, boxes


def _overlap(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return 0.0 if w <= 0 or h <= 0 else w * h / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def preprocess(images):
    """uint8 BGR (N, H, W, 3) -> float32 (N, 3, H, W), (x - 127.5) / 127.5."""
    return ((np.asarray(images, np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)


def batch(rng):
    images, rows = [], []
    for item in range(BATCH):
        image, boxes = scene(rng)
        images.append(image)
        rows += [[item, label, 0, x0, y0, x1, y1, 0] for label, x0, y0, x1, y1 in boxes]
    label = np.full((BATCH * MAX_BOXES, 8), -1, np.float32)
    label[:len(rows)] = rows
    return preprocess(images), label.reshape(1, 1, -1, 8)


def train(iterations, seed=0):
    sys.path.insert(0, ROOT)
    import caffe_py as caffe
    from caffe_py.proto import caffe_pb2
    from google.protobuf import text_format
    caffe.set_mode_cpu()
    solver_param = caffe_pb2.SolverParameter(
        base_lr=0.001, momentum=0.9, momentum2=0.999, weight_decay=0.0005, lr_policy='multistep',
        gamma=0.1, stepvalue=[int(iterations * 0.8)], max_iter=iterations, display=50, average_loss=50,
        random_seed=seed, type='Adam', snapshot_after_train=False)
    text_format.Parse(net_text(deploy=False), solver_param.net_param)
    solver = caffe.get_solver(solver_param)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        data, label = batch(rng)
        solver.net.blobs['data'].data[...] = data
        solver.net.blobs['label'].data[...] = label
        solver.step(1)
    return solver.net


def prototxt_files():
    """(file name beside this script, text) of every prototxt it writes."""
    return (('deploy.prototxt', net_text(True)), ('train.prototxt', net_text(False)),
            ('train_lmdb.prototxt', lmdb_net_text()), ('solver.prototxt', SOLVER),
            ('test_lmdb.prototxt', lmdb_test_net_text()), ('solver_detection.prototxt', SOLVER_DETECTION))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--nets', action='store_true', help='only write the prototxt files')
    parser.add_argument('--lmdb', type=int, metavar='N', help='only write N scenes to %s and %d to %s '
                        '(and make the solvers\' snapshot folder)' % (LMDB, TEST_SCENES, TEST_LMDB))
    parser.add_argument('--iterations', type=int, default=2000)
    args = parser.parse_args(argv)
    if args.lmdb:
        write_lmdb(os.path.join(ROOT, LMDB), args.lmdb)
        write_lmdb(os.path.join(ROOT, TEST_LMDB), TEST_SCENES, seed=99)
        # the folder of the solvers' snapshot_prefix
        os.makedirs(os.path.join(ROOT, 'examples', 'ssd_detect', 'snapshots'), exist_ok=True)
        return 0
    for name, text in prototxt_files():
        with open(os.path.join(HERE, name), 'w') as f:
            f.write(text)
    if args.nets:
        return 0
    image, _ = scene(np.random.default_rng(2026), count=4)
    cv2.imwrite(os.path.join(ROOT, 'examples', 'ssd_detect', 'scene.jpg'), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    net = train(args.iterations)
    net.save(os.path.join(HERE, 'tiny_ssd.caffemodel'))
    print('wrote', os.path.join(HERE, 'tiny_ssd.caffemodel'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
