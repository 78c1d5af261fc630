"""Box arithmetic of SSD (weiliu89/caffe's bbox_util.cpp), vectorised over NumPy arrays.

Boxes are arrays (..., 4) of (xmin, ymin, xmax, ymax) in coordinates relative to the image;
every function computes in the boxes' dtype, as the fork computes in float. Code types are
PriorBoxParameter's: CORNER = 1, CENTER_SIZE = 2, CORNER_SIZE = 3.
"""
import numpy as np

CORNER, CENTER_SIZE, CORNER_SIZE = 1, 2, 3


def area(boxes):
    """Width * height; 0 for a box whose max is below its min (BBoxSize, normalized)."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return np.where((w < 0) | (h < 0), boxes.dtype.type(0), w * h)


def iou(a, b):
    """Jaccard overlap of every box of `a` (..., 4) with every box of `b` (M, 4): (..., M)."""
    a = a[..., None, :]
    w = np.minimum(a[..., 2], b[:, 2]) - np.maximum(a[..., 0], b[:, 0])
    h = np.minimum(a[..., 3], b[:, 3]) - np.maximum(a[..., 1], b[:, 1])
    inter = np.maximum(w, 0, out=w) * np.maximum(h, 0, out=h)      # 0 unless the boxes intersect
    union = area(a) + area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def _prior_geometry(priors):
    w = priors[..., 2] - priors[..., 0]
    h = priors[..., 3] - priors[..., 1]
    if (w <= 0).any() or (h <= 0).any():
        raise ValueError('a prior box has no width or height: CENTER_SIZE and CORNER_SIZE codes need '
                         'priors with xmax > xmin and ymax > ymin')
    return w, h


def decode(priors, variances, loc, code_type, variance_in_target=False):
    """Boxes from offsets `loc` (..., P, 4) relative to `priors` (P, 4) (DecodeBBox)."""
    var = np.ones_like(variances) if variance_in_target else variances
    half = loc.dtype.type(0.5)
    if code_type == CORNER:
        return priors + var * loc
    pw, ph = _prior_geometry(priors)
    if code_type == CORNER_SIZE:
        size = np.stack([pw, ph, pw, ph], axis=-1)
        return priors + var * loc * size
    if code_type != CENTER_SIZE:
        raise ValueError('unknown code_type %d' % code_type)
    cx = (priors[..., 0] + priors[..., 2]) * half
    cy = (priors[..., 1] + priors[..., 3]) * half
    x = var[..., 0] * loc[..., 0] * pw + cx
    y = var[..., 1] * loc[..., 1] * ph + cy
    w = np.exp(var[..., 2] * loc[..., 2]) * pw * half
    h = np.exp(var[..., 3] * loc[..., 3]) * ph * half
    return np.stack([x - w, y - h, x + w, y + h], axis=-1)


def encode(priors, variances, boxes, code_type, variance_in_target=False):
    """Offsets of `boxes` (N, 4) relative to their `priors` (N, 4) (EncodeBBox)."""
    var = np.ones_like(variances) if variance_in_target else variances
    half = boxes.dtype.type(0.5)
    if code_type == CORNER:
        return (boxes - priors) / var
    pw, ph = _prior_geometry(priors)
    if code_type == CORNER_SIZE:
        return (boxes - priors) / np.stack([pw, ph, pw, ph], axis=-1) / var
    if code_type != CENTER_SIZE:
        raise ValueError('unknown code_type %d' % code_type)
    bw = boxes[:, 2] - boxes[:, 0]
    bh = boxes[:, 3] - boxes[:, 1]
    if (bw <= 0).any() or (bh <= 0).any():
        raise ValueError('a ground truth box has no width or height (CENTER_SIZE code)')
    dx = ((boxes[:, 0] + boxes[:, 2]) * half - (priors[:, 0] + priors[:, 2]) * half) / pw
    dy = ((boxes[:, 1] + boxes[:, 3]) * half - (priors[:, 1] + priors[:, 3]) * half) / ph
    return np.stack([dx, dy, np.log(bw / pw), np.log(bh / ph)], axis=-1) / var


def top_scores(scores, threshold, top_k=-1):
    """Indices of the scores above `threshold`, highest first (ties: lower index first), at most
    top_k of them when top_k > -1 (GetMaxScoreIndex)."""
    index = np.flatnonzero(scores > threshold)
    index = index[np.argsort(-scores[index], kind='stable')]
    return index[:top_k] if top_k > -1 else index


_NMS_TABLE = 2048       # candidates up to which NMS computes the whole overlap table (16 MB of float32)


def nms(boxes, scores, score_threshold, nms_threshold, eta=1.0, top_k=-1):
    """Greedy non-maximum suppression (ApplyNMSFast): the candidates above score_threshold, best
    first, each kept unless it overlaps a kept box by more than the threshold; with eta < 1 the
    threshold shrinks by eta after each kept box while it is above 0.5. Returns kept indices."""
    order = top_scores(scores, score_threshold, top_k)
    cand = boxes[order]
    threshold = np.float32(nms_threshold)
    kept = []
    if eta >= 1 and len(order) <= _NMS_TABLE:
        over = iou(cand, cand) > threshold                    # every pair at once: one OR per kept box
        suppressed = np.zeros(len(order), bool)
        for k in range(len(order)):
            if not suppressed[k]:
                kept.append(k)
                suppressed |= over[k]
    elif eta >= 1:
        suppressed = np.zeros(len(order), bool)
        for k in range(len(order)):
            if suppressed[k]:
                continue
            kept.append(k)
            suppressed[k + 1:] |= iou(cand[k], cand[k + 1:]) > threshold
    else:
        for k in range(len(order)):
            if kept and (iou(cand[k], cand[kept]) > threshold).any():
                continue
            kept.append(k)
            if threshold > 0.5:
                threshold = np.float32(threshold * np.float32(eta))
    return order[kept]


def match(gt, preds, bipartite, overlap_threshold, ignore_cross_boundary=False):
    """Match predictions (P, 4) to ground truth (G, 4) (MatchBBox): the best remaining
    (prediction, ground truth) pair first, one per ground truth; then, unless `bipartite` only,
    each unmatched prediction to its best ground truth overlapping at least overlap_threshold.
    Returns (index of the matched ground truth or -1, -2 for an ignored cross-boundary
    prediction; best overlap of each prediction)."""
    num = preds.shape[0]
    indices = np.full(num, -1, np.int64)
    overlaps = np.zeros(num, preds.dtype)
    if not len(gt):
        return indices, overlaps
    table = iou(preds, gt)
    if ignore_cross_boundary:
        outside = ((preds < 0) | (preds > 1)).any(axis=1)
        indices[outside] = -2
        table[outside] = 0
    table = np.where(table > 1e-6, table, -np.inf)       # the fork keeps only overlaps > 1e-6
    overlaps[:] = np.maximum(table.max(axis=1), 0)
    free = table.copy()
    for _ in range(len(gt)):
        flat = int(np.argmax(free))
        i, j = divmod(flat, len(gt))
        if free[i, j] == -np.inf:
            break
        indices[i] = j
        overlaps[i] = free[i, j]
        free[i, :] = -np.inf
        free[:, j] = -np.inf
    if not bipartite:
        rest = np.flatnonzero(indices == -1)
        cand = np.where(table[rest] >= overlap_threshold, table[rest], -np.inf)
        best = cand.argmax(axis=1)
        found = cand[np.arange(len(rest)), best] > -np.inf
        indices[rest[found]] = best[found]
        overlaps[rest[found]] = cand[np.arange(len(rest)), best][found]
    return indices, overlaps
