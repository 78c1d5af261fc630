"""Test-time detection evaluation: SSD's eval_type "detection" (weiliu89/caffe Solver::TestDetection).

Each test batch's outputs are DetectionEvaluate rows (item, label, score, tp, fp; item -1 rows count a
class's positives). After test_iter batches, each output with detections gets one line, its mean
average precision over the classes that have positives, computed as `ap_version` says:

    Test net output #0: detection_eval = 0.7312

and with show_per_class_result a line `class<label>: <AP>` per class before it.
"""
import numpy as np

from .. import log
from ..detection_eval import mean_average_precision

EVAL_TYPES = ('classification', 'detection')


class DetectionEvalError(ValueError):
    """Test net outputs that are not DetectionEvaluate rows, or rows that leave out a count."""


class DetectionRows:
    """The rows every output of a test net gave over one test."""

    def __init__(self, net):
        self.net = net
        self.rows = [[] for _ in net.outputs]

    def add(self):
        """Keep the rows of the batch the test net has just computed."""
        for j, name in enumerate(self.net.outputs):
            data = self.net.blobs[name].read_data()
            if data.ndim != 4 or data.shape[3] != 5:      # Caffe: CHECK_EQ(width(), 5)
                raise DetectionEvalError(
                    'eval_type "detection": test net output #%d (%s) has shape %s; it must be '
                    "DetectionEvaluate's rows of 5 values (1, 1, N, 5)" % (j, name, tuple(data.shape)))
            self.rows[j].append(np.array(data, np.float32).reshape(-1, 5))

    def report(self, ap_version, per_class_result=False):
        """Log each output's mAP as the fork does: outputs are counted from #0 while they have
        detections (true or false positives); classes without any warn and score 0."""
        found = [j for j, batches in enumerate(self.rows) if any(_has_detections(rows) for rows in batches)]
        for i in range(len(found)):
            name = self.net.outputs[i]
            if i not in found:
                raise DetectionEvalError('test net output #%d (%s) has no detections while a later output '
                                         'has (the fork: Missing output_blob true_pos: %d)' % (i, name, i))
            labels = sorted({int(label) for rows in self.rows[i]
                             for label in rows[rows[:, 0].astype(int) == -1, 1]})
            if not labels:
                raise DetectionEvalError('test net output #%d (%s) has no rows counting positives '
                                         '(item -1; the fork: Missing output_blob num_pos: %d)' % (i, name, i))
            mean_ap, per_class = mean_average_precision(self.rows[i], ap_version)
            for label in labels:
                if label not in per_class:
                    log.warning('Missing true_pos for label: %d', label)
                elif per_class_result:
                    log.info('class%d: %s', label, log.fmt(per_class[label]))
            log.info('    Test net output #%d: %s = %s', i, name, log.fmt(mean_ap))


def _has_detections(rows):
    """Whether rows hold a detection the fork counts: item >= 0, a true or a false positive."""
    item, tp, fp = rows[:, 0].astype(int), rows[:, 3].astype(int), rows[:, 4].astype(int)
    return bool(np.any((item != -1) & ((tp != 0) | (fp != 0))))
