"""Mean average precision from DetectionEvaluate outputs, as SSD's solver computes it at test
time (weiliu89/caffe: Solver::TestDetection, ComputeAP in bbox_util.cpp).

    rows = [net.forward()['detection_eval'][0, 0].copy() for _ in range(test_iter)]
    mean_ap, per_class = mean_average_precision(rows, '11point')
"""
import numpy as np

AP_VERSIONS = ('11point', 'MaxIntegral', 'Integral')


def average_precision(scores, true_pos, num_pos, ap_version='Integral'):
    """AP of one class from its detections' scores and true-positive flags (1 true, 0 false),
    given the number of positives (ComputeAP; detections sorted by score, ties keeping their order)."""
    if ap_version not in AP_VERSIONS:
        raise ValueError('Unknown ap_version: %s (known: %s)' % (ap_version, ', '.join(AP_VERSIONS)))
    if not len(scores) or num_pos == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, np.float32), kind='stable')
    hits = np.asarray(true_pos, np.int64)[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(1 - hits)
    prec = (tp / (tp + fp)).astype(np.float32)
    rec = (tp / num_pos).astype(np.float32)
    eps = 1e-6
    ap = np.float32(0)
    if ap_version == '11point':
        max_precs = [np.float32(0)] * 11
        start = len(rec) - 1
        for j in range(10, -1, -1):           # the fork's scan: best precision at recall >= j / 10
            for i in range(start, -1, -1):
                if rec[i] < j / 10.0:
                    start = i
                    if j > 0:
                        max_precs[j - 1] = max_precs[j]
                    break
                max_precs[j] = max(max_precs[j], prec[i])
        for j in range(10, -1, -1):
            ap += np.float32(max_precs[j] / np.float32(11))
    elif ap_version == 'MaxIntegral':
        cur_rec, cur_prec = rec[-1], prec[-1]
        for i in range(len(rec) - 2, -1, -1):
            cur_prec = max(prec[i], cur_prec)
            if abs(cur_rec - rec[i]) > eps:
                ap += cur_prec * abs(cur_rec - rec[i])
            cur_rec = rec[i]
        ap += cur_rec * cur_prec
    else:
        previous = np.float32(0)
        for i in range(len(rec)):
            if abs(rec[i] - previous) > eps:
                ap += prec[i] * abs(rec[i] - previous)
            previous = rec[i]
    return float(ap)


def mean_average_precision(results, ap_version='Integral'):
    """(mAP, {label: AP}) over DetectionEvaluate outputs (arrays of rows item, label, score, tp, fp;
    item -1 rows count the positives of a class). Detections neither true nor false positive are
    left out; classes without detections score 0 but count, as in the fork."""
    num_pos, found = {}, {}
    for result in results:
        for item, label, score, tp, fp in np.asarray(result, np.float64).reshape(-1, 5):
            label = int(label)
            if int(item) == -1:
                num_pos[label] = num_pos.get(label, 0) + int(score)
            elif int(tp) or int(fp):
                found.setdefault(label, []).append((score, int(tp)))
    per_class = {}
    for label, positives in sorted(num_pos.items()):
        if label in found:
            scores, hits = zip(*found[label])
            per_class[label] = average_precision(scores, hits, positives, ap_version)
    mean_ap = np.float32(0)           # summed in float in label order, as the fork sums
    for ap in per_class.values():
        mean_ap += np.float32(ap)
    return (float(mean_ap / np.float32(len(num_pos))) if num_pos else 0.0), per_class
